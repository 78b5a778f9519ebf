"""Atomic file writes: readers see the old file or the new one, never a half-written one, and a failed write leaves
neither a partial file nor a temp file behind.

Each write goes to a temp file in the target's folder (the same file system, so the rename is atomic), is flushed
to disk (``fsync``: a crash right after the rename cannot leave an empty file under the new name), and replaces the
target with ``os.replace``. Temp names are hidden and hold ``.tmp`` (``.manifest.1a2b3c4d.tmp.json``). Files get the
usual permissions (the umask's), unlike ``tempfile.mkstemp``'s owner-only ones. A writer that needs a file name
rather than a file object (ffmpeg) writes to :func:`temp_path` and ends with :func:`commit`.

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.json"
    >>> _ = atomic_write_json(path, {"step": 1})
    >>> json.loads(path.read_text())
    {'step': 1}
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "atomic_writer", "commit", "temp_path"]


def temp_path(path: str | Path) -> Path:
    """A fresh hidden name beside ``path`` to write its new content to; it keeps the suffix, so a writer that picks
    the format by name (ffmpeg) writes the right one."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def commit(tmp: str | Path, path: str | Path) -> None:
    """Flush the finished temp file ``tmp`` to disk and move it to ``path`` in one step."""
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file to write ``path``'s new content to; it replaces ``path`` when the block ends without an
    exception. On an exception the temp file is removed, ``path`` is untouched and the exception propagates.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
        >>> with atomic_writer(path) as f:
        ...     _ = f.write(b"abc")
        >>> path.read_bytes()
        b'abc'
    """
    tmp = temp_path(path)
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8 unless told); returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = None) -> Path:
    """Write ``data`` as JSON to ``path`` atomically; values JSON cannot hold are written as their ``str``."""
    return atomic_write_text(path, json.dumps(data, indent=indent, default=str))
