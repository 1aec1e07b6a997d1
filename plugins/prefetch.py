"""Built-in plugin r1mw.prefetch (filled by its issue)."""
