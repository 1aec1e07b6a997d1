"""``litellm.acompletion``: a hit returns LiteLLM's own ``ModelResponse`` (or a stream of
``ModelResponseStream`` chunks), like a miss does, with ``reasoning_content`` where LiteLLM
carries it, always a ``usage`` (zeros when the stored reply had none), and ``_hidden_params``
as LiteLLM's own cache hits have them (``cache_hit``, ``custom_llm_provider``,
``response_cost`` 0.0), so ``litellm.completion_cost(hit)`` works."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Mapping
from typing import Any, Awaitable, Callable, Iterator

from ..pipeline import Pipeline
from ..types import Reply, Request
from .base import call_through, make_upstream
from .callable import DictNative
from .shapes import built_chunks, chunk_dicts, dict_of_reply, reply_of_dict
from ..errors import WrapError

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
        self._get_llm_provider = litellm.get_llm_provider
        self._providers: dict[str, str | None] = {}

    def to_reply(self, obj: Any) -> Reply:
        return reply_of_dict(obj.model_dump() if hasattr(obj, "model_dump") else obj, self.kind)

    def from_reply(self, reply: Reply, request: Request | None = None) -> Any:
        data = dict_of_reply(reply)
        if "usage" not in data:  # (a reply stored from a stream without usage) as LiteLLM always has one
            data["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        response = self._response(**data)
        # As LiteLLM's own cache hits: litellm.completion_cost() and the loggers read these.
        hidden = response._hidden_params
        provider = self._provider(request.model) if request is not None else None
        if provider is not None:
            hidden["custom_llm_provider"] = provider
        hidden["response_cost"] = 0.0
        hidden["cache_hit"] = True
        return response

    def _provider(self, model: str) -> str | None:
        # litellm.get_llm_provider takes 23 us: once per model name.
        providers = self._providers
        if model in providers:
            return providers[model]
        try:
            provider = self._get_llm_provider(model=model)[1]
        except Exception:  # a model LiteLLM does not know by name (its call passed a provider)
            provider = None
        if len(providers) >= 1024:
            providers.clear()
        providers[model] = provider
        return provider

    def replay_chunks(self, reply: Reply, include_usage: bool) -> Iterator[Any]:
        cls = self._chunk
        return built_chunks(lambda c: cls(**c), chunk_dicts(reply, include_usage=include_usage))

    def rebuilds(self, reply: Reply) -> bool:
        # Not checked (a rebuild costs 25 us): a miss is LiteLLM's own ModelResponse, or
        # assembled from its own chunks, so what it carries passed this very constructor.
        return True


def wrap_litellm(fn: Callable[..., Awaitable[Any]], pipe: Pipeline) -> Callable[..., Awaitable[Any]]:
    if not inspect.iscoroutinefunction(inspect.unwrap(fn)):
        raise WrapError(f"r1mw.wrap() needs litellm.acompletion, not the synchronous {getattr(fn, '__name__', fn)}")
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
        if kwargs.get("caching") is False:
            # LiteLLM's own per-call switch: this call is neither answered from a cache nor
            # stored (caching=False still reaches LiteLLM, for its own cache if it has one).
            control = kwargs.get("cache")
            if control is None or isinstance(control, Mapping):
                kwargs["cache"] = {**(control or {}), "no-cache": True, "no-store": True}
        return await call_through(pipe, native, upstream, kwargs)

    acompletion.__r1mw_pipeline__ = pipe  # type: ignore[attr-defined]
    return acompletion
