"""The guards alone: examples per guard, and properties (hypothesis) that hold for any prompt."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import r1mw
from r1mw.semantic.guards import (
    BUILTIN_GUARDS,
    DirectionGuard,
    EditGuard,
    NegationGuard,
    NumberGuard,
    PeriodGuard,
    QuestionGuard,
    RoleGuard,
    SlotGuard,
    SymbolGuard,
    first_veto,
)
from r1mw.semantic.text import analyze, normalize_question

GUARDS = [cls() for cls in BUILTIN_GUARDS]


def allowed(a: str, b: str, info=None) -> bool:
    return first_veto(GUARDS, normalize_question(a), normalize_question(b), info or {}) is None


@pytest.mark.parametrize("a,b", [
    ("Buy 1,000 shares", "Buy 1000 shares"),
    ("Buy 1k shares", "Buy 1000.0 shares"),
    ("Revenue of $2M", "Revenue of $2,000,000"),
    ("Revenue of $2 million", "Revenue of $2M"),
    ("A 5% stop", "A 5 percent stop"),
    ("The 16th president", "The 16th president"),
])
def test_number_spellings_that_mean_the_same_pass(a, b):
    assert NumberGuard().allows(a, b, {})


@pytest.mark.parametrize("a,b", [
    ("Buy 100 shares", "Buy 1000 shares"),
    ("A 5% stop", "A 5 stop"),
    ("A 5% stop", "A 15% stop"),
    ("Revenue of $2M", "Revenue of $2B"),
    ("Move of -3%", "Move of 3%"),
    ("The first president", "The 16th president"),
    ("World War I began in", "World War II began in"),
    ("Blood pressure 115/75", "Blood pressure 190/125"),
    ("The third of three first-class hotels", "The first of three third-class hotels"),
    ("A 15m chart", "A 15h chart"),
])
def test_different_numbers_are_vetoed(a, b):
    assert not NumberGuard().allows(a, b, {})


@pytest.mark.parametrize("a,b,guard", [
    ("RSI of AAPL", "RSI of MSFT", SymbolGuard),
    ("Price of $TSLA", "Price of $NVDA", SymbolGuard),
    ("Convert 100 USD", "Convert 100 EUR", SymbolGuard),
    ("Price in dollars", "Price in euros", SymbolGuard),
    ("How to deploy on AWS Lambda?", "How to deploy on Google Cloud Functions?", SymbolGuard),
    ("Earnings in Q1", "Earnings in Q3", SymbolGuard),
    ("Sales in January", "Sales in February", PeriodGuard),
    ("Sales on Monday", "Sales on Friday", PeriodGuard),
    ("Sales last week", "Sales next week", PeriodGuard),
    ("Daily chart of the index", "Weekly chart of the index", PeriodGuard),
    ("Should I sell now?", "Should I not sell now?", NegationGuard),
    ("Can I deduct it?", "Can't I deduct it?", NegationGuard),
    ("Buy the dip", "Sell the dip", DirectionGuard),
    ("Go long on oil", "Go short on oil", DirectionGuard),
    ("Alert when price is above 50", "Alert when price is below 50", DirectionGuard),
    ("Is the trend up?", "Is the trend down?", DirectionGuard),
    ("Buy a call option", "Buy a put option", DirectionGuard),
    ("How to install the package", "How to uninstall the package", DirectionGuard),
    ("How to enable the firewall", "How to disable the firewall", DirectionGuard),
    ("What are the pros of covered calls?", "What are the cons of covered calls?", DirectionGuard),
    ("Given a portfolio of 60% stocks and 40% bonds held for retirement, suggest a conservative "
     "rebalancing plan for a patient investor over five years",
     "Given a portfolio of 60% stocks and 40% bonds held for retirement, suggest an aggressive "
     "rebalancing plan for a patient saver over five years", DirectionGuard),
    ("Is glass a solid?", "Why is glass a solid?", QuestionGuard),
    ("How does compounding work?", "How much does compounding earn?", QuestionGuard),
    ("Convert USD to EUR", "Convert EUR to USD", RoleGuard),
    ("Flights from Paris to Rome", "Flights from Rome to Paris", RoleGuard),
    ("Is gold more volatile than silver?", "Is silver more volatile than gold?", RoleGuard),
    ("dog bites man", "man bites dog", RoleGuard),
    ("Is the field optional?", "Is the field mandatory?", NegationGuard),
    ("Should I buy AAPL with leverage?", "Should I buy AAPL?", EditGuard),
    ("Flag it as a conductor", "Flag it as a non-conductor", NegationGuard),
    ("Side effects of ibuprofen", "Side effects of aspirin", EditGuard),
    ("What is the largest organ", "What is the largest internal organ", EditGuard),
])
def test_each_near_miss_is_vetoed_by_its_guard(a, b, guard):
    assert not guard().allows(a, b, {})
    assert not allowed(a, b)
    assert not allowed(b, a)  # guards are symmetric


@pytest.mark.parametrize("a,b", [
    ("What is the RSI of AAPL on the daily chart?", "what's the RSI for AAPL on the daily chart"),
    ("Explain the difference between a stock and a bond", "Explain the difference between stocks and bonds"),
    ("How do I reset my password?", "How can I reset my password?"),
    ("The function is used to create a new table", "The function creates a new table"),
    ("Flights from Boston to Denver", "Flights to Denver from Boston"),
    # courtesy: "can you explain" is a request, not a yes/no question (the question guard vetoed it)
    ("Explain how call options work", "Can you explain how call options work?"),
    ("Could you please explain why AAPL fell today?", "Explain why AAPL fell today"),
    ("The encode function tokenizes batches of examples in a dataset.",
     "The encode function is used to tokenize the batches of examples in a dataset."),
])
def test_rewordings_pass(a, b):
    assert allowed(a, b), first_veto(GUARDS, a, b, {})


@pytest.mark.parametrize("a,b,guard", [
    ("The parameter is optional and defaults to True.", "The parameter is not mandatory and defaults to True.",
     NegationGuard),
    ("How much RAM does the model need?", "How much Random Access Memory does the model need?", SymbolGuard),
    ("Show the RSI of AAPL", "Show the relative strength index of AAPL", SymbolGuard),
    ("Revenue in Q1", "Revenue in Q1", PeriodGuard),
])
def test_a_guard_lets_equivalent_spellings_through(a, b, guard):
    # the edit guard may still refuse a one-word change: these only check the guard itself
    assert guard().allows(a, b, {}) and guard().allows(b, a, {})


def test_slots_must_match_when_both_requests_have_them():
    g = SlotGuard()
    same = {"asked_slots": {"t": "AAPL"}, "stored_slots": {"t": "AAPL"},
            "asked_template": "x", "stored_template": "x"}
    assert g.allows("a", "b", same)
    assert not g.allows("a", "b", {**same, "stored_slots": {"t": "MSFT"}})
    assert not g.allows("a", "b", {**same, "stored_template": "y"})
    assert g.allows("a", "b", {})  # no template stage: nothing to compare


def test_a_guard_that_raises_vetoes():
    class Broken:
        name = "broken"

        def allows(self, asked, stored, info):
            raise RuntimeError("bug")

    assert first_veto([Broken()], "a", "a", {}) == "broken!error"


def test_builtin_guards_satisfy_the_protocol():
    assert all(isinstance(g, r1mw.Guard) for g in GUARDS)
    assert len({g.name for g in GUARDS}) == len(GUARDS)


def test_analysis_of_a_huge_prompt_is_bounded():
    facts = analyze("buy 5 AAPL " * 200_000)
    assert facts.numbers and len(facts.text) <= 1 << 20


# -- properties ---------------------------------------------------------------------------

WORDS = st.sampled_from("the price of stock will close at market index bond yield for on and report "
                        "daily chart trend show me what is how explain AAPL MSFT".split())
NUMBER = st.one_of(st.integers(min_value=0, max_value=10**9),
                   st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False).map(
                       lambda x: round(x, 2)))


def spell(value: float | int) -> str:
    return str(value) if isinstance(value, int) or value != int(value) else str(int(value))


@settings(max_examples=150, deadline=None)
@given(st.lists(WORDS, min_size=2, max_size=12), NUMBER, NUMBER, st.integers(min_value=0, max_value=12))
def test_changing_any_number_never_passes_the_number_guard(words, x, y, at):
    if float(x) == float(y):
        return
    at = min(at, len(words))
    a = " ".join([*words[:at], spell(x), *words[at:]])
    b = " ".join([*words[:at], spell(y), *words[at:]])
    assert not NumberGuard().allows(a, b, {})
    assert not allowed(a, b)


@settings(max_examples=100, deadline=None)
@given(st.lists(WORDS, min_size=2, max_size=12), st.integers(min_value=1, max_value=10**7),
       st.integers(min_value=0, max_value=12))
def test_thousands_separators_and_trailing_zeros_do_not_change_a_number(words, n, at):
    at = min(at, len(words))
    a = " ".join([*words[:at], f"{n:,}", *words[at:]])
    b = " ".join([*words[:at], f"{n}.0", *words[at:]])
    assert NumberGuard().allows(a, b, {})


TICKERS = st.sampled_from(["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "META", "GOOGL", "SPY", "QQQ", "BRK.B"])


@settings(max_examples=100, deadline=None)
@given(st.lists(WORDS, min_size=2, max_size=10), TICKERS, TICKERS, st.integers(min_value=0, max_value=10))
def test_changing_a_ticker_never_passes(words, t1, t2, at):
    if t1 == t2:
        return
    at = min(at, len(words))
    a = " ".join([*words[:at], t1, *words[at:]])
    b = " ".join([*words[:at], t2, *words[at:]])
    assert not allowed(a, b)


@settings(max_examples=100, deadline=None)
@given(st.lists(WORDS, min_size=1, max_size=10), st.integers(min_value=0, max_value=10))
def test_inserting_a_negation_never_passes(words, at):
    at = min(at, len(words))
    a = " ".join(words)
    b = " ".join([*words[:at], "not", *words[at:]])
    assert not allowed(a, b)


@settings(max_examples=100, deadline=None)
@given(st.lists(WORDS, min_size=0, max_size=6), TICKERS, TICKERS)
def test_swapping_the_two_sides_of_a_conversion_never_passes(words, x, y):
    if x == y:
        return
    head = " ".join(words)
    assert not allowed(f"{head} convert {x} to {y}", f"{head} convert {y} to {x}")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_allowed_against_itself_and_never_raises(text):
    t = normalize_question(text)
    assert allowed(t, t)


def test_a_ticker_written_in_lower_case_is_still_a_ticker_once_seen_in_capitals():
    from r1mw.semantic.guards import SymbolGuard
    from r1mw.semantic.text import analyze

    analyze("Analyze AAPL using RSI(14) mean reversion")  # traffic shows AAPL and TSLA as tickers
    analyze("Analyze TSLA using RSI(14) mean reversion")
    guard = SymbolGuard()
    assert not guard.allows("run a rsi(14) mean reversion analysis on aapl",
                            "analyze tsla using rsi(14) mean reversion!", {})
    assert not guard.allows("what's your prediction for tsla over the next week?",
                            "what's your prediction for apple (aapl) over the next week?", {})
    assert guard.allows("run a rsi(14) mean reversion analysis on aapl",
                        "analyze AAPL using RSI(14) mean reversion", {})
