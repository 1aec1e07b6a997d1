"""Slot types: every spelling of one value normalizes alike; different values never do."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1mw.templating import SLOT_TYPES, infer_type

SAME = {
    "ticker": [("aapl", "AAPL"), ("$AAPL", "AAPL"), ("brk.b", "BRK.B"), ("BTC-USD", "BTC-USD")],
    "number": [("1,000", "1000"), ("1k", "1000"), ("1000.00", "1000"), ("1000", "1000"), ("1.5M", "1500000"),
               ("twelve", "12"), ("-0", "0"), (".50", "0.5"), ("2 billion", "2000000000")],
    "money": [("$50,000", "50000"), ("50000", "50000"), ("$50k", "50000"), ("50,000 dollars", "50000"),
              ("$1M", "1000000"), ("$1 million", "1000000"), ("USD 5", "5"), ("€50", "EUR 50"), ("50 euros", "EUR 50")],
    "percent": [("0.5%", "0.5%"), ("half a percent", "0.5%"), ("1 percent", "1%"), ("one percent", "1%"),
                ("2.0 %", "2%"), ("5 pct", "5%")],
    "date": [("2024-03-15", "2024-03-15"), ("03/15/2024", "2024-03-15"), ("15 March 2024", "2024-03-15"),
             ("March 15th, 2024", "2024-03-15"), ("Mar 15 2024", "2024-03-15"), ("2024/3/5", "2024-03-05")],
    "period": [("the next week", "next 1 week"), ("the coming week", "next 1 week"), ("the next 7 days", "next 1 week"),
               ("the next three months", "next 1 quarter"), ("the next twelve months", "next 1 year"),
               ("the next year", "next 1 year"), ("5-minute", "5 minutes"), ("5m", "5 minutes"), ("5-min", "5 minutes"),
               ("hourly", "1 hour"), ("60-minute", "1 hour"), ("1h", "1 hour"), ("four-hour", "4 hours"),
               ("daily", "1 day"), ("1D", "1 day"), ("weekly", "1 week"), ("Q1 2024", "Q1 2024"),
               ("the first quarter of 2024", "Q1 2024"), ("2015-2020", "2015-2020"),
               ("the last 5 years", "past 5 years"),
               ("YTD", "year to date"), ("today's session", "today's session"), ("today", "today"),
               ("1M", "1 month"), ("6M", "2 quarters"), ("the past 6M", "past 2 quarters"),
               ("the next 3M", "next 1 quarter"), ("the next 3m", "next 3m")],
    "text": [("  RSI(14)   mean reversion ", "RSI(14) mean reversion")],
    "phrase": [("  RSI(14)   Mean Reversion ", "rsi(14) mean reversion"),
               ("a $50k long position in NVDA", "a $50000 long position in nvda"),
               ("a $50,000 long position in nvda", "a $50000 long position in nvda"),
               ("a short position of 1,000 TSLA shares", "a short position of 1000 tsla shares"),
               ("a $1.5M stake", "a $1500000 stake"),
               # a capital M after a number stays (months, or the company), as for periods
               ("3M stock", "3M stock"), ("3m Stock", "3m stock"), ("the 3M Momentum", "the 3M momentum"),
               ("$0.00 MM MM", "$0.00 mm mm")],  # would re-read "$0 mm" as a scale: kept as written
}

NOT_VALUES = {
    "ticker": ["Apple Inc", "TOOLONGNAME", "12"],
    "number": ["ten thousand-ish", "1,00", "abc"],
    "money": ["$50 EUR", "fifty bucks"],
    "percent": ["5", "percent"],
    "date": ["2024-02-30", "13/45/2024", "next Friday"],
    "period": ["m", "soonish", "2020-2015"],
    "text": ["   "],
    "phrase": ["   "],
}


@pytest.mark.parametrize("kind,raw,canonical", [(k, r, c) for k, pairs in SAME.items() for r, c in pairs])
def test_spellings_of_one_value_normalize_alike(kind, raw, canonical):
    t = SLOT_TYPES[kind]
    assert t.normalize(raw) == canonical
    assert re.fullmatch(t.pattern, raw, re.I | re.S), "the matcher must accept what normalize accepts"
    # The canonical value and its display form are values of the type and stay fixed.
    assert t.normalize(canonical) == canonical
    assert t.normalize(t.display(canonical)) == canonical


@pytest.mark.parametrize("kind,raw", [(k, r) for k, rs in NOT_VALUES.items() for r in rs])
def test_non_values_are_refused(kind, raw):
    assert SLOT_TYPES[kind].normalize(raw) is None


def test_different_values_stay_different():
    n = SLOT_TYPES["number"].normalize
    assert len({n("1000"), n("1001"), n("100"), n("1k"), n("1m"), n("-1000")}) == 5  # 1000 == 1k
    assert SLOT_TYPES["money"].normalize("$50") != SLOT_TYPES["money"].normalize("€50")
    ph = SLOT_TYPES["phrase"].normalize
    assert len({ph("a $50,000 long position"), ph("a $500,000 long position"), ph("a $50,000 short position"),
                ph("a $5,000 long position"), ph("a $50.5k long position"), ph("1,2345 shares")}) == 6
    p = SLOT_TYPES["period"].normalize
    assert p("the next week") != p("the past week")
    assert p("30 days") != p("1 month")  # not an exact conversion
    assert p("the next trading day") != p("the next day")


def _spellings(value: Decimal) -> list[str]:
    plain = format(value, "f")
    out = [plain, f"{value:,.2f}" if value == value.quantize(Decimal("0.01")) else plain]
    if value == value.to_integral_value() and value % 1000 == 0 and value:
        out.append(f"{value / 1000:f}k".replace(".0k", "k"))
    return out


@settings(max_examples=150, deadline=None)
@given(st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False, allow_infinity=False))
def test_number_and_money_spellings_share_one_value(value):
    number, money = SLOT_TYPES["number"].normalize, SLOT_TYPES["money"].normalize
    values = {number(s) for s in _spellings(value)}
    assert len(values) == 1 and None not in values
    assert Decimal(values.pop()) == value
    assert money("$" + _spellings(value)[-1]) == money(format(value, "f") + " dollars")


@settings(max_examples=100, deadline=None)
@given(st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
       st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False))
def test_number_normalization_is_injective(a, b):
    n = SLOT_TYPES["number"].normalize
    assert (n(format(a, "f")) == n(format(b, "f"))) == (a == b)


@settings(max_examples=100, deadline=None)
@given(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2099, 12, 31)))
def test_dates_in_every_format_become_iso(day):
    d = SLOT_TYPES["date"].normalize
    spellings = [day.isoformat(), day.strftime("%m/%d/%Y"), day.strftime("%d %B %Y"), day.strftime("%B %d, %Y"),
                 day.strftime("%b %d %Y")]
    assert {d(s) for s in spellings} == {day.isoformat()}


def test_inference_is_strict():
    assert infer_type(["AAPL", "MSFT"]) == "ticker"
    assert infer_type(["aapl", "MSFT"]) == "text"  # lower case: could be any word
    assert infer_type(["$25,000", "$1,000,000"]) == "money"
    assert infer_type(["25,000"]) == "number"
    assert infer_type(["0.5%", "2%"]) == "percent"
    assert infer_type(["2024-01-02"]) == "date"
    assert infer_type(["the next week", "today's session"]) == "period"
    assert infer_type(["long", "short"]) == "text"
    assert infer_type([]) == "text"


_PHRASE_WORDS = st.sampled_from(["a", "long", "position", "in", "NVDA", "mm", "MM", "k", "million", "$5", "$0.00",
                                 "$1,000", "1,000", "$2.5M", "3M", "shares", "$50k", "bn", ",", "."])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PHRASE_WORDS, min_size=1, max_size=8).map(" ".join))
def test_phrase_normalization_is_idempotent(text):
    once = SLOT_TYPES["phrase"].normalize(text)
    assert once is not None and SLOT_TYPES["phrase"].normalize(once) == once


@pytest.mark.parametrize("month,minute", [
    ("1M", "1-minute"), ("1M", "1m"), ("the past 6M", "the past 6 minutes"), ("the next 3M", "the next 3 minutes"),
    ("12M", "12m"),
])
def test_a_capital_m_after_a_number_is_a_month_never_a_minute(month, minute):
    # trader shorthand: 1M, 6M, 3M are months; a lower-case m is the minute of a "5m" chart
    p = SLOT_TYPES["period"].normalize
    assert p(month) != p(minute)
    assert "month" in p(month) or "quarter" in p(month) or "year" in p(month)


def test_a_lower_case_m_horizon_is_its_own_value():
    # "the next 3m": minutes to a scalper, months to an investor: neither reading's key
    p = SLOT_TYPES["period"].normalize
    assert p("the next 3m") not in {p("the next 3 minutes"), p("the next 3 months")}
    assert p("the next 3m") == p("the next 3m") == p("next 3m")
    assert p("5m") == p("5-minute") == "5 minutes"  # a chart interval keeps its minute
