"""Built-in plugin r1mw.guards (filled by its issue)."""
