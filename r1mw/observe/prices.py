"""Price table: what an upstream call would have cost, per model, in USD per token.

The default is DeepSeek's published API price list (api-docs.deepseek.com, "Models & Pricing",
USD, per 1M tokens) for DeepSeek-R1 (``deepseek-reasoner``) and V3 (``deepseek-chat``) as
published at R1's release (January 2025, standard-hours prices):

=================  =================  ==================  ==============
model              input, cache hit   input, cache miss   output
=================  =================  ==================  ==============
deepseek-reasoner  $0.14              $0.55               $2.19
deepseek-chat      $0.07              $0.27               $1.10
=================  =================  ==================  ==============

DeepSeek has since repointed these aliases at newer models and changed prices more than
once; ``R1MW_PRICES`` overrides (or adds) models::

    R1MW_PRICES='{"deepseek-reasoner": {"input": 0.28, "output": 0.42, "cached_input": 0.028}}'

Prices are in USD per million tokens. A model name is matched exactly, then without a
provider prefix (``deepseek/deepseek-reasoner``), then by the longest known prefix
(``deepseek-reasoner-0528``); an unknown model costs 0 (savings are then counted in tokens only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError
from ..types import Usage

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. ``cached_input`` is the provider's own prompt-cache price."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, usage: Usage) -> float:
        """USD an upstream call with this usage costs."""
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        return ((usage.prompt_tokens - cached) * self.input + cached * cached_price
                + usage.completion_tokens * self.output) / 1e6


DEFAULT_PRICES: Mapping[str, Price] = {
    "deepseek-reasoner": Price(input=0.55, output=2.19, cached_input=0.14),
    "deepseek-r1": Price(input=0.55, output=2.19, cached_input=0.14),
    "deepseek-chat": Price(input=0.27, output=1.10, cached_input=0.07),
}

_FREE = Price(0.0, 0.0, 0.0)


class PriceTable:
    """Model name -> :class:`Price`; the lookup per model name is resolved once and memoized."""

    def __init__(self, overrides: Mapping[str, Any] | None = None, *, defaults: Mapping[str, Price] = DEFAULT_PRICES) -> None:
        self.prices: dict[str, Price] = dict(defaults)
        for model, raw in (overrides or {}).items():
            self.prices[str(model)] = _parse(str(model), raw)
        self._resolved: dict[str, Price] = {}

    def price(self, model: str) -> Price:
        found = self._resolved.get(model)
        if found is None:
            found = self._resolve(model)
            if len(self._resolved) < 10_000:  # bounded: model names come from callers
                self._resolved[model] = found
        return found

    def known(self, model: str) -> bool:
        return self.price(model) is not _FREE

    def _resolve(self, model: str) -> Price:
        prices = self.prices
        for name in (model, model.rsplit("/", 1)[-1]):
            if name in prices:
                return prices[name]
        base = model.rsplit("/", 1)[-1]
        best = max((m for m in prices if base.startswith(m)), key=len, default=None)
        return prices[best] if best is not None else _FREE

    def cost(self, model: str, usage: Usage) -> float:
        return self.price(model).cost(usage)


def _parse(model: str, raw: Any) -> Price:
    allowed = '{"input": $/Mtok, "output": $/Mtok, "cached_input": $/Mtok (optional)}'
    if not isinstance(raw, Mapping) or "input" not in raw or "output" not in raw or set(raw) - {"input", "output", "cached_input"}:
        raise ConfigError(f"R1MW_PRICES[{model!r}]={raw!r} is invalid: expected {allowed}")
    try:
        values = {k: float(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"R1MW_PRICES[{model!r}]={raw!r} is invalid: expected numbers in {allowed}") from None
    if any(v < 0 or v != v for v in values.values()):
        raise ConfigError(f"R1MW_PRICES[{model!r}]={raw!r} is invalid: prices must be >= 0")
    return Price(values["input"], values["output"], values.get("cached_input"))
