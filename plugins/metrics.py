"""Built-in plugin r1mw.metrics (filled by its issue)."""
