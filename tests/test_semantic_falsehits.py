"""False hits an adversarial review found through the real pipeline (real offline model, default
threshold and guards): two requests that ask different questions, the second answered with the
reply to the first. Each pair must miss; a rewording of the same question must still hit."""

from __future__ import annotations

import pytest

import r1mw
from r1mw.testing import FakeR1

import semantic_helpers
from semantic_helpers import M, content, q

pytestmark = pytest.mark.anyio

FALSE_HITS = [
    # a one-letter ticker or designator read as the article "a" or a contraction's "t"/"d"
    ("Is A a good dividend stock?", "Is it a good dividend stock?"),
    ("Explain Regulation T", "Explain Regulation D"),
    ("Explain Reg T", "Explain Reg D"),
    # "whether" asks if it happened, "why" presumes it did
    ("Explain why AAPL fell today", "Explain whether AAPL fell today"),
    # a mark after a word is part of the name: a language, a credit rating notch
    ("What's the C++ equivalent of a Python list?", "What's the C# equivalent of a Python list?"),
    ("What's the difference between C and C++?", "What's the difference between C and C#?"),
    ("What does a BBB rating mean?", "What does a BBB+ rating mean?"),
    ("What does a BBB- rating mean?", "What does a BBB+ rating mean?"),
    # an operator is a fact like a number
    ("Is x > 5?", "Is x < 5?"),
    ("Is AAPL > MSFT in market cap?", "Is AAPL < MSFT in market cap?"),
    ("Filter rows where price >= 100", "Filter rows where price <= 100"),
    ("Filter rows where price > 100", "Filter rows where price >= 100"),
    ("Filter rows where price != 100", "Filter rows where price == 100"),
    ("What is 5 - 3?", "What is 5 + 3?"),
    ("Compute 3 * 4", "Compute 3 + 4"),
    ("Compute 7 / 2", "Compute 7 // 2"),
    ("What is 5 × 3?", "What is 5 ÷ 3?"),
    # a question or request with several words put in place of others, the frame unchanged
    ("Explain the tax treatment of covered calls for retail investors",
     "Explain the accounting treatment of covered calls for institutional traders"),
    ("Write a summary of the latest FOMC minutes focusing on inflation and labor markets",
     "Write a critique of the latest FOMC minutes focusing on growth and housing markets"),
    ("What are good books about value investing for beginners?",
     "What are good podcasts about growth investing for professionals?"),
    ("What is the best way to backtest a momentum strategy in Python with pandas?",
     "What is the best way to backtest a mean reversion strategy in Python with polars?"),
    ("Write a python function that computes the sharpe ratio of a return series using daily data and a risk-free "
     "rate, with docstrings, type hints and unit tests",
     "Write a python class that computes the sharpe ratio of a return series using daily data and a risk-free "
     "rate, with docstrings, type hints and integration tests"),
    ("Write a python function that computes the sharpe ratio of a return series using daily prices and a "
     "risk-free rate, with docstrings, type hints and unit tests",
     "Write a python function that computes the sharpe ratio of a return series using daily returns and a "
     "risk-free rate, with docstrings, type hints and unit tests, vectorized"),
    ("Write a detailed report on Apple's quarterly revenue covering services growth, hardware margins, regional "
     "sales and key risks, formatted as bullet points",
     "Write a detailed report on Apple's quarterly expenses covering services growth, hardware margins, regional "
     "sales and key risks, formatted as numbered paragraphs"),
    ("I need a summary of the latest FOMC minutes focusing on inflation and labor markets",
     "I need a critique of the latest FOMC minutes focusing on growth and housing markets"),
    ("Here is our quarterly memo: demand was solid in retail and soft in wholesale, margins held up and inventories "
     "normalized. Summarize the outlook for investors.",
     "Here is our quarterly memo: demand was solid in retail and soft in wholesale, wages held up and inventories "
     "normalized. Summarize the outlook for employees."),
    # ... or with details added at two places
    ("Write a python function that computes the sharpe ratio of a return series using daily data and a risk-free "
     "rate, with docstrings, type hints and unit tests",
     "Write a recursive python function that computes the sharpe ratio of a return series using daily data and a "
     "risk-free rate, with docstrings, type hints and unit tests, parallelized"),
    ("Write a python function that computes the sharpe ratio of a return series using daily data and a risk-free "
     "rate, with docstrings, type hints and unit tests",
     "Write a python function that computes the rolling sharpe ratio of a return series using daily data and a "
     "risk-free rate, with docstrings, type hints and unit tests for edge cases"),
    ("Describe the main risks of holding leveraged ETFs for long periods, including volatility decay, gap risk and "
     "tracking error, for a retail investor",
     "Describe the main tax risks of holding leveraged ETFs for long periods, including volatility decay, gap risk "
     "and tracking error, for a young retail investor"),
    ("Describe the main risks of holding leveraged ETFs for long periods, including volatility decay, gap risk and "
     "tracking error, for a retail investor",
     "Describe the main risks of holding leveraged ETFs for long periods in a margin account, including volatility "
     "decay, gap risk and tracking error, for a large pension fund"),
    ("Explain the tax treatment of covered calls for retail investors in Canada",
     "Explain the tax treatment of covered calls on dividend growth stocks for retail investors in Canada during "
     "retirement"),
]


async def ask_both(stored: str, asked: str) -> tuple[FakeR1, dict, dict]:
    fake = FakeR1()
    async with semantic_helpers.pipeline() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q(stored))
        reply = await llm(model=M, messages=q(asked))
        sem = pipe.stats()["stages"]["semantic"]
    return fake, reply, sem


@pytest.mark.parametrize("stored,asked", FALSE_HITS, ids=[f"{a} / {b}" for a, b in FALSE_HITS])
async def test_a_near_miss_is_not_served_the_stored_reply(stored, asked):
    fake, reply, sem = await ask_both(stored, asked)
    assert content(reply) == fake.answer_for(asked)
    assert len(fake.calls) == 2 and sem["hits"] == 0


SAME = [
    ("Explain Regulation T", "Can you explain Regulation T?"),
    ("What does a BBB+ rating mean?", "what does a BBB+ rating mean"),
    ("Is x > 5?", "is x > 5"),
    ("What are good books about value investing for beginners?",
     "What are some good books on value investing for a beginner?"),
    # an acronym against its words is no substitution
    ("Compute the 1-day 99% value at risk for a 60/40 stock/bond portfolio",
     "Estimate 1-day VaR at 99% confidence for a 60/40 stock/bond portfolio"),
]


@pytest.mark.parametrize("stored,asked", SAME, ids=[f"{a} / {b}" for a, b in SAME])
async def test_the_same_question_reworded_is_still_served(stored, asked):
    fake, reply, sem = await ask_both(stored, asked)
    assert content(reply) == fake.answer_for(stored)
    assert len(fake.calls) == 1 and sem["hits"] == 1


def templated(**settings):
    from r1mw.templating import BUNDLED

    settings.setdefault("stages", "template,exact,semantic")
    settings.setdefault("templates", str(BUNDLED))
    return semantic_helpers.pipeline(**settings)


TEMPLATE_FALSE_HITS = [
    # a ticker slot took a pronoun for a ticker: "it" is the stock of the earlier turn, IT is Gartner
    ("Analyze IT using RSI", "Analyze it using RSI"),
    ("Predict movement for ON over the next week", "Predict movement for on over the next week"),
    # a commodity in lower case is the commodity, not the ticker with its letters
    ("Predict movement for GOLD over the next week", "Predict movement for gold over the next week"),
    ("Analyze OIL using RSI", "Analyze oil using RSI"),
]


@pytest.mark.parametrize("stored,asked", TEMPLATE_FALSE_HITS, ids=[f"{a} / {b}" for a, b in TEMPLATE_FALSE_HITS])
async def test_a_word_in_a_ticker_slot_is_not_the_ticker_with_its_letters(stored, asked):
    earlier = [{"role": "user", "content": "What does NVDA make?"},
               {"role": "assistant", "content": "NVDA designs GPUs."}]
    fake = FakeR1()
    async with templated() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=[*earlier, {"role": "user", "content": stored}])
        reply = await llm(model=M, messages=[*earlier, {"role": "user", "content": asked}])
    assert content(reply) == fake.answer_for(asked)
    assert len(fake.calls) == 2


async def test_a_ticker_slot_still_takes_a_ticker_in_lower_case():
    from r1mw.templating import BUNDLED

    async with r1mw.Pipeline(r1mw.Settings(stages="template,exact", tiers="l1", templates=str(BUNDLED),
                                           cache_dir=semantic_helpers.os.environ["R1MW_CACHE_DIR"])) as pipe:
        registry = pipe.services["templates"]
        assert registry.match("Analyze aapl using RSI") == registry.match("Analyze AAPL using RSI")
        assert registry.match("Analyze $it using RSI") == registry.match("Analyze IT using RSI")
        assert registry.match("Analyze IT using RSI") == ("analyze_strategy", {"symbol": "IT", "strategy": "rsi"})
        assert registry.match("Analyze it using RSI") is None


PHRASE_PAIRS = [
    # a phrase slot folds case, but "3M" (three months, or the company) is not "3m" (three minutes)
    ("Analyze AAPL using 3M momentum", "Analyze AAPL using 3m momentum"),
    ("How is AAPL likely to react to a 3M earnings miss?", "How is AAPL likely to react to a 3m earnings miss?"),
]


@pytest.mark.parametrize("stored,asked", PHRASE_PAIRS, ids=[f"{a} / {b}" for a, b in PHRASE_PAIRS])
async def test_a_phrase_slot_keeps_a_capital_m_after_a_number(stored, asked):
    fake = FakeR1()
    async with templated() as pipe:
        await pipe.wait_ready()
        llm = r1mw.wrap(fake, pipe)
        await llm(model=M, messages=q(stored))
        reply = await llm(model=M, messages=q(asked))
        same = await llm(model=M, messages=q(stored.upper().replace("USING", "using")))  # case elsewhere: one key
    assert content(reply) == fake.answer_for(asked)
    assert content(same) == fake.answer_for(stored)
    assert len(fake.calls) == 2
