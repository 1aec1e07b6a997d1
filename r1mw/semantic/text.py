"""What the guards know about a prompt: its words, numbers, symbols, periods, negations, roles.

:func:`analyze` turns a text into a :class:`Facts` value once (memoized): the guards compare two
of them. Everything here is plain lexical analysis, general English and finance conventions;
nothing is fitted to a data set.

>>> analyze("Buy 1,000 AAPL at $190.5 above the 50-day average").numbers
(('', 190.5), ('', 1000.0), ('day', 50.0))
>>> sorted(analyze("Convert 100 USD to EUR").currencies)
['eur', 'usd']
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from . import lexicon as lx

__all__ = ["Facts", "analyze", "directions_of", "embedding_text", "learn_tickers", "normalize_question", "stem",
           "written_as_ticker"]

MAX_ANALYZED_CHARS = 1 << 20

_TIME_UNIT = r"(?:seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|weeks?|wks?|months?|quarters?|years?|yrs?|decades?)"
_WORD = re.compile(r"[$€£¥₹₿₩]?[^\W_][\w'’.\-/]*[\w]|[$€£¥₹₿₩]?[^\W_]|`[^`]{1,200}`", re.UNICODE)
# A number with its optional currency sign, sign, thousands separators ("1,000,000", or dots
# when there are two groups or more: "1.000.000"), decimals (".5" too), exponent ("1e3") and
# suffix (multiplier "k/M/bn/million", "%", a unit stuck to it like "15m", an ordinal "16th").
# What it cannot read ("15.03.2024", "1.2.3") is compared as written: see _digit_shapes.
_NUMBER = re.compile(
    r"(?<![\w.])(?P<cur>[$€£¥₹₿₩])?\s?(?P<sign>(?<![\w\-])[-+−])?"
    r"(?:(?P<int>\d{1,3}(?:,\d{3})+|\d{1,3}(?:\.\d{3}){2,}|\d+)(?P<dec>\.\d+)?|(?P<lead>\.\d+))"
    r"(?![\d,]*\.\d)(?P<exp>[eE][-+]?\d{1,3}(?!\w|\.\d))?"
    r"(?:\s?(?P<mult>k|K|thousand|M|mm|mn|mln|million|bn|B|billion|tn|T|trillion)\b"
    r"|\s?(?P<pct>%|percent\b|per\s?cent\b|pct\b|bps\b|basis points\b)"
    r"|(?P<unit>[a-zA-Z°µ]+)"
    # or joined by a hyphen: "50-day", "3-month", "10-K" (the unit is the question: 10-K vs 10-Q),
    # or a time unit after a space ("50 days"), so that every spelling of "50-day" agrees
    r"|-(?P<hunit>[a-zA-Z]+)|\s(?P<sunit>" + _TIME_UNIT + r")\b)?",
)
# Roman numerals II..XXXIX only ("World War II", "Part IV"): larger ones read like tickers (CVX, CL, XL).
_ROMAN = re.compile(r"\b(?=[XVI]{2,}\b)X{0,3}(IX|IV|V?I{0,3})\b")
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
_SENTENCE_END = re.compile(r"[.!?:;\"“(\[]\s*$")
# Light words: "X is used to Y" says "X does Y"; "it is possible to Y" says "you can Y".
_LIGHT = frozenset({"us", "possibl", "abl"})
_CLITICS = frozenset({"s", "re", "ve", "ll", "d", "m"})
_ORDINAL = frozenset({"st", "nd", "rd", "th"})
_SPACE = re.compile(r"\s+")


_SUPERSCRIPT = re.compile("[⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻]+")
_SUPERSCRIPT_DIGITS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻", "0123456789+-")


def normalize_question(text: str) -> str:
    """The form that is embedded, indexed and compared: valid UTF-8 (lone surrogates replaced),
    superscript digits as an exponent ("10²" -> "10^2"), NFKC, whitespace collapsed, trimmed."""
    if not isinstance(text, str):
        text = str(text)
    text = text.encode("utf-8", "replace").decode("utf-8")
    if _SUPERSCRIPT.search(text):
        # NFKC folds "10²" into "102", another number: keep the exponent visible ("10^2")
        text = _SUPERSCRIPT.sub(lambda m: "^" + m.group(0).translate(_SUPERSCRIPT_DIGITS), text)
    text = unicodedata.normalize("NFKC", text)
    return _SPACE.sub(" ", text).strip()


_DIRECTIONS: dict[str, tuple[tuple[int, int], ...]] = {}
for _axis, (_plus, _minus) in enumerate(lx.DIRECTION_AXES):
    for _sign, _words in ((1, _plus), (-1, _minus)):
        for _w in _words:
            _DIRECTIONS[_w] = (*_DIRECTIONS.get(_w, ()), (_axis, _sign))


def directions_of(word: str) -> tuple[tuple[int, int], ...]:
    """(axis, +1/-1) of a lower-case word or of the parts of a hyphenated one."""
    found = _DIRECTIONS.get(word)
    if found is None and "-" in word:
        found = tuple(d for part in word.split("-") for d in _DIRECTIONS.get(part, ()))
    return found or ()


def written_as_ticker(word: str) -> bool:
    """True when some prompt analysed so far wrote ``word`` (lower case) as a ticker in capitals."""
    return word in _SEEN_UPPER


def embedding_text(question: str) -> str:
    """What the embedder sees: the normalized question in lower case. The offline model is
    cased ("Explain call options" / "explain call options" score 0.48); case never changes a
    question, and the guards still read the original."""
    return question.lower()


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light suffix stripper: enough to match "tokenize/tokenizes/tokenized/tokenizing"."""
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    w = w.strip("'")
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith("sses"):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if len(w) >= 6 and w.endswith("ing") and any(c in "aeiouy" for c in w[:-3]):
        w = w[:-3]
        if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":
            w = w[:-1]  # "running" -> "run"
    elif len(w) >= 5 and w.endswith("ed") and w[-3] != "e":  # not "need", "speed"
        w = w[:-2]
        if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":
            w = w[:-1]  # "stopped" -> "stop"
    if len(w) > 2 and w.endswith("e"):
        w = w[:-1]
    if len(w) > 3 and w.endswith("i"):
        w = w[:-1] + "y"  # "specified" -> "specify"
    return w


@dataclass(frozen=True, slots=True)
class Facts:
    """The comparable facts of one prompt (all lower case)."""

    text: str
    words: tuple[str, ...]            # every word token, lower case, in order
    content: tuple[str, ...]          # content words (no function words), synonyms folded, stemmed
    raw_content: tuple[str, ...]      # the same words stemmed, synonyms not folded
    numbers: tuple[tuple[str, float], ...]   # sorted (unit, value); "%" for percentages
    number_order: tuple[float, ...]   # the values in order of appearance
    currencies: frozenset[str]        # ISO-ish codes: "$5" -> usd, "euros" -> eur
    symbols: frozenset[str]           # tickers, identifiers, proper names (lower case)
    periods: frozenset[str]           # months, weekdays, quarters, "last week", "daily", ...
    negations: int                    # count of negating words
    directions: tuple[tuple[int, int], ...]  # (axis, +1/-1) mentioned
    qtype: str | None                 # what/why/how/how-much/when/where/who/yesno, None = statement
    roles: tuple[tuple[str, str], ...]       # (word, role preposition) pairs, e.g. ("eur", "to")
    anchors: tuple[str, ...]          # symbols and currencies in order of appearance
    passive: bool = False             # has a passive clause with an agent ("is specified by X")
    digit_shapes: tuple[str, ...] = ()  # digits no number explains, as written ("15.03.2024", "1.2.3")
    content_words: tuple[str, ...] = ()  # raw_content as written (lower case, not stemmed)
    capital_at: tuple[int, ...] = ()  # fwords written as tickers: cashtags, capitals (IT, NOW) unless all is shouted
    operators: tuple[str, ...] = ()   # math and comparison operators in order: "<", ">=", "+", "//", "×"
    marks: tuple[str, ...] = ()       # words with a mark that is part of the name, sorted: "c++", "c#", "bbb+", "aa-", "10+"
    fwords: tuple[str, ...] = ()      # every word, contractions expanded ("what's" -> what, is)
    flabels: tuple[str, ...] = ()     # per fword: "family:value" of a meaning-bearing function word, or ""


# Tickers and acronyms seen in capitals in any prompt analysed so far (AAPL, RSI): the same
# letters in lower case count as symbols from then on. Only ever makes the guards stricter.
_SEEN_UPPER: set[str] = set()
_SEEN_UPPER_MAX = 100_000


def learn_tickers(text: str) -> None:
    """Add the tickers and acronyms ``text`` writes in capitals to those :func:`analyze` knows,
    exactly as analysing it would, without the rest of the analysis.

    A stored question teaches its tickers when it is indexed, so a later "aapl" is a ticker even
    if no guard has compared that question yet: a few us on a miss instead of a full analysis
    (~100 us), which most stored questions never need (their candidates are rarer than misses).
    """
    if len(_SEEN_UPPER) >= _SEEN_UPPER_MAX:
        return
    text = text[:MAX_ANALYZED_CHARS]
    for i, m in enumerate(_WORD.finditer(text)):
        tok = m.group(0)
        if not (2 <= len(tok) <= 5 and tok.isalpha() and tok.isupper()):
            continue  # what analyze learns: an all-capitals word of 2-5 letters
        plain = tok.lower()
        # the words analyze reads as something else first: currencies, negations, and a
        # leading answer particle ("NO, ...")
        if plain in lx.CURRENCY_CODES or plain in lx.CURRENCY_WORDS or plain in lx.NEGATIONS:
            continue
        if i == 0 and plain in ("no", "yes") and text[len(tok):].lstrip().startswith(",") \
                and _WORD.search(text, m.end()) is not None:
            continue
        if len(_SEEN_UPPER) >= _SEEN_UPPER_MAX:
            return
        _SEEN_UPPER.add(plain)


@lru_cache(maxsize=8192)
def analyze(text: str) -> Facts:
    """The :class:`Facts` of ``text`` (memoized: the stored side is analysed once)."""
    text = text[:MAX_ANALYZED_CHARS]
    matches = list(_WORD.finditer(text))
    raw_tokens = [m.group(0) for m in matches]
    starts = [m.start() for m in matches]
    words: list[str] = []
    content: list[str] = []
    raw_content: list[str] = []
    content_words: list[str] = []
    symbols: set[str] = set()
    currencies: set[str] = set()
    periods: set[str] = set()
    anchors: list[str] = []
    negations = 0
    directions: set[tuple[int, int]] = set()
    headline = _is_headline(raw_tokens)
    numbers, number_positions, spans = _numbers(text)
    lowered: list[str] = []
    for tok in raw_tokens:
        low = tok.lower().replace("’", "'").strip("`").rstrip(".")
        head, _, tail = low.partition("'")
        if tail in _CLITICS and head and not low.endswith("n't"):
            low = head  # "what's" -> "what", "Tesla's" -> "tesla"
        lowered.append(low)
    for i, (tok, low) in enumerate(zip(raw_tokens, lowered)):
        plain = low.lstrip("$€£¥₹₿₩")
        words.append(plain)
        # -- currencies and cashtags
        if tok[0] in lx.CURRENCY_SYMBOLS:
            rest = tok[1:]
            if rest and rest[0].isalpha():  # "$AAPL" is a ticker, "$5" is money
                symbols.add(rest.lower())
                anchors.append(rest.lower())
                continue
            currencies.add(lx.CURRENCY_SYMBOLS[tok[0]])
            anchors.append(lx.CURRENCY_SYMBOLS[tok[0]])
        if plain in lx.CURRENCY_CODES and (tok.isupper() or len(plain) == 3 and _near_number(i, lowered)):
            currencies.add(plain)
            anchors.append(plain)
            continue
        if plain in lx.CURRENCY_WORDS:
            currencies.add(lx.CURRENCY_WORDS[plain])
            anchors.append(lx.CURRENCY_WORDS[plain])
            continue
        # -- negations ("don't" -> "dont")
        bare = plain.replace("'", "")
        if i == 0 and plain in ("no", "yes") and len(raw_tokens) > 1 and text[len(tok):].lstrip().startswith(","):
            continue  # "No, the page does not exist": an answer particle, not a negation
        if bare in lx.NEGATIONS or plain.endswith("n't"):
            negations += 1
            continue
        if plain.startswith(("non-", "anti-", "un-")):
            negations += 1  # "non-conductor", then the word itself still counts as content
        # A hyphenated compound is read word by word too ("3-month", "five-year", "long-term"):
        # its parts are periods, directions and content words like the same words written apart.
        parts = [p for p in plain.split("-") if p] if "-" in plain else [plain]
        # -- periods and dates
        if plain in lx.MONTHS and (plain not in lx.AMBIGUOUS_MONTHS or _near_number(i, lowered)):
            periods.add(f"month:{lx.MONTHS[plain]}")
        elif plain in lx.WEEKDAYS and (tok[0].isupper() or len(plain) > 3):
            periods.add(plain[:3])
        elif plain in lx.PERIOD_WORDS:
            prev = lowered[i - 1] if i else ""
            unit = lx.UNIT_ALIASES.get(plain, plain)  # "5 days" = "5-day"
            periods.add(f"{prev} {unit}" if prev in lx.PERIOD_MODIFIERS else unit)
        elif len(parts) > 1:
            for part in parts:
                if part in lx.PERIOD_WORDS:
                    periods.add(lx.UNIT_ALIASES.get(part, part))
        # -- directions
        found = _DIRECTIONS.get(plain)
        if found:
            directions.update(found)
        elif len(parts) > 1:  # "short-term", "small-cap", "long-dated": the axis is in a part
            for part in parts:
                directions.update(_DIRECTIONS.get(part, ()))
        # -- symbols: tickers, identifiers, proper names
        if _is_symbol(tok, i, starts, text, headline) and starts[i] not in number_positions:
            symbols.add(plain)
            anchors.append(plain)
            if tok.isupper() and tok.isalpha() and 2 <= len(tok) <= 5 and len(_SEEN_UPPER) < _SEEN_UPPER_MAX:
                _SEEN_UPPER.add(plain)
        elif plain in _SEEN_UPPER and plain not in lx.STOPWORDS:
            # Written in lower case here, as a ticker elsewhere ("aapl" after "AAPL"): it is
            # still that ticker, and two prompts naming different ones are different questions.
            symbols.add(plain)
            anchors.append(plain)
        compound = len(parts) > 1 and (plain[0].isdigit() or not any(ch.isdigit() for ch in plain))
        for part in parts if compound else (plain,):
            # "site-specific" is two words: "large, site-specific" is not "specific, site-large"
            if part in lx.STOPWORDS or not part or part[0].isdigit() or part.replace("'", "") in lx.STOPWORDS:
                continue  # numbers have their own guard, in whatever spelling
            canonical = _canonical(part)
            if canonical not in _LIGHT:
                content.append(canonical)
                raw_content.append(stem(part))
                content_words.append(part)
    for m in _ROMAN.finditer(text):
        symbols.add(m.group(0).lower())
    fwords, flabels, caps = _function_words(raw_tokens, lowered)
    shouted = bool(caps) and _shouted(raw_tokens)
    return Facts(
        text=text,
        words=tuple(words),
        content=tuple(content),
        raw_content=tuple(raw_content),
        numbers=tuple(sorted(numbers)),
        number_order=tuple(v for _, v in numbers),
        currencies=frozenset(currencies),
        symbols=frozenset(symbols),
        periods=frozenset(periods),
        negations=negations,
        directions=tuple(sorted(directions)),
        qtype=_question_type(lowered),
        roles=_roles(lowered),
        anchors=tuple(anchors),
        passive=_passive(lowered),
        digit_shapes=_digit_shapes(text, spans),
        content_words=tuple(content_words),
        marks=_marks(text),
        operators=_operators(text),
        fwords=fwords,
        flabels=flabels,
        capital_at=tuple(i for i in caps if fwords[i].lstrip(_CURRENCY_MARKS) in symbols
                         and (fwords[i][0] in lx.CURRENCY_SYMBOLS or not shouted)),
    )


@lru_cache(maxsize=65536)
def _canonical(word: str) -> str:
    """The stem of a word's everyday synonym group ("employ" -> "us", "furnish" -> "provid")."""
    w = lx.SYNONYMS.get(word)
    if w is None:
        base = stem(word)
        w = lx.SYNONYMS.get(base) or lx.SYNONYMS.get(base + "e") or word
    return stem(w)


def _is_headline(tokens: list[str]) -> bool:
    # "Stocks Close Higher On Fed Hopes": in title case capitals mark nothing. Told apart from
    # a sentence full of names by its capitalized function words.
    small = [t for t in tokens[1:] if t.lower() in lx.STOPWORDS and len(t) > 1]
    alpha = [t for t in tokens if t[:1].isalpha()]
    if len(alpha) >= 3 and all(t[0].isupper() for t in alpha):
        return True
    return len(small) >= 1 and sum(t[0].isupper() for t in small) >= 0.6 * len(small)


_CURRENCY_MARKS = "".join(lx.CURRENCY_SYMBOLS)


def _shouted(tokens: list[str]) -> bool:
    # "WHAT IS THE RSI OF AAPL": capitals mark nothing when most words are in capitals
    alpha = [t for t in tokens if len(t) > 1 and t.isalpha()]
    return bool(alpha) and sum(t.isupper() for t in alpha) * 2 > len(alpha)


_DIGIT = re.compile(r"\d").search
_LETTER = re.compile(r"[^\W\d_]").search


def _is_symbol(tok: str, i: int, starts: list[int], text: str, headline: bool) -> bool:
    if tok[0] == "`":
        return True
    core = tok.rstrip(".")
    if not core.isalpha():  # the common case (a plain word) skips these checks
        if not _LETTER(core):
            return False
        if _DIGIT(core):  # H100, Q1, GPT-4, 401k
            return True
        if "_" in core or "." in core or "()" in core:  # dl_manager, Next.js, BRK.B, f()
            return True
    if core.isupper():  # tickers and acronyms: AAPL, GDP, RSI
        if sum(c.isalpha() for c in core) >= 2:
            return True
        # One capital letter names something too: a ticker (F, T, A), a class, plan or regulation
        # (Class B, Regulation T), in a title as anywhere. Only "I" (the pronoun) and "A" (the
        # article: at a sentence start, or capitalized in a title) are also English words.
        if len(core) != 1 or core == "I":
            return False
        return core != "A" or (not headline and i > 0
                               and not _SENTENCE_END.search(text[max(0, starts[i] - 4) : starts[i]]))
    rest = core[1:]
    if rest != rest.lower() and core != core.upper():  # JavaScript, iPhone
        return True
    if core[0].isupper() and not headline and i > 0 and core != "I":
        # A capitalized word inside a sentence is a name (Gold, Mars, Nike); at a sentence
        # start it is just grammar.
        return not _SENTENCE_END.search(text[max(0, starts[i] - 4) : starts[i]])
    return False


def _near_number(i: int, lowered: list[str]) -> bool:
    for j in (i - 1, i + 1, i - 2, i + 2):
        if 0 <= j < len(lowered) and lowered[j][:1].isdigit():
            return True
    return False


_ALPHA = re.compile(r"[A-Za-z]+")
_HYPHEN_UNIT = re.compile(r"-([A-Za-z]+)|\s(" + _TIME_UNIT + r")\b")


def _unit(word: str) -> str:
    """A number's unit in one spelling: "days", "day", "d" -> "day"; others lower-cased."""
    low = word.lower()
    return lx.UNIT_ALIASES.get(low, low)


def _numbers(text: str) -> tuple[tuple[tuple[str, float], ...], set[int], list[tuple[int, int]]]:
    """(unit, value) of every number in order of appearance, where each written number starts,
    and the spans whose digits the values say all about."""
    found: list[tuple[int, str, float]] = []
    starts: set[int] = set()
    spans: list[tuple[int, int]] = []
    for m in _NUMBER.finditer(text):
        starts.add(m.start())
        whole = (m.group("int") or "0").replace(",", "").replace(".", "")  # "1.000.000" has no decimals
        mantissa = whole + (m.group("dec") or m.group("lead") or "")
        value = float(mantissa + (m.group("exp") or ""))
        if sum(c.isdigit() for c in m.group(0)) <= 15 and math.isfinite(value) and (value or not mantissa.strip("0.")):
            spans.append(m.span())  # else beyond a float (16 digits, 1e309, 1e-400): compared as written
        if m.group("sign") in ("-", "−"):
            value = -value
        unit = ""
        mult = m.group("mult")
        money = bool(m.group("cur"))
        if not mult and money and (m.group("unit") or "").lower() in ("m", "b", "t", "bn", "mn", "k"):
            mult = m.group("unit")  # "$2m" is two million dollars, whatever the case
        if mult:
            value *= lx.MULTIPLIERS[mult.lower()]
        elif m.group("pct"):
            pct = m.group("pct").lower()
            unit = "bp" if pct.startswith(("bp", "basis")) else "%"
        elif m.group("unit") and not mult:
            u = m.group("unit")
            if u.lower() in _ORDINAL:
                pass  # "16th" is the number 16
            elif u in ("k", "K"):
                value *= 1e3
            else:
                unit = _unit(u)
        elif m.group("hunit") or m.group("sunit"):
            unit = _unit(m.group("hunit") or m.group("sunit"))
        # 15 significant digits: 1.1 x 1e6 is 1,100,000 exactly, and 1e-10 is not 2e-10
        found.append((m.start(), unit, float(f"{value:.15g}")))
    for w in _ALPHA.finditer(text):
        low = w.group(0).lower()
        if low in lx.NUMBER_WORDS and low not in lx.SOFT_NUMBER_WORDS:
            # "five-year" is "5-year", "five years" is "5 years": units read as for digits
            joined = _HYPHEN_UNIT.match(text, w.end())
            unit = _unit(joined.group(1) or joined.group(2)) if joined else ""
            found.append((w.start(), unit, lx.NUMBER_WORDS[low]))
    for m in _ROMAN.finditer(text):
        found.append((m.start(), "", float(_roman_value(m.group(0)))))
    found.sort(key=lambda f: f[0])
    return tuple((unit, value) for _, unit, value in found), starts, spans


# A mark stuck to the end of a word is part of what it names, which the word tokens drop: C++ and
# C# are not C, BBB+ and BBB- are notches of BBB, "10+ years" is at least ten. A hyphen counts
# only after capitals (a rating, "AA-"): "pre- and post-market" is a shared prefix.
_MARKED = re.compile(r"(?<![\w+#])([^\W\d_][\w.]*|\d[\d,.]*)(\+\+|\+|#)(?![\w+#])"
                     r"|(?<![\w\-])([A-Z]{1,4})(-)(?![\w\-])")


# Operators are facts like numbers: "x > 5" is not "x < 5", "5 - 3" not "5 + 3", "7 / 2" not
# "7 // 2". Comparisons count wherever they are written. Arithmetic signs count between two
# operands, written either tight ("5+3", "2^10") or spaced on both sides ("5 * 3"), so that a sign
# ("+5%") or markdown ("**bold**") is no operator. A hyphen, dash or minus sign and a single slash are not read
# (ranges and scores, "1943 – 1944", "6 - 4"; "and / or", "P/E"): "5 - 3" against "5 + 3" still
# differs by the "+".
_OPERATORS = re.compile(
    r"<=|>=|==|!=|<>|->|=>|<-|[<>=≤≥≠]"
    r"|(?<=[\w)\]%])(?:(?P<tight>\*\*|//|[*+×÷^])|\s+(?P<spaced>\*\*|//|[*+×÷^])\s+)(?=[\w(\[.$€£¥])")
_OPERATOR_CHARS = frozenset("<>=≤≥≠*+×÷^/")
_OPERATOR_NAMES = {"≤": "<=", "≥": ">=", "≠": "!="}


def _operators(text: str) -> tuple[str, ...]:
    if _OPERATOR_CHARS.isdisjoint(text):
        return ()
    out = []
    for m in _OPERATORS.finditer(text):
        op = m.group("tight") or m.group("spaced") or m.group(0)
        out.append(_OPERATOR_NAMES.get(op, op))
    return tuple(out)


def _marks(text: str) -> tuple[str, ...]:
    if "+" not in text and "#" not in text and "-" not in text:
        return ()
    return tuple(sorted((m.group(1) or m.group(3)).lower() + (m.group(2) or m.group(4)) for m in _MARKED.finditer(text)))


_DIGITS = re.compile(r"\d+")
_SHAPE_CHARS = frozenset(".,:/^'’-")  # what joins digits inside one written number or code
_EDGE = "".join(_SHAPE_CHARS)


def _digit_shapes(text: str, spans: list[tuple[int, int]]) -> tuple[str, ...]:
    """The tokens around digits that no parsed number covers, lower case, in order.

    Every digit of a prompt is a fact: either _NUMBER reads it (compared by value, so "1,000" =
    "1k") or its token is compared as written ("15.03.2024" vs "16.03.2024", "1.2.3" vs "1.2.4",
    "H100"). A spelling the parser does not know can cost a hit, never serve another question."""
    out: list[str] = []
    j, done, n = 0, 0, len(text)
    for m in _DIGITS.finditer(text):
        start, end = m.span()
        if start < done:
            continue  # inside the token already taken
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        if j < len(spans) and spans[j][0] <= start and end <= spans[j][1]:
            continue
        left = start
        while left > done and (text[left - 1].isalnum() or text[left - 1] in _SHAPE_CHARS or text[left - 1] == "_"):
            left -= 1
        right = end
        while right < n and (text[right].isalnum() or text[right] in _SHAPE_CHARS or text[right] == "_"):
            right += 1
        done = right
        out.append(text[left:right].strip(_EDGE).lower())
    return tuple(out)


_BEFORE_MONTH = frozenset("in of since until by early late mid from through during last next this".split())


def _function_words(raw_tokens: list[str], lowered: list[str]) -> tuple[tuple[str, ...], tuple[str, ...], list[int]]:
    """The words of a prompt with contractions expanded, each with its function-word class
    ("tense:past", "quant:all", "tprep:by", ...; "" for none: see lexicon.FUNCTION_WORDS), and
    where words written in capitals like a ticker stand ("IT", "NOW")."""
    words: list[str] = []
    caps: list[int] = []
    for tok, low in zip(raw_tokens, lowered):
        if "'" not in tok and "’" not in tok and low not in lx.NEGATED_AUX:
            if (1 <= len(tok) <= 5 and tok.isupper() and tok.isalpha() and tok != "I") or (
                    tok[0] in lx.CURRENCY_SYMBOLS and tok[1:].isalpha()):  # a cashtag, any case: $IT, $on
                caps.append(len(words))
            words.append(low)  # the common case: no contraction
            continue
        t = tok.lower().replace("’", "'").strip("`").rstrip(".")
        head, _, tail = t.partition("'")
        if tail == "t" and head in lx.NEGATED_AUX:  # "didn't": its tense stays (the negation is counted apart)
            words.append(lx.NEGATED_AUX[head])
        elif not tail and t in lx.NEGATED_AUX and t not in ("can", "won", "don", "ain"):
            words.append(lx.NEGATED_AUX[t])  # "didnt", "cannot"
        elif tail in lx.CLITIC_AUX and head:
            words += [head, lx.CLITIC_AUX[tail]]  # "we'll" -> we will
        elif tail == "s" and head in lx.IS_HOSTS:
            words += [head, "is"]  # "what's" -> what is ("AAPL's" stays a possessive)
        else:
            words.append(low)
    n = len(words)
    labels = [lx.FUNCTION_WORDS.get(w, "") for w in words]
    for i, w in enumerate(words):
        label = labels[i]
        prev = words[i - 1] if i else ""
        if label.startswith("tense:"):
            if w in ("will", "can", "may", "must") and prev in ("a", "an", "the", "my", "your", "his", "her", "their"):
                labels[i] = ""  # a noun: "the will", "a can"
            elif w == "may" and (prev in _BEFORE_MONTH or i + 1 < n and words[i + 1][:1].isdigit()):
                labels[i] = ""  # the month: "in May", "May 5"
            elif w in ("has", "have") and _participle_follows(words, i):
                labels[i] = "tense:perfect"  # "has raised": what happened ("did raise") or holds ("is")
            elif prev == "how" and w in ("can", "could"):
                labels[i] = "tense:present"  # "how can I" = "how do I"
            elif w in ("can", "could", "would", "will") and i + 2 < n and words[i + 1] == "you":
                j = i + 2
                while j < n and words[j] in ("please", "kindly", "just"):
                    j += 1
                if j < n and words[j] in lx.REQUEST_VERBS:
                    labels[i] = labels[i + 1] = "polite"  # "can you explain": a request, courtesy
        elif label.startswith("quant:") and prev == "how":
            labels[i] = ""  # "how many", "how much": the question word, not a quantifier
        elif w in lx.TIME_PREPOSITIONS and not label and _time_follows(words, i + 1):
            labels[i] = "tprep:" + lx.TIME_PREPOSITIONS[w]
        elif "-" in w and not label:
            parts = w.split("-")
            if len(parts) > 1 and any(p in lx.STOPWORDS for p in parts):
                labels[i] = "hyphen:" + w  # "in-the-money" / "at-the-money": the whole compound
    return tuple(words), tuple(labels), caps


def _participle_follows(words: list[str], i: int) -> bool:
    """"has raised", "have you ever paid", "has the Fed hiked": an auxiliary, not "has a dividend"."""
    return any(w in ("been", "done", "had") or w in lx.IRREGULAR_PARTICIPLES or (len(w) > 3 and w.endswith(("ed", "en")))
               for w in words[i + 1 : i + 5])


def _time_follows(words: list[str], j: int) -> bool:
    """Is ``words[j:]`` a date or time ("Friday", "the open", "2 weeks", "next month", "2025")?"""
    n = len(words)
    skipped = 0
    while j < n and words[j] in lx.TIME_FILLERS and skipped < 4:
        j += 1
        skipped += 1
    if j >= n:
        return False
    w = words[j]
    if w in lx.WEEKDAYS and len(w) > 3 or w in lx.PERIOD_WORDS or w in lx.MARKET_TIMES:
        return True
    if w in lx.MONTHS and (w not in lx.AMBIGUOUS_MONTHS or j + 1 < n and words[j + 1][:1].isdigit()):
        return True
    if w[:1].isdigit():
        nxt = words[j + 1] if j + 1 < n else ""
        if nxt in lx.PERIOD_WORDS or nxt in lx.MONTHS or w.endswith(("am", "pm")):
            return True
        if any(c in w for c in "-/:") or w.count(".") >= 2 or (len(w) == 4 and w.isdigit() and w[:2] in ("19", "20")):
            return True  # a date (2024-03-15, 3/15, 15.03.2024), a time of day (9:30), a year
        parts = w.split("-")
        return len(parts) > 1 and parts[-1] in lx.PERIOD_WORDS
    return False


def _roman_value(s: str) -> int:
    total = 0
    for a, b in zip(s, s[1:] + " "):
        va, vb = _ROMAN_VALUES[a], _ROMAN_VALUES.get(b, 0)
        total += -va if va < vb else va
    return total


def _question_type(lowered: list[str]) -> str | None:
    lowered = _without_polite_modal(lowered)
    for i, w in enumerate(lowered[:6]):
        if w in lx.QUESTION_WORDS:
            kind = lx.QUESTION_WORDS[w]
            if kind == "how" and i + 1 < len(lowered) and lowered[i + 1] in lx.HOW_QUANTITY:
                return "how-" + lowered[i + 1]
            return kind
        if w in lx.FILLERS:
            continue
        if w in lx.AUX_START:
            return "yesno"
        if i >= 1:
            break
    return None


def _without_polite_modal(lowered: list[str]) -> list[str]:
    """"Can you (please) explain how ..." from its request verb on ("explain how ..."): the
    modal is courtesy (as for the function guard), so it does not make a yes/no question."""
    for i, w in enumerate(lowered[:4]):
        if w in ("can", "could", "would", "will"):
            if i + 1 < len(lowered) and lowered[i + 1] == "you":
                j = i + 2
                while j < len(lowered) and lowered[j] in ("please", "kindly", "just"):
                    j += 1
                if j < len(lowered) and lowered[j] in lx.REQUEST_VERBS:
                    return lowered[j:]
            return lowered
        if w not in lx.FILLERS:
            return lowered
    return lowered


def _passive(lowered: list[str]) -> bool:
    for i, w in enumerate(lowered):
        if w not in lx.PASSIVE_AUX:
            continue
        for j in range(i + 1, min(i + 3, len(lowered))):
            p = lowered[j]
            if (p.endswith(("ed", "en")) and len(p) > 3) or p in lx.IRREGULAR_PARTICIPLES:
                if "by" in lowered[j + 1 : j + 8]:  # an agent: "is specified by X"
                    return True
                break
    return False


def _roles(lowered: list[str]) -> tuple[tuple[str, str], ...]:
    roles: list[tuple[str, str]] = []
    for i, w in enumerate(lowered):
        role = lx.ROLE_PREPOSITIONS.get(w)
        if role is None:
            continue
        # the first content word after the preposition, skipping determiners and amounts
        for nxt in lowered[i + 1 : i + 4]:
            if nxt in ("the", "a", "an", "my", "our", "your", "their", "its") or nxt[:1].isdigit():
                continue
            if nxt in lx.STOPWORDS:
                break
            roles.append((lx.CURRENCY_SYMBOLS.get(nxt[:1], nxt) if nxt[:1] in lx.CURRENCY_SYMBOLS
                          else lx.CURRENCY_WORDS.get(nxt, nxt), role))
            break
    return tuple(roles)

