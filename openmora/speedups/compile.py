"""``torch.compile`` for the ``compile`` (regional, the denoiser) and ``vae_compile`` (the VAE decoder) speedups:
inductor's on-disk caches kept in the OpenMora cache folder, and compiling in the background while the pipeline runs.

Why in the background: compiling SVD's UNet and VAE decoder at Mora's shapes took 193 s in a fresh process with an
empty cache and 29 s once the cache held the code (H100), while the whole render of Mora's text-to-video takes ~33 s
compiled and ~55 s eager. Compiling before the first frame made a user running one command wait ~4x longer than
Mora's own code. So each compiled region starts eager: its first call with a new input signature (shapes, strides,
dtypes, the other arguments) queues a compile of a copy of that call on one background thread, and the region runs
the compiled code from the first call after it is ready. A first-ever run renders mostly eagerly and leaves the cache
filled (the CLI finishes the queued compiles after writing the video). A signature compiled on this machine before
(``compile_times.json`` says so) compiles in the foreground instead: inductor's cache makes that a few seconds, and
in the background it only competed with the eager render for the CPU (``OPENMORA_COMPILE_CACHED=background``
queues those too, for comparing the two rules). ``OPENMORA_COMPILE=blocking`` compiles at first use instead (what a benchmark of the warm path wants);
``off`` never compiles.

Progress: the compiler tells its listeners (the loader's event sink) with ``compile`` events when a compile is queued
and when it ends, with the seconds it took; each region's compile seconds are kept in ``compile_times.json`` in the
cache, so the next process can say how long its compiles will take.

Example:
    >>> import torch
    >>> from openmora.speedups.compile import deferred
    >>> lin = torch.nn.Linear(4, 4)
    >>> fn = deferred(lin, "demo.linear", mode="off")
    >>> fn(torch.ones(1, 4)).shape
    torch.Size([1, 4])
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from openmora.fileio import atomic_write_json
from openmora.settings import cache_root, current

logger = logging.getLogger(__name__)

BACKEND = "inductor"  # tests use a cheaper backend; the code paths are the same
TIMES_FILE = "compile_times.json"


def persistent_compile_cache() -> str:
    """Keep torch.compile's on-disk caches in the OpenMora cache folder, unless ``TORCHINDUCTOR_CACHE_DIR`` is set.

    Inductor's default is a folder under /tmp, which a reboot or a fresh container empties. With its caches kept,
    the SVD UNet's compile warm-up fell from 193 s to 29 s in the next process (H100).

    This sets an environment variable on purpose, and only here, when a compile speedup is applied: inductor takes its
    cache folder from ``TORCHINDUCTOR_CACHE_DIR`` alone (``torch._inductor.runtime.cache_dir_utils.cache_dir``;
    ``torch._inductor.config`` has no such setting, its ``global_cache_dir`` is fbcode's autotuning cache), and it
    writes that variable itself with its /tmp default on first use, so that default is replaced too (only a folder
    the user chose is kept). Returns the folder in use.
    """
    global _CHOSEN
    if not _user_chose():
        _CHOSEN = os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_root() / "inductor")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


_CHOSEN: str | None = None  # the folder persistent_compile_cache set (None: it set none, or the user chose one)


def _user_chose() -> bool:
    """``TORCHINDUCTOR_CACHE_DIR`` holds a folder the user chose: not unset, not ours, and not inductor's /tmp
    default, which inductor writes into the variable itself the first time anything asks for its cache folder
    (importing diffusers can, before any pipeline loads)."""
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not chosen or chosen == _CHOSEN:
        return False
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    return os.path.abspath(chosen) != os.path.abspath(default_cache_dir())


def compile_cache_dir() -> Path:
    """Inductor's cache folder: the user's ``TORCHINDUCTOR_CACHE_DIR``, else ``<OpenMora cache>/inductor`` (read now,
    so that a changed ``OPENMORA_CACHE`` counts even after a compile set the variable)."""
    if _user_chose():
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    return cache_root() / "inductor"


# ----- input signatures ---------------------------------------------------------------------------------------------
def _describe(obj: Any) -> Any:
    """A hashable description of a call's arguments: what dynamo's guards look at for a static-shape compile."""
    if isinstance(obj, torch.Tensor):
        return ("T", tuple(obj.shape), tuple(obj.stride()), str(obj.dtype), str(obj.device), obj.requires_grad)
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(_describe(o) for o in obj))
    if isinstance(obj, dict):
        return ("dict", tuple((k, _describe(v)) for k, v in obj.items()))
    hash(obj)  # TypeError for unhashable leaves
    return ("V", type(obj).__name__, obj)


def signature(args: tuple, kwargs: dict) -> tuple:
    """The key a compiled region is ready for: the arguments' description and the autograd modes."""
    return (torch.is_grad_enabled(), torch.is_inference_mode_enabled(), _describe((args, kwargs)))


def _copy(obj: Any) -> Any:
    """The call's arguments with every tensor copied (same strides), so the compile's trial call reads stable data."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copy(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    return obj


# ----- the background compiler ----------------------------------------------------------------------------------------
@dataclass
class _Job:
    region: DeferredCompile
    key: tuple
    args: tuple
    kwargs: dict
    queued_at: float = field(default_factory=time.perf_counter)


class _Strong:
    """A strong reference with a weak reference's call: ``ref()`` is the object."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __call__(self) -> Any:
        return self.obj


class BackgroundCompiler:
    """One thread that compiles queued regions in order; listeners hear ``compile`` events.

    Counts are for the process: ``queued`` (ever), ``done`` (compiled), ``failed`` (left eager).
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0
        self.queued = 0
        self.done = 0
        self.failed = 0
        self.seconds = 0.0
        self._listeners: list[Callable[[], Any]] = []

    # listeners
    def add_listener(self, sink: Callable[[dict[str, Any]], None]) -> None:
        """Send ``compile`` events to ``sink`` (a bound method is held weakly: a loader that is gone is dropped)."""
        ref: Callable[[], Any]
        try:
            ref = weakref.WeakMethod(sink)
        except TypeError:  # a function, or a builtin's bound method (list.append): held strongly
            ref = _Strong(sink)
        with self._lock:
            self._listeners = [r for r in self._listeners if r() is not None and r() != sink] + [ref]

    def emit(self, event: dict[str, Any]) -> None:
        """Send ``event`` to every listener (a failing listener is logged, not raised)."""
        with self._lock:
            sinks = [r() for r in self._listeners]
        for sink in sinks:
            if sink is None:
                continue
            try:
                sink(event)
            except Exception:  # noqa: BLE001 - a display's bug must not stop the compiles
                logger.exception("compile event listener failed")

    # queue
    def submit(self, job: _Job) -> None:
        with self._lock:
            self.queued += 1
            self._active += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="openmora-compile", daemon=True)
                self._thread.start()
        self._queue.put(job)
        self.started(job.region, job.key, background=True, pending=self.pending())

    def started(self, region: DeferredCompile, key: tuple, background: bool, pending: int) -> None:
        """Tell the listeners a region's compile started (queued here, or in the caller's thread)."""
        self.emit(
            {
                "type": "compile",
                "phase": "queued",
                "name": region.name,
                "background": background,
                "pending": pending,
                "estimate_s": compile_times().get(_times_key(region, key)),
            }
        )

    def finished(self, region: DeferredCompile, key: tuple, ok: bool, seconds: float, pending: int) -> None:
        """Record a finished compile's time (for the next estimate and the foreground rule) and tell the listeners;
        before the compile counts as finished, so that a waiter reads the time on record."""
        if ok:
            _record_time(_times_key(region, key), seconds)
        logger.info("compiled %s in %.1fs (%d still queued)", region.name, seconds, pending)
        self.emit(
            {
                "type": "compile",
                "phase": "end",
                "name": region.name,
                "seconds": round(seconds, 2),
                "ok": ok,
                "pending": pending,
            }
        )

    def count(self, ok: bool, seconds: float) -> None:
        """Count a compile made outside the queue (in the caller's thread)."""
        with self._lock:
            self.queued += 1
            self.done += ok
            self.failed += not ok
            self.seconds += seconds

    def pending(self) -> int:
        """Compiles queued or running."""
        with self._lock:
            return self._active

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued compile has finished (True) or ``timeout`` seconds passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._active:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def estimate_s(self) -> float | None:
        """Seconds the queued compiles took last time on this machine (None if any of them was never timed here)."""
        with self._lock:
            jobs = list(self._queue.queue)
        known = compile_times()
        times = [known.get(_times_key(j.region, j.key)) for j in jobs]
        return None if any(t is None for t in times) else float(sum(times))  # type: ignore[arg-type]

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            start = time.perf_counter()
            ok = job.region.compile_now(job)
            seconds = time.perf_counter() - start
            self.finished(job.region, job.key, ok, seconds, pending=self.pending() - 1)
            with self._lock:
                self._active -= 1
                self.done += ok
                self.failed += not ok
                self.seconds += seconds
                self._idle.notify_all()


_COMPILER: BackgroundCompiler | None = None
_COMPILER_LOCK = threading.Lock()


def compiler() -> BackgroundCompiler:
    """The process's background compiler (made on first use)."""
    global _COMPILER
    with _COMPILER_LOCK:
        if _COMPILER is None:
            _COMPILER = BackgroundCompiler()
        return _COMPILER


# ----- compile times kept in the cache --------------------------------------------------------------------------------
def _times_key(region: DeferredCompile, key: tuple) -> str:
    import hashlib

    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    backend = getattr(BACKEND, "__name__", str(BACKEND))
    return f"torch {torch.__version__} | {backend} | {region.name} | {digest}"


_TIMES_LOCK = threading.Lock()


def compile_times() -> dict[str, float]:
    """Seconds each region's compile took when it last ran on this machine (``compile_times.json``)."""
    path = cache_root() / TIMES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)} if isinstance(data, dict) else {}


def _record_time(key: str, seconds: float) -> None:
    with _TIMES_LOCK:
        times = compile_times()
        times[key] = round(seconds, 2)
        with contextlib.suppress(OSError):  # a read-only cache only loses the estimate
            cache_root().mkdir(parents=True, exist_ok=True)
            atomic_write_json(cache_root() / TIMES_FILE, times)


def _capturing() -> bool:
    """A CUDA graph is being captured on this thread's stream (a capture records the eager call; queue nothing)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


# ----- a region compiled in the background ------------------------------------------------------------------------------
class DeferredCompile:
    """Replaces a module's ``forward``: eager until the compiled code for the call's signature is ready.

    ``mode``: ``background`` (the default, see the module), ``blocking`` (torch.compile's own behaviour: compile at
    the first call) or ``off`` (always eager). A signature whose compile failed stays eager, with the reason logged.
    """

    def __init__(self, fn: Callable[..., Any], name: str, mode: str, fullgraph: bool = False) -> None:
        self.eager = fn
        self.name = name
        self.mode = mode
        self.compiled = torch.compile(fn, backend=BACKEND, dynamic=False, fullgraph=fullgraph)
        self.ready: set[tuple] = set()
        self.queued: set[tuple] = set()
        self.failed: set[tuple] = set()
        self.calls_compiled = 0
        self.calls_eager = 0

    @property
    def pending(self) -> bool:
        """A compile of this region is queued or running, or it was never called (so its compile is to come)."""
        return self.mode == "background" and (bool(self.queued - self.ready - self.failed) or not self.queued)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "off":
            return self.eager(*args, **kwargs)
        try:
            key = signature(args, kwargs)
        except TypeError:  # an unhashable argument: dynamo would guard on it in ways we cannot key
            if self.mode == "blocking":
                return self.compiled(*args, **kwargs)
            self.calls_eager += 1
            return self.eager(*args, **kwargs)
        if self.mode == "blocking":
            if key in self.ready:
                self.calls_compiled += 1
                return self.compiled(*args, **kwargs)
            self.queued.add(key)
            return self._compile_here(key, args, kwargs)
        if key in self.ready:
            self.calls_compiled += 1
            return self.compiled(*args, **kwargs)
        if key not in self.queued and not _capturing():
            lead = _leader(self, key)
            if lead is not self and key in lead.ready:
                # The same forward compiled for another instance (Wan's 40 identical blocks): dynamo's cache serves it.
                self.queued.add(key)
                self.ready.add(key)
                self.calls_compiled += 1
                return self.compiled(*args, **kwargs)
            if lead is not self and key not in lead.failed:
                self.calls_eager += 1  # its compile is under way: no second job, no second copy of the arguments
                return self.eager(*args, **kwargs)
            self.queued.add(key)
            if _times_key(self, key) in compile_times() and current().compile_cached == "foreground":
                return self._compile_here(key, args, kwargs)
            compiler().submit(_Job(self, key, _copy(args), _copy(kwargs)))
        self.calls_eager += 1
        return self.eager(*args, **kwargs)

    def _compile_here(self, key: tuple, args: tuple, kwargs: dict) -> Any:
        """Compile this call in the caller's thread (``blocking`` mode, or a signature compiled on this machine
        before, whose code the compile cache holds: seconds; in the background such compiles competed with the eager
        render for the CPU: on the H200 they took 47.6 s in all and the eager render ran 2x slower)."""
        bg = compiler()
        bg.started(self, key, background=False, pending=bg.pending() + 1)
        start = time.perf_counter()
        try:
            out = self.compiled(*args, **kwargs)
            ok = True
        except Exception as err:  # noqa: BLE001 - a region that cannot compile keeps running eagerly
            logger.warning("%s stays eager for this input: compiling it failed: %s", self.name, err)
            self.failed.add(key)
            ok = False
        seconds = time.perf_counter() - start
        bg.finished(self, key, ok, seconds, pending=bg.pending())
        bg.count(ok, seconds)
        if ok:
            self.ready.add(key)
            self.calls_compiled += 1
        return out if ok else self.eager(*args, **kwargs)

    def compile_now(self, job: _Job) -> bool:
        """Compile (and run once) the queued call on this thread; True once the region can use it."""
        grad, inference = job.key[0], job.key[1]
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad and not inference):
                self.compiled(*job.args, **job.kwargs)
        except Exception as err:  # noqa: BLE001 - a region that cannot compile keeps running eagerly
            logger.warning("%s stays eager for this input: compiling it failed: %s", self.name, err)
            self.failed.add(job.key)
            return False
        finally:
            job.args, job.kwargs = (), {}
        self.ready.add(job.key)
        return True


_LEADERS: weakref.WeakValueDictionary[tuple, DeferredCompile] = weakref.WeakValueDictionary()
_LEADERS_LOCK = threading.Lock()


def _leader(region: DeferredCompile, key: tuple) -> DeferredCompile:
    """The first region seen with this forward's code and this signature: its compile serves the others."""
    fn = getattr(region.eager, "__func__", region.eager)
    code = getattr(fn, "__code__", None)
    if code is None:
        return region
    with _LEADERS_LOCK:
        return _LEADERS.setdefault((code, key), region)


def deferred(module: torch.nn.Module, name: str, mode: str | None = None, fullgraph: bool = False) -> DeferredCompile:
    """Route ``module.forward`` through a :class:`DeferredCompile` (idempotent); ``mode`` default: the settings'
    ``OPENMORA_COMPILE``."""
    if isinstance(module.forward, DeferredCompile):
        return module.forward
    persistent_compile_cache()
    region = DeferredCompile(module.forward, name, mode or current().compile_mode, fullgraph=fullgraph)
    module.forward = region
    regions = module.__dict__.setdefault("_openmora_regions", [])
    regions.append(region)
    return region


def regions_of(module: torch.nn.Module) -> list[DeferredCompile]:
    """Every deferred region inside ``module`` (itself included)."""
    return [r for m in module.modules() for r in m.__dict__.get("_openmora_regions", [])]


def compile_pending(module: torch.nn.Module) -> bool:
    """Whether a region inside ``module`` is still to switch to compiled code (CUDA graphs wait for that)."""
    return any(r.pending for r in regions_of(module))


def compile_regions(module: torch.nn.Module, mode: str | None = None) -> int:
    """Regional compile: each distinct block compiled once; repeated transformer blocks share one compiled graph.
    Returns the number of regions."""
    repeated = getattr(module, "_repeated_blocks", None)
    prefix = type(module).__name__
    if repeated and prefix.startswith("Wan"):
        # The blocks' forward, not the module call: offload hooks added later (group offload in mora-lowvram) wrap
        # the compiled forward and move weights outside the graph. One graph serves the 40 identical blocks.
        n = 0
        for sub_name, sub in module.named_modules():
            if type(sub).__name__ in repeated:
                deferred(sub, f"{prefix}.{sub_name}", mode, fullgraph=True)
                n += 1
        return n
    blocks = [
        *(f"down_blocks.{i}" for i in range(len(getattr(module, "down_blocks", [])))),
        "mid_block",
        *(f"up_blocks.{i}" for i in range(len(getattr(module, "up_blocks", [])))),
    ]
    found = [(b, module.get_submodule(b)) for b in blocks if getattr(module, b.split(".")[0], None) is not None]
    if not found:
        deferred(module, prefix, mode)
        return 1
    for block_name, block in found:
        deferred(block, f"{prefix}.{block_name}", mode)
    return len(found)


def wait_for_regions(module: torch.nn.Module) -> None:
    """Block until no compile of a region inside ``module`` is queued or running (before its weights move: a
    background trial call must not see them half-moved)."""
    if any(r.queued - r.ready - r.failed for r in regions_of(module)):
        compiler().wait()


def compile_in_foreground(module: torch.nn.Module) -> int:
    """Regions inside ``module`` in ``background`` mode compile at first use instead; returns how many changed.

    For offloaded pipelines: their weights move during every call (offload hooks), which a background trial call
    would race with."""
    changed = 0
    for region in regions_of(module):
        if region.mode == "background":
            region.mode = "blocking"
            changed += 1
    return changed
