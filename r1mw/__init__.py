"""r1mw: async caching middleware for LLM calls, built for DeepSeek-R1.

Package map::

    r1mw/types.py        Request, Reply, StreamedReply (what stages see)
    r1mw/protocols.py    Stage, Tier, Codec, Embedder, Guard
    r1mw/hookspecs.py    the plugin hooks (registration, lifecycle, observers)
    r1mw/manager.py      plugin manager: entry points, R1MW_PLUGINS, R1MW_DISABLE_PLUGINS
    r1mw/settings.py     the flag table, Settings.from_env()
    r1mw/pipeline.py     Pipeline: builds the chain once, stats()
    r1mw/keys.py         canonical request -> 16-byte key
    r1mw/singleflight.py one upstream call per key
    r1mw/context.py      @r1mw.cached and pipe.context_cache: any async function's results in the tiers
    r1mw/tiers/          Entry, TieredStore and the tiers
    r1mw/adapters/       wrap(): AsyncOpenAI, litellm.acompletion, any async callable
    r1mw_plugins/        the built-in stages and tiers (plugins/ in the source tree)

Quick use::

    import r1mw
    async with r1mw.Pipeline(r1mw.Settings.from_env()) as pipe:
        client = r1mw.wrap(AsyncOpenAI(), pipe)
        reply = await client.chat.completions.create(model="deepseek-reasoner", messages=[...])
"""

from .adapters import wrap
from .context import ContextCache, cached
from .errors import (
    CacheControlError,
    CodecError,
    ConfigError,
    PipelineStateError,
    PluginError,
    R1mwError,
    StreamIncomplete,
    UnencodableValueError,
    WrapError,
)
from .events import Event
from .hookspecs import hookimpl, hookspec
from .keys import key_of
from .pipeline import Pipeline
from .protocols import Codec, Embedder, Guard, Handler, Stage, Tier
from .settings import Settings
from .tiers import Entry
from .types import CacheControl, Choice, Delta, Reply, Request, StreamedReply, Usage

__version__ = "0.1.0"

__all__ = [
    "CacheControl",
    "CacheControlError",
    "Choice",
    "Codec",
    "CodecError",
    "ConfigError",
    "ContextCache",
    "Delta",
    "Embedder",
    "Entry",
    "Event",
    "Guard",
    "Handler",
    "Pipeline",
    "PipelineStateError",
    "PluginError",
    "R1mwError",
    "Reply",
    "Request",
    "Settings",
    "Stage",
    "StreamIncomplete",
    "StreamedReply",
    "Tier",
    "UnencodableValueError",
    "Usage",
    "WrapError",
    "cached",
    "hookimpl",
    "hookspec",
    "key_of",
    "wrap",
]
