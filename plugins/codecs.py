"""Built-in plugin r1mw.codecs (filled by its issue)."""
