"""Built-in plugin r1mw.guards: the guards every semantic candidate must pass.

A team adds its own the same way::

    @r1mw.hookimpl
    def r1mw_register_guards(pipeline):
        return [MyGuard()]   # objects with name and allows(asked, stored, info) -> bool
"""

from __future__ import annotations

from typing import Any

import r1mw
from r1mw.semantic.guards import BUILTIN_GUARDS


@r1mw.hookimpl
def r1mw_register_guards(pipeline: r1mw.Pipeline) -> list[r1mw.Guard]:
    return [cls() for cls in BUILTIN_GUARDS]
