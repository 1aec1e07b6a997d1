"""Built-in plugin r1mw.template (filled by its issue)."""
