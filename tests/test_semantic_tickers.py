"""learn_tickers: the tickers a stored question teaches when it is indexed are exactly the ones
its full analysis would teach (the stage calls it instead of analysing every stored question)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1mw.semantic import text as tx

EXAMPLES = [
    "Analyze AAPL with RSI(14)=71.2 and MACD crossing up; 2-week outlook?",
    "Convert 100 USD to EUR",
    "NO, the page does not exist",
    "NO the page does not exist",
    "YES, buy TSLA",
    "YES buy TSLA",
    "Is it NOT true that GDP grew in Q1?",
    "$AAPL vs MSFT's earnings, and AAPL's margin",
    "U.S. CPI and the ECB: what does the FOMC do?",
    "Stocks Close Higher On Fed Hopes AND NVDA",
    "ÉTÉ and ÀB are capitals too; so is ΑΒΓ",
    "World War II, Part IV, CVX and XL",
    "`AAPL` in a code span, ABCDEF is too long, A is too short",
]


def learned_by(fn, text: str) -> set[str]:
    saved = set(tx._SEEN_UPPER)
    tx._SEEN_UPPER.clear()
    try:
        fn(text)
        return set(tx._SEEN_UPPER)
    finally:
        tx._SEEN_UPPER.clear()
        tx._SEEN_UPPER.update(saved)


def full_analysis(text: str) -> None:
    tx.analyze.__wrapped__(text)  # not the memo: the analysis itself, with its side effect


@pytest.mark.parametrize("text", EXAMPLES)
def test_learns_what_the_analysis_learns(text):
    assert learned_by(tx.learn_tickers, text) == learned_by(full_analysis, text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["AAPL", "aapl", "NO", "no", "YES", "USD", "EUR", "NOT", "GDP", "Q1", "$5",
                                 "RSI(14)", "and", ",", "?", "IBM's", "ÀB", "X", "ABCDEF", "MAY", "5"]),
                max_size=12).map(" ".join))
def test_learns_what_the_analysis_learns_on_any_mix(text):
    assert learned_by(tx.learn_tickers, text) == learned_by(full_analysis, text)


def test_learns_what_the_analysis_learns_on_the_dev_pairs():
    path = Path(os.environ.get("R1MW_DEV_PAIRS", Path(__file__).parents[2] / "shared" / "data" / "dev_pairs.jsonl"))
    if not path.exists():
        pytest.skip(f"{path} not found")
    texts = []
    for line in path.read_text().splitlines()[:2000]:
        pair = json.loads(line)
        texts += [pair["a"], pair["b"]]
    for text in texts:
        assert learned_by(tx.learn_tickers, text) == learned_by(full_analysis, text), text
