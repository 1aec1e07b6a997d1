"""Built-in plugin r1mw.context (filled by its issue)."""
