"""r1mw's built-in plugins, installed as ``r1mw_plugins``.

Each module is a plugin exactly as a third-party package would write one: hookimpls over
r1mw's public API, registered through the ``r1mw`` entry-point group. The core never
imports this package.
"""
