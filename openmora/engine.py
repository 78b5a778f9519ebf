"""The engine: :class:`Orchestrator` builds the team for a task, runs it, streams its events and saves the run.

Example:
    >>> from openmora import Orchestrator
    >>> result = Orchestrator(profile="tiny").run("text-to-video", prompt="a fox running through snow at dusk")  # doctest: +SKIP
    >>> result.final_video  # doctest: +SKIP
    PosixPath('runs/20261123-201500-text-to-video-1a2b/final.mp4')
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from openmora.chat import ChatSession, PlannedRun, RunResult
from openmora.events import Event, EventSink, StreamEvent
from openmora.group_chat.session import DEFAULT_MAX_TURNS
from openmora.llm.clients import TimedClient, check_llm_spec, make_llm_client
from openmora.profiles import Profile, fast_variant, load_profile
from openmora.quality.gate import GateSettings
from openmora.runtime import Runtime

logger = logging.getLogger("openmora")

__all__ = ["ChatSession", "Orchestrator", "PlannedRun", "RunResult"]


class Orchestrator:
    """Builds and runs OpenMora tasks: the fixed plan (``llm="none"``) or the agents' group chat.

    Args:
        profile: a profile name (``tiny``, ``mora``, ``modern``), a YAML path, or a :class:`Profile`.
        llm: the planner/agents' LLM: ``none`` (fixed plan), ``local``, ``local-small``, ``openai``, ``replay:FILE``.
        runs_dir: where run folders go when ``run(out=...)`` is not given.
        on_event: called with every event (transcript lines, model loading, denoising progress, encoding, chat).
        max_turns: the group chat's turn limit per request.
        runtime: owns loaded pipelines, memory managers and torch settings; default: a new one for this
            orchestrator. Share one between orchestrators to share their pipelines and GPU budget.
        fast: the opt-in fast mode: each role's ``fast`` overrides (fewer steps, diffusers caches, fp8 weights).
            It changes the output (``mora --fast``: final SVD latents 9.38e-2 from an fp32 reference, 1.57e-3 without).
        best_of: takes each rendering step makes, scored, the best kept (a profile's or plan step's own setting
            wins); see :mod:`openmora.quality.gate`.
        min_quality: the overall score (0..1) under which the planner is asked whether to render another take
            (default: the profile's; None: never).
        report: score the run and write ``scores.json`` and ``report.html`` into its folder when it finishes.
        ray: render a story's shots on Ray actors (:mod:`openmora.scale`): ``"local"`` or True (a cluster on this
            machine), a cluster's address, or a :class:`openmora.scale.RayShots`; default None (in this process).

    Example:
        >>> orch = Orchestrator(profile="tiny")
        >>> r = orch.run("text-to-video", prompt="a red kite over the sea", segments=2)  # doctest: +SKIP
        >>> r.final_video.exists()  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        profile: str | Path | Profile = "tiny",
        llm: str = "none",
        runs_dir: str | Path | None = None,
        on_event: EventSink | None = None,
        max_turns: int = DEFAULT_MAX_TURNS,
        fast: bool = False,
        runtime: Runtime | None = None,
        best_of: int = 1,
        min_quality: float | None = None,
        report: bool = True,
        ray: Any = None,
    ) -> None:
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        if fast:
            self.profile = fast_variant(self.profile)
        self.llm = check_llm_spec(llm)
        self.runtime = runtime if runtime is not None else Runtime()
        self.runs_dir = Path(runs_dir) if runs_dir else self.runtime.settings.runs_dir
        self.on_event = on_event
        self.max_turns = max_turns
        self.story_overlap = True  # stories: overlap shot k+1's image with shot k's video (False: one at a time)
        self.gate = GateSettings(
            best_of=best_of,
            per_tool=dict(self.profile.best_of),
            min_quality=min_quality if min_quality is not None else self.profile.min_quality,
            max_retakes=self.profile.max_retakes,
        )
        self.report = report
        from openmora.scale import ray_shots

        self.ray_shots = ray_shots(ray, self.profile)  # actors start on the first story
        self._clients: dict[str, Any] = {}

    def client(self, role: str = "planner") -> Any:
        """The LLM client for ``role`` (``None`` for ``llm="none"``).

        The embedded LLM gets one client per role: llama.cpp reuses only the prompt prefix it saw last, so a client
        shared by the planner and every agent re-reads the whole conversation each turn (10.7 s instead of 0.3 s for
        a 265-token prompt). Weights are memory-mapped and shared; a role's model loads on its first call.
        Other backends share one client (a replay script is one sequence of replies).
        """
        if self.llm == "none":
            return None
        key = role if self.llm in ("local", "local-small") else "shared"
        if key not in self._clients:
            self._clients[key] = TimedClient(make_llm_client(self.llm))
        return self._clients[key]

    @property
    def llm_seconds(self) -> float:
        return sum(c.seconds for c in self._clients.values())

    def run(self, task: str, **kwargs: Any) -> RunResult:
        """Run one task to its final video (blocking). In a running event loop (Jupyter), ``await arun(...)``.

        Keyword args: ``prompt``, ``image``, ``videos``, ``seed``, ``segments``, ``out`` (see :meth:`arun`).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(task, **kwargs))
        raise RuntimeError("Orchestrator.run() was called inside a running event loop; use `await orch.arun(...)`")

    async def arun(
        self,
        task: str,
        *,
        prompt: str | None = None,
        image: str | Path | None = None,
        videos: Sequence[str | Path] = (),
        seed: int = 0,
        segments: int | None = None,
        out: str | Path | None = None,
        on_event: EventSink | None = None,
    ) -> RunResult:
        """Run one task to its final video.

        Inputs are checked before anything is written: bad input raises :class:`InputError` and leaves ``out``
        untouched. Images and videos of any ordinary size are fitted to the profile's size (the transcript says how).
        ``on_event`` hears this run's events only (besides the orchestrator's ``on_event``, which hears every run).
        """
        session = ChatSession(self, on_event=on_event)
        try:
            return await session.start(
                task, prompt=prompt, image=image, videos=videos, seed=seed, segments=segments, out=out
            )
        finally:
            session.close()  # one request: its store's writer thread ends with it

    async def run_stream(self, task: str, **kwargs: Any) -> AsyncIterator[StreamEvent]:
        """Run a task and yield every event as it happens; the last one is ``{"type": "result", "result": RunResult}``.

        Example:
            >>> async def show():
            ...     async for event in Orchestrator().run_stream("text-to-video", prompt="a fox"):
            ...         print(event["type"])  # doctest: +SKIP
        """
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def push(event: Event) -> None:  # tools emit from worker threads too
            loop.call_soon_threadsafe(queue.put_nowait, event)

        # The queue listens to this run alone: two streams on one orchestrator each see their own run's events.
        job = asyncio.ensure_future(self.arun(task, on_event=push, **kwargs))
        try:
            while not (job.done() and queue.empty()):
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                else:
                    getter.cancel()
            yield {"type": "result", "result": job.result()}
        finally:
            if not job.done():
                job.cancel()

    async def aplan(
        self,
        request: str,
        *,
        image: str | Path | None = None,
        videos: Sequence[str | Path] = (),
        segments: int | None = None,
        task: str = "auto",
    ) -> PlannedRun:
        """The checked plan of a request and its estimated seconds on this profile, without rendering anything (no
        run folder is made). ``task``: ``auto`` (the planner plans) or a template's name."""
        from openmora.chat import plan_request

        return await plan_request(self, request, image=image, videos=videos, segments=segments, task=task)

    def plan(self, request: str, **kwargs: Any) -> PlannedRun:
        """Blocking :meth:`aplan` (``openmora plan``)."""
        return asyncio.run(self.aplan(request, **kwargs))

    def chat_session(self) -> ChatSession:
        """A conversation: ``await s.start(task, ...)``, then ``await s.revise("make it darker")`` as often as wanted."""
        return ChatSession(self)
