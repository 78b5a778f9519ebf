"""A keyword reading of a revision: what kind of change the user asked for, and the text that change needs.

Used with no LLM and as the LLM's fallback. A revision ("make it look like the 1920s", "extend it by two seconds",
"a cat instead of a dog") is one of five kinds (the plan applies them; this module only classifies and fills text):

- ``edit``: keep the picture's composition and change something in it (style, era, colours, an object added,
  removed or replaced, weather painted onto the same scene). ``text`` is an instruction for an image-editing model
  (InstructPix2Pix style: "make it look like the 1920s").
- ``rewrite``: the description changes in a way a new picture from a rewritten prompt does best (time of day and
  its light, a different subject). ``text`` is the new full prompt (``rewrite_prompt``). With no picture to edit
  (``has_image=False``) an edit becomes a rewrite too.
- ``extend``: a longer video; ``text`` is what happens next (may be ""), ``seconds`` how long when said.
- ``animate``: the same picture with new motion; ``text`` is the user's words.
- ``regenerate``: start over; ``text`` is whatever the user said the new one should be (may be "").

Every keyword matches as a whole word or phrase (regex word boundaries): "remove" is not "move", "1920s" is not a
duration, "add" alone is not "extend".

Example:
    >>> guess_revision("make it look like the 1920s").change
    'edit'
    >>> guess_revision("extend it by two seconds").seconds
    2.0
    >>> rewrite_prompt("a lighthouse on a cliff at night, stormy sea", "make it brighter, like early morning")
    'a lighthouse on a cliff in the early morning, bright soft light, stormy sea'
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

ChangeKind = Literal["edit", "rewrite", "extend", "animate", "regenerate"]
CHANGE_KINDS: tuple[ChangeKind, ...] = ("edit", "rewrite", "extend", "animate", "regenerate")

_I = re.IGNORECASE


@dataclass
class Revision:
    """One revision, read: its kind, the text its kind needs, and what the words named."""

    change: ChangeKind
    # edit: the instruction for an image-editing model; rewrite: the new full prompt; extend: what happens next
    # (may be ""); animate / regenerate: the user's words (may be "").
    text: str
    shot: int | None = None  # the 1-based shot a story revision names ("make shot 2 darker")
    seconds: float | None = None  # extend: how long, when said
    reason: str = ""  # one line: which words decided it (for the transcript)


# ----- text cleaning -------------------------------------------------------------------------------------------

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'", "\u201c": '"', "\u201d": '"'})


def _clean(text: str) -> str:
    """NFKC, straight quotes, emoji and control characters dropped, whitespace collapsed; case kept."""
    text = unicodedata.normalize("NFKC", text or "").translate(_QUOTES)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        # So/Sk: emoji, symbols, skin-tone modifiers; C*: controls, ZWJ, unassigned; variation selectors are Mn.
        if cat in ("So", "Sk") or cat.startswith("C") or 0xFE00 <= ord(ch) <= 0xFE0F or ch == "\u20e3":
            out.append(" ")
        else:
            out.append(ch)
    return re.sub(r"\s+", " ", "".join(out)).strip()


def _words(*phrases: str) -> str:
    """An alternation of phrases, longest first (so "early morning" wins over "morning"), spaces as ``\\s+``."""
    ordered = sorted(set(phrases), key=len, reverse=True)
    return "(?:" + "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in ordered) + ")"


def _tidy(text: str) -> str:
    """Whitespace collapsed, no space before punctuation, no doubled or dangling commas."""
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"(?:,\s*){2,}", ", ", text)
    text = re.sub(r"\(\s*\)", "", text)
    return text.strip(" ,;:-")


# ----- numbers and durations -----------------------------------------------------------------------------------

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60,
}  # fmt: skip
_NUM_WORD = _words(*_NUMBER_WORDS)
_MORE = r"(?:more|extra|additional|further)"
_UNIT = r"(?P<unit>seconds|second|secs|sec|s|minutes|minute|mins|min)"
# "2 seconds", "two more seconds", "1.5s", "3-second", "two and a half seconds"; the lookbehind keeps "'80s" out.
_DUR_NUMBER = re.compile(
    rf"(?<![\w.,'])(?P<num>\d+(?:[.,]\d+)?|{_NUM_WORD})(?P<half>\s+and\s+a\s+half)?\s*-?\s*(?P<more>{_MORE}\s+)?"
    rf"{_UNIT}\b(?!')(?P<half2>\s+and\s+a\s+half)?",
    _I,
)
# "half a second", "a half second"
_DUR_HALF = re.compile(rf"\b(?:(?:a|one)\s+)?half\s+(?:an?\s+)?(?P<more>{_MORE}\s+)?(?P<unit>second|minute)\b", _I)
# "a few seconds", "a couple of more seconds", "several seconds"
_DUR_FEW = re.compile(
    rf"\b(?P<q>a\s+few|few|a\s+couple(?:\s+of)?|couple\s+of|several|a\s+handful\s+of)\s+(?P<more>{_MORE}\s+)?"
    r"(?P<unit>seconds|minutes)\b",
    _I,
)
# "another second", "a second more", "an extra second and a half"; not "a second shot" (an ordinal).
_DUR_ONE = re.compile(
    rf"\b(?P<art>another|one\s+more|an?\s+{_MORE}|one\s+{_MORE}|an?|just\s+an?)\s+(?P<more>{_MORE}\s+)?"
    r"(?P<unit>second|minute)\b(?P<half>\s+and\s+a\s+half)?"
    r"(?=\s*(?:$|[,.;:!?)\-]|(?:and|of|or|more|longer|extra|to|please|where|with|so|then|at|for|showing|while|"
    r"in\s+which|or\s+so)\b))",
    _I,
)
# Before a bare "20s" / "80s": these make it a duration ("extend by 20s"), anything else a decade ("the 80s").
_DECADE_MARKER = re.compile(
    r"(?:\b(?:by|for|add|another|extra|plus|additional|further|about|around|than|of)|\+)\s*$",
    _I,
)


@dataclass(frozen=True)
class _Duration:
    seconds: float
    start: int
    end: int
    more: bool  # "more" / "extra" inside the phrase, or "another": a duration added on


def _unit_seconds(unit: str) -> float:
    return 60.0 if unit.lower().startswith("min") else 1.0


def _find_duration(text: str) -> _Duration | None:
    """The first duration named in ``text`` (lower or mixed case), with where it is."""
    found: list[_Duration] = []
    for m in _DUR_NUMBER.finditer(text):
        num, unit = m.group("num").lower(), m.group("unit").lower()
        is_digits = num[0].isdigit()
        if unit in ("s", "min") and not is_digits:
            continue  # "two s": not a unit
        if unit == "s" and m.group("more"):
            continue
        value = float(num.replace(",", ".")) if is_digits else float(_NUMBER_WORDS[num])
        if unit == "s" and value.is_integer() and value >= 10 and value % 10 == 0:
            # "1920s", "1800s" are eras; "80s", "20s" are decades unless "by"/"add"/... precede or "more" follows.
            if len(num) >= 4:
                continue
            after = text[m.end() :]
            if not _DECADE_MARKER.search(text[: m.start()]) and not re.match(r"\s*(?:more|longer|extra)\b", after, _I):
                continue
        if m.group("half") or m.group("half2"):
            value += 0.5
        found.append(_Duration(value * _unit_seconds(unit), m.start(), m.end(), bool(m.group("more"))))
    for m in _DUR_HALF.finditer(text):
        found.append(_Duration(0.5 * _unit_seconds(m.group("unit")), m.start(), m.end(), bool(m.group("more"))))
    for m in _DUR_FEW.finditer(text):
        q = m.group("q").lower()
        value = 2.0 if "couple" in q else 3.0
        found.append(_Duration(value * _unit_seconds(m.group("unit")), m.start(), m.end(), bool(m.group("more"))))
    for m in _DUR_ONE.finditer(text):
        art = m.group("art").lower()
        value = 1.5 if m.group("half") else 1.0
        more = bool(m.group("more")) or not re.fullmatch(r"(?:just\s+)?an?", art)
        found.append(_Duration(value * _unit_seconds(m.group("unit")), m.start(), m.end(), more))
    if not found:
        return None
    return min(found, key=lambda d: (d.start, -d.end))


def parse_seconds(text: str) -> float | None:
    """The duration ``text`` names, in seconds: "two more seconds" -> 2.0, "1.5s" -> 1.5, "half a second" -> 0.5,
    "a few seconds" -> 3.0, "another second" -> 1.0; None when it names none ("1920s", "the 80s", "3 shots")."""
    found = _find_duration(_clean(text))
    return found.seconds if found else None


# ----- shots ---------------------------------------------------------------------------------------------------

_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "opening": 1,
}  # fmt: skip
_FROM_END = {"last": 0, "final": 0, "closing": 0, "ending": 0, "penultimate": 1, "second to last": 1, "second last": 1,
             "next to last": 1}  # fmt: skip
_SHOT_NOUN = r"(?:shot|scene|clip|segment|part)"
_ORD_WORD = (
    r"(?:"
    + "|".join(p.replace(" ", r"[\s-]+") for p in sorted(_FROM_END, key=len, reverse=True))
    + "|"
    + "|".join(_ORDINALS)
    + r"|\d+(?:st|nd|rd|th)|middle)"
)
_SHOT_RE = re.compile(
    rf"(?:\bthe\s+)?(?:\b{_SHOT_NOUN}\s*(?:#\s*|no\.?\s*|number\s+)?(?P<num>\d+|{_NUM_WORD})\b(?![.,]\d)(?!\s*{_UNIT}\b)"
    rf"|\b(?P<ord>{_ORD_WORD})\s+{_SHOT_NOUN}\b)",
    _I,
)


def _shot_index(m: re.Match[str], n_shots: int) -> int | None:
    if m.group("num"):
        num = m.group("num").lower()
        index = int(num) if num.isdigit() else _NUMBER_WORDS[num]
    else:
        word = re.sub(r"[\s-]+", " ", m.group("ord").lower())
        if word in _FROM_END:
            index = n_shots - _FROM_END[word]
        elif word == "middle":
            index = (n_shots + 1) // 2 if n_shots % 2 == 1 else 0
        elif word in _ORDINALS:
            index = _ORDINALS[word]
        else:
            index = int(re.sub(r"\D", "", word))  # "2nd" -> 2
    return index if 1 <= index <= n_shots else None


def parse_shot(text: str, n_shots: int) -> int | None:
    """The 1-based shot ``text`` names: "shot 2", "the second shot", "shot two", "the last shot" (n_shots),
    "first scene"; None when it names none or one outside 1..n_shots."""
    m = _SHOT_RE.search(_clean(text))
    return _shot_index(m, n_shots) if m else None


def _strip_shot_refs(text: str) -> str:
    """The words with their shot references taken out: "make shot 2 darker" -> "make it darker"."""
    pattern = re.compile(
        r"(?P<prep>\b(?:in|on|for|of|to|at|from|within|during|inside)\s+)?(?P<ref>" + _SHOT_RE.pattern + r")"
        r"(?P<poss>'s)?(?P<punct>\s*[:,;\-\u2013\u2014]+)?",
        _I,
    )

    def repl(m: re.Match[str]) -> str:
        if m.group("prep"):
            return " " if not m.group("punct") else ", "
        if not text[: m.start()].strip(" ,.;:!?-"):  # at the start: "shot 2: darker", "the last shot is too dark"
            return "" if m.group("punct") else "it "
        return " it " + (", " if m.group("punct") else "")

    return _tidy(pattern.sub(repl, text))


# ----- politeness and instructions -----------------------------------------------------------------------------

_LEAD_FILLER = re.compile(
    r"^(?:(?:please|pls|plz|kindly|ok(?:ay)?|hey|hi|hello|now|so|and|also|then|um+|hmm+|well|alright|great|nice|cool|"
    r"actually|oh|wow|good|yes|yeah|hmm)\b[\s,!.]*"
    r"|(?:can|could|would|will)\s+you\s+(?:please\s+)?(?:try\s+to\s+)?"
    r"|i(?:'d|\s+would)?\s+(?:like|love|want|need|prefer)(?:\s+(?:you|it))?\s+to\s+"
    r"|i(?:'d|\s+would)?\s+(?:like|love|want|need|prefer)\s+"
    r"|let'?s\s+|let\s+us\s+|go\s+ahead\s+and\s+|try\s+to\s+)",
    _I,
)
_TRAIL_FILLER = re.compile(r"[\s,]*\b(?:please|pls|plz|thanks|thank\s+you|thx|ty)\b[\s.!?]*$|[\s.!?,;:]+$", _I)


def _strip_filler(text: str) -> str:
    """The words less "please", "can you", "I'd like", "thanks" and end punctuation."""
    text = _tidy(text)
    while True:
        new = _TRAIL_FILLER.sub("", _LEAD_FILLER.sub("", text)).strip()
        if new == text:
            return text
        text = new


_EDIT_VERB = re.compile(
    r"^(?:make|turn|add|remove|delete|erase|replace|change|give|put|paint|convert|render|apply|swap|colou?r|recolou?r|"
    r"transform|set|place|insert|get\s+rid|take\s+out|fill|cover|darken|brighten|lighten|blur|sharpen|increase|"
    r"decrease|reduce|boost|saturate|desaturate|show|use|draw|dress|let|have|zoom|crop|restyle|stylize|stylise|fix|"
    r"clean|tint|shift|adjust|keep|move|get|bring|drop|lose|hide|mirror|flip|rotate|enlarge|shrink|widen|age|"
    r"redraw|repaint|modernize|modernise|update|switch)\b",
    _I,
)
# Words an instruction can start with that want "make it " before them ("darker" -> "make it darker").
_ADJECTIVE_START = (
    r"(?:more|less|too|very|much|slightly|somewhat|a|an|extra|super|really|way|in|into|even|darker|brighter|lighter|"
    r"warmer|cooler|colder|softer|sharper|bigger|smaller|larger|taller|shorter|wider|narrower|redder|greener|bluer|"
    r"happier|sadder|scarier|creepier|moodier|gloomier|richer|deeper|stronger|weaker|cleaner|busier|calmer|older|"
    r"younger|newer|higher|lower|thicker|thinner|heavier|fuller|crisper|clearer|grittier|prettier|nicer|cuter|hazier|"
    r"foggier|snowier|rainier|sunnier|cloudier|dreamier|spookier|cozier|cosier|livelier|dark|bright|moody|creepy|"
    r"scary|spooky|cinematic|dramatic|dreamy|cozy|cosy|gritty|surreal|colou?rful|vivid|muted|pastel|saturated|"
    r"desaturated|faded|grainy|blurry|sharp|crisp|glossy|matte|old|ancient|futuristic|modern|vintage|retro)"
)
_ERA = r"(?:the\s+)?(?:'?\d0s|\d{3}0s|\d{1,2}(?:st|nd|rd|th)\s+century|victorian\s+era|roaring\s+twenties)"


def _instruction(words: str) -> str:
    """An InstructPix2Pix-style instruction from the user's words: "darker" -> "make it darker", "make it 1920s" ->
    "make it look like the 1920s", "with a red hat" -> "add a red hat"; words it cannot read stay as they are."""
    text = _strip_filler(words)
    if not text:
        return ""
    text = re.sub(
        r"^(?:it|this|that)(?:'s|\s+is)\s+(?:way\s+|much\s+|a\s+bit\s+)?too\s+", "make it less ", text, flags=_I
    )
    text = re.sub(
        r"^(?:(?:it|this|that|everything|the\s+(?:image|picture|video|scene|whole\s+thing))\s+)?"
        r"(?:should|could|must|needs?\s+to|has\s+to|ought\s+to|will)\s+(?:be\s+)?(?=(look\s+)?)",
        "make it ",
        text,
        flags=_I,
    )
    text = re.sub(r"^(?:with|plus)\s+", "add ", text, flags=_I)
    text = re.sub(r"^(?:without|no|no\s+more|lose\s+the)\s+", "remove ", text, flags=_I)
    text = re.sub(r"^(?:it\s+|just\s+)?(?:look|looking|looks)\s+like\s+", "make it look like ", text, flags=_I)
    text = re.sub(r"^(?:like|as\s+if\s+(?:it\s+were\s+)?(?:from\s+)?|as)\s+", "make it look like ", text, flags=_I)
    text = re.sub(rf"^(make\s+it)\s+(?:from\s+)?({_ERA})$", r"\1 look like \2", text, flags=_I)
    text = re.sub(r"(look\s+like\s+)(?!the\s)('?\d0s|\d{3}0s)\b", r"\1the \2", text, flags=_I)
    if _EDIT_VERB.match(text):
        return text
    first = re.match(r"[\w'-]+", text)
    if first and (
        re.fullmatch(_ADJECTIVE_START, first.group(), _I)
        or _find_value(_STYLE, text)
        or _find_value(_WEATHER, text)
        or _find_value(_SEASON, text)
        or _find_value(_LIGHT, text)
        or re.match(_ERA, text, _I)
        or re.match(_COLOUR, text, _I)
    ):
        text = re.sub(r"^it\s+", "", text, flags=_I)
        if re.match(r"in\s+the\s+style\s+of\s", text, _I):
            return "make it " + text
        text = re.sub(r"^(?:in|into)\s+", "", text, flags=_I)
        if re.match(rf"{_ERA}$", text, _I):
            return "make it look like " + (text if re.match(r"the\s", text, _I) else "the " + text)
        return "make it " + text
    if re.match(r"it\s+\w", text, _I):
        return "make " + text
    return text


# ----- attribute categories ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Value:
    """One value of an attribute category: its name, the words that name it, the phrase a prompt gets for it."""

    name: str
    pattern: str  # regex naming this value in an instruction
    phrase: str  # how a rewritten prompt says it
    group: str = ""  # time of day: "day", "evening" or "night" (what it implies about the light)


_TIME = (
    _Value("dawn", r"\b(?:dawn|daybreak|first\s+light|break\s+of\s+day)\b", "at dawn", "day"),
    _Value("sunrise", r"\bsun\s*rise\b", "at sunrise", "day"),
    _Value("early morning", r"\bearly(?:[\s-]+in\s+the)?[\s-]+morning\b", "in the early morning", "day"),
    _Value("morning", r"\bmornings?\b", "in the morning", "day"),
    _Value("noon", r"\b(?:noon|midday|high\s+noon|mid-day)\b", "at noon", "day"),
    _Value("late afternoon", r"\blate[\s-]+afternoon\b", "in the late afternoon", "day"),
    _Value("afternoon", r"\bafternoons?\b", "in the afternoon", "day"),
    _Value("golden hour", r"\bgolden[\s-]+hour\b", "at golden hour", "evening"),
    _Value("sunset", r"\bsun\s*set\b|\bsundown\b", "at sunset", "evening"),
    _Value("dusk", r"\bdusk\b", "at dusk", "evening"),
    _Value("twilight", r"\btwilight\b", "at twilight", "evening"),
    _Value("blue hour", r"\bblue[\s-]+hour\b", "at blue hour", "evening"),
    _Value("evening", r"\bevenings?\b", "in the evening", "evening"),
    _Value("midnight", r"\bmidnight\b(?!\s+blue)", "at midnight", "night"),
    _Value(
        "night",
        r"\b(?:night(?:time|-time|fall)?|nights|nocturnal)\b(?!\s*(?:club|life|stand|mare|gown|shift))",
        "at night",
        "night",
    ),
    _Value(
        "day",
        r"\b(?:day[\s-]*time|daylight|broad\s+daylight)\b|\b(?:during|by|in)\s+the\s+day\b|\bby\s+day\b"
        r"|\b(?:into|to)\s+day\b|\bday(?=\s*(?:instead|rather)\b)|\b(?:make\s+it|it\s+is|it's)\s+day\b(?!\s+\w)",
        "in daylight",
        "day",
    ),
)
_LIGHT = (
    _Value(
        "bright",
        r"\b(?:bright(?:er|en|ened)?|lighter|lighten|more\s+light|well[\s-]+lit|brightly\s+lit)\b",
        "bright soft light",
    ),
    _Value(
        "dark",
        r"\b(?:dark(?:er|en)?|dim(?:mer)?|less\s+light|gloomy|gloomier|moodier|low[\s-]+key)\b",
        "dim moody light",
    ),
    _Value("soft", r"\b(?:soft(?:er)?\s+(?:light|lighting)|softer|diffused?\s+light)\b", "soft diffused light"),
    _Value("harsh", r"\b(?:harsh(?:er)?|hard\s+light|contrasty)\b", "harsh direct light"),
    _Value("warm", r"\bwarm(?:er)?\s+(?:light|lighting|tones?|glow)\b", "warm golden light"),
    _Value("cool", r"\b(?:cool(?:er)?|cold(?:er)?)\s+(?:light|lighting|tones?)\b", "cool blue light"),
)
_SEASON = (
    _Value("spring", r"\bspring(?:time)?\b(?!\s+(?:water|roll))", "in spring"),
    _Value("summer", r"\bsummer(?:time|y)?\b", "in summer"),
    _Value(
        "autumn",
        r"\b(?:autumn(?:al)?|fall\s+(?:season|colou?rs|foliage|leaves|scene|version)|(?:in|into|to)\s+(?:the\s+)?fall)\b",
        "in autumn",
    ),
    _Value("winter", r"\b(?:winter(?:time|y)?|wintry)\b", "in winter"),
)
_WEATHER = (
    _Value("thunderstorm", r"\b(?:thunder\s*storms?|lightning\s+storm)\b", "in a thunderstorm"),
    _Value("storm", r"\b(?:storm|stormy|stormier)\b", "in a storm"),
    _Value("rain", r"\b(?:rain|rainy|rainier|raining|drizzle|drizzly|downpour)\b", "in the rain"),
    _Value("snow", r"\b(?:snow|snowy|snowier|snowing|snowfall|blizzard)\b", "in falling snow"),
    _Value("fog", r"\b(?:fog|foggy|foggier)\b", "in thick fog"),
    _Value("mist", r"\b(?:mist|misty|mistier|haze|hazy)\b", "in soft mist"),
    _Value("overcast", r"\b(?:cloudy|cloudier|overcast|grey\s+sky|gray\s+sky)\b", "under an overcast sky"),
    _Value("sunny", r"\b(?:sunny|sunnier|sunshine|clear\s+(?:sky|skies|weather|day))\b", "in bright sunshine"),
    _Value("wind", r"\b(?:windy|windier|wind\s*swept|gusty)\b", "in strong wind"),
)
_STYLE = (
    _Value("watercolor", r"\bwater\s*colou?rs?\b", "watercolor painting"),
    _Value("oil painting", r"\boil\s+paint(?:ing)?s?\b", "oil painting"),
    _Value("pencil sketch", r"\b(?:pencil\s+)?(?:sketch|sketched|drawing|drawn)\b", "pencil sketch"),
    _Value("charcoal", r"\bcharcoal\b", "charcoal drawing"),
    _Value("ink", r"\b(?:ink|inked)\b", "ink drawing"),
    _Value("pastel", r"\bpastels?\b", "pastel drawing"),
    _Value("anime", r"\b(?:anime|manga|ghibli)\b", "anime style"),
    _Value("cartoon", r"\b(?:cartoon(?:y|ish)?|comic(?:\s+book)?)\b", "cartoon style"),
    _Value("pixel art", r"\bpixel(?:ated)?(?:\s+art)?\b|\b8[\s-]?bit\b", "pixel art"),
    _Value("3d render", r"\b3d(?:\s+render)?\b|\bclaymation\b|\bpixar\b", "3d render"),
    _Value("photo", r"\b(?:photo(?:graph)?|photorealistic|realistic|hyperrealistic)\b", "photograph"),
    _Value(
        "black and white",
        r"\b(?:black\s+(?:and|&)\s+white|b\s*&\s*w|monochrome|grayscale|greyscale)\b",
        "black and white",
    ),
    _Value("sepia", r"\bsepia\b", "sepia tone"),
    _Value("noir", r"\b(?:film\s+)?noir\b", "film noir"),
    _Value("vintage", r"\b(?:vintage|retro|old[\s-]+fashioned|old[\s-]+timey|antique)\b", "vintage look"),
    _Value(
        "painting", r"\b(?:painting|painted|impressionis[tm]|van\s+gogh|monet|cubis[tm]|surreal(?:ist)?)\b", "painting"
    ),
    _Value("cyberpunk", r"\b(?:cyberpunk|steampunk|vaporwave|synthwave|neon)\b", "cyberpunk style"),
    _Value("era", _ERA, "era"),
)
_COLOUR = (
    r"\b(?:red|orange|yellow|green|blue|purple|violet|pink|brown|black|white|gray|grey|gold|golden|silver|teal|cyan|"
    r"magenta|beige|turquoise|crimson|navy|maroon)\b"
)
_NEGATED = re.compile(
    r"\b(?:instead\s+of|rather\s+than|than|not|no\s+longer|no\s+more|from|away\s+from)\s+(?:the\s+|a\s+|an\s+)?$", _I
)


def _find_value(category: tuple[_Value, ...], text: str) -> _Value | None:
    """The value of ``category`` that ``text`` asks for: the last one named that is not negated ("day instead of
    night" -> day, "turn the night into day" -> day)."""
    best: tuple[tuple[int, int], _Value] | None = None
    for value in category:
        for m in re.finditer(value.pattern, text, _I):
            if _NEGATED.search(text[: m.start()]) or re.match(r"\s+(?:to|into)\b", text[m.end() :], _I):
                continue
            key = (m.end(), -m.start())  # the last one named; of two ending together the longer ("early morning")
            if best is None or key > best[0]:
                best = (key, value)
    return best[1] if best else None


# ----- rewriting a prompt --------------------------------------------------------------------------------------

# Phrases of a prompt that say a time of day: "at night", "in the early morning", "on a cold winter night",
# "under a starry sky", "by moonlight".
_TIME_WORD = (
    r"(?:dawn|daybreak|sunrise|early[\s-]+morning|morning|noon|midday|late[\s-]+afternoon|afternoon|golden[\s-]+hour|"
    r"sunset|sundown|dusk|twilight|blue[\s-]+hour|evening|midnight|night(?:time|-time|fall)?|day[\s-]*time|daylight|"
    r"broad\s+daylight|day)"
)
_NP_STOP_WORDS = (
    r"(?:on|in|at|with|under|by|near|beside|next|over|through|across|from|into|onto|of|for|as|to|and|or|during|"
    r"against|behind|among|inside|outside|above|below|beneath|the|a|an)"
)
_TIME_ADJ = r"(?:early|late|dark|quiet|moonlit|starry|starlit|pitch[\s-]+black|silent|still|deep|calm|peaceful)"
_PREP_TIME = re.compile(
    rf"\b(?:at|in|during|by|around|before|after|through|into|late\s+at)\s+(?:the\s+)?(?:{_TIME_ADJ}\s+)*{_TIME_WORD}"
    rf"(?:\s+time)?\b(?!\s*(?:light|lighting|glow|sky|sun))",
    _I,
)
_ON_A_TIME = re.compile(
    rf"\bon\s+(?:a|an|the)\s+(?P<adjs>(?:(?!{_NP_STOP_WORDS}\b)[\w-]+\s+){{0,3}}?){_TIME_WORD}\b"
    r"(?!\s*(?:light|lighting|glow|sky|sun))",
    _I,
)
_UNDER_SKY = re.compile(
    rf"\b(?:under|beneath|below)\s+(?:a|an|the)\s+(?:(?:{_TIME_ADJ}|clear|cloudless|{_TIME_WORD})\s+)*"
    r"(?:sky|skies|stars|moon|moonlight|full\s+moon)\b"
    r"|\b(?:by|in|under)\s+(?:the\s+)?(?:moonlight|starlight|moon\s*light)\b"
    rf"|\b(?:bathed\s+)?in\s+(?:the\s+)?(?:(?:warm|bright|golden|soft|pale)\s+)*(?:sunlight|sunshine)\b",
    _I,
)
_TIME_COMPOUND = re.compile(rf"\b{_TIME_WORD}(?=\s+(?:light|lighting|glow|sky|sun|haze|shadows?)\b)", _I)
_TIME_SEGMENT = re.compile(rf"^\s*(?:{_TIME_ADJ}\s+)*{_TIME_WORD}(?:\s+(?:time|scene|shot))?\s*$", _I)
_NIGHT_ADJ = re.compile(r"\b(?:moonlit|starlit|starry|nocturnal)\s+", _I)
_DAY_ADJ = re.compile(r"\b(?:sunlit|sun-drenched|sun-dappled)\s+", _I)
_TIME_NOUN = {"morning": "morning", "early morning": "early morning", "afternoon": "afternoon",
              "late afternoon": "late afternoon", "evening": "evening", "night": "night", "midnight": "night",
              "day": "day", "noon": "day"}  # fmt: skip

_LIGHT_PHRASE = re.compile(
    r"\b(?:(?:very|soft|softer|harsh|warm|cool|cold|dim|low|bright|dark|moody|dramatic|natural|pale|faint|gentle|"
    r"strong|diffused?|hard|low-key|high-key|golden|blue|eerie|ambient)\s*,?\s+){1,3}(?:light|lighting|glow|"
    r"illumination|tones?)\b",
    _I,
)
_GLOOM = re.compile(r"\b(?:gloomy|murky|shadowy|pitch[\s-]+black|dimly[\s-]+lit|dark(?:ness)?)\b\s*", _I)
_GLARE = re.compile(r"\b(?:brightly[\s-]+lit|well[\s-]+lit|glaring)\b\s*", _I)
_IN_THE_DARK = re.compile(r"\b(?:in|into)\s+(?:the\s+)?(?:dark|darkness)\b", _I)

_SEASON_PHRASE = re.compile(
    r"\b(?:in|during|through)\s+(?:the\s+)?(?:early\s+|late\s+|mid-?|deep\s+|high\s+)?"
    r"(?:spring|summer|autumn|fall|winter)(?:time)?\b",
    _I,
)
_SEASON_WORD = re.compile(
    r"\b(?:summer(?:time|y)?|winter(?:time|y)?|wintry|autumn(?:al)?|spring(?:time)?(?=\s+(?:day|morning|evening|"
    r"night|afternoon|scene|landscape|forest|meadow|field|garden|sky|sun|light|park|street|city|village|flowers?|"
    r"breeze|rain|blossoms?))|fall(?=\s+(?:day|morning|evening|afternoon|scene|landscape|forest|foliage|leaves|"
    r"colou?rs|park)))\b",
    _I,
)
_SEASON_ADJ = {"spring": "spring", "summer": "summer", "autumn": "autumn", "winter": "winter"}

_WEATHER_ADJ = {"thunderstorm": "stormy", "storm": "stormy", "rain": "rainy", "snow": "snowy", "fog": "foggy",
                "mist": "misty", "overcast": "overcast", "sunny": "sunny", "wind": "windy"}  # fmt: skip
_WEATHER_ADJ_RE = r"(?:stormy|rainy|snowy|foggy|misty|hazy|cloudy|overcast|sunny|windy|clear|drizzly)"
_WEATHER_PHRASE = re.compile(
    r"\b(?:in|through|during|under|amid|amidst)\s+(?:the\s+|a\s+|an\s+)?(?:(?:heavy|light|pouring|falling|driving|"
    r"soft|thick|dense|gentle|torrential|bright|violent|raging)\s+)*(?:rain|rainfall|downpour|drizzle|snowfall|"
    r"falling\s+snow|blizzard|fog|mist|haze|storm|thunderstorm|sunshine|wind)\b"
    rf"|\bunder\s+(?:a|an|the)\s+(?:{_WEATHER_ADJ_RE}|grey|gray|blue)\s+sky\b",
    _I,
)
_WEATHER_ON_NOUN = re.compile(
    rf"\b{_WEATHER_ADJ_RE}(?=\s+(?:day|night|morning|evening|afternoon|weather|sky|skies)\b)", _I
)
_WEATHER_SEGMENT = re.compile(rf"^\s*(?:{_WEATHER_ADJ_RE}|rain|snow|fog|mist|storm|sunshine)(?:\s+weather)?\s*$", _I)

_SUBJECT_PREFIX = re.compile(
    r"^\s*(?:(?:a|an|the)\s+)?(?:[\w-]+\s+){0,2}?(?:shot|photo|photograph|picture|image|painting|video|close-?up|"
    r"portrait|view|footage|drawing|illustration|render|still)\s+of\s+",
    _I,
)
_NP_STOP = (
    r"(?:on|in|at|with|under|by|near|beside|next|over|through|across|from|into|onto|sitting|standing|running|"
    r"walking|flying|sleeping|lying|swimming|jumping|is|are|and|during|against|behind|among|inside|outside|atop|"
    r"along|around|wearing|holding|looking|that|which|who|beneath|below|above|underneath|amid|between|toward|"
    r"towards|of|for|as|while|to)"
)
_SUBJECT_NP = re.compile(
    rf"(?P<det>(?:a|an|the|one|two|three|four|five|some|several|many|\d+)\s+)?(?P<body>(?:[\w'-]+\s+){{0,3}}?[\w'-]+)"
    rf"(?=\s+{_NP_STOP}\b|\s*[,.;]|\s*$)",
    _I,
)
_DETERMINER = re.compile(r"^(?:a|an|the|one|two|three|some|his|her|its|their|my|our|your)\s+", _I)


def _article_for(noun_phrase: str) -> str:
    """ "a" or "an" for a noun phrase, by its first letter ("an owl", "a wolf"); "" for a plural."""
    words = noun_phrase.split()
    if not words:
        return ""
    last = words[-1].lower()
    if last.endswith("s") and not last.endswith(("ss", "us", "is")):
        return ""
    return (
        "an" if re.match(r"[aeiou]", noun_phrase, _I) and not re.match(r"(?:uni|use|eu|one)", noun_phrase, _I) else "a"
    )


def _fix_articles(text: str) -> str:
    """ "a owl" -> "an owl", "an wolf" -> "a wolf" (the articles a rewrite may have left wrong)."""

    def repl(m: re.Match[str]) -> str:
        art, word = m.group(1), m.group(2)
        want = _article_for(word) or "a"
        if art[0].isupper():
            want = want.capitalize()
        return f"{want} {word}"

    return re.sub(r"\b(an?)\s+([A-Za-z][\w-]*)", repl, text, flags=_I)


def _segments(prompt: str) -> list[str]:
    return [s.strip() for s in prompt.split(",")]


def _join(segments: list[str]) -> str:
    return _tidy(", ".join(s for s in segments if s.strip()))


def _insert_after_first(prompt: str, phrase: str, as_segment: bool) -> str:
    """``phrase`` added to the prompt's first segment (the subject: "a fox in the snow at night, 4k") or, with
    ``as_segment``, as a new segment right after it."""
    segs = _segments(prompt)
    if as_segment:
        segs.insert(1, phrase)
    else:
        segs[0] = f"{segs[0]} {phrase}"
    return _join(segs)


def _apply_time(prompt: str, value: _Value, light: _Value | None) -> str:
    """The prompt's time-of-day phrases replaced by ``value``'s (in the first one's place), and the light that
    contradicts it dropped; ``light``'s phrase follows the time's."""
    marker, light_marker = "\x00TIME\x00", "\x00LIGHT\x00"
    placed = False

    def first_only(replacement: Callable[[re.Match[str]], str]) -> Callable[[re.Match[str]], str]:
        """The first time phrase gets the new one; later ones are dropped."""

        def repl(m: re.Match[str]) -> str:
            nonlocal placed
            if placed:
                return " "
            placed = True
            return replacement(m)

        return repl

    def on_a(m: re.Match[str]) -> str:
        kept = _NIGHT_ADJ.sub("", _DAY_ADJ.sub("", m.group("adjs")))
        kept = re.sub(rf"\b{_TIME_ADJ}\s+", "", kept, flags=_I).strip()
        if not kept:
            return marker
        noun = _TIME_NOUN.get(value.name)
        if noun:  # "on a cold winter night" -> "on a cold winter morning"
            return f"on a {kept} {noun}{light_marker}"
        return f"on a {kept} day {marker}"  # "on a cold winter night" -> "on a cold winter day at dusk"

    def to_marker(m: re.Match[str]) -> str:
        return marker

    out = _ON_A_TIME.sub(first_only(on_a), prompt)
    out = _PREP_TIME.sub(first_only(to_marker), out)
    out = _UNDER_SKY.sub(first_only(to_marker), out)
    segs = _segments(out)
    as_segment = False
    for i, seg in enumerate(segs):
        if _TIME_SEGMENT.match(seg):  # "a city street, night, neon" -> "a city street, early morning, neon"
            segs[i] = " " if placed else value.name + light_marker
            placed = as_segment = True
    out = ", ".join(segs)
    # "sunset light", "night sky": the time word of a compound says the new time.
    out = _TIME_COMPOUND.sub(value.name if value.name != "day" else "daylight", out)
    if value.group != "night":
        out = _NIGHT_ADJ.sub("", out)
        out = _IN_THE_DARK.sub(" ", out)
    if value.group == "night":
        out = _DAY_ADJ.sub("", out)
    light_phrase = f", {light.phrase}" if light else ""
    if light:
        out = _LIGHT_PHRASE.sub(" ", out)
    if marker in out:
        out = out.replace(marker, value.phrase + light_phrase, 1)
    elif light_marker in out:
        out = out.replace(light_marker, light_phrase, 1)
    elif not as_segment:
        out = _insert_after_first(out, value.phrase + light_phrase, as_segment=False)
    return _join(_segments(out))


def _apply_light(prompt: str, value: _Value) -> str:
    """The prompt's lighting phrase replaced by ``value``'s (or one added), and light words it contradicts dropped."""
    out = prompt
    if value.name == "bright":
        out = _IN_THE_DARK.sub(" ", _GLOOM.sub("", out))
    elif value.name == "dark":
        out = _GLARE.sub("", out)
    if _LIGHT_PHRASE.search(out):
        head, tail = _LIGHT_PHRASE.split(out, maxsplit=1)
        return _join(_segments(head + value.phrase + _LIGHT_PHRASE.sub(" ", tail)))
    return _insert_after_first(out, value.phrase, as_segment=True)


def _apply_season(prompt: str, value: _Value) -> str:
    """The prompt's season words replaced by ``value`` ("a summer meadow" -> "a winter meadow"), or one added."""
    out, n = _SEASON_PHRASE.subn(value.phrase, prompt, count=1)
    out = _SEASON_PHRASE.sub(" ", out)
    out, m = _SEASON_WORD.subn(_SEASON_ADJ[value.name], out)
    if n or m:
        return _join(_segments(out))
    return _insert_after_first(out, value.phrase, as_segment=False)


def _apply_weather(prompt: str, value: _Value) -> str:
    """The prompt's weather replaced by ``value``'s ("on a rainy day" -> "on a snowy day"), or added."""
    adj = _WEATHER_ADJ[value.name]
    out, n = _WEATHER_ON_NOUN.subn(adj, prompt)
    if n:
        out = _WEATHER_PHRASE.sub(" ", out)
        return _join(_segments(out))
    out, n = _WEATHER_PHRASE.subn(value.phrase, out, count=1)
    out = _WEATHER_PHRASE.sub(" ", out) if n else out
    segs = _segments(out)
    for i, seg in enumerate(segs):
        if _WEATHER_SEGMENT.match(seg):
            segs[i] = adj if not n else " "
            n = 1
    out = _join(segs)
    return out if n else _insert_after_first(out, value.phrase, as_segment=False)


def _style_phrase(instruction: str, value: _Value) -> str:
    """How the prompt names the asked-for look: "make it look like a 1920s film" -> "1920s film",
    "make it a watercolor" -> "watercolor painting", "make it 1920s" -> "1920s style"."""
    words = re.sub(
        r"^(?:make|turn|render|convert|change|restyle|redraw|repaint|paint)\s+(?:it|this|the\s+\w+)?\s*"
        r"(?:look\s+like|into|to|as|in)?\s*|^(?:in\s+)?(?:the\s+)?style\s+of\s+",
        "",
        instruction,
        flags=_I,
    )
    words = re.sub(r"^(?:an?|the)\s+", "", words.strip(), flags=_I)
    words = re.sub(r"\s+(?:style|look|version|vibe|feel|aesthetic)$", "", words, flags=_I)
    if not words:
        return value.phrase
    if value.name == "era" and re.fullmatch(_ERA, words, _I):
        return f"{words} style"
    if re.fullmatch(value.pattern, words, _I):
        return value.phrase
    return words


_STYLE_SEGMENT_WORDS = re.compile(
    r"\b(?:style|painting|photo(?:graph)?|photorealistic|realistic|sketch|drawing|render|illustration|art|anime|"
    r"cartoon|watercolou?r|oil|film|look|aesthetic|tone|cinematic|pixel|noir|vintage|retro)\b",
    _I,
)


def _apply_style(prompt: str, instruction: str, value: _Value) -> str:
    """The prompt's style segment ("oil painting") replaced by the asked-for look, or the look added at the end."""
    phrase = _style_phrase(instruction, value)
    segs = _segments(prompt)
    for i, seg in enumerate(segs[1:], start=1):
        if any(re.search(v.pattern, seg, _I) for v in _STYLE if v.name != "era") and _STYLE_SEGMENT_WORDS.search(seg):
            segs[i] = phrase
            return _join(segs)
    return _join([*segs, phrase])


def _clean_np(words: str) -> str:
    """A noun phrase from the user's words: "make it a wolf" -> "a wolf", "the dog" -> "dog"."""
    words = re.sub(
        r"^(?:(?:make|turn|change)\s+(?:it|this|him|her|them)\s+(?:into\s+|to\s+)?|(?:i\s+want|use|have|show|give\s+me|"
        r"put|there\s+should\s+be|how\s+about|what\s+about|maybe|try)\s+|it(?:'s|\s+should\s+be)?\s+)",
        "",
        words.strip(),
        flags=_I,
    )
    return _tidy(words.strip(" ,.!?"))


def _bare(noun_phrase: str) -> str:
    return _DETERMINER.sub("", noun_phrase.strip()).strip()


def _swap_subject(prompt: str, new: str, old: str = "") -> str | None:
    """The prompt with ``old`` (or, when absent or not found, its subject noun phrase) replaced by ``new``."""
    new_bare = _bare(new)
    if not new_bare:
        return None
    old_bare = _bare(old)
    if old_bare:
        m = re.search(rf"\b{re.escape(old_bare)}(?:s|es)?\b", prompt, _I)
        if m:
            out = prompt[: m.start()] + new_bare + prompt[m.end() :]
            return _fix_articles(out)
    prefix = _SUBJECT_PREFIX.match(prompt)
    start = prefix.end() if prefix else 0
    m = _SUBJECT_NP.match(prompt, start)
    if not m:
        return None
    det = (m.group("det") or "").strip().lower()
    if _DETERMINER.match(new + " "):
        replacement = new.strip()
    elif det in ("a", "an", "") and prompt[m.start() :].strip():
        art = _article_for(new_bare) if det else ""
        replacement = f"{art} {new_bare}".strip()
    else:
        replacement = f"{det} {new_bare}"
    return _fix_articles(prompt[: m.start()] + replacement + prompt[m.end() :])


_SWAP_PATTERNS = (
    # "a cat instead of a dog", "make it a wolf instead of a fox", "wolf rather than fox"
    re.compile(r"^(?P<new>.+?)\s+(?:instead\s+of|rather\s+than|in\s+place\s+of)\s+(?P<old>.+)$", _I),
    # "instead of the dog, a cat"
    re.compile(r"^(?:instead\s+of|rather\s+than)\s+(?P<old>.+?)\s*,\s*(?P<new>.+)$", _I),
    # "replace the dog with a cat", "swap the dog for a cat", "change the dog to a cat", "turn the dog into a cat"
    re.compile(
        r"^(?:replace|swap|switch|exchange|substitute)\s+(?P<old>.+?)\s+(?:with|for|by)\s+(?P<new>.+)$"
        r"|^(?:change|turn|transform|make)\s+(?P<old2>(?:the|that|this)\s+.+?)\s+(?:into|to)\s+(?P<new2>.+)$",
        _I,
    ),
    # "make it a wolf instead", "a cat instead"
    re.compile(r"^(?P<new>.+?)\s+instead$", _I),
)


def _find_swap(instruction: str) -> tuple[str, str] | None:
    """(new, old) when the words swap one thing for another; old may be ""."""
    text = _strip_filler(instruction)
    for pattern in _SWAP_PATTERNS:
        m = pattern.match(text)
        if m:
            groups = m.groupdict()
            new = groups.get("new") or groups.get("new2") or ""
            old = groups.get("old") or groups.get("old2") or ""
            new = _clean_np(re.split(r",|\band\b(?=\s+(?:make|turn|add|change))", new)[0])
            old = _clean_np(old)
            if new:
                return new, old
    return None


def _is_look(words: str) -> bool:
    """Whether words name a look (style, era, season, weather, light, colour) rather than a thing."""
    return bool(
        _find_value(_STYLE, words)
        or _find_value(_SEASON, words)
        or _find_value(_WEATHER, words)
        or _find_value(_LIGHT, words)
        or re.fullmatch(rf"(?:\w+\s+)?{_COLOUR}(?:\s+(?:one|colou?r|tones?))?", _bare(words), _I)
    )


def _command_words(instruction: str) -> str:
    """The instruction less its command words: "please make it more dramatic" -> "more dramatic"."""
    text = _strip_filler(instruction)
    text = re.sub(r"^(?:make|turn|render)\s+(?:it|this|everything)\s+(?:look\s+)?(?:like\s+)?", "", text, flags=_I)
    text = re.sub(r"^(?:change|switch)\s+(?:it\s+)?to\s+", "", text, flags=_I)
    return _tidy(text)


def rewrite_prompt(prompt: str, instruction: str) -> str:
    """A new prompt: ``prompt`` rewritten coherently for ``instruction``, by rules (no LLM).

    A time of day, season, weather, lighting or style the instruction names replaces the prompt's phrases of that
    category ("at night" gives way to "in the early morning"); "X instead of Y" / "make it an X instead" /
    "replace the Y with an X" swaps the subject; "add X" puts "with X" after the subject; "remove the X" drops a
    "with/and the X". When no rule applies: "<prompt>, <instruction less 'make it', 'please'>".

    Example:
        >>> rewrite_prompt("a dog sleeping on a porch", "a cat instead of a dog")
        'a cat sleeping on a porch'
    """
    prompt = _tidy(_clean(prompt))
    instruction = _tidy(_clean(instruction))
    words = _strip_filler(_strip_shot_refs(instruction))
    if not prompt:
        return _command_words(words)
    if not re.search(r"\w", words):
        return prompt
    out = prompt
    applied = False
    swap = _find_swap(words)
    if swap and not _is_look(swap[0]) and not _find_value(_TIME, swap[0]):
        swapped = _swap_subject(out, *swap)
        if swapped:
            out, applied = swapped, True
    time, light = _find_value(_TIME, words), _find_value(_LIGHT, words)
    if time:
        out, applied = _apply_time(out, time, light), True
    elif light:
        out, applied = _apply_light(out, light), True
    season = _find_value(_SEASON, words)
    if season:
        out, applied = _apply_season(out, season), True
    weather = _find_value(_WEATHER, words)
    if weather and not (season and weather.name == "snow"):
        out, applied = _apply_weather(out, weather), True
    style = _find_value(_STYLE, words)
    if style and not applied:
        out, applied = _apply_style(out, _instruction(words), style), True
    if applied:
        return out
    add = re.match(r"^(?:add|put|include|give\s+(?:it|him|her|them))\s+(?P<what>.+)$", words, _I)
    if add:
        what = re.sub(
            r"\s+(?:to|in|on|into)\s+(?:it|the\s+(?:image|picture|scene|video|shot))$", "", add.group("what"), flags=_I
        )
        return _add_thing(out, _tidy(what))
    colour = re.match(
        rf"^(?:make|turn|paint|colou?r|change)\s+(?:the|his|her|its|their)\s+(?P<thing>[\w-]+)\s+(?:to\s+|into\s+)?"
        rf"(?P<colour>(?:light\s+|dark\s+|bright\s+|pale\s+|deep\s+)?{_COLOUR})$",
        words,
        _I,
    )
    if colour:  # "make the hat blue": "a red hat" -> "a blue hat"
        thing = re.escape(colour.group("thing"))
        pattern = rf"\b(?:(?:light|dark|bright|pale|deep)\s+)?(?:{_COLOUR}\s+)?{thing}\b"
        if re.search(pattern, out, _I):
            return _fix_articles(
                re.sub(pattern, f"{colour.group('colour')} {colour.group('thing')}", out, count=1, flags=_I)
            )
    remove = re.match(r"^(?:remove|delete|erase|get\s+rid\s+of|take\s+out|drop|lose)\s+(?P<what>.+)$", words, _I)
    if remove:
        return _remove_thing(out, _bare(remove.group("what")))
    rest = _command_words(words)
    return _join([out, rest]) if rest else out


def _add_thing(prompt: str, what: str) -> str:
    """ "with <what>" after the prompt's subject noun phrase: "a fox running" + "a red hat" -> "a fox with a red hat
    running"."""
    phrase = what if re.match(r"(?:with|wearing|holding)\b", what, _I) else f"with {what}"
    prefix = _SUBJECT_PREFIX.match(prompt)
    m = _SUBJECT_NP.match(prompt, prefix.end() if prefix else 0)
    if m:
        return _tidy(prompt[: m.end()] + f" {phrase}" + prompt[m.end() :])
    return _insert_after_first(prompt, phrase, as_segment=False)


def _remove_thing(prompt: str, what: str) -> str:
    """The prompt less the phrase that names ``what`` ("with a tree", "and the tree", a segment naming it)."""
    if not what:
        return prompt
    noun = re.escape(what) + r"(?:s|es)?"
    out = re.sub(
        rf"\s*\b(?:with|and|beside|next\s+to|near|by)\s+(?:(?:a|an|the|some|two|three)\s+)?(?:[\w-]+\s+){{0,2}}?{noun}\b",
        "",
        prompt,
        flags=_I,
    )
    if out != prompt:
        return _join(_segments(out))
    segs = [s for s in _segments(prompt) if not re.search(rf"\b{noun}\b", s, _I)]
    return _join(segs) if segs and len(segs) < len(_segments(prompt)) else prompt


# ----- the reading ---------------------------------------------------------------------------------------------

_EXTEND_WORDS = re.compile(
    r"\b(?:extend(?:ed|ing|s)?|extension|lengthen(?:ed|ing)?|prolong(?:ed)?|continue[sd]?|continuing|continuation|"
    r"keep\s+(?:it\s+)?(?:going|rolling|running)|carry\s+on|go\s+on|make\s+it\s+last|what\s+happens\s+next|"
    r"more\s+of\s+(?:it|this|that|the\s+same)|more\s+seconds|more\s+footage|more\s+frames|too\s+short|so\s+short|"
    r"not\s+long\s+enough|(?:run|runs|last|lasts|play|plays|go|goes|be)\s+(?:a\s+(?:bit|little)\s+|much\s+)?longer)\b"
    r"|^\W*(?:and\s+)?(?:then|after\s+that|afterwards|next(?!\s+to\b))\b\s*[,:]?\s*(?=\w)",
    _I,
)
_LONGER = re.compile(
    r"\b(?:it|video|clip|shot|scene|story|this|that|one|film|movie|animation|seconds?|secs?|s|minutes?|everything)"
    r"\s+(?:(?:a\s+)?(?:bit|little|lot|tad|touch)\s+|much\s+|slightly\s+|even\s+|way\s+|somewhat\s+|some\s+)?longer\b"
    r"|^\W*(?:(?:a\s+)?(?:bit|little|lot|tad)\s+|much\s+|slightly\s+|even\s+)?longer\b"
    r"|\blonger\s+(?:video|clip|version|one|animation|shot|scene|story|film|movie)\b",
    _I,
)
_DURATION_BEFORE = re.compile(
    r"(?:\b(?:add|adding|another|plus|extra|additional|further|give\s+(?:it|me|us)|by|for|to|make\s+it|"
    r"should\s+be|lasts?|run\s+for)\s+(?:an?\s+)?(?:(?:extra|additional|more|further|another)\s+)?|\+\s*)$",
    _I,
)
_DURATION_AFTER = re.compile(r"^\s*(?:more|longer|extra|long|in\s+total|total|of\s+(?:video|footage))\b", _I)
_STRONG_BEFORE = re.compile(
    r"(?:\b(?:add|adding|another|plus|extra|additional|further|give\s+(?:it|me|us))\s+(?:an?\s+)?|\+\s*)$", _I
)

_ANIMATE = re.compile(
    r"\b(?:motion|motions|movement|movements|moving|move|moves|animate|animated|animation|camera|zoom(?:s|ing|ed)?|"
    r"faster|slower|quicker|speed(?:\s+it)?\s+up|slow(?:\s+it)?\s+down|slow[\s-]?mo(?:tion)?|speed|pace|tempo|"
    r"pan(?:s|ning|ned)?\s+(?:left|right|up|down|across|around|over|slowly|to|along)|panning|pan\s+shot|"
    r"tilt(?:s|ing)?\s+(?:up|down)|dolly|orbit(?:s|ing)?|tracking\s+shot|handheld|shaky|shaking|camera\s+shake|"
    r"more\s+action|more\s+dynamic|less\s+static|too\s+static|more\s+lively|livelier|still\s+image|"
    r"motionless|frozen|sway(?:s|ing)?|flowing|drift(?:s|ing)?|wiggle|bounce|bouncing|spin(?:s|ning)?|"
    r"walk(?:s|ing)?\s+(?:away|towards?|forward|faster|slower)|fly\s+(?:away|off)|run\s+(?:away|off))\b",
    _I,
)
# "move the tree to the left": a picture edit, not new motion.
_MOVE_OBJECT = re.compile(
    r"\bmove\s+(?:the|a|an|that|this|his|her|its)\s+(?!camera\b)[\w-]+(?:\s+[\w-]+)?\s+(?:to|into|onto|closer|further|"
    r"farther|away|behind|next|left|right|up|down|out|over|off|in\s+front)\b",
    _I,
)
_NOT_MOTION = r"(?!\s+(?:motion|movement|camera|animation|angle|pace|speed)\b)"
_REGENERATE_STRONG = re.compile(
    r"\b(?:start(?:\s+it)?\s+(?:over|again|afresh|anew|from\s+scratch)|from\s+scratch|begin\s+again|"
    r"(?:something|anything)(?:\s+(?:completely|totally|entirely|very|altogether|wholly))?\s+(?:different|else)"
    + _NOT_MOTION
    + r"|(?:an?\s+)?(?:completely|totally|entirely|altogether|wholly)\s+different"
    + _NOT_MOTION
    + r"|re-?generate|re-?make\s+it|new\s+(?:image|picture|video|clip|idea|concept)|different\s+(?:image|picture|"
    r"idea|concept)|scrap\s+(?:it|this|that)|throw\s+(?:it|this|that)\s+(?:away|out)|discard\s+(?:it|this|that))\b",
    _I,
)
_REGENERATE_WEAK = re.compile(
    r"\b(?:try\s+(?:it\s+)?(?:again|once\s+more)|one\s+more\s+try|another\s+(?:try|version|one|take|attempt|go|"
    r"variation|variant|option|shot\s+at\s+it)|different\s+(?:version|take|variation|variant|one|result)|"
    r"(?:an?\s+)?(?:brand[\s-]+)?new\s+(?:version|one|take|attempt|variation|variant|result|seed)|re-?do(?:\s+it)?|do\s+it\s+(?:again|over)|"
    r"do-?over|re-?roll|reshuffle|different\s+seed|once\s+more|give\s+it\s+another\s+go)\b"
    r"|^\W*(?:another|again|new|different|one\s+more)(?:\s+(?:one|please))?\W*$",
    _I,
)
_SWAP_WORDS = re.compile(r"\b(?:instead|rather\s+than|in\s+place\s+of)\b", _I)

_CONNECTORS = re.compile(
    r"^(?:[\s,.;:!?\-\u2013\u2014]+|(?:and\s+)?then\b|and\b|but\b|so\s+that\b|so\b|with\b|where\b|in\s+which\b|"
    r"showing\b|to\s+show\b|of\b|while\b|as\b|until\b|this\s+time\b|now\b|please\b|it\b(?=\s*(?:[,.;:]|$))|"
    r"by\b|for\b|more\b(?=\s*(?:[,.;:]|$))|again\b|maybe\b)\s*",
    _I,
)
_EXTEND_STRIP = re.compile(
    r"\b(?:please\s+)?(?:extend(?:ed|ing|s)?|lengthen|prolong|continue|keep\s+(?:it\s+)?(?:going|rolling|running)|"
    r"carry\s+on|go\s+on|make\s+it\s+last|add|give\s+(?:it|me|us))\b"
    r"(?:\s+(?:it|this|that|the\s+(?:video|clip|shot|scene|story|animation|film|movie)))?"
    r"|\bmake\s+(?:it|the\s+(?:video|clip|shot|scene|story|animation))\s+(?:(?:a\s+)?(?:bit|little|lot|tad)\s+|much\s+|"
    r"slightly\s+|even\s+)?longer\b|\b(?:(?:a\s+)?(?:bit|little|lot|tad)\s+|much\s+|slightly\s+|even\s+)?longer\b"
    r"|\bwhat\s+happens\s+next\b|^\W*(?:and\s+)?(?:then|after\s+that|afterwards|next(?!\s+to\b))\b|\bmore\s+of\s+(?:it|this|that|the\s+same)\b|\bmore\s+(?:seconds|footage|frames)\b"
    r"|^\s*(?:make\s+(?:it|the\s+(?:video|clip|shot|scene|story|animation))|it\s+should\s+be)\b"
    r"|\b(?:long|in\s+total|total)\b(?=\s*(?:[,.;:!?]|$))"
    r"|\b(?:(?:the\s+(?:video|clip|shot|scene|story|animation)|it|this|that)(?:'s|\s+is|\s+feels|\s+seems)\s+)?"
    r"(?:(?:way|much|a\s+bit|a\s+little)\s+)?(?:too|so)\s+short\b|\bnot\s+long\s+enough\b"
    r"|\b(?:let\s+it\s+|make\s+it\s+)?(?:run|last|play|go)\s+(?:a\s+(?:bit|little)\s+|much\s+)?longer\b",
    _I,
)


def _strip_leading(text: str) -> str:
    while True:
        new = _CONNECTORS.sub("", text, count=1)
        if new == text:
            return _tidy(text)
        text = new


def _rest_after(text: str, *patterns: re.Pattern[str]) -> str:
    """``text`` less ``patterns``' matches and the connectors they leave at its start."""
    for pattern in patterns:
        text = pattern.sub(" ", text)
    text = _strip_filler(_strip_leading(_tidy(text)))
    text = _strip_leading(text)
    text = re.sub(
        r"^(?:(?:give|show|make)\s+(?:me|us)|i\s+want|i'd\s+like|let'?s\s+(?:see|have))(?:\s+|$)", "", text, flags=_I
    )
    text = re.sub(r"\s+\b(?:an?|the|with|and|but|of|to)\s*$", "", text, flags=_I)
    filler = r"it|this|that|more|a\s+bit|a\s+little|by|the\s+video|please|now|again|a|an|the|me|one|instead|though|but"
    if re.fullmatch(rf"(?:\W|\b(?:{filler})\b)*", text, _I):
        return ""
    return text


def _extend_text(body: str, duration: _Duration | None) -> str:
    """What happens next, from an extend request: "extend it by 2 seconds where the car drives off" -> "the car
    drives off"."""
    if duration:
        before = re.sub(
            r"\b(?:by|for|another|an?\s+(?:extra|additional|more|further)|extra|additional|further|plus|with|to|"
            r"of)\s*$",
            "",
            body[: duration.start],
            flags=_I,
        )
        body = before + " " + body[duration.end :]
    return _rest_after(body, _EXTEND_STRIP)


def _quote(words: str) -> str:
    return '"' + _tidy(words)[:60] + '"'


def guess_revision(text: str, prompt: str = "", n_shots: int = 0, has_image: bool = True) -> Revision:
    """Read a revision with keywords (no LLM): its kind, the text the kind needs, the shot and seconds it names.

    ``prompt`` is the current picture's prompt (a rewrite's starting point), ``n_shots`` the story's shot count (0:
    not a story), ``has_image`` whether there is a picture to edit (without one an edit becomes a rewrite). Order:
    a clear "start over" (regenerate), then length (extend), then "try again" (regenerate unless it is about the
    motion), motion (animate), time of day or a different subject (rewrite); anything else is an edit.
    """
    raw = _clean(text)
    shot = parse_shot(raw, n_shots) if n_shots > 0 else None
    body = _strip_shot_refs(raw)
    where = f" (shot {shot})" if shot else ""

    def done(change: ChangeKind, out: str, reason: str, seconds: float | None = None) -> Revision:
        return Revision(change=change, text=out, shot=shot, seconds=seconds, reason=reason + where)

    def as_edit(reason: str) -> Revision:
        if has_image:
            return done("edit", _instruction(body) or _tidy(raw), reason)
        new = rewrite_prompt(prompt, body) if prompt else _command_words(body) or _tidy(raw)
        return done("rewrite", new, reason + "; no picture to edit, so a new one from the rewritten prompt")

    if not re.search(r"\w", body):
        return as_edit("edit: no words to read, kept as they are")

    m = _REGENERATE_STRONG.search(body)
    if m:
        return done("regenerate", _rest_after(body, _REGENERATE_STRONG), f"regenerate: {_quote(m.group())}")

    duration = _find_duration(body)
    animate = _ANIMATE.search(body) if not _MOVE_OBJECT.search(body) else None
    extend_word = _EXTEND_WORDS.search(body) or _LONGER.search(body)
    if extend_word:
        return done(
            "extend",
            _extend_text(body, duration),
            f"extend: {_quote(extend_word.group())}",
            duration.seconds if duration else None,
        )
    if duration:
        before, after = body[: duration.start], body[duration.end :]
        only = not _strip_filler(_strip_leading(before + " " + after))
        strong = duration.more or only or _STRONG_BEFORE.search(before) or _DURATION_AFTER.match(after)
        weak = _DURATION_BEFORE.search(before)
        if strong or (weak and not animate):
            said = body[duration.start : duration.end]
            return done(
                "extend", _extend_text(body, duration), f"extend: {_quote(said)} names a duration", duration.seconds
            )

    m = _REGENERATE_WEAK.search(body)
    if m and not animate:
        return done("regenerate", _rest_after(body, _REGENERATE_WEAK), f"regenerate: {_quote(m.group())}")
    if animate:
        return done("animate", _strip_filler(body), f"animate: {_quote(animate.group())} is about motion")

    time = _find_value(_TIME, body)
    if time:
        new = rewrite_prompt(prompt, body) if prompt else _command_words(body)
        return done("rewrite", new, f"rewrite: time of day ({time.name}) changes the light, so a new picture")
    if _SWAP_WORDS.search(body):
        swap = _find_swap(body)
        if swap and not _is_look(swap[0]):
            new = rewrite_prompt(prompt, body) if prompt else _command_words(swap[0])
            return done("rewrite", new, f"rewrite: a different subject ({_quote(swap[0])})")
    return as_edit("edit: changes the picture, keeps its composition")
