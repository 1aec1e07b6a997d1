"""Similarity thresholds calibrated per embedding model (``benchmarks/semantic.py --calibrate``).

The threshold only decides which candidates reach the guards; the guards decide what is served.
So the calibrated value is the lowest threshold at which, with every built-in guard on, the dev
pairs show no false hit on the cache-specific near misses and false hits stay well under 1 % of
all ``different`` pairs, while the paraphrase hit rate is as high as that allows.
``SIMILARITY_THRESHOLD`` set by the user always wins.
"""

from __future__ import annotations

__all__ = ["CALIBRATED_THRESHOLDS", "UNCALIBRATED_THRESHOLD", "threshold_for"]

CALIBRATED_THRESHOLDS: dict[str, float] = {
    # model name (as Model2VecEmbedder.model_name reports it) -> threshold
    "tokenlearn-static-model": 0.82,
}

UNCALIBRATED_THRESHOLD = 0.95
"""For a model nobody calibrated: what users had in their .env (cautious)."""


def threshold_for(model: str, user_value: float | None) -> tuple[float, str]:
    """(threshold, where it came from): the user's value, the calibrated one, or the fallback."""
    if user_value is not None:
        return float(user_value), "SIMILARITY_THRESHOLD"
    if model in CALIBRATED_THRESHOLDS:
        return CALIBRATED_THRESHOLDS[model], f"calibrated for {model}"
    return UNCALIBRATED_THRESHOLD, f"uncalibrated default ({model} has no calibrated value)"
