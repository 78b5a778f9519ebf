"""The keyword reading of a revision (no LLM): which kind of change a chat message asks for, and the text it needs.

One table of phrasings (the kind, the shot, the seconds, and words the text must or must not hold), then focused
tests of the duration and shot parsers and of the rule-based prompt rewriter.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from openmora.group_chat.revisions import (
    CHANGE_KINDS,
    Revision,
    guess_revision,
    parse_seconds,
    parse_shot,
    rewrite_prompt,
)

LIGHTHOUSE = "a lighthouse on a cliff at night, stormy sea"
FOX = "a red fox running through the snow at dusk"


@dataclass
class Row:
    text: str
    change: str
    prompt: str = LIGHTHOUSE
    n_shots: int = 0
    shot: int | None = None
    seconds: float | None = None
    must: list[str] = field(default_factory=list)  # words the text must hold (a rewrite's: the new prompt)
    must_not: list[str] = field(default_factory=list)  # words it must not hold
    exact: str | None = None  # the whole text, where it is fixed


ROWS = [
    # The three the old reading got wrong: "1920" read as seconds, "add" as extend, "move" inside "remove".
    Row("make it look like the 1920s", "edit", exact="make it look like the 1920s"),
    Row("add a red hat", "edit", prompt=FOX, exact="add a red hat"),
    Row("remove the tree", "edit", exact="remove the tree"),
    # Style, era, colour, weather, season: painted onto the same composition.
    Row("make it look like a 1920s film", "edit", exact="make it look like a 1920s film"),
    Row("make it 1920s", "edit", exact="make it look like the 1920s"),
    Row("can you make it look like the 80s?", "edit", exact="make it look like the 80s"),
    Row("make it a watercolor", "edit", must=["watercolor"]),
    Row("turn the summer scene into winter", "edit", must=["winter"]),
    Row("make it a rainy day", "edit", must=["rainy"]),
    Row("darker", "edit", exact="make it darker"),
    Row("with a red hat", "edit", exact="add a red hat"),
    Row("move the tree to the left", "edit", must=["move the tree"]),
    Row("add a second fox", "edit", prompt=FOX, must=["second fox"]),
    Row("make the first 2 seconds darker", "edit", must=["darker"]),  # a duration, but not a longer video
    Row("make the shadows longer", "edit", must=["shadows longer"]),
    # A story revision names its shot; the instruction loses the reference.
    Row("make shot 2 darker", "edit", n_shots=3, shot=2, exact="make it darker"),
    Row("the second shot should be brighter", "edit", n_shots=3, shot=2, must=["brighter"], must_not=["shot"]),
    Row("in shot 3, add a red hat", "edit", n_shots=3, shot=3, exact="add a red hat"),
    Row("make the last shot rainy", "edit", n_shots=4, shot=4, exact="make it rainy"),
    Row("make shot 5 darker", "edit", n_shots=3, shot=None, exact="make it darker"),  # out of range
    # Unicode, emoji, other languages, nothing to read: an edit with the words.
    Row("make it snowy ❄️", "edit", exact="make it snowy"),
    Row("mach es dunkler", "edit", exact="mach es dunkler"),
    Row("сделай темнее", "edit", exact="сделай темнее"),
    Row("   ?", "edit", exact="?"),
    Row("", "edit", exact=""),
    Row("🙂🙂", "edit", exact=""),
    # Time of day and a different subject: a new picture from a rewritten prompt.
    Row(
        "make it brighter, like early morning",
        "rewrite",
        must=["lighthouse on a cliff", "early morning", "bright", "stormy sea"],
        must_not=["night", "make it", "like"],
    ),
    Row("make it night", "rewrite", prompt="a fox in a meadow at dusk", must=["at night", "meadow"], must_not=["dusk"]),
    Row(
        "at sunset instead",
        "rewrite",
        prompt="a beach in the morning, 4k",
        must=["beach at sunset", "4k"],
        must_not=["morning", "instead"],
    ),
    Row(
        "turn day into night",
        "rewrite",
        prompt="a village street during the day",
        must=["village street at night"],
        must_not=["day"],
    ),
    Row(
        "make it evening",
        "rewrite",
        prompt="a fox on a cold winter night",
        exact="a fox on a cold winter evening",
    ),
    Row("a cat instead of a dog", "rewrite", prompt="a dog sleeping on a porch", exact="a cat sleeping on a porch"),
    Row(
        "make it a wolf instead of a fox",
        "rewrite",
        prompt=FOX,
        must=["wolf running through the snow at dusk"],
        must_not=["fox", "instead", "make it"],
    ),
    Row("an eagle instead", "rewrite", prompt="an owl on a branch", exact="an eagle on a branch"),
    # Longer.
    Row("extend it by two seconds", "extend", seconds=2.0, exact=""),
    Row("two more seconds", "extend", seconds=2.0, exact=""),
    Row("PLEASE EXTEND IT BY 2 SECONDS", "extend", seconds=2.0, exact=""),
    Row("keep going", "extend", exact=""),
    Row("add 3 seconds", "extend", seconds=3.0, exact=""),
    Row("add 1.5s where the fox jumps", "extend", seconds=1.5, exact="the fox jumps"),
    Row("half a second more", "extend", seconds=0.5, exact=""),
    Row("give it another second", "extend", seconds=1.0, exact=""),
    Row("a few more seconds of the waves crashing", "extend", seconds=3.0, exact="the waves crashing"),
    Row("make it longer", "extend", exact=""),
    Row("the video is too short", "extend", exact=""),
    Row("continue with the fox jumping into the river", "extend", exact="the fox jumping into the river"),
    Row("and then the fox jumps into the river", "extend", exact="the fox jumps into the river"),
    Row(
        "extend the last shot by another 2 seconds where the fox sleeps",
        "extend",
        n_shots=4,
        shot=4,
        seconds=2.0,
        exact="the fox sleeps",
    ),
    # The same picture, new motion ("move" as a whole word only).
    Row("different motion", "animate", must=["different motion"]),
    Row("move the camera", "animate", must=["move the camera"]),
    Row("make it faster", "animate"),
    Row("slower please", "animate", exact="slower"),
    Row("more motion", "animate"),
    Row("zoom in", "animate"),
    Row("make the fox move faster", "animate"),
    Row("zoom in over 2 seconds", "animate", seconds=None),
    Row("try again but with more camera motion", "animate"),
    # Start over.
    Row("start over", "regenerate", exact=""),
    Row("something completely different", "regenerate", exact=""),
    Row("try again", "regenerate", exact=""),
    Row("another version", "regenerate", exact=""),
    Row("new one", "regenerate", exact=""),
    Row("I want a new version", "regenerate", exact=""),
    Row("start over with a dragon over a castle", "regenerate", exact="a dragon over a castle"),
]


@pytest.mark.unit
@pytest.mark.parametrize("row", ROWS, ids=[r.text.strip() or repr(r.text) for r in ROWS])
def test_revision_table(row: Row) -> None:
    r = guess_revision(row.text, row.prompt, row.n_shots)
    assert isinstance(r, Revision)
    assert r.change in CHANGE_KINDS
    assert (r.change, r.shot, r.seconds) == (row.change, row.shot, row.seconds), r
    assert r.reason.startswith(r.change + ":") and "\n" not in r.reason, r
    text = r.text.lower()
    if row.exact is not None:
        assert r.text == row.exact, r
    for word in row.must:
        assert word.lower() in text, (word, r)
    for word in row.must_not:
        assert word.lower() not in text, (word, r)


@pytest.mark.unit
def test_table_covers_every_kind_and_enough_phrasings() -> None:
    assert len(ROWS) >= 36
    assert {r.change for r in ROWS} == set(CHANGE_KINDS)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "must"),
    [
        ("make it look like a 1920s film", ["red fox running through the snow at dusk", "1920s film"]),
        ("add a red hat", ["fox with a red hat running"]),
        ("make it a watercolor", ["snow at dusk", "watercolor"]),
        ("make the fox blue", ["a blue fox running"]),
        ("darker", ["dusk", "dim"]),
    ],
)
def test_edit_without_a_picture_becomes_a_rewrite(text: str, must: list[str]) -> None:
    r = guess_revision(text, FOX, has_image=False)
    assert r.change == "rewrite", r
    for word in must:
        assert word in r.text, (word, r)
    assert "make it" not in r.text and "no picture" in r.reason


@pytest.mark.unit
def test_other_kinds_do_not_depend_on_a_picture() -> None:
    for text, change in [("extend it by two seconds", "extend"), ("zoom in", "animate"), ("start over", "regenerate")]:
        assert guess_revision(text, FOX, has_image=False).change == change


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2 seconds", 2.0),
        ("extend it by two seconds", 2.0),
        ("two more seconds", 2.0),
        ("3s", 3.0),
        ("add 3s please", 3.0),
        ("1.5 sec", 1.5),
        ("1.5s", 1.5),
        ("2 secs", 2.0),
        ("a 2-second extension", 2.0),
        ("two and a half seconds", 2.5),
        ("half a second", 0.5),
        ("a half second more", 0.5),
        ("a few seconds", 3.0),
        ("a few more seconds", 3.0),
        ("a couple of seconds", 2.0),
        ("another second", 1.0),
        ("one more second", 1.0),
        ("ten seconds longer", 10.0),
        ("extend by 20s", 20.0),
        ("a minute longer", 60.0),
        ("EXTEND IT BY TWO SECONDS", 2.0),
    ],
)
def test_parse_seconds_reads_durations(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.unit
@pytest.mark.parametrize(
    "text",
    [
        "1920s",
        "make it look like the 1920s",
        "the 80s",
        "make it 80s",
        "like the 90's",
        "a '70s vibe",
        "the 1800s",
        "3 shots",
        "make shot 2 darker",
        "the second shot",
        "add a second fox",
        "500ms",
        "two s",
        "",
        "   ?",
    ],
)
def test_parse_seconds_ignores_what_is_not_a_duration(text: str) -> None:
    assert parse_seconds(text) is None


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "n_shots", "shot"),
    [
        ("shot 2", 3, 2),
        ("make shot 2 darker", 3, 2),
        ("the second shot", 3, 2),
        ("shot two", 3, 2),
        ("Shot #3", 3, 3),
        ("the 2nd scene", 3, 2),
        ("the last shot", 4, 4),
        ("the final clip", 2, 2),
        ("the second-to-last shot", 5, 4),
        ("first scene", 2, 1),
        ("the opening shot", 3, 1),
        ("shot 5", 3, None),
        ("shot 0", 3, None),
        ("shot 2", 0, None),
        ("make it darker", 3, None),
        ("a shot of whiskey", 3, None),
        ("extend it by two seconds", 3, None),
    ],
)
def test_parse_shot(text: str, n_shots: int, shot: int | None) -> None:
    assert parse_shot(text, n_shots) == shot


@pytest.mark.unit
def test_rewrite_prompt_time_of_day_replaces_the_old_one() -> None:
    new = rewrite_prompt(LIGHTHOUSE, "make it brighter, like early morning")
    assert new == "a lighthouse on a cliff in the early morning, bright soft light, stormy sea"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("prompt", "instruction", "expected"),
    [
        ("a fox in the snow, 4k", "make it night", "a fox in the snow at night, 4k"),
        ("a fox in a meadow in the evening", "at dawn instead", "a fox in a meadow at dawn"),
        ("a city street, night, neon signs", "make it morning", "a city street, morning, neon signs"),
        ("a lighthouse under a starry sky", "make it early morning", "a lighthouse in the early morning"),
        ("a moonlit beach at night", "make it noon", "a beach at noon"),
        ("a fox on a cold winter night", "make it dusk", "a fox on a cold winter day at dusk"),
        ("a dog sleeping on a porch", "a cat instead of a dog", "a cat sleeping on a porch"),
        ("two dogs on a sofa", "cats instead of dogs", "two cats on a sofa"),
        ("an owl on a branch at dusk", "make it an eagle instead", "an eagle on a branch at dusk"),
        ("a dog on a porch", "replace the dog with an otter", "an otter on a porch"),
        ("a fox in the snow", "add a red hat", "a fox with a red hat in the snow"),
        ("a house with a tree, 4k", "remove the tree", "a house, 4k"),
        ("a fox in the snow, oil painting, 4k", "make it a watercolor", "a fox in the snow, watercolor painting, 4k"),
        ("a summer meadow with flowers", "turn it into winter", "a winter meadow with flowers"),
        ("a red hat on a table", "make the hat blue", "a blue hat on a table"),
        ("a fox in the snow", "make it darker", "a fox in the snow, dim moody light"),
    ],
)
def test_rewrite_prompt_rules(prompt: str, instruction: str, expected: str) -> None:
    assert rewrite_prompt(prompt, instruction) == expected


@pytest.mark.unit
def test_rewrite_prompt_fallback_appends_the_words_without_command_words() -> None:
    assert rewrite_prompt("a fox", "please make it more dramatic!") == "a fox, more dramatic"
    assert rewrite_prompt("a fox", "mach es dunkler") == "a fox, mach es dunkler"


@pytest.mark.unit
def test_rewrite_prompt_edge_cases() -> None:
    assert rewrite_prompt("a fox", "   ?") == "a fox"  # nothing to add
    assert rewrite_prompt("a fox", "") == "a fox"
    assert rewrite_prompt("", "make it night") == "night"  # no prompt: the instruction's own words
    assert rewrite_prompt("a fox ❄️ in the snow", "make it night 🌙") == "a fox in the snow at night"


@pytest.mark.unit
def test_importing_the_reading_loads_no_engine() -> None:
    """The reading runs in the chat's fallback path: it must not pull in torch or diffusers."""
    code = (
        "import sys, openmora.group_chat.revisions as r; r.guess_revision('make it darker'); "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.unit
@pytest.mark.parametrize(
    "text",
    [
        "\x00\x01",
        "\n\n\t",
        "🇩🇪🇩🇪",
        "a" * 5000,
        "shot " * 500,
        "make it " + "very " * 500 + "dark",
        "？！",
        "ｍａｋｅ ｉｔ ｄａｒｋｅｒ",
    ],
)
def test_odd_text_reads_without_crashing(text: str) -> None:
    for has_image in (True, False):
        r = guess_revision(text, LIGHTHOUSE, n_shots=3, has_image=has_image)
        assert r.change in CHANGE_KINDS and isinstance(r.text, str) and "\x00" not in r.text
    assert guess_revision("ｍａｋｅ ｉｔ ｄａｒｋｅｒ").text == "make it darker"  # NFKC: full-width letters read
