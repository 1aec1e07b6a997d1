"""``litellm.acompletion``: a hit returns LiteLLM's own ``ModelResponse`` (or a stream of
``ModelResponseStream`` chunks), like a miss does, with ``reasoning_content`` where LiteLLM
carries it and ``_hidden_params["cache_hit"] = True`` as LiteLLM marks its own cache hits."""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Awaitable, Callable, Iterator

from ..pipeline import Pipeline
from ..types import Reply
from .base import call_through, make_upstream
from .callable import DictNative
from .shapes import built_chunks, chunk_dicts, dict_of_reply, reply_of_dict

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

    def __init__(self) -> None:
        litellm = _litellm()
        self._response = litellm.ModelResponse
        self._chunk = litellm.ModelResponseStream

    def to_reply(self, obj: Any) -> Reply:
        return reply_of_dict(obj.model_dump() if hasattr(obj, "model_dump") else obj, self.kind)

    def from_reply(self, reply: Reply) -> Any:
        response = self._response(**dict_of_reply(reply))
        response._hidden_params["cache_hit"] = True
        return response

    def replay_chunks(self, reply: Reply, include_usage: bool) -> Iterator[Any]:
        cls = self._chunk
        return built_chunks(lambda c: cls(**c), chunk_dicts(reply, include_usage=include_usage))

    def rebuilds(self, reply: Reply) -> bool:
        # Not checked (a rebuild costs 25 us): a miss is LiteLLM's own ModelResponse, or
        # assembled from its own chunks, so what it carries passed this very constructor.
        return True


def wrap_litellm(fn: Callable[..., Awaitable[Any]], pipe: Pipeline) -> Callable[..., Awaitable[Any]]:
    if not inspect.iscoroutinefunction(inspect.unwrap(fn)):
        raise TypeError(f"r1mw.wrap() needs litellm.acompletion, not the synchronous {getattr(fn, '__name__', fn)}")
    native = LiteLLMNative()
    upstream = make_upstream(native, fn)
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None

    @functools.wraps(fn)
    async def acompletion(*args: Any, **kwargs: Any) -> Any:
        if args:  # litellm.acompletion(model, messages, ...): bind as LiteLLM itself would
            if signature is None:
                kwargs.update(zip(("model", "messages"), args))
            else:
                kwargs = dict(signature.bind_partial(*args, **kwargs).arguments)
                kwargs.update(kwargs.pop("kwargs", None) or {})  # its own **kwargs catch-all
        return await call_through(pipe, native, upstream, kwargs)

    acompletion.__r1mw_pipeline__ = pipe  # type: ignore[attr-defined]
    return acompletion
