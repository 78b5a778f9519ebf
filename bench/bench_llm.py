"""Benchmark the embedded LLM as the team's planner and prompt agent on this machine.

    python -m bench.bench_llm                  # model "local" (Qwen2.5-Coder-1.5B Q4_K_M), 6 tasks x 5 prompts
    python -m bench.bench_llm --model local-small

For every task x prompt it asks the planner for the first speaker with ALL agents allowed by the grammar (so the
choice measures the model's own planning, not our narrowing) and counts it valid when it is one the task's plan
allows; then it runs the prompt agent's turn on the request. Prints a table and writes
bench/results/llm_<model>.json with planner_decision_s, prompt_agent_tokens_per_s and first_choice_valid_rate.
No diffusion model is loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from autogen_core.models import SystemMessage, UserMessage

from openmora.agents import connection_agent, edit_agent, image_agent, prompt_agent, video_agent
from openmora.group_chat.plan_state import PlanState
from openmora.group_chat.session import PROMPT_MAX_TOKENS
from openmora.llm.local import LocalLlamaClient

ROOT = Path(__file__).resolve().parent.parent

AGENTS = {m.NAME: m.DESCRIPTION for m in (prompt_agent, image_agent, edit_agent, video_agent, connection_agent)}
PROMPTS = {
    "text-to-video": [
        "a fox running through snow at dusk",
        "a paper boat drifting down a rainy street",
        "time-lapse of a city skyline from day to night",
        "a hummingbird hovering at a red flower",
        "waves crashing on black volcanic rocks",
    ],
    "image-to-video": [
        "make the clouds drift slowly",
        "the waterfall flows and mist rises",
        "the candle flame flickers in a dark room",
        "leaves fall from the tree in the wind",
        "the cat turns its head toward the camera",
    ],
    "extend": [
        "continue the clip for a few more seconds",
        "keep the car driving down the road",
        "make the dancer keep spinning",
        "extend the sunset scene",
        "let the river keep flowing",
    ],
    "edit": [
        "make it look like a 1920s film",
        "turn the summer scene into winter",
        "make it a watercolor painting",
        "change the sky to a stormy one",
        "make it night time with neon lights",
    ],
    "connect": [
        "join the beach clip to the forest clip",
        "connect these two city shots smoothly",
        "transition from the sunrise to the sunset",
        "link the two dance clips",
        "join the clips with a smooth morph",
    ],
    "digital-world": [
        "a village by a river",
        "a castle on a mountain",
        "a desert with a pyramid",
        "a forest with a waterfall",
        "an underwater reef with fish",
    ],
}
INPUTS = {
    "image-to-video": "Image: img-0001: image 1024x576 - input image photo.png.",
    "extend": "Clip: clip-0001: video 1024x576, 25 frames at 7 fps (3.6 s) - input video a.mp4.",
    "edit": "Clip: clip-0001: video 1024x576, 25 frames at 7 fps. Image: img-0001: first frame of clip-0001.",
    "connect": "Clip: clip-0001: video, 25 frames. Clip: clip-0002: video, 25 frames.",
    "digital-world": "",
    "text-to-video": "",
}


def plan_candidates(task: str) -> list[str]:
    kwargs = {"image_id": "img-0001"} if task in ("image-to-video", "edit") else {}
    if task in ("extend", "edit"):
        kwargs["clip_ids"] = ["clip-0001"]
    if task == "connect":
        kwargs["clip_ids"] = ["clip-0001", "clip-0002"]
    return PlanState.for_task(task, prompt="x", segments=1, **kwargs).candidates()


async def run(model: str) -> dict:
    client = LocalLlamaClient(model)
    decisions, valid, prompt_tps, prompt_s, rows = [], 0, [], [], []
    names = list(AGENTS)
    # Load the model once, outside the timings.
    await client.create([UserMessage(content="Say OK.", source="user")])
    for task, prompts in PROMPTS.items():
        allowed = plan_candidates(task)
        for text in prompts:
            question = (
                "You are the planner of a video-making team. Agents:\n"
                + "\n".join(f"- {n}: {d}" for n, d in AGENTS.items())
                + f"\nTask: {task}. Request: {text}. {INPUTS[task]}\nConversation so far:\n(nothing yet)\n"
                + f"Which agent should act next? Reply with only its name, one of: {', '.join(names)}."
            )
            start = time.perf_counter()
            result = await client.create(
                [UserMessage(content=question, source="user")], extra_create_args={"choices": names}
            )
            seconds = time.perf_counter() - start
            decisions.append(seconds)
            ok = result.content in allowed
            valid += ok
            start = time.perf_counter()
            reply = await client.create(
                [
                    SystemMessage(content=prompt_agent.system_message(task)),
                    UserMessage(content=f"Task: {task}. Request: {text}.", source="user"),
                ],
                extra_create_args={"max_tokens": PROMPT_MAX_TOKENS},
            )
            prompt_s.append(time.perf_counter() - start)
            prompt_tps.append(client.last_call_stats["tokens_per_s"])
            rows.append(
                (
                    task,
                    text,
                    result.content,
                    ok,
                    seconds,
                    client.last_call_stats["completion_tokens"],
                    prompt_s[-1],
                    str(reply.content)[:60],
                )
            )
    return {
        "planner_decision_s": round(statistics.mean(decisions), 3),
        "planner_decision_s_median": round(statistics.median(decisions), 3),
        "prompt_agent_tokens_per_s": round(statistics.mean(prompt_tps), 2),
        "prompt_agent_turn_s": round(statistics.mean(prompt_s), 3),
        "first_choice_valid_rate": round(valid / len(decisions), 3),
        "decisions": len(decisions),
        "_rows": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="local", choices=("local", "local-small"))
    args = parser.parse_args()
    res = asyncio.run(run(args.model))
    rows = res.pop("_rows")
    meta = {
        "command": f"python -m bench.bench_llm --model {args.model}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "model": args.model,
    }
    out = (
        ROOT
        / "bench"
        / "results"
        / ("llm_local.json" if args.model == "local" else f"llm_{args.model.replace('-', '_')}.json")
    )
    out.write_text(json.dumps({**res, "_meta": meta}, indent=2) + "\n")
    print(f"Command: `{meta['command']}` ({meta['machine']})\n")
    print("| task | request | planner's first choice | valid | decision s | prompt tokens | prompt turn s |")
    print("|---|---|---|---|---:|---:|---:|")
    for task, text, choice, ok, sec, toks, psec, _ in rows:
        print(f"| {task} | {text} | {choice} | {'yes' if ok else 'no'} | {sec:.2f} | {toks} | {psec:.2f} |")
    print(
        f"\nplanner decision: {res['planner_decision_s']:.2f} s mean ({res['planner_decision_s_median']:.2f} median); "
        f"prompt agent: {res['prompt_agent_tokens_per_s']:.1f} tokens/s, {res['prompt_agent_turn_s']:.1f} s per turn; "
        f"first choice valid: {100 * res['first_choice_valid_rate']:.0f}% of {res['decisions']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
