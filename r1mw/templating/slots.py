"""Slot types: what a ``{slot:type}`` placeholder accepts and how its value is normalized.

Each type is a regex fragment (no capturing groups; it is spliced into the template's
pattern) and a ``normalize`` function that maps every accepted spelling of one value to one
canonical string, or returns None when the text is not a value of the type (the template
then does not match). Normalization only merges spellings of the *same* value
(``1,000`` / ``1k`` / ``1000.00``); two different values never normalize alike, and a
spelling two readers could take for two values (``1.000``: 1 or 1000) keys as written.
A canonical value is itself accepted by its type and normalizes to itself, so
``render(template, slots)`` matches back to the same slots.

Types: ``ticker``, ``number``, ``money``, ``percent``, ``date``, ``period`` (alias
``timeframe``), ``text`` (the default: any text, whitespace collapsed, case kept) and
``phrase`` (text compared without case, and with its currency amounts and comma-grouped
numbers compared by value: "a $50k long position in nvda" = "a $50,000 long position in
NVDA"; declare it for slots where case never changes the question).
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Callable

__all__ = ["SLOT_TYPES", "SlotType", "infer_type", "slot_type"]


@dataclass(frozen=True, slots=True)
class SlotType:
    """A slot type: ``pattern`` (regex fragment, case-insensitive, no capturing groups),
    ``normalize(text) -> canonical | None`` and ``display(canonical) -> text`` (how
    :meth:`render` writes a value; must normalize back to the same canonical value)."""

    name: str
    pattern: str
    normalize: Callable[[str], "str | None"]
    display: Callable[[str], str] = str


_WS = re.compile(r"\s+")


def _unname(src: str) -> str:
    return re.sub(r"\(\?P<\w+>", "(?:", src)


# -- numbers ----------------------------------------------------------------------------

_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "ninety": 90, "hundred": 100,
}
_WORD_RE = "|".join(sorted(_WORDS, key=len, reverse=True))
_SCALE = {"k": 3, "thousand": 3, "m": 6, "mm": 6, "mn": 6, "million": 6, "b": 9, "bn": 9, "billion": 9}
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_NUM_SRC = (rf"(?P<sign>[-+])?(?:(?P<digits>{_DIGITS})|(?P<word>{_WORD_RE}))"
            r"(?:\s?(?P<scale>thousand|million|billion|bn|mm|mn|k|m|b)(?![a-z]))?")
_NUM = re.compile(_NUM_SRC, re.I)


def _decimal_text(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _number_value(text: str) -> Decimal | None:
    m = _NUM.fullmatch(text.strip())
    if m is None:
        return None
    try:
        value = Decimal(m["digits"].replace(",", "")) if m["digits"] else Decimal(_WORDS[m["word"].lower()])
    except (InvalidOperation, KeyError):
        return None
    if m["scale"]:
        value = value.scaleb(_SCALE[m["scale"].lower()])
    return -value if m["sign"] == "-" else value


# "1.000" is 1 to a US reader and 1000 to a European one: a number written with exactly three
# decimals after a short integer part (not 0) keys as written, apart from both readings.
_AMBIGUOUS = re.compile(r"[-+]?[1-9]\d{0,2}\.\d{3}")


def _number(text: str) -> str | None:
    value = _number_value(text)
    if value is None:
        return None
    stripped = text.strip()
    if _AMBIGUOUS.fullmatch(stripped):
        return stripped.lstrip("+")
    return _decimal_text(value)


# -- money ----------------------------------------------------------------------------------

_CUR_SYM = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}
_CUR_WORD = {"usd": "USD", "dollars": "USD", "dollar": "USD", "eur": "EUR", "euros": "EUR", "euro": "EUR",
             "gbp": "GBP", "pounds": "GBP", "jpy": "JPY", "yen": "JPY", "chf": "CHF"}
_CUR_WORD_RE = "usd|dollars?|eur|euros?|gbp|pounds|jpy|yen|chf"
_MONEY_SRC = (rf"(?:(?P<sym>[$€£¥])\s?|(?P<pre>USD|EUR|GBP|JPY|CHF)\s)?(?P<amount>{_unname(_NUM_SRC)})"
              rf"(?:\s(?P<post>{_CUR_WORD_RE})(?![a-z]))?")
_MONEY = re.compile(_MONEY_SRC, re.I)


def _money_parts(text: str) -> tuple[str, str] | None:
    m = _MONEY.fullmatch(text.strip())
    if m is None:
        return None
    marks = {c for c in (_CUR_SYM.get(m["sym"] or ""), (m["pre"] or "").upper() or None,
                         _CUR_WORD.get((m["post"] or "").lower())) if c}
    if len(marks) > 1:  # "$50 EUR": contradictory, not a value we can name
        return None
    amount = _number(m["amount"])
    if amount is None:
        return None
    return (marks.pop() if marks else ""), amount


def _money(text: str) -> str | None:
    parts = _money_parts(text)
    if parts is None:
        return None
    currency, amount = parts
    # US dollars are the default currency: "$50,000", "50,000 dollars" and "50000" are one value.
    return amount if currency in ("", "USD") else f"{currency} {amount}"


def _money_display(value: str) -> str:
    return value if " " in value else f"${value}"


# -- percent ----------------------------------------------------------------------------

_PCT_SRC = rf"(?:(?P<half>half\s+a)|(?P<n>{_unname(_NUM_SRC)}))\s?(?:%|percent|per\s?cent|pct)(?![a-z])"
_PCT = re.compile(_PCT_SRC, re.I)


def _percent(text: str) -> str | None:
    m = _PCT.fullmatch(text.strip())
    if m is None:
        return None
    value = "0.5" if m["half"] else _number(m["n"])
    return None if value is None else f"{value}%"


# -- ticker -----------------------------------------------------------------------------

_TICKER_SRC = r"\$?[A-Za-z][A-Za-z0-9]{0,5}(?:[.\-/=][A-Za-z0-9]{1,4})?"
_TICKER = re.compile(_TICKER_SRC)


# Words that, written in lower case, are the English word and not the ticker with their letters:
# "Analyze it using RSI" analyzes what the conversation was about, not IT (Gartner); "on", "all",
# "now", "a" likewise. In capitals ("IT") or as a cashtag ("$it") they are the ticker.
_NOT_A_TICKER = frozenset("""a an the it its this that these those all any some each every both either
    one on in at to of for by from with into onto about over under up down out off as so or and but nor
    not no yes is are was were be been am do does did has have had can will may must shall would should
    could might i me my we us our you your he him his she her they them their who whom what which why
    how when where there here now then than too very just also only even still yet more most less
    same such other another own see go""".split()) | frozenset(
    # Commodities, written in lower case, are the commodity: "Predict movement for gold" is the
    # metal, not GOLD (a miner's ticker), and the two must not share a key.
    """gold silver platinum palladium copper oil crude gas gasoline corn wheat soy soybeans sugar
    coffee cocoa cotton lumber cattle hogs""".split())


def _ticker(text: str) -> str | None:
    text = text.strip()
    if not _TICKER.fullmatch(text):
        return None
    if text in _NOT_A_TICKER:  # lower case as written, no "$": the English word
        return None
    return text.lstrip("$").upper()


# -- dates ------------------------------------------------------------------------------

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_MONTHS["sept"] = 9
_MON_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_DATE_SRC = (
    r"(?P<iy>\d{4})[-/.](?P<im>\d{1,2})[-/.](?P<id>\d{1,2})"
    r"|(?P<um>\d{1,2})/(?P<ud>\d{1,2})/(?P<uy>\d{4})"
    rf"|(?P<ad>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<am>{_MON_RE})\.?,?\s+(?P<ay>\d{{4}})"
    rf"|(?P<bm>{_MON_RE})\.?\s+(?P<bd>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<by>\d{{4}})"
)
_DATE = re.compile(_DATE_SRC, re.I)


def _date(text: str) -> str | None:
    m = _DATE.fullmatch(text.strip())
    if m is None:
        return None
    try:
        if m["iy"]:
            y, mo, d = int(m["iy"]), int(m["im"]), int(m["id"])
        elif m["uy"]:  # 03/04/2024 is read the US way: March 4
            y, mo, d = int(m["uy"]), int(m["um"]), int(m["ud"])
        elif m["ay"]:
            y, mo, d = int(m["ay"]), _MONTHS[m["am"].lower()], int(m["ad"])
        else:
            y, mo, d = int(m["by"]), _MONTHS[m["bm"].lower()], int(m["bd"])
        return _dt.date(y, mo, d).isoformat()
    except (ValueError, KeyError):
        return None


# -- periods and timeframes ------------------------------------------------------------

_UNITS = {  # spelling -> canonical unit (case-insensitive, but for "M" / "m": see _period)
    "minute": "minute", "minutes": "minute", "min": "minute", "mins": "minute", "m": "minute",
    "hour": "hour", "hours": "hour", "hr": "hour", "hrs": "hour", "h": "hour",
    "day": "day", "days": "day", "d": "day",
    "trading day": "trading day", "trading days": "trading day", "session": "trading day",
    "sessions": "trading day",
    "week": "week", "weeks": "week", "wk": "week", "wks": "week", "w": "week",
    "month": "month", "months": "month", "mo": "month", "mos": "month",
    "quarter": "quarter", "quarters": "quarter", "q": "quarter",
    "year": "year", "years": "year", "yr": "year", "yrs": "year", "y": "year",
}
_ABBREV = frozenset(u for u in _UNITS if len(u) <= 3 and u not in ("day", "min"))
_UNIT_RE = "|".join(sorted((re.escape(u).replace(r"\ ", r"\s+") for u in _UNITS), key=len, reverse=True))
_ADVERB = {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month", "quarterly": "quarter",
           "yearly": "year", "annual": "year", "annually": "year", "intraday": "intraday"}
_DIRS = {"next": "next", "coming": "next", "upcoming": "next", "following": "next",
         "past": "past", "last": "past", "previous": "past", "prior": "past"}
_ORD = {"first": 1, "second": 2, "third": 3, "fourth": 4}
# "today's session" is not "today": the workload's ground truth tells them apart (the
# session may be over while the day is not), and a cache merges nothing the truth keeps apart.
_NAMED = {"today": "today", "today's session": "today's session", "tomorrow": "tomorrow", "this week": "this week",
          "this month": "this month", "this quarter": "this quarter", "this year": "this year",
          "year to date": "year to date", "ytd": "year to date", "year-to-date": "year to date"}
_NAMED_RE = "|".join(sorted((re.escape(n).replace(r"\ ", r"\s+") for n in _NAMED), key=len, reverse=True))
_PERIOD_SRC = (
    rf"(?P<named>{_NAMED_RE})"
    r"|(?:the\s+)?(?P<ord>first|second|third|fourth)\s+quarter\s+(?:of\s+)?(?P<oy>\d{4})"
    r"|(?:the\s+)?Q(?P<qn>[1-4])\s*(?:of\s+)?(?P<qy>\d{4})"
    r"|(?P<y1>(?:19|20)\d{2})\s*(?:-|–|to)\s*(?P<y2>(?:19|20)\d{2})"
    rf"|(?P<adv>{'|'.join(_ADVERB)})"
    rf"|(?:(?:the\s+)?(?P<dir>{'|'.join(_DIRS)})\s+)?(?:(?P<n>\d+(?:\.\d+)?|a|an|{_WORD_RE})[\s-]*)?"
    rf"(?P<unit>{_UNIT_RE})(?![a-z])"
)
_PERIOD = re.compile(_PERIOD_SRC, re.I)
# Exact conversions only: 60 minutes are an hour, 7 days a week, 3 months a quarter,
# 12 months or 4 quarters a year. (30 days are not a month; 24 hours are not a trading day.)
_UP = (("minute", 60, "hour"), ("day", 7, "week"), ("month", 12, "year"), ("month", 3, "quarter"),
       ("quarter", 4, "year"))


def _period(text: str) -> str | None:
    m = _PERIOD.fullmatch(text.strip())
    if m is None:
        return None
    if m["named"]:
        return _NAMED[_WS.sub(" ", m["named"].lower())]
    if m["ord"]:
        return f"Q{_ORD[m['ord'].lower()]} {m['oy']}"
    if m["qn"]:
        return f"Q{m['qn']} {m['qy']}"
    if m["y1"]:
        return None if int(m["y2"]) < int(m["y1"]) else f"{m['y1']}-{m['y2']}"
    if m["adv"]:
        unit = _ADVERB[m["adv"].lower()]
        return unit if unit == "intraday" else f"1 {unit}"
    raw_n = (m["n"] or "1").lower()
    n = Decimal(1) if raw_n in ("a", "an") else (Decimal(_WORDS[raw_n]) if raw_n in _WORDS else Decimal(raw_n))
    written = m["unit"]
    unit = _UNITS[_WS.sub(" ", written.lower())]
    if m["n"] is None and written.lower() in _ABBREV:
        return None  # "5m" and "1h" need their number: a bare "m" is not a period
    if written == "M":
        unit = "month"  # traders' "1M", "6M": months; "m" is the minute of a "5m" chart
    elif written == "m" and m["dir"]:
        # "the next 3m": minutes to a scalper, months to an investor. Its own value: it keys
        # apart from both readings (a lost hit at worst, never the other question's answer).
        return f"{_DIRS[m['dir'].lower()]} {_decimal_text(n)}m"
    for small, factor, big in _UP:
        if unit == small and n % factor == 0 and n > 0:
            n, unit = n / factor, big
    count = _decimal_text(n)
    text_out = f"{count} {unit}{'' if count == '1' else 's'}"
    return f"{_DIRS[m['dir'].lower()]} {text_out}" if m["dir"] else text_out


_UNIT_NAMES = frozenset(_UNITS.values())
_ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly", "quarter": "quarterly", "year": "yearly"}


def _period_display(value: str) -> str:
    head, _, rest = value.partition(" ")
    if head in ("next", "past"):
        if rest.startswith("1 "):
            rest = rest[2:]
        return f"the {head} {rest}"
    unit = rest[:-1] if rest.endswith("s") and rest[:-1] in _UNIT_NAMES else rest
    if unit in _UNIT_NAMES and head.replace(".", "", 1).isdigit():
        # A length with no direction is a bar size ("the 5-minute chart", "daily bars"):
        # written as traders write it, which reads back as the same value.
        if head == "1" and unit in _ADJECTIVE:
            return _ADJECTIVE[unit]
        if " " not in unit:
            return f"{head}-{unit}"
    return value


# -- text -----------------------------------------------------------------------------------


def _text(text: str) -> str | None:
    value = _WS.sub(" ", text).strip()
    return value or None


# A currency amount ("$50k", "$1.5 million", "$50,000") or a comma-grouped number ("1,000"):
# spellings of one value that a phrase compares by value. "3M" without a currency mark is
# left alone (it is also a company).
_PHRASE_AMOUNT = re.compile(
    r"(?<![\w.,])(?:[$€£¥]\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?(?:thousand|million|billion|bn|mm|mn|k|m|b)(?![a-z]))?"
    r"|\d{1,3}(?:,\d{3})+(?:\.\d+)?)(?![\w,]|\.\d)", re.I)


_NUMBER_M = re.compile(r"(?<![\w.,$€£¥])(\d+(?:\.\d+)?M)(?!\w)")


def _phrase(text: str) -> str | None:
    value = _text(text)
    if value is None:
        return None

    def amount(m: "re.Match[str]") -> str:
        token = m.group(0)
        if token[0].isdigit():
            return token.replace(",", "")
        normalized = _money(token)
        return m.group(0) if normalized is None else _money_display(normalized)

    # Case is folded, except in a number with a capital M: "3M" is three months (or the company
    # 3M), "3m" three minutes, as for the period type; "$3M" is an amount, compared by value.
    pieces = _NUMBER_M.split(value)
    folded = "".join(p if k % 2 else p.casefold() for k, p in enumerate(pieces))
    out = _PHRASE_AMOUNT.sub(amount, folded)
    if out != folded and _PHRASE_AMOUNT.sub(amount, out) != out:
        # Written out, an amount would read differently ("$5 mm mm" -> "$5000000 mm", a scale
        # again): keep the phrase as written, so that normalizing twice changes nothing.
        return folded
    return out


SLOT_TYPES: dict[str, SlotType] = {
    "text": SlotType("text", r".+?", _text),
    "phrase": SlotType("phrase", r".+?", _phrase),
    "ticker": SlotType("ticker", _TICKER_SRC, _ticker),
    "number": SlotType("number", _unname(_NUM_SRC), _number),
    "money": SlotType("money", _unname(_MONEY_SRC), _money, _money_display),
    "percent": SlotType("percent", _unname(_PCT_SRC), _percent),
    "date": SlotType("date", _unname(_DATE_SRC), _date),
    "period": SlotType("period", _unname(_PERIOD_SRC), _period, _period_display),
}
SLOT_TYPES["timeframe"] = SLOT_TYPES["period"]


def slot_type(name: str) -> SlotType:
    """The slot type called ``name``; KeyError names the allowed ones."""
    try:
        return SLOT_TYPES[name.strip().lower()]
    except KeyError:
        raise KeyError(f"unknown slot type {name!r}; allowed: {', '.join(sorted(SLOT_TYPES))}") from None


# Inference is strict: a value must look like the type *as written* (a ticker in capitals,
# money with a currency mark), so that ordinary words are never typed by accident.
_STRICT: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("percent", lambda v: _percent(v) is not None),
    ("money", lambda v: _money(v) is not None and bool(re.search(r"[$€£¥]|usd|eur|gbp|dollar|euro", v, re.I))),
    ("date", lambda v: _date(v) is not None),
    ("number", lambda v: _number(v) is not None and any(c.isdigit() for c in v)),
    ("ticker", lambda v: _ticker(v) is not None and v.strip().lstrip("$").isupper()
     and any(c.isalpha() for c in v)),
    ("period", lambda v: _period(v) is not None),
)


def infer_type(values: "list[str] | tuple[str, ...] | set[str]") -> str:
    """The first type every value parses as (strictly), else ``text``."""
    values = [v for v in values if isinstance(v, str)]
    if not values:
        return "text"
    for name, accepts in _STRICT:
        if all(accepts(v) for v in values):
            return name
    return "text"
