"""Built-in plugin r1mw.embedders (filled by its issue)."""
