"""Replay a finished run in a notebook: the conversation turn by turn, with its images and clips inline.

Reads only the run folder (``manifest.json``, ``transcript.jsonl``, the PNGs and MP4s): no model, no torch, no
diffusers, so it opens instantly and works on a machine that never ran the models. Images and clips are embedded as
base64 data URIs, so a saved notebook is self-contained. Paths in the manifest are data, not trusted: each one must
resolve inside the run folder or it is refused.

Example (in a notebook, from the repo root):
    >>> from openmora.replay import find_run, load_run, show_conversation
    >>> show_conversation()  # doctest: +SKIP  (the newest run under runs/, or $OPENMORA_RUN)
    >>> run = load_run(find_run("runs/20261123-201500-text-to-video-1a2b"))  # doctest: +SKIP
    >>> [e["tool"] for e in run.events if e["type"] == "tool_call"]  # doctest: +SKIP
    ['enhance_prompt', 'text_to_image', 'image_to_video', 'extend_video']
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmora.settings import current

if TYPE_CHECKING:
    from IPython.display import HTML

MANIFEST = "manifest.json"
TRANSCRIPT = "transcript.jsonl"
SCORES = "scores.json"
# Embedding a file grows the notebook by 4/3 of its size: past this, show where the file is instead.
MAX_EMBED_BYTES = 25 * 2**20
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".mp4": "video/mp4"}
_MAKE_ONE = "make one with: openmora run text-to-video --prompt 'a fox'"


class RunNotFoundError(FileNotFoundError):
    """No run folder could be found (the message says where it looked and how to make one)."""


class UnsafePathError(ValueError):
    """A manifest path that would leave the run folder (``..``, an absolute path, a symlink pointing out)."""


@dataclass
class Run:
    """A run folder read back: ``meta`` is the manifest's ``run`` object, ``artifacts`` its artifacts by id
    (plain dicts, as written), ``events`` the transcript in order."""

    run_dir: Path
    meta: dict[str, Any]
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def path(self, relative: str) -> Path:
        """The absolute path of ``relative`` inside the run folder; :class:`UnsafePathError` if it would leave it.

        Example:
            >>> Run(Path("/tmp/r"), {}).path("../../etc/passwd")  # doctest: +IGNORE_EXCEPTION_DETAIL
            Traceback (most recent call last):
            UnsafePathError: ../../etc/passwd is outside the run folder
        """
        root = self.run_dir.resolve()
        candidate = (root / str(relative)).resolve()  # resolve() follows symlinks, so a link pointing out is caught
        if root not in candidate.parents:
            raise UnsafePathError(f"{relative} is outside the run folder")
        return candidate


# ----- finding and loading ---------------------------------------------------------------------------------------
def _existing(path: str | Path) -> Path:
    """A user-given path: as given (relative to the cwd), else relative to the nearest parent folder of the cwd
    where it exists (a notebook's cwd is usually notebooks/, while paths people copy are relative to the project)."""
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists():
        for parent in Path.cwd().parents:
            if (parent / p).exists():
                return parent / p
    return p


def _runs_dirs() -> list[Path]:
    env = os.environ.get("OPENMORA_RUNS")  # only whether it is set: settings.runs_dir always has a value
    dirs = [_existing(env)] if env else [Path("runs"), _existing("runs")]
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def find_run(path: str | Path | None = None) -> Path:
    """The run folder to replay: ``path`` if given, else ``$OPENMORA_RUN``, else the newest run (by the time its
    manifest was last written) under ``runs/`` or ``$OPENMORA_RUNS``.

    Raises :class:`RunNotFoundError` with a one-line message when there is none.

    Example:
        >>> find_run("runs/20261123-201500-text-to-video-1a2b")  # doctest: +SKIP
        PosixPath('/work/main/runs/20261123-201500-text-to-video-1a2b')
    """
    given = path if path is not None else current().replay_run
    if given is not None:
        source = "argument" if path is not None else "OPENMORA_RUN"
        run_dir = _existing(given)
        if not (run_dir / MANIFEST).is_file():
            raise RunNotFoundError(f"{given} ({source}) is not a run folder: it has no {MANIFEST}")
        return run_dir.resolve()
    runs = [m.parent for d in _runs_dirs() for m in d.glob(f"*/{MANIFEST}") if m.is_file()]
    if not runs:
        where = os.environ.get("OPENMORA_RUNS") or "runs/"
        raise RunNotFoundError(f"no run folder with a {MANIFEST} under {where}; set OPENMORA_RUN or {_MAKE_ONE}")
    return max(runs, key=lambda r: (r / MANIFEST).stat().st_mtime_ns).resolve()


def _read_events(path: Path) -> list[dict[str, Any]]:
    # The same rule as openmora.group_chat.transcript.Transcript.read (a torn last line is skipped), kept here so this
    # helper imports nothing from the engine, whose packages may pull in torch.
    events: list[dict[str, Any]] = []
    if not path.is_file():
        return events
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder's manifest and transcript (a run still going, or one without a transcript, loads too).

    Example:
        >>> run = load_run(find_run())  # doctest: +SKIP
        >>> run.meta["task"], sorted(run.artifacts)  # doctest: +SKIP
        ('text-to-video', ['clip-0001', 'clip-0002', 'img-0001'])
    """
    run_dir = Path(run_dir).resolve()
    manifest = run_dir / MANIFEST
    if not manifest.is_file():
        raise RunNotFoundError(f"{run_dir} is not a run folder: it has no {MANIFEST}")
    data = json.loads(manifest.read_text(encoding="utf-8"))
    artifacts = {str(a["id"]): a for a in data.get("artifacts", []) if isinstance(a, dict) and "id" in a}
    return Run(
        run_dir=run_dir, meta=data.get("run", {}), artifacts=artifacts, events=_read_events(run_dir / TRANSCRIPT)
    )


# ----- rendering -------------------------------------------------------------------------------------------------
def display(*objs: Any, **kwargs: Any) -> None:
    """IPython's display, imported when a notebook shows something."""
    from IPython.display import display as show

    show(*objs, **kwargs)


def _html(text: str) -> HTML:
    # IPython only where a notebook shows something: reading a run (openmora score, the report) needs none.
    from IPython.display import HTML

    return HTML(text)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _red(text: str) -> str:
    return f'<div style="color:#c62828"><b>{_e(text)}</b></div>'


def _seconds(value: Any) -> str:
    try:
        return f"{float(value):.1f} s"
    except (TypeError, ValueError):
        return "?"


def _clip(text: Any, limit: int = 4000) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def _media(run: Run, relative: str, kind: str, label: str, max_bytes: int = MAX_EMBED_BYTES) -> str:
    """An <img> or <video> for a file of the run, embedded as base64; a red line instead of anything unsafe."""
    try:
        path = run.path(relative)
    except UnsafePathError as err:
        return _red(f"{label}: refused: {err}")
    mime = _MIME.get(path.suffix.lower())
    if not path.is_file():
        return _red(f"{label}: missing file {relative}")
    if mime is None or mime.split("/")[0] != kind:
        return _red(f"{label}: {relative} is not a{'n' if kind == 'image' else ''} {kind} this replay shows")
    size = path.stat().st_size
    if size > max_bytes:
        return f"<div><i>{_e(label)}: {size / 2**20:.0f} MB, not embedded; open {_e(path)}</i></div>"
    uri = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    if kind == "image":
        return (
            f'<figure style="display:inline-block;margin:4px 8px"><img src="{uri}" alt="{_e(label)}" '
            f'style="min-width:192px;image-rendering:pixelated"/><figcaption>{_e(label)}</figcaption></figure>'
        )
    return (
        f'<figure style="display:inline-block;margin:4px 8px"><video controls loop style="min-width:256px">'
        f'<source src="{uri}" type="{mime}"/></video><figcaption>{_e(label)}</figcaption></figure>'
    )


def _artifact(run: Run, art_id: str) -> str:
    art = run.artifacts.get(art_id)
    if art is None:
        return _red(f"{art_id}: not in the manifest")
    kind = "video" if art.get("kind") == "video" else "image"
    if kind == "video":
        label = f"{art_id}: {art.get('width')}x{art.get('height')}, {art.get('frames')} frames at {art.get('fps')} fps"
    else:
        label = f"{art_id}: {art.get('width')}x{art.get('height')}"
    return _media(run, str(art.get("path", "")), kind, label)


def _header(run: Run) -> HTML:
    m = run.meta
    timings = m.get("timings") or {}
    timing = " · ".join(f"{k.removesuffix('_s')} {_seconds(v)}" for k, v in timings.items()) or "-"
    status = m.get("status", "?")
    colour = "#2e7d32" if status == "done" else "#c62828"
    rows = [
        ("task", m.get("task", "?")),
        ("prompt", m.get("prompt") or "-"),
        ("profile", m.get("profile", "?")),
        ("llm", m.get("llm", "?")),
        ("seed", m.get("seed", "?")),
        ("started", m.get("started", "?")),
        ("timings", timing),
        ("run folder", run.run_dir),
    ]
    body = "".join(f"<tr><th style='text-align:left'>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    body += f"<tr><th style='text-align:left'>status</th><td style='color:{colour}'><b>{_e(status)}</b></td></tr>"
    error = _red(f"error: {m['error']}") if m.get("error") else ""
    return _html(f"<h3>OpenMora run: {_e(m.get('task', '?'))}</h3><table>{body}</table>{error}")


def _arrow(event: dict[str, Any]) -> str:
    ins = ", ".join(map(str, event.get("inputs") or [])) or "-"
    outs = ", ".join(map(str, event.get("outputs") or [])) or "-"
    return f"{ins} &rarr; {outs}"


def render_event(event: dict[str, Any], run: Run) -> HTML:
    """One transcript event as HTML: a line saying who did what (agent, tool, inputs -> outputs, seconds), the text
    of messages, results and notes, a planner turn's candidates / raw choice / fallback, a plan (its attempt, source,
    problems and steps), a step reused from the step cache, errors in red, and the event's output images and clips
    inline.

    Example:
        >>> run = load_run(find_run())  # doctest: +SKIP
        >>> render_event(run.events[2], run).data[:60]  # doctest: +SKIP
        '<div style="margin:6px 0"><code>[3]</code> <b>image_agent</b> ...'
    """
    kind = str(event.get("type", "?"))
    step = f"<code>[{_e(event.get('step', '?'))}]</code>"
    agent = f"<b>{_e(event.get('agent') or '?')}</b>"
    parts: list[str] = []
    if kind == "tool_call":
        line = f"{step} {agent} &rarr; <code>{_e(event.get('tool'))}</code> {_arrow(event)} ({_seconds(event.get('seconds'))})"
        parts.append(line)
        if event.get("arguments"):
            args = json.dumps(event["arguments"], ensure_ascii=False, default=str)
            parts.append(f"<div style='color:#555'>arguments: <code>{_e(_clip(args, 600))}</code></div>")
        if event.get("reused"):
            parts.append("<div style='color:#2e7d32'>reused from the step cache (inputs unchanged): nothing ran</div>")
        if event.get("result"):
            parts.append(f"<div style='color:#555;white-space:pre-wrap'>{_e(_clip(event['result']))}</div>")
    elif kind == "plan":
        attempt = f" attempt {_e(event['attempt'])}" if event.get("attempt") else ""
        source = f" ({_e(event['source'])})" if event.get("source") else ""
        valid = "valid" if event.get("valid") else "<span style='color:#c62828'>cannot run</span>"
        parts.append(f"{step} {agent} plan{attempt}{source}: {valid}")
        for problem in event.get("problems") or []:
            parts.append(_red(f"problem: {problem}"))
        steps = [
            f"{s.get('id')} {s.get('agent') or '?'}: {s.get('tool')}"
            + f"({', '.join(f'{k}={v}' for k, v in (s.get('args') or {}).items() if k != 'seed')})"
            for s in event.get("steps") or []
            if isinstance(s, dict)
        ]
        if steps:
            parts.append(f"<div style='color:#555;white-space:pre-wrap'>{_e(_clip(chr(10).join(steps)))}</div>")
        if event.get("reason"):
            parts.append(f"<div style='color:#555'>{_e(_clip(event['reason'], 600))}</div>")
    elif kind == "message":
        parts.append(f"{step} {agent} says:")
        parts.append(
            "<div style='white-space:pre-wrap;border-left:3px solid #90caf9;padding-left:8px'>"
            f"{_e(_clip(event.get('text', '')))}</div>"
        )
    elif kind == "planner":
        candidates = ", ".join(map(str, event.get("candidates") or [])) or "-"
        valid = "valid" if event.get("valid") else "<span style='color:#c62828'>invalid</span>"
        decision = f" ({_e(event['decision'])})" if event.get("decision") else ""
        parts.append(
            f"{step} {agent}{decision} candidates: {_e(candidates)}; raw choice "
            f"<code>{_e(repr(event.get('raw_choice')))}</code> ({valid}) &rarr; chose <b>{_e(event.get('chosen'))}</b>"
            f" ({_seconds(event.get('seconds'))})"
        )
        if event.get("retry_choice") is not None:
            parts.append(f"<div>retry: <code>{_e(repr(event['retry_choice']))}</code></div>")
        if event.get("fallback_used"):
            parts.append("<div style='color:#ef6c00'><b>fallback used</b>: the reply named no single ready agent</div>")
        if event.get("reason"):
            parts.append(f"<div style='color:#555'>{_e(_clip(event['reason'], 600))}</div>")
    elif kind == "note":
        tool = f" ({_e(event['tool'])})" if event.get("tool") else ""
        parts.append(f"{step} {agent}{tool} <i style='color:#8d6e00'>note: {_e(_clip(event.get('text', '')))}</i>")
    elif kind == "input":
        parts.append(f"{step} {agent} input <code>{_e(event.get('source', ''))}</code> {_arrow(event)}")
        if event.get("result"):
            parts.append(f"<div style='color:#555'>{_e(event['result'])}</div>")
    elif kind == "run_start":
        parts.append(f"{step} {agent} started <b>{_e(event.get('task', '?'))}</b>: {_e(event.get('prompt', ''))}")
    elif kind == "run_end":
        status = event.get("status", "?")
        parts.append(f"{step} {agent} run {_e(status)} {_arrow(event)} ({_seconds(event.get('seconds'))})")
    else:
        known = {"step", "type", "agent", "tool", "inputs", "outputs", "seconds", "time"}
        extra = {k: v for k, v in event.items() if k not in known}
        tool = f" <code>{_e(event['tool'])}</code>" if event.get("tool") else ""
        parts.append(f"{step} {agent} {_e(kind)}{tool} {_arrow(event)}")
        if extra:
            parts.append(f"<code>{_e(_clip(json.dumps(extra, default=str), 600))}</code>")
    if event.get("error") is True:  # a message that reports a failure: the text above says what
        parts.append(_red("error"))
    elif event.get("error"):
        parts.append(_red(f"error: {event['error']}"))
    media = [_artifact(run, str(a)) for a in event.get("outputs") or [] if kind != "run_end"]
    if media:
        parts.append("<div>" + "".join(media) + "</div>")
    return _html('<div style="margin:6px 0">' + "".join(parts) + "</div>")


def show_conversation(run_dir: str | Path | None = None) -> None:
    """Display a run in the notebook: its header, every event in order with its outputs inline, any artifact no
    event showed, and the final video. ``run_dir`` is resolved by :func:`find_run`.

    Example:
        >>> show_conversation("runs/20261123-201500-text-to-video-1a2b")  # doctest: +SKIP
    """
    run = load_run(find_run(run_dir))
    display(_header(run))
    shown: set[str] = set()
    for event in run.events:
        display(render_event(event, run))
        if event.get("type") != "run_end":
            shown.update(str(a) for a in event.get("outputs") or [])
    rest = [a for a in run.artifacts if a not in shown]
    if rest:
        display(_html("<h4>Artifacts not in the transcript</h4>" + "".join(_artifact(run, a) for a in rest)))
    final = run.meta.get("final_video")
    if final:
        display(_html("<h4>Final video</h4>" + _media(run, str(final), "video", f"final video ({final})")))
    else:
        display(_html(_red(f"no final video: the run's status is {run.meta.get('status', 'unknown')}")))
    display(_html(render_scores(run)))


def render_scores(run: Run) -> str:
    """The run's quality scores (``scores.json``, written by ``openmora score`` and after every run) as HTML tables:
    the same figures as the report and the CLI."""
    path = run.run_dir / SCORES
    if not path.is_file():
        return "<p>not scored yet: <code>openmora score RUN</code></p>"
    try:
        scores = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        return _red(f"{SCORES} could not be read: {err}")
    parts = ["<h4>Quality scores</h4>"]
    for clip in scores.get("clips") or []:
        rows = "".join(
            f"<tr><td>{_e(name)}</td><td>{_e(_num(m.get('value')))}</td><td>{_e(m.get('method', ''))}</td></tr>"
            for name, m in (clip.get("metrics") or {}).items()
            if isinstance(m, dict)
        )
        joins = "".join(
            f"<li>frame {_e(j.get('frame'))} ({_e(j.get('kind'))}): PSNR {_e(_num(j.get('psnr')))} dB, "
            f"SSIM {_e(_num(j.get('ssim')))}{' - <b>a cut</b>' if j.get('cut') else ''}</li>"
            for j in clip.get("joins") or []
        )
        parts.append(
            f"<p><b>{_e(clip.get('id'))}</b> ({_e(clip.get('tool', ''))}): overall {_e(_num(clip.get('overall')))}</p>"
            f"<table>{rows}</table>" + (f"<ul>{joins}</ul>" if joins else "")
        )
    parts += [f"<p><i>{_e(n)}</i></p>" for n in scores.get("notes") or []]
    return "".join(parts)


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)
