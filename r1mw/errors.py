"""The r1mw exception tree.

Every error r1mw raises on its own account derives from :class:`R1mwError`;
upstream errors (from the OpenAI SDK, LiteLLM or your callable) are never wrapped:
they reach the caller as the very object the client raised.

::

    R1mwError
    ├── ConfigError (also ValueError)      a flag, a template file or a plugin set is wrong
    │   └── PluginError                    a plugin failed to load or registered a duplicate name
    ├── PipelineStateError (also RuntimeError)  the pipeline was used before start or after close
    ├── CacheControlError (also TypeError and ValueError)  a per-request ``cache=`` value is wrong
    ├── CodecError                         an entry could not be encoded or decoded
    │   └── UnencodableValueError (also TypeError)  a value the codec refuses (never pickled)
    └── StreamIncomplete                   a streamed reply ended before its normal end

Cache faults (a corrupt entry, a Redis outage) are not raised to the caller: they
are counted and served as misses.
"""

from __future__ import annotations

__all__ = [
    "CacheControlError",
    "CodecError",
    "ConfigError",
    "PipelineStateError",
    "PluginError",
    "R1mwError",
    "StreamIncomplete",
    "UnencodableValueError",
    "WrapError",
]


class R1mwError(Exception):
    """Root of every exception r1mw raises itself."""


class ConfigError(R1mwError, ValueError):
    """A setting is wrong. The message is one line: the flag, the value, what is allowed."""


class PluginError(ConfigError):
    """A plugin could not be loaded or registered a name that is already taken."""


class PipelineStateError(R1mwError, RuntimeError):
    """The pipeline was used before ``start()``/``async with`` or after ``close()``."""


class CacheControlError(R1mwError, TypeError, ValueError):
    """A per-request ``cache=`` value r1mw cannot read (an unknown key, a switch that is not a
    boolean, a ttl that is not a number). The message names the key and what is allowed.

    Also a TypeError and a ValueError: it replaces both (a wrong type, a wrong value), and
    ``except`` clauses written for them keep working."""


class WrapError(R1mwError, TypeError):
    """``r1mw.wrap()`` or ``@r1mw.cached`` given what they cannot wrap (a synchronous function,
    a callable returning something r1mw cannot rebuild); also a TypeError, as Python raises."""


class CodecError(R1mwError):
    """An entry could not be encoded or decoded (decoding faults become misses)."""


class UnencodableValueError(CodecError, TypeError):
    """A value that the codec refuses to store: msgpack types, bytes and numpy arrays only."""


class StreamIncomplete(R1mwError):
    """A streamed reply ended (error, cancellation, truncation) before its normal end.

    Nothing of such a stream is stored; requests that were waiting on it make their own call.
    """
