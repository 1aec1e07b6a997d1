"""The miner's per-prompt memos (tokens, and the cluster a prompt last repeated) are
shortcuts only: a miner using them learns exactly what one that recomputes everything learns."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from r1mw.templating import Miner, TemplateRegistry

SHAPES = [
    "What is the P/E ratio of {} for {}?",
    "Analyze {} with RSI(14)={} and MACD crossing up",
    "Summarize the {} earnings call of {}",
    "Compare {} and {} on free cash flow",
]
VALUES = ["AAPL", "MSFT", "NVDA", "TSLA", "Q1", "Q2", "71.2", "30", "the bank", "Apple Inc"]

prompts = st.lists(
    st.tuples(st.integers(0, len(SHAPES) - 1), st.sampled_from(VALUES), st.sampled_from(VALUES)).map(
        lambda t: SHAPES[t[0]].format(t[1], t[2])),
    min_size=1, max_size=60,
)


def state(miner: Miner, registry: TemplateRegistry) -> object:
    clusters = [(c.tokens, c.folded, c.count, {i: sorted(v) for i, v in c.values.items()}, c.gap)
                for c in miner._clusters.values()]
    return (miner.stats(), clusters, sorted((t.id, t.text, dict(t.slots)) for t in registry))


@settings(max_examples=60, deadline=None)
@given(prompts, st.integers(2, 4), st.sampled_from([2, 3, 1000]))
def test_memoized_miner_learns_what_a_fresh_computation_learns(texts, min_support, max_clusters):
    # Few clusters allowed: they are evicted while their prompts keep coming.
    fast_registry, slow_registry = TemplateRegistry(), TemplateRegistry()
    fast = Miner(fast_registry, min_support=min_support, max_clusters=max_clusters)
    slow = Miner(slow_registry, min_support=min_support, max_clusters=max_clusters)
    for text in texts * 2:  # every prompt repeats: the memos are used
        slow._splits.clear()
        slow._homes.clear()
        got = fast.observe(text)
        want = slow.observe(text)
        assert (got.text if got else None) == (want.text if want else None)
        assert state(fast, fast_registry) == state(slow, slow_registry)
