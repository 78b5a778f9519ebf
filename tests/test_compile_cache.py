"""``openmora cache export/import``: the compile cache travels as one archive; an archive from another kind of machine
or with unsafe members is refused with nothing written; a fresh process that imported it compiles from the cache."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from openmora.cli import main
from openmora.errors import InputError
from openmora.speedups import compile_cache as cc

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("OPENMORA_CACHE", str(root))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    return root


def _fill(root: Path) -> None:
    (root / "inductor" / "fxgraph" / "ab").mkdir(parents=True)
    (root / "inductor" / "fxgraph" / "ab" / "entry").write_bytes(b"compiled")
    (root / "inductor" / "triton" / "0").mkdir(parents=True)
    (root / "inductor" / "triton" / "0" / "kernel.cubin").write_bytes(b"\x00\x01")
    (root / "compile_times.json").write_text(json.dumps({"torch x | inductor | Unet.down_blocks.0 | 1": 12.5}))


@pytest.mark.unit
def test_export_then_import_on_another_cache_carries_files_and_times(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(cache)
    archive = tmp_path / "out" / "compile-cache.tar.gz"
    assert main(["cache", "export", str(archive)]) == 0
    assert "wrote" in (out := capsys.readouterr().out) and "2 files" in out  # the inductor files; times beside them
    other = tmp_path / "other"
    monkeypatch.setenv("OPENMORA_CACHE", str(other))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    (other).mkdir()
    (other / "compile_times.json").write_text(json.dumps({"kept": 1.0}))
    assert main(["cache", "import", str(archive)]) == 0
    assert (other / "inductor" / "fxgraph" / "ab" / "entry").read_bytes() == b"compiled"
    assert (other / "inductor" / "triton" / "0" / "kernel.cubin").read_bytes() == b"\x00\x01"
    times = json.loads((other / "compile_times.json").read_text())
    assert times == {"kept": 1.0, "torch x | inductor | Unet.down_blocks.0 | 1": 12.5}
    assert main(["cache", "info"]) == 0
    assert "2 files" in capsys.readouterr().out
    assert not list(archive.parent.glob("*.partial"))


@pytest.mark.unit
def test_an_archive_from_another_kind_of_machine_is_refused_unless_forced(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(cache)
    archive = tmp_path / "a.tar.gz"
    cc.export_cache(archive)
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    manifest = json.loads(members[cc.MANIFEST])
    manifest["machine"]["device"] = "NVIDIA H200"
    members[cc.MANIFEST] = json.dumps(manifest).encode()
    forged = tmp_path / "forged.tar.gz"
    with tarfile.open(forged, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    target = tmp_path / "fresh"
    monkeypatch.setenv("OPENMORA_CACHE", str(target))
    with pytest.raises(InputError, match=r"another kind of machine: device 'NVIDIA H200' \(here 'cpu'\)"):
        cc.import_cache(forged)
    assert not (target / "inductor").exists()
    cc.import_cache(forged, force=True)
    assert (target / "inductor" / "fxgraph" / "ab" / "entry").is_file()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("../escape", tarfile.REGTYPE, "points outside the cache"),
        ("/etc/passwd", tarfile.REGTYPE, "points outside the cache"),
        ("inductor/link", tarfile.SYMTYPE, "is a link or device"),
        ("notes.txt", tarfile.REGTYPE, "is not part of a compile cache"),
    ],
)
def test_unsafe_archives_are_refused_before_anything_is_written(
    cache: Path, tmp_path: Path, name: str, kind: bytes, message: str
) -> None:
    bad = tmp_path / "bad.tar.gz"
    manifest = json.dumps({"format": cc.FORMAT, "machine": cc.machine_kind(), "files": 1, "bytes": 1}).encode()
    with tarfile.open(bad, "w:gz") as tar:
        for member, data, typ in ((cc.MANIFEST, manifest, tarfile.REGTYPE), ("inductor/ok", b"x", tarfile.REGTYPE)):
            info = tarfile.TarInfo(member)
            info.size, info.type = len(data), typ
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(InputError, match=message):
        cc.import_cache(bad)
    assert not (cache / "inductor").exists() and not (tmp_path / "escape").exists()


@pytest.mark.unit
def test_bad_input_is_one_line(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "export", str(tmp_path / "x.tar.gz")]) == 2
    assert "the compile cache is empty" in capsys.readouterr().err
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    assert main(["cache", "import", str(tmp_path / "junk.tar.gz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a compile cache archive" in err
    assert main(["cache", "import"]) == 2


SCRIPT = """
import json, sys, torch
from torch._dynamo.utils import counters
from openmora.speedups.compile import deferred
torch.set_num_threads(1)
lin = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU()).eval()
region = deferred(lin, "demo.mlp", mode="blocking")
with torch.no_grad():
    region(torch.randn(2, 8))
print(json.dumps(dict(counters["inductor"])))
"""


@pytest.mark.slow
def test_a_fresh_machine_that_imported_the_cache_compiles_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(cache_dir: Path) -> dict:
        env = dict(os.environ, OPENMORA_CACHE=str(cache_dir), PYTHONPATH=str(ROOT))
        env.pop("TORCHINDUCTOR_CACHE_DIR", None)
        out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run(tmp_path / "a")
    assert first.get("fxgraph_cache_miss", 0) >= 1
    monkeypatch.setenv("OPENMORA_CACHE", str(tmp_path / "a"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    cc.export_cache(tmp_path / "c.tar.gz")
    monkeypatch.setenv("OPENMORA_CACHE", str(tmp_path / "b"))
    cc.import_cache(tmp_path / "c.tar.gz")
    second = run(tmp_path / "b")
    assert second.get("fxgraph_cache_hit", 0) >= 1 and second.get("fxgraph_cache_miss", 0) == 0


@pytest.mark.unit
def test_inductors_own_tmp_default_does_not_count_as_the_users_choice(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir

    from openmora.speedups.compile import compile_cache_dir, persistent_compile_cache

    cache_dir()  # what importing diffusers can do: inductor writes its /tmp default into the variable
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == os.path.abspath(default_cache_dir())
    assert persistent_compile_cache() == str(cache / "inductor") == str(compile_cache_dir())
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert persistent_compile_cache() == str(tmp_path / "mine") == str(compile_cache_dir())
