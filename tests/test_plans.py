"""Typed plans: templates, the checker's words, the planner's parsing and repair, revisions as plan edits, and the
`openmora plan` dry run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from openmora.cli import main
from openmora.group_chat.checker import check_call, check_plan, request_problems
from openmora.group_chat.plan import TEMPLATES, TOOLS, Plan, PlanStep, planner_schema, template_plan
from openmora.group_chat.plan_edits import apply_revision
from openmora.group_chat.planner import Planner, Request, _schema_for, guess_task
from openmora.group_chat.revisions import Revision
from openmora.llm.clients import replay_client
from openmora.profiles import load_profile

pytestmark = pytest.mark.unit
TINY = load_profile("tiny")  # 8 frames per segment at 7 fps


def tools(plan: Plan) -> list[str]:
    return [s.tool for s in plan.steps]


@pytest.mark.parametrize(
    ("task", "kwargs", "expected"),
    [
        ("text-to-video", {"segments": 2}, ["enhance_prompt", "text_to_image", "image_to_video", "extend_video"]),
        ("image-to-video", {"has_image": True}, ["enhance_prompt", "image_to_video"]),
        ("extend", {"n_videos": 1, "segments": 14}, ["extend_video", "extend_video"]),  # at most 12 per step
        ("edit", {"n_videos": 1}, ["take_frame", "edit_image", "image_to_video"]),
        ("connect", {"n_videos": 2}, ["connect_clips"]),
        ("digital-world", {"has_image": True}, ["edit_image", "image_to_video"]),
    ],
)
def test_every_template_passes_the_checker(task: str, kwargs: dict, expected: list[str]) -> None:
    plan = template_plan(task, "a fox", **kwargs)
    assert tools(plan) == expected
    assert check_plan(plan, has_image=kwargs.get("has_image", False), n_videos=kwargs.get("n_videos", 0)) == []


def test_story_template_joins_shots_with_transitions() -> None:
    plan = template_plan("story", "x", shots=["a seed", "a sapling", "a tree"])
    assert check_plan(plan) == []
    assert tools(plan).count("text_to_image") == 3 and tools(plan).count("connect_clips") == 2
    final = plan.step(plan.final)
    assert final.tool == "join_clips" and len(final.args["clip_ids"]) == 5  # shot, transition, shot, ...
    assert {s.shot for s in plan.steps if s.tool == "text_to_image"} == {1, 2, 3}


@pytest.mark.parametrize(
    ("step", "inputs", "words"),
    [
        (PlanStep("s1", "image_to_video", {"image_id": "$image"}), {}, "no input image"),
        (PlanStep("s1", "make_magic", {}), {}, "unknown tool 'make_magic'"),
        (PlanStep("s1", "extend_video", {"clip_id": "$video1", "segments": 40}), {"n_videos": 1}, "give 1 to 12"),
        (PlanStep("s1", "extend_video", {"clip_id": "$video1", "segments": "2"}), {"n_videos": 1}, "must be int"),
        (PlanStep("s1", "text_to_image", {"prompt": "x", "colour": "red"}), {}, "no argument 'colour'"),
        (PlanStep("s1", "image_to_video", {"image_id": "/etc/passwd"}), {}, "not an input, a step or an artifact"),
        (PlanStep("s1", "text_to_image", {}), {}, "needs prompt"),
    ],
)
def test_checker_says_what_is_wrong(step: PlanStep, inputs: dict, words: str) -> None:
    problems = check_plan(Plan([step]), **inputs)
    assert any(words in p for p in problems), problems


def test_checker_catches_order_kinds_unused_steps_and_unused_inputs() -> None:
    plan = Plan(
        [
            PlanStep("s1", "image_to_video", {"image_id": "$s2"}),  # a later step
            PlanStep("s2", "text_to_image", {"prompt": "a fox"}),
            PlanStep("s3", "extend_video", {"clip_id": "$s2"}),  # an image where a clip is needed
            PlanStep("s4", "text_to_image", {"prompt": "unused"}),
            PlanStep("s5", "image_to_video", {"image_id": "$s2"}),
        ]
    )
    text = " | ".join(check_plan(plan, n_videos=1))
    assert "s1: image_id is $s2, which is not an earlier step" in text
    assert "s3: clip_id is $s2, an image; it needs a clip" in text
    assert "s4 (text_to_image) makes an image that no later step uses" in text
    assert "$video1 is not used" in text


def test_a_call_is_checked_against_its_pending_step() -> None:
    step = PlanStep("s2", "image_to_video", {"image_id": "$s1", "seed": 3})
    resolved = {"image_id": "img-0001", "seed": 3}
    assert check_call(step, "image_to_video", {"image_id": "img-0001", "seed": 3}, resolved) is None
    assert "not extend_video" in check_call(step, "extend_video", {}, resolved)
    assert "wants image_id='img-0001'" in check_call(step, "image_to_video", {"image_id": "img-0002"}, resolved)


def test_the_schema_names_every_tool_and_hides_seeds() -> None:
    schema = planner_schema()
    steps = schema["anyOf"][1]["properties"]["steps"]["items"]["anyOf"]
    assert [s["properties"]["tool"]["const"] for s in steps] == list(TOOLS)
    assert all("seed" not in s["properties"]["args"]["properties"] for s in steps)
    assert schema["anyOf"][0]["properties"]["template"]["enum"] == list(TEMPLATES)


def plan_with(replies: list[str], text: str, **inputs) -> tuple[Plan, list[tuple[str, dict]]]:
    events: list[tuple[str, dict]] = []
    planner = Planner(replay_client(replies), TINY, record=lambda kind, **f: events.append((kind, f)))
    return asyncio.run(planner.plan(text, **inputs)), events


def test_an_llm_template_choice_sets_segments_from_the_seconds_asked() -> None:
    plan, _ = plan_with(
        ['{"template": "text-to-video", "prompt": "waves at sunset", "seconds": 10}'], "a 10 second clip"
    )
    assert plan.source == "llm"
    # 70 frames: 8 from the first segment, 7 more per extension -> 1 + 9 segments.
    assert plan.steps[-1].tool == "extend_video" and plan.steps[-1].args["segments"] == 9


def test_seconds_the_user_did_not_ask_for_are_ignored() -> None:
    plan, _ = plan_with(['{"template": "text-to-video", "prompt": "a fox", "seconds": 10}'], "a fox in the snow")
    assert sum(s.args.get("segments", 0) for s in plan.steps if s.tool == "extend_video") == TINY.segments - 1


def test_a_bad_plan_is_repaired_once_then_the_template_is_used() -> None:
    bad = json.dumps({"steps": [{"id": "s1", "tool": "image_to_video", "args": {"image_id": "$image"}}]})
    good = json.dumps(
        {
            "steps": [
                {"id": "s1", "tool": "text_to_image", "args": {"prompt": "a red car"}},
                {"id": "s2", "tool": "image_to_video", "args": {"image_id": "$s1"}},
            ]
        }
    )
    plan, events = plan_with([bad, good], "a red car")
    assert plan.source == "repaired" and tools(plan) == ["text_to_image", "image_to_video"]
    first = [f for k, f in events if k == "plan" and f.get("attempt") == 1][0]
    assert not first["valid"] and "no input image" in first["problems"][0]
    plan, events = plan_with([bad, "not json at all"], "a red car")
    assert plan.source == "template" and tools(plan)[0] == "enhance_prompt"
    assert "could not run after one repair" in plan.notes[0]


@pytest.mark.parametrize(
    ("text", "inputs", "plan", "words"),
    [
        ("make it look like an old film", {"n_videos": 1}, ("extend", {}), "has no edit_image step"),
        ("make it look like an old film", {"n_videos": 1}, ("edit", {}), None),
        ("continue it for 2 seconds", {"n_videos": 1}, ("extend", {}), None),
        ("turn this photo into an oil painting", {"has_image": True}, ("image-to-video", {}), "input image $image"),
        ("a pencil sketch of a fox", {}, ("text-to-video", {}), None),  # a description, not an edit
        ("draw a castle, turn it into a charcoal sketch", {}, ("text-to-video", {}), "text_to_image step's picture"),
        ("make the clouds drift slowly", {"has_image": True}, ("image-to-video", {}), None),
        ("two scenes: a ship in port; the ship at sea", {}, ("text-to-video", {}), "lists 2 shots"),
        ("two scenes: a ship in port; the ship at sea", {}, ("story", {"shots": ["port", "sea"]}), None),
    ],
)
def test_the_checker_names_what_a_plan_leaves_out_of_the_request(
    text: str, inputs: dict, plan: tuple[str, dict], words: str | None
) -> None:
    built = template_plan(plan[0], text, **plan[1], **inputs)
    problems = request_problems(built, text, **inputs)
    assert any(words in p for p in problems) if words else problems == []
    assert check_plan(built, request=text, **inputs) == problems  # the template is otherwise valid


def test_a_look_change_planned_as_an_extension_goes_back_and_becomes_an_edit() -> None:
    extend = '{"template": "extend", "prompt": "make it look like an old film"}'
    edit = '{"template": "edit", "prompt": "make it look like an old film"}'
    plan, events = plan_with([extend, edit], "make it look like an old film", n_videos=1)
    first = [f for k, f in events if k == "plan" and f.get("attempt") == 1][0]
    assert not first["valid"] and "edit_image" in first["problems"][0]
    assert plan.source == "repaired" and tools(plan) == ["take_frame", "edit_image", "image_to_video"]


@pytest.mark.parametrize(
    ("inputs", "templates"),
    [
        ({}, ["text-to-video", "digital-world", "story"]),
        ({"has_image": True}, ["image-to-video", "edit", "digital-world"]),
        ({"n_videos": 1}, ["edit", "extend", "digital-world"]),
        ({"n_videos": 2}, ["connect"]),
        ({"has_image": True, "n_videos": 1}, None),  # no template uses both: steps only
    ],
)
def test_the_plan_grammar_offers_only_the_templates_the_inputs_can_run(inputs: dict, templates: list | None) -> None:
    schema = _schema_for(Request("a request", **inputs))
    if templates is None:
        assert "steps" in schema["properties"] and "anyOf" not in schema
    else:
        assert schema["anyOf"][0]["properties"]["template"]["enum"] == templates
        assert schema["anyOf"][0]["properties"]["prompt"]["maxLength"] == 300  # no endless description
        for name in templates:
            plan = template_plan(name, "a fox", shots=["a", "b"], **inputs)
            assert check_plan(plan, **inputs) == []


@pytest.mark.parametrize(
    ("text", "inputs", "task"),
    [
        ("a fox in the snow", {}, "text-to-video"),
        ("a minecraft village", {}, "digital-world"),
        ("three shots: a seed; a sapling; a tree", {}, "story"),
        ("make the clouds drift", {"has_image": True}, "image-to-video"),
        ("extend it by two seconds", {"n_videos": 1}, "extend"),
        ("make it look like the 1920s", {"n_videos": 1}, "edit"),
        ("turn this photo into a pencil sketch", {"has_image": True}, "edit"),
        ("join them", {"n_videos": 2}, "connect"),
    ],
)
def test_without_an_llm_the_words_and_inputs_choose_the_template(text: str, inputs: dict, task: str) -> None:
    assert guess_task(text, inputs.get("has_image", False), inputs.get("n_videos", 0)) == task


def seeds():
    counter = iter(range(0, 1000, 10))
    return lambda n: next(counter)


def rerun(old: Plan, new: Plan) -> set[str]:
    """Steps of ``new`` that re-run: changed content, or downstream of a step that re-runs (the cache's rule)."""
    before = {s.id: (s.tool, s.args) for s in old.steps}
    out: set[str] = set()
    for s in new.steps:
        if before.get(s.id) != (s.tool, s.args) or any(d in out for d in s.deps()):
            out.add(s.id)
    return out


def test_revisions_edit_only_what_they_are_about() -> None:
    plan = template_plan("text-to-video", "a lighthouse at night", segments=2)
    plan.assign_seeds(seeds())
    kw = {"fps": 7, "frames_per_segment": 8}
    edit = apply_revision(plan, Revision("edit", "make it look like the 1920s"), **kw)
    assert tools(edit) == ["enhance_prompt", "text_to_image", "edit_image", "image_to_video", "extend_video"]
    assert {edit.step(i).tool for i in rerun(plan, edit)} == {"edit_image", "image_to_video", "extend_video"}
    longer = apply_revision(plan, Revision("extend", "", seconds=2.0), **kw)
    assert [longer.step(i).tool for i in rerun(plan, longer)] == ["extend_video"]
    assert longer.step(longer.final).args["segments"] == 2  # 14 frames, 7 per extension
    brighter = apply_revision(plan, Revision("rewrite", "a lighthouse in the early morning"), **kw)
    assert brighter.step("s1").args["prompt"] == "a lighthouse in the early morning"
    assert rerun(plan, brighter) == {"s1", "s2", "s3", "s4"}


def test_a_story_revision_of_one_shot_leaves_the_others() -> None:
    plan = template_plan("story", "x", shots=["a seed", "a sapling", "a tree"])
    plan.assign_seeds(seeds())
    darker = apply_revision(plan, Revision("edit", "make it darker", shot=2), fps=7, frames_per_segment=8)
    again = rerun(plan, darker)
    shot_of = {s.id: s.shot for s in darker.steps}
    assert {shot_of[i] for i in again if shot_of[i] is not None} == {2}
    assert sorted(darker.step(i).tool for i in again if shot_of[i] is None) == [
        "connect_clips",
        "connect_clips",
        "join_clips",
    ]
    with pytest.raises(Exception, match="there is no shot 5"):
        apply_revision(plan, Revision("edit", "x", shot=5), fps=7, frames_per_segment=8)


def test_plan_dry_run_prints_one_json_object_and_writes_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--json", "a fox running through snow at dusk, 4 seconds"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"steps", "estimate_s", "source"} and out["source"] == "template"
    assert [s["tool"] for s in out["steps"]][:2] == ["enhance_prompt", "text_to_image"]
    assert all(set(s) == {"id", "agent", "tool", "args"} for s in out["steps"])
    assert out["estimate_s"] is None or out["estimate_s"] > 0
    assert list(tmp_path.iterdir()) == []
    assert main(["plan", "extend it", "--task", "extend"]) == 2  # no --video: bad input, one line
    assert "extend takes one --video" in capsys.readouterr().err


def test_a_length_beyond_the_longest_video_is_one_line_of_bad_input(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "500 seconds of fireworks"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "500 seconds is longer than" in err and "at most" in err


@pytest.mark.unit
def test_the_repair_round_names_a_template_only_when_it_fits_the_whole_request() -> None:
    planner = Planner(None, load_profile("tiny"))
    joined = planner._hint(Request("connect the beach clip to the forest clip", n_videos=2))
    assert '"connect"' in joined
    # the words point to text-to-video, which would leave the sketch out: no hint
    assert planner._hint(Request("make a picture of a lighthouse, turn it into a pencil sketch, animate it")) == ""
