"""Carry the compile cache to another machine of the same kind: ``openmora cache export FILE`` / ``import FILE``.

What is carried: inductor's on-disk cache (compiled graphs, autotuning results, Triton kernels: the folder the
``compile`` speedups keep in the OpenMora cache) and ``compile_times.json`` (which regions were compiled, and how
long each took). A fresh machine with an imported cache takes the path of a machine that compiled before: regions
compile in the foreground from the cache (seconds) instead of minutes in the background.

The code in it is only valid for the same torch and Triton versions, Python version and device model, so the
archive's manifest records them and ``import`` refuses an archive made elsewhere (inductor would ignore the entries
anyway, after a long compile). Importing never writes outside the cache: members with absolute paths, ``..``,
links or devices are refused before anything is written, and files land through a temporary folder.

Example:
    >>> from openmora.speedups.compile_cache import machine_kind
    >>> sorted(machine_kind())
    ['device', 'python', 'torch', 'triton']
"""

from __future__ import annotations

import io
import json
import platform
import shutil
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from openmora.errors import InputError, first_line
from openmora.fileio import atomic_write_json
from openmora.settings import cache_root

MANIFEST = "openmora-compile-cache.json"
FORMAT = 1
TIMES_FILE = "compile_times.json"


def machine_kind() -> dict[str, str]:
    """What the cached code depends on: torch, Triton, Python, and the device model (the GPU's name, else cpu)."""
    import torch

    try:
        import triton  # type: ignore[import-not-found, unused-ignore]

        triton_version = str(triton.__version__)
    except ImportError:
        triton_version = "none"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "device": device,
    }


def _inductor_dir() -> Path:
    from openmora.speedups.compile import compile_cache_dir

    return compile_cache_dir()


def cache_summary() -> dict[str, Any]:
    """The compile cache here: its folder, files, bytes, regions on record, and this machine's kind."""
    folder = _inductor_dir()
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    times_path = cache_root() / TIMES_FILE
    try:
        regions = len(json.loads(times_path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        regions = 0
    return {
        "folder": str(folder),
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "regions": regions,
        "machine": machine_kind(),
    }


def export_cache(path: str | Path) -> dict[str, Any]:
    """Write the compile cache to ``path`` (a .tar.gz, written atomically); returns the manifest."""
    out = Path(path)
    if out.exists() and out.is_dir():
        raise InputError(f"{out} is a folder: give a file name such as compile-cache.tar.gz")
    folder = _inductor_dir()
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    if not files:
        raise InputError(f"the compile cache is empty ({folder}): run a compiled profile first (e.g. --profile mora)")
    manifest = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_kind(),
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            for p in files:
                tar.add(p, arcname=str(PurePosixPath("inductor", *p.relative_to(folder).parts)), recursive=False)
            times = cache_root() / TIMES_FILE
            if times.is_file():
                tar.add(times, arcname=TIMES_FILE, recursive=False)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return manifest


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        parts = PurePosixPath(m.name).parts
        if m.name.startswith("/") or ".." in parts or not parts:
            raise InputError(f"refused: the archive member {m.name!r} points outside the cache")
        if not (m.isfile() or m.isdir()):
            raise InputError(f"refused: the archive member {m.name!r} is a link or device, not a file")
        if parts[0] not in ("inductor", MANIFEST, TIMES_FILE):
            raise InputError(f"refused: {m.name!r} is not part of a compile cache (expected inductor/...)")
    return members


def import_cache(path: str | Path, force: bool = False) -> dict[str, Any]:
    """Merge the compile cache in ``path`` into this machine's; returns the archive's manifest.

    Refuses (``InputError``, nothing written) an archive that is not one, has unsafe members, or was made for other
    versions or another device model (``force``: import anyway)."""
    src = Path(path)
    if not src.is_file():
        raise InputError(f"no such compile cache archive: {src}")
    try:
        tar = tarfile.open(src, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise InputError(
            f"{src} is not a compile cache archive (a .tar.gz from `openmora cache export`): {first_line(err)}"
        ) from None
    with tar:
        members = _safe_members(tar)
        try:
            manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
        except (KeyError, AttributeError, ValueError):
            raise InputError(f"{src} has no {MANIFEST}: not made by `openmora cache export`") from None
        if manifest.get("format") != FORMAT:
            raise InputError(f"{src}: compile cache format {manifest.get('format')!r}; this OpenMora reads {FORMAT}")
        here, there = machine_kind(), manifest.get("machine") or {}
        differ = [f"{k} {there.get(k)!r} (here {here[k]!r})" for k in here if there.get(k) != here[k]]
        if differ and not force:
            raise InputError(
                f"{src} was made for another kind of machine: {', '.join(differ)}; its compiled code would not be "
                "used here (--force imports it anyway)"
            )
        folder = _inductor_dir()
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".import-") as tmp:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12 / 3.11.4
            for m in members:
                if m.name != MANIFEST:
                    tar.extract(m, tmp, **safe)  # type: ignore[arg-type]
            staged = Path(tmp) / "inductor"
            if staged.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copytree(staged, folder, dirs_exist_ok=True)
            times = Path(tmp) / TIMES_FILE
            if times.is_file():
                _merge_times(json.loads(times.read_text(encoding="utf-8")), root / TIMES_FILE)
    return manifest


def _merge_times(incoming: Any, target: Path) -> None:
    try:
        current = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = {}
    if isinstance(incoming, dict):
        current.update({str(k): float(v) for k, v in incoming.items() if isinstance(v, int | float)})
    atomic_write_json(target, current)
