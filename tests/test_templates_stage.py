"""The template stage in the pipeline: one key per templated request, annotations for the
stages after it, unmatched prompts untouched, the registry published as a service."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import r1mw
import r1mw.templating
from r1mw.templating import BUNDLED, Template
from r1mw.testing import FakeR1

pytestmark = pytest.mark.anyio


def settings_(**kw):
    """Settings for a test: keyword settings ignore the environment, so pass the test's own
    cache dir (the autouse fixture's R1MW_CACHE_DIR), never the user's ~/.cache."""
    kw.setdefault("cache_dir", os.environ["R1MW_CACHE_DIR"])
    # RAM only: hypothesis examples share the test's cache dir, a disk tier would carry over.
    kw.setdefault("tiers", "l1")
    return r1mw.Settings(**kw)


def pipeline(**kw):
    kw.setdefault("templates", str(BUNDLED))
    return r1mw.Pipeline(settings_(stages="template,exact", **kw))


def user(text):
    return [{"role": "user", "content": text}]


async def test_variants_of_one_request_make_one_upstream_call():
    fake = FakeR1()
    spellings = [
        "Calculate the position size for a $25,000 account risking 1% per trade on AAPL with a 5% stop-loss",
        "calculate the position size for a $25k account risking 1 percent per trade on aapl with a 5% stop-loss.",
        "Calculate  the position size for a 25000 dollars account risking one percent per trade on $AAPL "
        "with a 5.0% stop-loss?",
        "With a $25,000.00 account, 1% risk per trade and a 5 percent stop-loss, how big should my AAPL position be?",
        "How many shares of Aapl can I trade with a $25K account if I risk 1% per trade and use a 5% stop-loss?",
    ]
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        replies = [await llm(model="deepseek-reasoner", messages=user(s)) for s in spellings]
        stats = pipe.stats()
    assert len(fake.calls) == 1
    assert {r["choices"][0]["message"]["content"] for r in replies} == {fake.answer_for(spellings[0])}
    assert stats["hits"] == 4
    assert stats["stages"]["template"]["by_template"] == {"position_sizing": 5}


async def test_different_slot_values_never_share_a_key():
    fake = FakeR1()
    prompts = [
        "Calculate the position size for a $25,000 account risking 1% per trade on AAPL with a 5% stop-loss",
        "Calculate the position size for a $25,000 account risking 1% per trade on AAPL with a 3% stop-loss",
        "Calculate the position size for a $25,000 account risking 2% per trade on AAPL with a 5% stop-loss",
        "Calculate the position size for a $100,000 account risking 1% per trade on AAPL with a 5% stop-loss",
        "Calculate the position size for a $25,000 account risking 1% per trade on MSFT with a 5% stop-loss",
        "Predict movement for AAPL over the next week",
        "Predict movement for AAPL over the past week",
        "Predict movement for AAPL over the next month",
        "Give me a long trade plan for NVDA on the daily chart with entry, stop and target",
        "Give me a short trade plan for NVDA on the daily chart with entry, stop and target",
    ]
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        for p in prompts:
            reply = await llm(model="m", messages=user(p))
            assert reply["choices"][0]["message"]["content"] == fake.answer_for(p)
    assert len(fake.calls) == len(prompts)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["1,000", "1000", "1k", "1000.00", "1,000.0", "1K"]),
       st.sampled_from(["", " ", "  "]), st.booleans())
def test_number_formats_spacing_and_case_give_one_key(number, pad, upper):
    async def run():
        fake = FakeR1()
        reg = [Template("size", "Assess risk for {n:number} shares of {s:ticker}")]

        class Plugin:
            @r1mw.hookimpl
            def r1mw_register_templates(self, pipeline):
                return reg

        async with r1mw.Pipeline(settings_(stages="template,exact"), plugins=[Plugin()]) as pipe:
            llm = r1mw.wrap(fake, pipe)
            await llm(model="m", messages=user("Assess risk for 1000 shares of TSLA"))
            if upper:
                text = f"{pad}assess RISK for {number}{pad} shares of tsla"
            else:
                text = f"Assess risk for {number} shares of TSLA{pad}"
            await llm(model="m", messages=user(text))
            await llm(model="m", messages=user("Assess risk for 1001 shares of TSLA"))
        return len(fake.calls)

    assert asyncio.run(run()) == 2


async def test_meta_annotations_and_stored_meta():
    seen = {}

    class Spy:
        name = "spy"

        async def handle(self, request, call_next):
            seen.update(request.meta)
            return await call_next(request)

    class Plugin:
        @r1mw.hookimpl
        def r1mw_register_stages(self):
            return {"spy": lambda pipeline: Spy()}

    messages = [{"role": "system", "content": "You are a risk manager."},
                {"role": "user", "content": "Predict movement for AAPL over the coming week"}]
    async with r1mw.Pipeline(settings_(stages="template,spy,exact", templates=str(BUNDLED)),
                             plugins=[Plugin()]) as pipe:
        await r1mw.wrap(FakeR1(), pipe)(model="m", messages=messages)
        entry, _ = await pipe.store.get(r1mw.key_of("", "m", seen["key_messages"], {}))
    assert seen["template_id"] == "predict_movement"
    assert seen["slots"] == {"symbol": "AAPL", "timeframe": "next 1 week"}
    assert seen["key_messages"][0] == messages[0]  # the system prompt stays in the key
    assert seen["key_messages"][1] == {"role": "r1mw:template",
                                       "content": 'tpl:predict_movement|symbol="AAPL"|timeframe="next 1 week"'}
    assert seen["store_meta"] == {"template_id": "predict_movement", "slots": seen["slots"]}
    assert entry.meta["template_id"] == "predict_movement"


async def test_system_prompt_and_model_still_separate_keys():
    fake = FakeR1()
    q = "Predict movement for AAPL over the next week"
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=user(q))
        await llm(model="m", messages=[{"role": "system", "content": "Be brief."}, *user(q)])
        await llm(model="other", messages=user(q))
        await llm(model="m", messages=user(q), temperature=0.2)
    assert len(fake.calls) == 4


async def test_a_templated_prompt_keeps_the_other_fields_of_its_message_in_the_key():
    # "What was my biggest loss" from Alice is not Bob's question: re-keying the message by
    # its template must not drop its author.
    fake = FakeR1()
    q = "Predict movement for AAPL over the next week"
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        for name in ("alice", "bob", "alice"):
            await llm(model="m", messages=[{"role": "user", "content": q, "name": name}])
        await llm(model="m", messages=[{"role": "user", "content": "predict movement for aapl over the next week", "name": "bob"}])
    assert len(fake.calls) == 2


async def test_canonical_form_never_equals_a_prompt_a_user_could_type():
    fake = FakeR1()
    q = "Predict movement for AAPL over the next week"
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=user(q))
        await llm(model="m", messages=user('tpl:predict_movement|symbol="AAPL"|timeframe="next 1 week"'))
    assert len(fake.calls) == 2


async def test_unmatched_prompts_pass_through_unchanged():
    seen = []

    async def upstream(**kwargs):
        seen.append(kwargs["messages"])
        return await FakeR1()(**kwargs)

    messages = [{"role": "user", "content": "  Tell me a joke about bonds  "}]
    async with pipeline() as pipe:
        llm = r1mw.wrap(upstream, pipe)
        await llm(model="m", messages=messages)
        await llm(model="m", messages=[{"role": "user", "content": "Tell me a joke about bonds"}])
        stats = pipe.stats()["stages"]["template"]
    assert seen[0] == messages  # untouched, whitespace included
    assert len(seen) == 2  # unmatched prompts keep their exact (raw) keys
    assert stats["unmatched"] == 2 and stats["matched"] == 0


async def test_matched_request_reaches_the_upstream_as_written():
    seen = []

    async def upstream(**kwargs):
        seen.append(kwargs["messages"][-1]["content"])
        return await FakeR1()(**kwargs)

    async with pipeline() as pipe:
        await r1mw.wrap(upstream, pipe)(model="m", messages=user("analyze  aapl using VWAP reversion"))
    assert seen == ["analyze  aapl using VWAP reversion"]


async def test_services_publish_match_and_render():
    async with pipeline() as pipe:
        templates = pipe.services["templates"]
        text = templates.render("predict_movement", {"symbol": "NVDA", "timeframe": "the next 7 days"})
        assert text == "Predict movement for NVDA over the next week"
        assert templates.match(text) == ("predict_movement", {"symbol": "NVDA", "timeframe": "next 1 week"})
        assert templates.match("hello") is None


async def test_templates_from_code_and_file_together_and_duplicates_refused():
    class Plugin:
        @r1mw.hookimpl
        def r1mw_register_templates(self, pipeline):
            return ["Explain {topic} like I am five",
                    {"id": "fx", "template": "Convert {amount:money} to {currency}"}]

    fake = FakeR1()
    async with r1mw.Pipeline(settings_(stages="template,exact", templates=str(BUNDLED)),
                             plugins=[Plugin()]) as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=user("Convert $1,000 to EUR"))
        await llm(model="m", messages=user("convert 1k dollars to EUR"))
        assert pipe.services["templates"].match("Explain options like I am five") == (
            "Explain {topic} like I am five", {"topic": "options"})
        assert len(pipe.services["templates"]) == 16
    assert len(fake.calls) == 1

    class Dup:
        @r1mw.hookimpl
        def r1mw_register_templates(self, pipeline):
            return [{"id": "assess_risk", "template": "Risk of {x}"}]

    with pytest.raises(r1mw.ConfigError, match="assess_risk"):
        async with r1mw.Pipeline(settings_(stages="template,exact", templates=str(BUNDLED)), plugins=[Dup()]):
            pass


async def test_streamed_and_plain_requests_share_the_templated_key():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        stream = await llm(model="m", messages=user("Assess risk for 500 shares of AAPL"), stream=True)
        async for _ in stream:
            pass
        await asyncio.sleep(0.01)  # the store runs when the stream completes
        reply = await llm(model="m", messages=user("assess risk for 500 shares of AAPL."))
    assert len(fake.calls) == 1
    assert reply["choices"][0]["message"]["content"].strip() == fake.answer_for("Assess risk for 500 shares of AAPL")


_TRADING = r1mw.templating.load_file(BUNDLED)
_EXAMPLES = __import__("json").loads(BUNDLED.read_text())["slots"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(_TRADING), st.data())
def test_rewordings_and_spelling_noise_of_a_bundled_request_make_one_call(template, data):
    from r1mw.templating.template import parse_pattern

    values = {name: data.draw(st.sampled_from(_EXAMPLES[name])) for name in template.slots}
    texts = []
    for _ in range(3):
        pattern = data.draw(st.sampled_from((template.text, *template.variants)))
        text = "".join(p if isinstance(p, str) else values[p[0]] for p in parse_pattern(pattern))
        if data.draw(st.booleans()):
            text = text.replace(" ", "   ", 1)
        if data.draw(st.booleans()) and not pattern.startswith("{"):
            text = text[0].swapcase() + text[1:]
        texts.append(text.rstrip("?.") + data.draw(st.sampled_from(["", ".", "?"])))

    async def run():
        fake = FakeR1()
        async with pipeline() as pipe:
            llm = r1mw.wrap(fake, pipe)
            for text in texts:
                await llm(model="deepseek-reasoner", messages=user(text))
        return len(fake.calls)

    assert asyncio.run(run()) == 1, texts


async def test_multipart_and_non_user_messages_pass_through():
    fake = FakeR1()
    parts = [{"role": "user", "content": [{"type": "text", "text": "Predict movement for AAPL over the next week"}]}]
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=parts)
        await llm(model="m", messages=[{"role": "system", "content": "Predict movement for AAPL over the next week"}])
        stats = pipe.stats()["stages"]["template"]
    assert stats["matched"] == 0 and len(fake.calls) == 2


async def test_a_template_mined_later_does_not_strand_entries_stored_before_it():
    fake = FakeR1()
    first = [{"role": "user", "content": "Summarize the earnings call of ACME for the third quarter"}]
    async with r1mw.Pipeline(settings_(stages="template,exact", template_mine_min=3)) as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=first)
        for company in ("GLOBEX", "INITECH", "UMBRELLA", "HOOLI", "STARK"):
            await llm(model="m", messages=[{"role": "user", "content":
                      f"Summarize the earnings call of {company} for the third quarter"}])
        assert pipe.stage("template").miner.mined, "the shape should have been mined by now"
        calls = len(fake.calls)
        await llm(model="m", messages=first)  # stored before the template existed: still a hit
        assert len(fake.calls) == calls


async def test_courtesy_around_a_templated_request_shares_its_key_and_never_its_values():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        plain = "Predict movement for AAPL over the next week"
        await llm(model="m", messages=[{"role": "user", "content": plain}])
        for polite in ("Hey, could you predict movement for AAPL over the next week? thanks!",
                       "When you get a chance, predict movement for AAPL over the next week. Cheers",
                       "Quick one: Predict movement for AAPL over the next week, thank you so much"):
            await llm(model="m", messages=[{"role": "user", "content": polite}])
        assert len(fake.calls) == 1
        await llm(model="m", messages=[{"role": "user", "content":
                  "Hey, could you predict movement for MSFT over the next week? thanks!"}])
        await llm(model="m", messages=[{"role": "user", "content":
                  "Please predict movement for AAPL over the next month, thanks"}])
        assert len(fake.calls) == 3  # another ticker, another period: other questions


async def test_courtesy_a_trailing_slot_swallowed_or_a_variant_starting_with_can_you_still_shares_the_key():
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=[{"role": "user", "content": "Analyze MSFT using RSI(14) mean reversion"}])
        await llm(model="m", messages=[{"role": "user", "content": "Assess risk for 500 shares of AAPL"}])
        for polite in ("MSFT: give me an analysis based on RSI(14) mean reversion cheers",  # {strategy} + cheers
                       "Can you analyze MSFT with RSI(14) mean reversion?, cheers",  # the variant starts "Can you"
                       "can you analyze msft with rsi(14) mean reversion please",
                       "I'd like you to assess risk for 500 shares of AAPL",
                       "Assess risk for 500 shares of AAPL. please"):
            await llm(model="m", messages=[{"role": "user", "content": polite}])
        assert len(fake.calls) == 2
        # What is left after the courtesy is still read whole: another strategy is another question.
        await llm(model="m", messages=[{"role": "user", "content":
                  "Can you analyze MSFT with RSI(14) mean reversion with a trailing stop?, cheers"}])
        assert len(fake.calls) == 3


@pytest.mark.parametrize("month,minute", [
    ("What are the key support and resistance levels for AAPL on the 1M chart?",
     "What are the key support and resistance levels for AAPL on the 1-minute chart?"),
    ("Compare AAPL's performance with the S&P 500 over the past 6M",
     "Compare AAPL's performance with the S&P 500 over the past 6 minutes"),
    ("Predict movement for AAPL over the next 3M", "Predict movement for AAPL over the next 3 minutes"),
    ("What is AAPL's current RSI(14) reading on the 1M chart and what does it signal?",
     "What is AAPL's current RSI(14) reading on the 1-minute chart and what does it signal?"),
])
async def test_a_month_written_1M_never_gets_the_reply_for_a_minute(month, minute):
    stats = await asked_apart(month, minute)
    assert stats["stages"]["template"]["matched"]  # both keyed by the template stage


async def asked_apart(first, second):
    """Ask ``first`` then ``second``: the second must get its own answer (two upstream calls)."""
    fake = FakeR1()
    async with pipeline() as pipe:
        llm = r1mw.wrap(fake, pipe)
        await llm(model="m", messages=user(first))
        reply = await llm(model="m", messages=user(second))
        stats = pipe.stats()
    assert reply["choices"][0]["message"]["content"] == fake.answer_for(second)
    assert len(fake.calls) == 2
    return stats


@pytest.mark.parametrize("first,second", [
    ("Assess risk for 500 shares of TY", "Assess risk for 500 shares of PLS"),
    ("Assess risk for a $50,000 long position in TY", "Assess risk for a $50,000 long position in PLS"),
])
async def test_tickers_that_spell_courtesy_words_never_share_a_key(first, second):
    await asked_apart(first, second)
