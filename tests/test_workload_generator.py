"""The workload generator: seeded, and its ground truth is consistent."""

from __future__ import annotations

import argparse
import random
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1mw.workload.generator import (
    Workload,
    WorkloadSpec,
    _perturb,
    _reformat_numbers,
    _styled,
    add_arguments,
    generate,
    spec_from_args,
)
from r1mw.workload.truth import Catalog

CAT = Catalog.load()
SMALL = WorkloadSpec(requests=400, sessions=12, analysts=5, seed=3)


@pytest.fixture(scope="module")
def workload() -> Workload:
    return generate(SMALL)


def test_same_seed_same_workload(workload: Workload) -> None:
    again = generate(SMALL)
    assert again.items == workload.items


def test_other_seed_other_workload(workload: Workload) -> None:
    other = generate(WorkloadSpec(requests=400, sessions=12, analysts=5, seed=4))
    assert [i.text for i in other.items] != [i.text for i in workload.items]


def test_a_desk_seed_keeps_the_analysts_habits_across_days() -> None:
    # Two days of one desk: other requests, the same analysts' usual strategy and horizon.
    spec = dict(requests=800, sessions=16, analysts=6, zipf=1.0)
    day1, day2 = (generate(WorkloadSpec(seed=s, desk_seed=11, **spec)) for s in (1, 2))
    other_desk = generate(WorkloadSpec(seed=2, desk_seed=12, **spec))
    assert [i.text for i in day1.items] != [i.text for i in day2.items]

    def usual(w: Workload) -> dict[str, str]:
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for item in w.items:
            found = CAT.match(item.text) if item.kind == "flow" and item.template_id == "predict_movement" else None
            if found is not None:
                counts[item.analyst][CAT.normalize("timeframe", found[1]["timeframe"])] += 1
        return {a: max(c, key=c.__getitem__) for a, c in counts.items()}

    assert usual(day1) == usual(day2) != usual(other_desk)
    assert generate(WorkloadSpec(seed=2, **spec)).items == generate(WorkloadSpec(seed=2, **spec)).items


def test_shape(workload: Workload) -> None:
    assert len(workload.items) == SMALL.requests
    assert [i.index for i in workload.items] == list(range(SMALL.requests))
    assert [i.t for i in workload.items] == sorted(i.t for i in workload.items)
    assert len({i.session for i in workload.items}) == SMALL.sessions
    kinds = {i.kind for i in workload.items}
    assert {"flow", "repeat", "near_miss"} <= kinds
    assert sum(i.reworded for i in workload.items) > 0
    for session in workload.sessions():
        assert len({i.analyst for i in session}) == 1
        assert [i.t for i in session] == sorted(i.t for i in session)


def test_every_label_is_what_the_judge_says(workload: Workload) -> None:
    for item in workload.items:
        assert CAT.identify(item.text) == item.question_id, item
        assert CAT.identify_messages(item.messages) == item.question_id, item


def test_another_persona_or_context_is_another_question() -> None:
    # The judge reads the whole request: a reply made for another system prompt or after
    # other turns answers another question, even with the same last user message.
    text = "Assess risk for a $50,000 long position in NVDA"
    usual = [{"role": "system", "content": CAT.templates["assess_risk"].system}, {"role": "user", "content": text}]
    qid = CAT.identify_messages(usual)
    assert qid == CAT.identify(text)
    other_persona = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": text}]
    analyst = [{"role": "system", "content": CAT.templates["analyze_strategy"].system}, usual[1]]
    later_turn = [*usual[:1], {"role": "user", "content": "We hedge with puts."},
                  {"role": "assistant", "content": "Noted."}, usual[1]]
    ids = {CAT.identify_messages(m) for m in (other_persona, analyst, later_turn)}
    assert len(ids) == 3 and qid not in ids
    assert CAT.identify_messages(usual[1:]) == qid  # a bare question: no context to tell apart
    assert CAT.identify_messages([{"role": "user", "content": "Write a limerick about NVDA"}]) == \
        CAT.identify("Write a limerick about NVDA")


def test_same_id_means_same_filled_template(workload: Workload) -> None:
    # Same id <=> same template and same slot values, modulo variants and equivalent renderings.
    canon_by_id: dict[str, set[tuple]] = defaultdict(set)
    for item in workload.items:
        found = CAT.match(item.text)
        if found is None:
            assert item.kind == "oneoff"
            continue
        tid, slots = found
        assert tid == item.template_id
        canon_by_id[item.question_id].add((tid, tuple(sorted((k, CAT.normalize(k, v)) for k, v in slots.items()))))
    assert all(len(forms) == 1 for forms in canon_by_id.values())
    # ... and distinct ids have distinct filled templates.
    all_forms = [next(iter(forms)) for forms in canon_by_id.values()]
    assert len(all_forms) == len(set(all_forms))


def test_session_flow_carries_the_ticker(workload: Workload) -> None:
    # analysis -> risk -> prediction on one ticker: the prediction that follows an analysis
    # in a session names the same symbol most of the time.
    same = total = 0
    for session in workload.sessions():
        flow = [i for i in session if i.kind == "flow"]
        for a, b in zip(flow, flow[1:]):
            if a.template_id == "analyze_strategy" and b.template_id == "assess_risk":
                total += 1
                sym = CAT.normalize("symbol", CAT.match(a.text)[1]["symbol"])
                same += sym.split("-")[0].split(" (")[0] in b.text.lower()
    assert total > 5 and same / total > 0.8


def test_near_misses_are_other_questions(workload: Workload) -> None:
    near = [i for i in workload.items if i.kind == "near_miss"]
    assert near
    asked_before: set[str] = set()
    for item in workload.items:
        if item.kind == "near_miss":
            assert item.near_id is not None and item.near_id != item.question_id
            assert item.near_id in asked_before  # it nearly repeats something asked earlier
        asked_before.add(item.question_id)


def test_repeats_are_byte_identical_to_an_earlier_request(workload: Workload) -> None:
    earlier: set[tuple[str | None, str]] = set()
    for item in workload.items:
        if item.kind == "repeat":
            assert (item.system, item.text) in earlier
        earlier.add((item.system, item.text))


def test_summary_counts(workload: Workload) -> None:
    s = workload.summary()
    assert s["requests"] == SMALL.requests
    assert s["distinct_questions"] == len({i.question_id for i in workload.items})
    assert sum(s["kinds"].values()) == SMALL.requests
    assert 0 < s["ceiling_hit_rate"] < 1


def test_bad_spec_is_refused() -> None:
    with pytest.raises(ValueError):
        WorkloadSpec(requests=0)
    with pytest.raises(ValueError):
        WorkloadSpec(repeat_share=0.6, near_miss_share=0.3, oneoff_share=0.2)


def test_flags_round_trip() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--requests", "50", "--near-miss-share", "0.2", "--seed", "11"])
    spec = spec_from_args(args)
    assert (spec.requests, spec.near_miss_share, spec.seed) == (50, 0.2, 11)
    assert spec.sessions == WorkloadSpec().sessions


# -- properties of the ground truth ---------------------------------------------------------------

templates = st.sampled_from(sorted(CAT.templates))


@st.composite
def filled(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    tid = draw(templates)
    slots = {s: draw(st.sampled_from(CAT.slot_values[s])) for s in CAT.templates[tid].slots}
    return tid, slots


@settings(max_examples=150, deadline=None)
@given(filled(), st.data())
def test_any_rewording_is_the_same_question(q: tuple[str, dict[str, str]], data: st.DataObject) -> None:
    tid, slots = q
    form = data.draw(st.integers(0, len(CAT.templates[tid].forms()) - 1))
    rendered = {}
    for slot, value in slots.items():
        options = list(CAT.renderings(slot, value)) + [_reformat_numbers(value)]
        rendered[slot] = data.draw(st.sampled_from(options))
    styles = data.draw(st.lists(st.sampled_from(["case", "spacing", "punctuation", "polite"]), max_size=4))
    text = _styled(CAT.render(tid, rendered, form), styles, random.Random(data.draw(st.integers(0, 999))))
    assert CAT.identify(text) == CAT.question_id(tid, slots) == CAT.identify(CAT.render(tid, slots))


@settings(max_examples=150, deadline=None)
@given(filled(), st.data())
def test_one_slot_changed_is_another_question(q: tuple[str, dict[str, str]], data: st.DataObject) -> None:
    tid, slots = q
    slot = data.draw(st.sampled_from(sorted(slots)))
    changed = _perturb(slot, slots[slot], CAT.slot_values[slot], random.Random(data.draw(st.integers(0, 999))))
    if changed is None or CAT.normalize(slot, changed) == CAT.normalize(slot, slots[slot]):
        return  # no other value for this slot (a listed equivalent is the same question)
    other = {**slots, slot: changed}
    assert CAT.identify(CAT.render(tid, other)) != CAT.identify(CAT.render(tid, slots))


def test_equivalent_renderings_and_number_formats() -> None:
    a = CAT.render("position_sizing", {"account_size": "$100,000", "risk_pct": "1%", "stock": "AAPL",
                                       "stop_pct": "5%"})
    b = CAT.render("position_sizing", {"account_size": "$100k", "risk_pct": "one percent", "stock": "Apple (AAPL)",
                                       "stop_pct": "5%"}, form=2)
    c = CAT.render("position_sizing", {"account_size": "$100,000", "risk_pct": "2%", "stock": "AAPL",
                                       "stop_pct": "5%"})
    assert CAT.identify(a) == CAT.identify(b) != CAT.identify(c)
    assert CAT.identify("Assess risk for a $50,000 long position in NVDA") == \
        CAT.identify("please assess risk for a $50k long position in nvda, thanks")
    assert CAT.identify("Assess risk for a $50,000 long position in NVDA") != \
        CAT.identify("Assess risk for a $50,000 short position in NVDA")


def test_unmatched_text_gets_a_text_id() -> None:
    qid = CAT.identify("Write a limerick about NVDA")
    assert qid.startswith("text/")
    assert qid == CAT.identify("  write a limerick about nvda? ")


def test_python_m_r1mw_workload_prints_the_summary_without_a_warning() -> None:
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-W", "error", "-m", "r1mw.workload", "--summary", "--requests", "60"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["requests"] == 60
