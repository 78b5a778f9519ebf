"""The run report: one self-contained, offline HTML file (``report.html``) in a run folder.

It shows what a run did and how good it came out: the header (task, prompt, status, the final video, wall time and
its split), the plan with its steps and the planner's decisions, every clip with a contact sheet, its metrics and a
plot of their series over time, its takes and its joins (the frame before and after each join, a cut highlighted),
the time each step took and the images. Everything is inline (PNGs and the final MP4 as base64 data URIs, CSS in a
``<style>``): no URL, no script, so the file opens anywhere, copied alone. Scores come from ``scores.json``
(``openmora score RUN``); without them the report says how to make them and still shows the rest.

The run folder is read through :func:`openmora.replay.load_run`; each path the manifest names must resolve inside the
run folder or :class:`openmora.replay.UnsafePathError` is raised before anything is written.

Example:
    >>> from openmora.quality.report import report_summary, write_report
    >>> path = write_report("runs/20261203-061250-story-1a2b")  # doctest: +SKIP
    >>> report_summary(path)  # doctest: +SKIP
    'report: runs/20261203-061250-story-1a2b/report.html (212 KB)'
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from openmora.errors import InputError
from openmora.fileio import atomic_write_text
from openmora.replay import SCORES, Run, load_run

__all__ = ["REPORT", "SCORES", "report_summary", "write_report"]

# A clip's frames by artifact id (ArtifactStore.frames), where the caller has them in memory.
Frames = Callable[[str], np.ndarray]

REPORT = "report.html"
PLAN_STATE = "plan_state.json"
# A larger final video is linked, not embedded: base64 grows it by 4/3 and the report should stay light.
MAX_INLINE_VIDEO_BYTES = 20 * 2**20
SHEET_FRAMES = 8
SHEET_COLUMNS = 4
MAX_CELL_WIDTH = 320
MIN_CELL_WIDTH = 160  # tiny clips (96x64) are shown enlarged to this, so a face or an edge can be seen
IMAGE_THUMB_WIDTH = 240
LABEL_HEIGHT = 14
MAX_TEXT = 300  # characters of a prompt, argument list or reason shown before it is cut
MAX_DECISIONS = 60
NOT_SCORED = "not scored yet (run: openmora score RUN)"
SERIES_KEYS = ("series", "magnitudes")
JOIN_NUMBERS = ("psnr", "ssim", "hist_distance", "flow_jump", "diff_ratio", "seam_diff_ratio")  # shown first
JOIN_LABELS = ("frame", "kind", "before", "after", "cut", "method")  # in the join's heading, not its table

_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.15em;border-bottom:1px solid #ccc;margin-top:1.6em}h3{font-size:1em}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:2px 6px;vertical-align:top;
font-size:13px;text-align:left}th{background:#f4f4f4}code{font-size:12px}
.bad{color:#c62828;font-weight:bold}.ok{color:#2e7d32;font-weight:bold}.muted{color:#666}
.cut{background:#ffebee;border:2px solid #c62828}.join{display:inline-block;margin:6px;padding:4px}
.bar{background:#90caf9;height:10px;display:inline-block}.thumb{display:inline-block;margin:6px;max-width:340px;
vertical-align:top}img{image-rendering:pixelated}
"""


# ----- small helpers ---------------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    """Escape anything from the run (prompts, LLM text, ids) for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def _cut(text: Any, limit: int = MAX_TEXT) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more]"


def _num(value: Any, digits: int = 3) -> str:
    """A number for a table cell: booleans as yes/no, floats rounded, anything else as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return "-" if value is None else _cut(value, 120)


def _seconds(value: Any) -> str:
    try:
        return f"{float(value):.2f} s"
    except (TypeError, ValueError):
        return "-"


def _red(text: str) -> str:
    return f'<p class="bad">{_e(text)}</p>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], attrs: Sequence[str] | None = None) -> str:
    """A table of cells that are already HTML (escape them first); ``attrs`` adds attributes per row."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        f"<tr{(' ' + attrs[i]) if attrs and attrs[i] else ''}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _png_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)  # optimize=True tries every filter: 3x slower
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(image: Image.Image, alt: str, cell_width: int | None = None) -> str:
    """An inline PNG. Images made of cells narrower than ``MIN_CELL_WIDTH`` are shown enlarged by the browser
    (whole multiples, pixelated): the file keeps the original pixels, 4x smaller than upscaled ones."""
    width = cell_width or image.width
    scale = math.ceil(MIN_CELL_WIDTH / width) if width < MIN_CELL_WIDTH else 1
    return (
        f'<img src="{_png_uri(image)}" alt="{_e(alt)}" width="{image.width * scale}" height="{image.height * scale}"/>'
    )


def _fit_width(image: Image.Image, max_width: int) -> Image.Image:
    """Downscaled to ``max_width`` if wider (smooth resampling); a smaller image is kept as it is."""
    w, h = image.size
    if w > max_width:
        return image.resize((max_width, max(1, round(h * max_width / w))), Image.Resampling.LANCZOS)
    return image


def _dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty one: run files are data, a missing or odd key is not an error."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _args(args: Any) -> str:
    """A step's arguments as ``name=value`` pairs (values as JSON, so a string is quoted)."""
    if not isinstance(args, dict):
        return json.dumps(args, ensure_ascii=False, default=str)
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in args.items()) or "-"


# ----- reading the run -------------------------------------------------------------------------------------------
def _load_scores(run: Run, scores: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
    """The scores to show and, when there are none usable, the line the report says instead."""
    if scores is not None:
        if not isinstance(scores, dict):
            raise InputError(f"scores must be the content of {SCORES} (a dict), not {type(scores).__name__}")
        return scores, ""
    path = run.path(SCORES)
    if not path.is_file():
        return None, NOT_SCORED
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{SCORES} is unreadable ({type(err).__name__}); score again (run: openmora score RUN)"
    if not isinstance(data, dict):
        return None, f"{SCORES} holds no JSON object; score again (run: openmora score RUN)"
    return data, ""


def _scored_clips(scores: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    clips = (scores or {}).get("clips")
    if not isinstance(clips, list):
        return {}
    return {str(c["id"]): c for c in clips if isinstance(c, dict) and "id" in c}


def _frames(run: Run, art: dict[str, Any], pixels: Frames | None = None) -> tuple[np.ndarray | None, str]:
    """A clip's exact frames (``pixels(id)``: the run's own store, in memory; else its lossless copy, else its MP4)
    or None and the reason. Paths are checked first, so a manifest path outside the run folder raises whether or
    not the file exists."""
    from openmora.video_io import read_frames, read_video

    lossless = run.path(str(art["frames_path"])) if art.get("frames_path") else None
    mp4 = run.path(str(art.get("path", "")))
    try:
        if pixels is not None:
            frames = pixels(str(art["id"]))
        elif lossless is not None and lossless.is_file():
            frames = read_frames(lossless)
        elif mp4.is_file():
            frames, _fps = read_video(mp4)
        else:
            return None, f"missing file {art.get('path')}"
    except Exception as err:  # a corrupt clip is reported in the page, not a reason to have no report
        return None, f"cannot read {art.get('path')}: {type(err).__name__}: {err}"
    if frames.ndim != 4 or not len(frames):
        return None, f"{art.get('path')} holds no frames"
    return frames, ""


# ----- sections --------------------------------------------------------------------------------------------------
def _header(run: Run, scores: dict[str, Any] | None, not_scored: str) -> str:
    m = run.meta
    status = str(m.get("status", "?"))
    timings = _dict(m.get("timings"))
    split = " · ".join(
        f"{_e(str(k).removesuffix('_s'))} {_e(_seconds(v))}" for k, v in timings.items() if k != "wall_s"
    )
    rows = [
        ("task", _e(m.get("task", "?"))),
        ("prompt", _e(m.get("prompt") or "-")),
        ("profile", _e(m.get("profile", "?"))),
        ("llm", _e(m.get("llm", "?"))),
        ("seed", _e(m.get("seed", "?"))),
        ("started", _e(m.get("started", "?"))),
        ("status", f'<span class="{"ok" if status == "done" else "bad"}">{_e(status)}</span>'),
        ("final clip", _e(m.get("final") or "-")),
        ("wall time", _e(_seconds(timings.get("wall_s")))),
        ("timings", split or "-"),
    ]
    if m.get("error"):
        rows.append(("error", f'<span class="bad">{_e(_cut(m["error"]))}</span>'))
    table = "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    return f"<h1>OpenMora run report: {_e(m.get('task', '?'))}</h1>{table}{_final_video(run)}{_scoring(scores, not_scored)}"


def _final_video(run: Run) -> str:
    final = run.meta.get("final_video")
    if not final:
        return _red(f"no final video (status {run.meta.get('status', 'unknown')})")
    path = run.path(str(final))
    if not path.is_file():
        return _red(f"final video {final} is missing")
    size = path.stat().st_size
    if size >= MAX_INLINE_VIDEO_BYTES:
        # Relative, so it works wherever the run folder is copied.
        return f'<p>final video: <a href="{_e(final)}">{_e(final)}</a> ({size / 2**20:.0f} MB, not embedded)</p>'
    uri = "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f"<h3>Final video ({_e(final)}, {size / 1024:.0f} KB)</h3>"
        f'<video controls loop muted style="min-width:320px"><source src="{uri}" type="video/mp4"/></video>'
    )


def _scoring(scores: dict[str, Any] | None, not_scored: str) -> str:
    if scores is None:
        return f'<h2>Scores</h2><p class="bad">{_e(not_scored)}</p>'
    rows: list[tuple[str, str]] = []
    for key in ("version", "source", "final", "seconds"):
        if key in scores:
            rows.append((key, _e(_num(scores[key]))))
    final = _scored_clips(scores).get(str(scores.get("final")))
    if final is not None and "overall" in final:
        rows.append(("final overall", f"<b>{_e(_num(final['overall']))}</b>"))
    extractors = scores.get("extractors")
    if isinstance(extractors, dict):
        for name, value in extractors.items():
            text = ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
            rows.append((f"extractor {name}", _e(_cut(text))))
    table = "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    notes = _list(scores.get("notes"))
    items = "".join(f"<li>{_e(_cut(n, 600))}</li>" for n in notes)
    return f"<h2>Scores</h2>{table}" + (f"<ul class='muted'>{items}</ul>" if items else "")


def _plan(run: Run) -> str:
    parts = ["<h2>Plan</h2>"]
    path = run.path(PLAN_STATE)
    state: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            state = loaded if isinstance(loaded, dict) else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            parts.append(_red(f"{PLAN_STATE} is unreadable: {type(err).__name__}"))
    else:
        parts.append("<p class='muted'>no plan_state.json in the run folder</p>")
    plan = _dict(state.get("plan"))
    runs = _dict(state.get("runs"))
    steps = [s for s in plan.get("steps") or [] if isinstance(s, dict)]
    if steps:
        info = ", ".join(f"{k} {_e(plan[k])}" for k in ("intent", "source", "final") if plan.get(k))
        parts.append(f"<p>{info}</p>")
        rows, attrs = [], []
        for s in steps:
            r = _dict(runs.get(str(s.get("id"))))
            status = str(r.get("status", "-"))
            rows.append(
                [
                    f"<code>{_e(s.get('id'))}</code>",
                    _e(s.get("agent") or "-"),
                    f"<code>{_e(s.get('tool'))}</code>",
                    f"<code>{_e(_cut(_args(s.get('args') or {})))}</code>",
                    _e(status) + (f" <span class='bad'>{_e(_cut(r['error']))}</span>" if r.get("error") else ""),
                    _e(", ".join(map(str, r.get("outputs") or [])) or ("text" if r.get("text") else "-")),
                ]
            )
            attrs.append('class="cut"' if status in ("failed", "error") else "")
        parts.append(_table(["id", "agent", "tool", "args", "status", "outputs"], rows, attrs))
        notes = [n for n in plan.get("notes") or [] if n]
        if notes:
            parts.append("<ul class='muted'>" + "".join(f"<li>{_e(_cut(n))}</li>" for n in notes) + "</ul>")
    parts.append(_decisions(run))
    return "".join(parts)


def _decisions(run: Run) -> str:
    events = [e for e in run.events if e.get("type") in ("planner", "plan")]
    if not events:
        return "<p class='muted'>no planner decisions in the transcript</p>"
    rows = []
    for e in events[:MAX_DECISIONS]:
        if e.get("type") == "plan":
            attempt = f" attempt {e['attempt']}" if e.get("attempt") else ""
            what = _e(f"plan{attempt}: {len(e.get('steps') or [])} steps")
            if e.get("valid") is False:
                what += " <span class='bad'>(cannot run)</span>"
            source = e.get("source") or "-"
        else:
            what = _e(e.get("decision") or "choice") + " &rarr; <b>" + _e(e.get("chosen") or "-") + "</b>"
            if e.get("fallback_used"):
                what += " <span class='bad'>(fallback)</span>"
            source = e.get("source") or ("LLM" if e.get("raw_choice") is not None else "-")
        rows.append([_e(e.get("step", "?")), what, _e(source), _e(_cut(e.get("reason") or "-")), _problems(e)])
    more = len(events) - MAX_DECISIONS
    tail = f"<p class='muted'>... {more} more decisions in transcript.jsonl</p>" if more > 0 else ""
    return "<h3>Planner decisions</h3>" + _table(["step", "decision", "source", "reason", "problems"], rows) + tail


def _problems(event: dict[str, Any]) -> str:
    problems = event.get("problems") or []
    if not isinstance(problems, list):
        problems = [problems]
    return "<br/>".join(f"<span class='bad'>{_e(_cut(p, 200))}</span>" for p in problems) or "-"


def contact_sheet(frames: np.ndarray, fps: float | None = None, count: int = SHEET_FRAMES) -> Image.Image:
    """A grid of ``count`` evenly spaced frames (first and last included), each labelled with its frame index (and
    time when ``fps`` is known); cells are at most ``MAX_CELL_WIDTH`` pixels wide.

    Example:
        >>> sheet = contact_sheet(np.zeros((20, 64, 96, 3), np.uint8), fps=7.0)
        >>> sheet.size
        (400, 164)
    """
    total = len(frames)
    picks = sorted({int(round(i)) for i in np.linspace(0, total - 1, min(count, total))})
    cells = [_fit_width(Image.fromarray(frames[i]), MAX_CELL_WIDTH) for i in picks]
    cw, ch = cells[0].size
    cols = min(SHEET_COLUMNS, len(cells))
    rows = math.ceil(len(cells) / cols)
    sheet = Image.new("RGB", (cols * (cw + 4), rows * (ch + LABEL_HEIGHT + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (i, cell) in enumerate(zip(picks, cells, strict=True)):
        x, y = (n % cols) * (cw + 4) + 2, (n // cols) * (ch + LABEL_HEIGHT + 4) + 2
        sheet.paste(cell, (x, y))
        label = f"frame {i}" + (f" {i / fps:.2f}s" if fps else "")
        if draw.textlength(label) > cw - 2:  # a narrow cell: the index only
            label = f"frame {i}"
        draw.text((x + 2, y + ch + 1), label, fill="black")
    return sheet


def _series(metrics: dict[str, Any]) -> list[tuple[str, list[float], list[float] | None]]:
    """(label, values, x or None) of each metric's numeric series."""
    out = []
    for name, m in metrics.items():
        if not isinstance(m, dict):
            continue
        for key in SERIES_KEYS:
            values = m.get(key)
            if not isinstance(values, list) or not values:
                continue
            try:
                ys = [float(v) if v is not None else math.nan for v in values]
            except (TypeError, ValueError):
                continue
            xs = _list(m.get("frames")) if key == "series" else []
            ok = len(xs) == len(ys) and all(isinstance(v, (int, float)) for v in xs)
            out.append((name if key == "series" else f"{name} ({key})", ys, [float(v) for v in xs] if ok else None))
    return out


def series_plot(
    series: list[tuple[str, list[float], list[float] | None]], frames: int, joins: Sequence[tuple[int, bool]] = ()
) -> Image.Image:
    """The series against the frame index, in at most two panels: scores in 0..1 (higher is better; BRISQUE's raw
    scores shown as ``1 - score/100``, the imaging-quality reading) and pixel magnitudes (the flow per pair). A
    per-pair series (one value fewer than the frames) is drawn at the frame each pair ends on. Joins are vertical
    lines, cuts in red."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    unit: list[tuple[str, list[float], list[float]]] = []
    pixels: list[tuple[str, list[float], list[float]]] = []
    for label, ys, xs in series:
        if xs is None:
            n = len(ys)
            xs = (
                list(range(n))
                if n == frames
                else list(range(1, n + 1))
                if n == frames - 1
                else list(np.linspace(0, max(frames - 1, 0), n))
            )
        if label.startswith("imaging_quality"):
            label, ys = "imaging quality (1 - BRISQUE/100)", [min(1.0, max(0.0, 1 - y / 100)) for y in ys]
        finite = [y for y in ys if math.isfinite(y)]
        (unit if finite and min(finite) >= 0.0 and max(finite) <= 1.0 else pixels).append((label, ys, xs))
    panels = [(p, name) for p, name in ((unit, "score (0..1)"), (pixels, "pixels")) if p]
    fig = Figure(figsize=(7.0, 0.6 + 1.6 * len(panels)), dpi=72)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (lines, ylabel) in zip(axes, panels, strict=True):
        for label, ys, xs in lines:
            ax.plot(xs, ys, marker=".", linewidth=1, label=label)
        for frame, cut in joins:
            ax.axvline(frame - 0.5, color="#c62828" if cut else "#999", linestyle="--", linewidth=1)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left", frameon=False)
    axes[-1].set_xlabel("frame index", fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.97, bottom=0.45 / (0.6 + 1.6 * len(panels)) + 0.05, hspace=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _derived_joins(run: Run, art: dict[str, Any]) -> list[dict[str, Any]]:
    """Joins of an unscored clip made by joining others end to end: where each part starts (only when the parts'
    frame counts add up to the clip's, so the boundaries are exact)."""
    ids = [str(p) for p in _list(art.get("parents"))]
    if art.get("tool") != "join_clips" or len(ids) < 2 or any(i not in run.artifacts for i in ids):
        return []
    counts = [run.artifacts[i].get("frames") for i in ids]
    if not all(isinstance(c, int) for c in counts) or sum(int(c or 0) for c in counts) != art.get("frames"):
        return []
    joins: list[dict[str, Any]] = []
    at = 0
    for before, after, n in zip(ids, ids[1:], counts, strict=False):
        at += int(n or 0)
        joins.append({"frame": at, "kind": "join", "before": before, "after": after})
    return joins


def _join_pair(frames: np.ndarray, frame: int) -> Image.Image:
    before = _fit_width(Image.fromarray(frames[frame - 1]), MAX_CELL_WIDTH)
    after = _fit_width(Image.fromarray(frames[frame]), MAX_CELL_WIDTH)
    pair = Image.new("RGB", (before.width + after.width + 6, before.height + LABEL_HEIGHT), "white")
    pair.paste(before, (0, 0))
    pair.paste(after, (before.width + 6, 0))
    draw = ImageDraw.Draw(pair)
    draw.text((2, before.height + 1), f"{frame - 1} before", fill="black")
    draw.text((before.width + 8, before.height + 1), f"{frame} after", fill="black")
    return pair


def _joins(frames: np.ndarray | None, joins: list[dict[str, Any]], scored: bool) -> str:
    if not joins:
        return ""
    blocks = []
    for j in joins:
        frame = j.get("frame")
        cut = j.get("cut") is True
        what = f"{_e(j.get('kind') or 'join')} at frame {_e(frame)}: {_e(j.get('before', '?'))} &rarr; {_e(j.get('after', '?'))}"
        head = f"<b>{what}</b>" + (" <span class='bad'>CUT</span>" if cut else "")
        if frames is not None and isinstance(frame, int) and 0 < frame < len(frames):
            picture = _img(
                _join_pair(frames, frame), f"frames {frame - 1} and {frame}", min(frames.shape[2], MAX_CELL_WIDTH)
            )
        else:
            picture = _red(f"join frame {frame} is not inside the clip")
        keys = [k for k in JOIN_NUMBERS if k in j]
        keys += [k for k, v in j.items() if k not in (*keys, *JOIN_LABELS) and not isinstance(v, (list, dict))]
        numbers = [(k, j[k]) for k in (*keys, "cut") if k in j]
        table = _table([k for k, _ in numbers], [[_e(_num(v)) for _, v in numbers]]) if numbers else ""
        if j.get("method"):
            table += f"<div class='muted'>{_e(_cut(j['method'], 200))}</div>"
        if not scored:
            table = f"<p class='muted'>{_e(NOT_SCORED)}</p>"
        blocks.append(f'<div class="join{" cut" if cut else ""}">{head}<br/>{picture}{table}</div>')
    return "<h3>Joins</h3>" + "".join(blocks)


def _metrics_table(clip: dict[str, Any]) -> str:
    metrics = _dict(clip.get("metrics"))
    rows = []
    for name, m in metrics.items():
        if not isinstance(m, dict):
            rows.append([_e(name), _e(_num(m)), "-", "-", "-"])
            continue
        better = m.get("higher_is_better")
        direction = "higher" if better is True else "lower" if better is False else "-"
        extra = {
            k: v
            for k, v in m.items()
            if k not in ("value", "higher_is_better", "method", "frames", *SERIES_KEYS)
            and not isinstance(v, (list, dict))
        }
        rows.append(
            [
                f"<b>{_e(name)}</b>",
                _e(_num(m.get("value"))),
                direction,
                _e(_cut(m.get("method") or "-", 200)),
                _e(", ".join(f"{k}={_num(v)}" for k, v in extra.items()) or "-"),
            ]
        )
    mora = clip.get("mora")
    if isinstance(mora, dict):
        for name, value in mora.items():
            rows.append([f"<b>mora {_e(name)}</b>", _e(_num(value)), "-", "Mora's metric", "-"])
    overall = f"<p>overall: <b>{_e(_num(clip['overall']))}</b></p>" if "overall" in clip else ""
    if not rows:
        return overall + "<p class='muted'>no metrics for this clip</p>"
    return overall + _table(["metric", "value", "better", "method", "details"], rows)


def _takes(clip: dict[str, Any]) -> str:
    takes = [t for t in clip.get("takes") or [] if isinstance(t, dict)]
    if len(takes) < 2:
        return ""
    rows = [
        [
            _e(t.get("seed", "-")),
            _e(", ".join(map(str, t.get("outputs") or [])) or "-"),
            _e(_num(t.get("overall"))),
            "<span class='ok'>kept</span>" if t.get("kept") else "dropped",
        ]
        for t in takes
    ]
    return "<h3>Takes (best of N)</h3>" + _table(["seed", "outputs", "overall", "kept"], rows)


def _clip_section(run: Run, art: dict[str, Any], clip: dict[str, Any] | None, pixels: Frames | None = None) -> str:
    cid = str(art["id"])
    final = " (final)" if cid == run.meta.get("final") else ""
    info = (
        f"{art.get('tool', '?')}, {art.get('width')}x{art.get('height')}, {art.get('frames')} frames at "
        f"{art.get('fps')} fps, from {', '.join(map(str, art.get('parents') or [])) or '-'}, "
        f"{_seconds(art.get('seconds'))}"
    )
    parts = [f"<h2>Clip {_e(cid)}{final}</h2><p>{_e(info)}</p>"]
    if art.get("description"):
        parts.append(f"<p class='muted'>{_e(_cut(art['description']))}</p>")
    frames, why = _frames(run, art, pixels)
    fps = art.get("fps") if isinstance(art.get("fps"), (int, float)) else None
    if frames is None:
        parts.append(_red(why))
    else:
        parts.append(_img(contact_sheet(frames, fps), f"contact sheet of {cid}", min(frames.shape[2], MAX_CELL_WIDTH)))
    if clip is None:
        parts.append(f"<p class='muted'>{_e(NOT_SCORED)}</p>")
        joins = _derived_joins(run, art)
    else:
        parts.append(_metrics_table(clip))
        joins = [j for j in clip.get("joins") or [] if isinstance(j, dict)]
        metrics = _dict(clip.get("metrics"))
        series = _series(metrics)
        if series:
            n = len(frames) if frames is not None else int(clip.get("frames") or art.get("frames") or 0)
            marks = [(int(j["frame"]), j.get("cut") is True) for j in joins if isinstance(j.get("frame"), int)]
            parts.append(_img(series_plot(series, n, marks), f"metric series of {cid}"))
        parts.append(_takes(clip))
    parts.append(_joins(frames, joins, clip is not None))
    return "".join(parts)


def _timings(run: Run) -> str:
    calls = [e for e in run.events if e.get("type") == "tool_call"]
    if not calls:
        return "<h2>Timings</h2><p class='muted'>no tool calls in the transcript</p>"
    seconds = [float(e["seconds"]) if isinstance(e.get("seconds"), (int, float)) else 0.0 for e in calls]
    longest = max(max(seconds), 1e-9)
    rows = []
    for e, s in zip(calls, seconds, strict=True):
        outs = [str(o) for o in e.get("outputs") or []]
        art_s = [run.artifacts[o].get("seconds") for o in outs if o in run.artifacts]
        bar = f'<span class="bar" style="width:{max(1, round(200 * s / longest))}px"></span>'
        rows.append(
            [
                _e(e.get("step", "?")),
                _e(e.get("plan_step") or "-"),
                _e(e.get("agent") or "-"),
                f"<code>{_e(e.get('tool'))}</code>" + (" (reused)" if e.get("reused") else ""),
                _e(_seconds(s)),
                bar,
                _e(", ".join(outs) or "-"),
                _e(", ".join(_seconds(a) for a in art_s) or "-"),
            ]
        )
    total = f"<p>tool calls: {_seconds(sum(seconds))} in all</p>"
    header = ["step", "plan step", "agent", "tool", "seconds", "", "outputs", "output seconds"]
    return "<h2>Timings</h2>" + total + _table(header, rows)


def _images(run: Run) -> str:
    images = [a for a in run.artifacts.values() if a.get("kind") == "image"]
    if not images:
        return ""
    blocks = []
    for art in images:
        path = run.path(str(art.get("path", "")))
        params = _dict(art.get("params"))
        caption = (
            f"<b>{_e(art['id'])}</b> {_e(art.get('tool', '?'))}, {_e(art.get('width'))}x{_e(art.get('height'))}"
            f", seed {_e(art.get('seed'))}, {_e(_seconds(art.get('seconds')))}<br/>"
            f"<span class='muted'>{_e(_cut(params.get('prompt') or art.get('description') or '-'))}</span>"
        )
        try:
            with Image.open(path) as im:
                thumb = _img(_fit_width(im.convert("RGB"), IMAGE_THUMB_WIDTH), str(art["id"]))
        except FileNotFoundError:
            thumb = _red(f"missing file {art.get('path')}")
        except Exception as err:  # a broken PNG is reported in the page
            thumb = _red(f"cannot read {art.get('path')}: {type(err).__name__}")
        blocks.append(f'<div class="thumb">{thumb}<br/>{caption}</div>')
    return "<h2>Images</h2>" + "".join(blocks)


# ----- public ----------------------------------------------------------------------------------------------------
def render_report(run_dir: str | Path, scores: dict[str, Any] | None = None, frames: Frames | None = None) -> str:
    """The report of a run folder as one HTML string (what :func:`write_report` writes)."""
    run = load_run(run_dir)
    scores, not_scored = _load_scores(run, scores)
    scored = _scored_clips(scores)
    clips = [a for a in run.artifacts.values() if a.get("kind") == "video"]
    body = [_header(run, scores, not_scored), _plan(run)]
    body += [_clip_section(run, a, scored.get(str(a["id"])), frames) for a in clips]
    body += [_timings(run), _images(run)]
    title = f"OpenMora report: {run.meta.get('task', '?')} {run.run_dir.name}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/>'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>" + "".join(body) + "</body></html>\n"
    )


def write_report(run_dir: str | Path, scores: dict[str, Any] | None = None, frames: Frames | None = None) -> Path:
    """Write ``report.html`` into the run folder (atomically: a failure leaves no half-written file) and return
    its path. ``scores`` is the content of ``scores.json``; None reads the run's ``scores.json`` if there is one.
    ``frames(id)``: a clip's frames where the caller has them (a run's own store), so nothing is decoded again.

    Raises :class:`openmora.replay.RunNotFoundError` for a folder without a manifest and
    :class:`openmora.replay.UnsafePathError` for a manifest path outside the run folder (nothing is written).

    Example:
        >>> write_report("runs/20261203-061250-story-1a2b")  # doctest: +SKIP
        PosixPath('runs/20261203-061250-story-1a2b/report.html')
    """
    text = render_report(run_dir, scores, frames)  # everything read and checked before the file is touched
    path = Path(run_dir) / REPORT
    atomic_write_text(path, text)
    return path


def report_summary(path: str | Path) -> str:
    """One line for the CLI: where the report is and its size (``path``: the report or its run folder).

    Example:
        >>> report_summary("runs/20261203-061250-story-1a2b")  # doctest: +SKIP
        'report: runs/20261203-061250-story-1a2b/report.html (212 KB)'
    """
    p = Path(path)
    if p.is_dir():
        p = p / REPORT
    if not p.is_file():
        return f"no report at {p} (make one with: openmora report RUN)"
    return f"report: {p} ({p.stat().st_size / 1024:.0f} KB)"
