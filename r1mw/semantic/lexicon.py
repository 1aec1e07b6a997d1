"""Word tables the guards read: function words, negations, opposed directions, periods, currencies.

These are general English and finance vocabulary, not fitted to any data set: a guard built on
them must hold for prompts it has never seen. Everything is lower case.
"""

from __future__ import annotations

__all__ = [
    "AUX_START",
    "CURRENCY_CODES",
    "CURRENCY_SYMBOLS",
    "CURRENCY_WORDS",
    "DIRECTION_AXES",
    "FILLERS",
    "MONTHS",
    "MULTIPLIERS",
    "NEGATING_PREFIXES",
    "NEGATIONS",
    "NUMBER_WORDS",
    "PERIOD_WORDS",
    "QUESTION_WORDS",
    "ROLE_PREPOSITIONS",
    "STOPWORDS",
    "UNIT_ALIASES",
    "WEEKDAYS",
]

# Function words: they carry grammar, not the question (the edit guard ignores them).
STOPWORDS: frozenset[str] = frozenset(
    """a an the and or but if then so as of in on at by for with about into onto from to
    is are was were be been being am do does did doing done have has had having
    i me my mine myself you your yours yourself we us our ours they them their theirs
    he him his she her hers it its itself this that these those there here
    what which who whom whose why how when where whether
    can could should would will shall may might must ought
    please kindly just also too very really quite rather some any each every all both
    such own same other another again further once only even still yet already
    hey hi hello ok okay yo bot thanks thank tell show give let get got make made
    approximately roughly about around nearly almost
    one's someone something anyone anything
    like via per within upon onto across through throughout during over inside among
    well namely additionally moreover furthermore according accordingly thus hence therefore now
    s t d ll re ve m""".split()
)

# Words that flip the meaning of what follows.
NEGATIONS: frozenset[str] = frozenset(
    """not no never none nothing nobody neither nor without nowhere cannot cant dont doesnt
    didnt isnt arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt mustnt
    neednt aint
    optional omit omits omitting omitted lack lacks lacking missing absent absence
    prevent prevents preventing avoid avoids avoiding unable""".split()
)
# (The second line: words that carry a negation inside them. "optional" = "not mandatory",
# "omitting the column" = "without the column": counted like "not", so both spellings agree,
# and "is X optional?" / "is X mandatory?" differ.)

# A prefix that turns a word into its opposite: "install" / "uninstall", "able" / "unable".
NEGATING_PREFIXES: tuple[str, ...] = ("un", "de", "dis", "non", "in", "im", "il", "ir", "anti", "counter", "mis")

# Opposed directions, one axis per line: (one side, the other side). Two prompts that put the
# same axis on opposite sides ask different questions ("buy" vs "sell", "above" vs "below").
DIRECTION_AXES: tuple[tuple[frozenset[str], frozenset[str]], ...] = tuple(
    (frozenset(plus.split()), frozenset(minus.split()))
    for plus, minus in (
        ("buy buys buying bought purchase purchasing purchased bid long longs", "sell sells selling sold ask short shorts shorting offer"),
        ("bull bulls bullish uptrend upside upswing overbought rally rallies", "bear bears bearish downtrend downside downswing oversold selloff"),
        ("call calls", "put puts"),
        ("above over exceed exceeds exceeding exceeded upper overvalued overweight", "below under beneath lower undervalued underweight"),
        ("up upward upwards upgrade upgraded", "down downward downwards downgrade downgraded"),
        ("increase increases increasing increased rise rises rising rose raise raises raised grow grows growing grew growth gain gains gained climb climbs climbed surge surges surged jump jumps jumped appreciate appreciated expand expands", "decrease decreases decreasing decreased fall falls falling fell drop drops dropping dropped decline declines declining declined reduce reduces reducing reduced lose loses losing lost shrink shrinks shrank plunge plunges plunged depreciate depreciated contract contracts cut cuts slash"),
        ("more greater larger bigger higher highest most max maximum largest biggest top best strongest large big",
         "less fewer smaller lower lowest least min minimum smallest bottom worst weakest small little"),
        ("profit profits profitable winner winners win wins winning", "loss losses unprofitable loser losers lose"),
        ("allow allows allowed enable enables enabled permit permits permitted grant accept accepts whitelist unblock", "block blocks blocked disable disables disabled deny denies denied forbid forbids reject rejects revoke blacklist prevent prevents"),
        ("open opens opening opened start starts starting started begin begins beginning connect connects", "close closes closing closed stop stops stopping stopped end ends ending finish disconnect disconnects"),
        ("add adds adding added include includes including included insert create creates created creating make makes making", "remove removes removing removed delete deletes deleting deleted exclude excludes excluding excluded drop"),
        ("import imports importing imported upload uploads uploading uploaded push pushes send sends sending sent inbound incoming input deposit deposits credit lend lending", "export exports exporting exported download downloads downloading downloaded pull pulls receive receives receiving received outbound outgoing output withdraw withdraws withdrawal debit borrow borrowing"),
        ("before prior earlier earliest first oldest previous past", "after later latest last newest next future"),
        ("ascending asc", "descending desc"),
        ("positive true yes", "negative false"),
        ("left west western", "right east eastern"),
        ("north northern", "south southern"),
        ("inside internal interior", "outside external exterior"),
        ("hot hotter warm warmer", "cold colder cool cooler"),
        ("maximize maximise", "minimize minimise"),
        ("encrypt encrypts encryption", "decrypt decrypts decryption"),
        ("lock locks locked", "unlock unlocks unlocked"),
        ("good better best advantage advantages benefit benefits pro pros strength strengths",
         "bad worse worst disadvantage disadvantages drawback drawbacks risk risks con cons weakness weaknesses"),
        ("conservative cautious defensive", "aggressive speculative"),
        ("cheap cheaper cheapest inexpensive", "expensive pricey costly"),
        ("strong stronger strongest", "weak weaker weakest"),
        ("easy easier easiest", "hard harder hardest difficult"),
        ("optimistic optimism", "pessimistic pessimism"),
        ("success successful succeed", "failure unsuccessful fail"),
        # market vocabulary: levels, the Fed's tone, styles, inventories, yields
        ("support supports", "resistance resistances"),
        ("hawkish hawk hawks", "dovish dove doves"),
        ("build builds", "draw draws"),
        ("momentum", "contrarian"),
        ("nominal", "real inflation-linked inflation-protected"),
    )
)

# Function words that carry meaning: which question is asked depends on them even when every
# content word stays. Each maps to "family:value"; two prompts that put different values of one
# family in the same place ask different questions ("Will the Fed cut" / "Did the Fed cut").
FUNCTION_WORDS: dict[str, str] = {
    word: f"{family}:{value}"
    for family, table in (
        # quantifiers: "all tech stocks" / "some tech stocks"; all = every = each
        ("quant", {"all": "all", "every": "all", "each": "all", "some": "some", "any": "any", "only": "only",
                   "both": "both", "either": "either", "most": "most", "many": "many", "few": "few",
                   "several": "several", "half": "half", "entire": "all", "whole": "all"}),
        # tense and modality: "did" / "will" / "should" / "can"
        ("tense", {"did": "past", "was": "past", "were": "past", "had": "past",
                   "do": "present", "does": "present", "is": "present", "are": "present", "am": "present",
                   "has": "present", "have": "present",
                   "will": "future", "shall": "future", "would": "would",
                   "should": "should", "must": "should", "ought": "should",
                   "can": "can", "could": "can", "may": "can", "might": "can"}),
        # whose: "my risk" / "your risk"; "we" / "they" (I, we and a generic you are one side)
        ("person", {"i": "self", "me": "self", "we": "self", "us": "self", "you": "self", "myself": "self",
                    "ourselves": "self", "yourself": "self", "one": "",
                    "he": "other", "him": "other", "she": "other", "they": "other", "them": "other",
                    "himself": "other", "herself": "other", "themselves": "other"}),
        ("poss", {"my": "mine", "mine": "mine", "our": "mine", "ours": "mine", "your": "yours", "yours": "yours",
                  "his": "theirs", "her": "theirs", "hers": "theirs", "their": "theirs", "theirs": "theirs"}),
        ("demonstrative", {"this": "this", "these": "this", "that": "that", "those": "that"}),
        # when, relative to now: "sell now" / "sell too", "still a buy" / "already a buy"
        ("conj", {"and": "and", "or": "or"}),
        ("adverb", {"now": "now", "then": "then", "currently": "now", "presently": "now", "nowadays": "now", "still": "still",
                    "already": "already", "yet": "yet", "ever": "ever", "again": "again", "soon": "soon",
                    "too": "too", "also": "too", "anymore": "anymore"}),
        ("compare", {"same": "same", "identical": "same", "other": "other", "unlike": "other"}),
    )
    for word, value in table.items()
    if value
}
# Negated auxiliaries keep their tense: "didn't" is past, "won't" future.
NEGATED_AUX: dict[str, str] = {
    "don": "do", "dont": "do", "doesn": "does", "doesnt": "does", "isn": "is", "isnt": "is", "aren": "are",
    "arent": "are", "ain": "is", "aint": "is", "didn": "did", "didnt": "did", "wasn": "was", "wasnt": "was",
    "weren": "were", "werent": "were", "hadn": "had", "hadnt": "had", "hasn": "has", "hasnt": "has",
    "haven": "have", "havent": "have", "won": "will", "wont": "will", "wouldn": "would", "wouldnt": "would",
    "shouldn": "should", "shouldnt": "should", "mustn": "must", "mustnt": "must", "can": "can", "cant": "can",
    "cannot": "can", "couldn": "could", "couldnt": "could",
}
# Contractions: "what's" is "what is", "we'll" is "we will"; "AAPL's" is a possessive.
CLITIC_AUX: dict[str, str] = {"re": "are", "m": "am", "ve": "have", "ll": "will", "d": "would"}
IS_HOSTS: frozenset[str] = frozenset(
    "what who where when why how that there here it he she this which everything nothing something".split())
# Prepositions that place a question in time when a date or time follows ("by Friday" / "on
# Friday", "in 2 weeks" / "for 2 weeks", "at the open" / "by the open").
TIME_PREPOSITIONS: dict[str, str] = {
    "by": "by", "on": "on", "in": "in", "for": "for", "at": "at", "before": "before", "prior": "before",
    "after": "after", "until": "until", "till": "until", "til": "until", "within": "within", "since": "since",
    "during": "during", "over": "during", "through": "during", "throughout": "during", "from": "from",
    "around": "around", "near": "around", "ahead": "before",
}
# Prepositions: a one-word swap between two of them is often a rewording ("a port at/in X"),
# between one of them and another kind of word is not ("buy on before earnings": ON, a ticker).
PREPOSITIONS: frozenset[str] = frozenset(
    """of in on at by for with from to into onto about above below under over through during before after
    until till since within without against among between toward towards via per than off out up down
    across along around behind beneath beside beyond near upon like""".split())
# Tense and modality values close enough that one may stand for the other in a rewording:
# "can be specified" / "is specified", "has been discontinued" / "is discontinued" / "was".
COMPATIBLE_VALUES: frozenset[frozenset[str]] = frozenset(
    frozenset(pair.split()) for pair in ("present can", "present perfect", "past perfect"))
# Words that may stand between such a preposition and its time ("by the end of next week").
TIME_FILLERS: frozenset[str] = frozenset(
    "the a an this that next last coming following end start beginning middle of early late mid each every".split())
# Times of the trading day a question can be placed at.
MARKET_TIMES: frozenset[str] = frozenset(
    """open opening close closing bell expiry expiration settlement noon midnight eod eow eom eoy
    premarket pre-market after-hours afterhours earnings""".split())
# "Can you explain ..." is a request, not a question about ability: the modal is courtesy.
REQUEST_VERBS: frozenset[str] = frozenset(
    """explain tell give show help list summarize summarise describe analyze analyse write make check
    calculate compute provide suggest recommend create find compare review evaluate assess estimate
    predict outline draft generate translate convert clarify elaborate break walk run do please""".split())
# Function words a rewording swaps freely (one group a line): a one-word swap between these
# keeps the question.
FUNCTION_EQUIVALENTS: tuple[frozenset[str], ...] = tuple(
    frozenset(g.split()) for g in (
        "a an the", "what which", "that which who", "is are am be", "was were", "do does", "has have",
        "please kindly pls", "hi hey hello", "ok okay", "thanks thank", "into in", "onto on",
        "toward towards", "till until til", "among amongst", "me us", "i we", "my our", "about regarding concerning",
        "about approximately roughly around nearly almost",
    )
)

QUESTION_WORDS: dict[str, str] = {
    "what": "what", "which": "what", "who": "who", "whom": "who", "whose": "who", "why": "why",
    "when": "when", "where": "where", "how": "how",
    "whether": "yesno",  # "explain whether X" asks what "is X?" asks; "explain why X" presumes X
}
# "how much / many / long ..." asks for a quantity, not a manner.
HOW_QUANTITY: frozenset[str] = frozenset("much many long often far big old large high tall fast".split())
AUX_START: frozenset[str] = frozenset(
    """is are was were am do does did can could should would will shall may might must has have had
    isn't aren't don't doesn't can't won't shouldn't""".split()
)
# Words a chatty prompt starts with before the question proper ("Hey bot, why ...").
FILLERS: frozenset[str] = frozenset("hey hi hello yo ok okay so well bot please and but um uh".split())

MONTHS: dict[str, int] = {
    name: i + 1
    for i, names in enumerate(
        ("january jan", "february feb", "march mar", "april apr", "may", "june jun", "july jul",
         "august aug", "september sep sept", "october oct", "november nov", "december dec")
    )
    for name in names.split()
}
# Month names that are also everyday words count only next to a number ("May 5", "5 mar").
AMBIGUOUS_MONTHS: frozenset[str] = frozenset({"may", "march", "mar", "jan", "dec", "sep", "oct", "nov"})
WEEKDAYS: frozenset[str] = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu thur thurs fri sat sun".split()
)
PERIOD_WORDS: frozenset[str] = frozenset(
    """today yesterday tomorrow tonight
    daily weekly monthly quarterly yearly annual annually hourly intraday overnight
    ytd mtd qtd wtd week weeks month months quarter quarters year years day days hour hours
    minute minutes decade decades century weekend morning afternoon evening noon midnight
    spring summer autumn fall winter h1 h2 q1 q2 q3 q4 fy""".split()
)
# One spelling per time unit, for a number's unit ("5d", "5-day", "5 days") and for periods.
# "m" is not here: after a number it is minutes, months or millions depending on who writes it.
UNIT_ALIASES: dict[str, str] = {
    alias: unit
    for unit, aliases in (
        ("second", "sec secs second seconds"), ("minute", "min mins minute minutes"),
        ("hour", "h hr hrs hour hours"), ("day", "d day days"), ("week", "w wk wks week weeks"),
        ("month", "mo mos month months"), ("quarter", "quarter quarters"), ("year", "y yr yrs year years"),
        ("decade", "decade decades"),
    )
    for alias in aliases.split()
}
# "last week" / "next month": the modifier matters as much as the unit.
PERIOD_MODIFIERS: frozenset[str] = frozenset("last next this previous past coming following prior current".split())

CURRENCY_CODES: frozenset[str] = frozenset(
    """usd eur gbp jpy chf cad aud nzd cny cnh hkd sgd inr krw sek nok dkk pln czk huf try zar mxn brl
    rub ils thb twd idr myr php vnd aed sar btc eth usdt usdc xrp sol doge ltc bnb ada xau xag""".split()
)
CURRENCY_SYMBOLS: dict[str, str] = {"$": "usd", "€": "eur", "£": "gbp", "¥": "jpy", "₹": "inr", "₿": "btc", "₩": "krw"}
CURRENCY_WORDS: dict[str, str] = {
    "dollar": "usd", "dollars": "usd", "euro": "eur", "euros": "eur", "pound": "gbp", "pounds": "gbp",
    "sterling": "gbp", "yen": "jpy", "franc": "chf", "francs": "chf", "yuan": "cny", "renminbi": "cny",
    "rupee": "inr", "rupees": "inr", "won": "krw", "bitcoin": "btc", "ethereum": "eth", "ether": "eth",
}

NUMBER_WORDS: dict[str, float] = {
    **{w: float(i) for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split())},
    "thirty": 30.0, "forty": 40.0, "fifty": 50.0, "sixty": 60.0, "seventy": 70.0, "eighty": 80.0,
    "ninety": 90.0, "hundred": 100.0, "dozen": 12.0, "half": 0.5, "quarter": 0.25, "twice": 2.0,
    "double": 2.0, "triple": 3.0, "single": 1.0,
    **{w: float(i + 1) for i, w in enumerate(
        "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth".split())},
}
# Number words that are also everyday words: counted only next to a noun-like number context.
SOFT_NUMBER_WORDS: frozenset[str] = frozenset({"one", "second", "quarter", "single", "half", "double"})

MULTIPLIERS: dict[str, float] = {
    "k": 1e3, "thousand": 1e3, "m": 1e6, "mm": 1e6, "mn": 1e6, "mln": 1e6, "million": 1e6,
    "b": 1e9, "bn": 1e9, "billion": 1e9, "t": 1e12, "tn": 1e12, "trillion": 1e12,
}

# Prepositions that give the noun after them a role: "from A to B", "A than B", "A vs B".
ROLE_PREPOSITIONS: dict[str, str] = {
    "from": "from", "to": "to", "into": "to", "toward": "to", "towards": "to", "onto": "to",
    "than": "than", "vs": "vs", "versus": "vs", "against": "vs",
}

# Everyday synonyms a rewording swaps freely, one group a line (first word = canonical form).
# Only words with one common sense and no direction: a pair like "buy"/"sell" never goes here,
# nor a word that names another thing in finance: yield is not return, price is not cost, a
# swap, an option, an issue, a property, an offer, supply, a cycle, a key (KEY), to hold or to
# acquire are not their everyday look-alikes, and "certain" (sure) is not "specific".
SYNONYM_GROUPS: tuple[str, ...] = (
    "use used uses using employ employed employs utilize utilized utilise",
    "make create generate build produce construct",
    "show display",
    "get obtain retrieve fetch",
    "help assist aid",
    "big large huge",
    "small little tiny",
    "fast quick rapid swift speedy",
    "purpose goal aim objective",
    "provide furnish",
    "change alter modify",
    "combine merge join amalgamate",
    "find locate",
    "explain describe",
    "need require",
    "store save",
    "contain include comprise",
    "accelerate expedite",
    "mistake error",
    "method approach technique way",
    "specify indicate",
    "represent signify denote",
    "begin commence",
    "end conclude",
    "convert transform translate",
    "compute calculate",
    "verify check validate",
    "load read",
    "list enumerate",
    "entire whole full",
    "various several",
    "precise exact accurate",
    "common frequent usual typical",
    "simple easy straightforward",
    "additional extra further",
    "specific particular",
    "able capable",
    "permit allow let",
    "enable activate",
    "choose select pick",
    "buy purchase",
    "sell",
    "car automobile vehicle",
    "doctor physician",
    "lawyer attorney",
    "company firm business",
    "answer reply response",
    "question query",
    "guide tutorial walkthrough",
    "picture image photo",
    "exist available",
    "iterate traverse loop",
    "define specify set determine",
    "amount number quantity",
    "describe outline detail",
    "perform execute run",
    "task job",
    "useful helpful beneficial advantageous",
    "expect anticipate",
    "folder directory",
    "deprecate discontinue",
    "preserve retain keep",
    "replace substitute",
    "mistake error",
    "inside within",
    "crucial essential important vital",
    "feature characteristic attribute",
    "setting parameter argument",
    "connect link",
    "receive accept",
    "modify edit update",
    "view see",
    "understand comprehend grasp",
    "ensure guarantee",
    "possible feasible",
    "typically generally usually normally",
    "quickly rapidly swiftly",
    "whole complete",
)
def _synonym_classes(groups: tuple[str, ...]) -> dict[str, str]:
    """word -> canonical word; groups sharing a word merge (canonical: the first group's head)."""
    canon: dict[str, str] = {}
    for group in groups:
        words = group.split()
        heads = {canon[w] for w in words if w in canon}
        head = min(heads, key=lambda h: list(canon.values()).index(h)) if heads else words[0]
        for w, c in list(canon.items()):
            if c in heads:
                canon[w] = head
        for w in words:
            canon[w] = head
    return canon


SYNONYMS: dict[str, str] = _synonym_classes(SYNONYM_GROUPS)

# Auxiliaries and participles of a passive clause ("X is specified by Y").
PASSIVE_AUX: frozenset[str] = frozenset("is are was were be been being get gets got gotten".split())
IRREGULAR_PARTICIPLES: frozenset[str] = frozenset(
    """built made done given taken shown seen known found held kept led paid sent set sold told put
    read run written driven chosen thrown drawn grown brought bought caught taught thought won
    begun broken spoken stolen frozen hidden ridden eaten fallen forgotten""".split()
)
