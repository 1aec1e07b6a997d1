"""Built-in plugin r1mw.alerts (filled by its issue)."""
