"""``litellm.acompletion``: a hit returns LiteLLM's own ``ModelResponse`` (or a stream of
``ModelResponseStream`` chunks), like a miss does."""

from __future__ import annotations

import functools
import os
from typing import Any, Awaitable, Callable, Iterator

from ..pipeline import Pipeline
from ..types import Reply
from .base import call_through, make_upstream
from .callable import DictNative
from .shapes import chunk_dicts, dict_of_reply, reply_of_dict

__all__ = ["LiteLLMNative", "is_litellm_callable", "wrap_litellm"]


def is_litellm_callable(target: Any) -> bool:
    return (getattr(target, "__module__", "") or "").startswith("litellm")


def _litellm() -> Any:
    # Importing litellm fetches a price map over the network unless told not to.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


class LiteLLMNative(DictNative):
    kind = "litellm"

    def to_reply(self, obj: Any) -> Reply:
        return reply_of_dict(obj.model_dump() if hasattr(obj, "model_dump") else obj, self.kind)

    def from_reply(self, reply: Reply) -> Any:
        return _litellm().ModelResponse(**dict_of_reply(reply))

    def replay_chunks(self, reply: Reply, include_usage: bool) -> Iterator[Any]:
        cls = _litellm().ModelResponseStream
        return (cls(**c) for c in chunk_dicts(reply, include_usage=include_usage))


def wrap_litellm(fn: Callable[..., Awaitable[Any]], pipe: Pipeline) -> Callable[..., Awaitable[Any]]:
    native = LiteLLMNative()
    upstream = make_upstream(native, fn)

    @functools.wraps(fn)
    async def acompletion(*args: Any, **kwargs: Any) -> Any:
        if args:  # litellm.acompletion(model, messages, ...) positional form
            for name, value in zip(("model", "messages"), args):
                kwargs[name] = value
        return await call_through(pipe, native, upstream, kwargs)

    acompletion.__r1mw_pipeline__ = pipe  # type: ignore[attr-defined]
    return acompletion
