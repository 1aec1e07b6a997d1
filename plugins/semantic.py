"""Built-in plugin r1mw.semantic (filled by its issue)."""
