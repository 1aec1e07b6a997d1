"""Hardening: slot normalization must never merge two values a reader could take apart.

"1.000" is 1 to a US reader and 1000 to a European one: it keys on its own, apart from both
(a missed hit at worst). Numbers without that ambiguity still merge their spellings.
"""

from __future__ import annotations

import pytest

from r1mw.templating.slots import SLOT_TYPES


@pytest.mark.parametrize("kind", ["number", "money", "percent"])
def test_a_three_decimal_number_that_may_be_thousands_keys_on_its_own(kind):
    normalize = SLOT_TYPES[kind].normalize
    suffix = "%" if kind == "percent" else ""
    ambiguous = normalize("1.000" + suffix)
    assert ambiguous is not None
    assert ambiguous != normalize("1" + suffix) and ambiguous != normalize("1000" + suffix)
    assert normalize(ambiguous) == ambiguous  # a canonical value normalizes to itself
    assert normalize("2.500" + suffix) not in (normalize("2.5" + suffix), normalize("2500" + suffix))


def test_numbers_without_the_ambiguity_still_merge_their_spellings():
    number = SLOT_TYPES["number"].normalize
    assert number("1.50") == number("1.5") == "1.5"
    assert number("0.500") == number("0.5")  # no thousands group starts with 0
    assert number("1,000") == number("1k") == number("1000") == "1000"
    assert number("1.0000") == number("1")  # four decimals: no thousands reading
    assert number("-1.000") not in (number("-1"), number("-1000"))
