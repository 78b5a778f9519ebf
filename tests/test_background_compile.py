"""The background compiler: regions run eagerly until their compiled code is ready, then switch; the output does not
change; offloaded pipelines and evictions never race with a trial call; the CLI says what compiles and finishes the
queued compiles after the video. A cheap dynamo backend stands in for inductor (the code paths are the same)."""

from __future__ import annotations

import json
import threading
import time
import weakref

import numpy as np
import pytest
import torch

from openmora import tiny_models
from openmora.speedups import apply_speedups
from openmora.speedups import compile as bc

torch.set_num_threads(1)
pytestmark = pytest.mark.unit


class SlowBackend:
    """A dynamo backend that takes ``delay`` seconds to "compile" each graph and counts the graphs it was given."""

    __name__ = "slow_eager"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.graphs = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.started.set()
        self.release.wait(10)
        time.sleep(self.delay)
        self.graphs += 1
        return gm.forward


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch, tmp_path) -> SlowBackend:
    monkeypatch.setenv("OPENMORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    fake = SlowBackend()
    monkeypatch.setattr(bc, "BACKEND", fake)
    monkeypatch.setattr(bc, "_COMPILER", None)  # a fresh background compiler per test
    monkeypatch.setattr(bc, "_LEADERS", weakref.WeakValueDictionary())  # and no region of another test to follow
    torch._dynamo.reset()
    return fake


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8)).eval()


def test_a_region_runs_eagerly_until_its_compile_is_ready_then_switches(backend: SlowBackend) -> None:
    mlp = _mlp()
    x = torch.randn(2, 8)
    with torch.no_grad():
        expected = mlp(x)
        backend.release.clear()  # hold the compile: the calls meanwhile must not wait for it
        region = bc.deferred(mlp, "demo.mlp", mode="background")
        assert bc.compile_pending(mlp)  # never called: its compile is still to come
        first = region(x)
        assert backend.started.wait(10)
        second = region(x)
        assert (region.calls_eager, region.calls_compiled) == (2, 0)
        assert bc.compiler().pending() == 1 and bc.compile_pending(mlp)
        backend.release.set()
        assert bc.compiler().wait(10)
        third = region(x)
    assert (region.calls_eager, region.calls_compiled) == (2, 1)
    assert not bc.compile_pending(mlp)
    assert backend.graphs == 1  # one compile for the one signature, none in the foreground
    for out in (first, second, third):
        torch.testing.assert_close(out, expected)
    assert bc.compiler().done == 1 and bc.compiler().failed == 0


def test_a_new_input_shape_queues_its_own_compile(backend: SlowBackend) -> None:
    mlp = _mlp()
    region = bc.deferred(mlp, "demo.mlp", mode="background")
    with torch.no_grad():
        region(torch.randn(2, 8))
        bc.compiler().wait(10)
        region(torch.randn(3, 8))  # another batch size: eager, and queued
        assert region.calls_eager == 2
        bc.compiler().wait(10)
        region(torch.randn(3, 8))
    assert region.calls_compiled == 1 and len(region.ready) == 2


def test_a_region_whose_compile_fails_stays_eager(backend: SlowBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(bc, "BACKEND", broken)
    mlp = _mlp()
    region = bc.deferred(mlp, "demo.mlp", mode="background")
    x = torch.randn(2, 8)
    with torch.no_grad():
        region(x)
        bc.compiler().wait(10)
        out = region(x)
        torch.testing.assert_close(out, mlp[2](mlp[1](mlp[0](x))))
    assert region.failed and not region.ready and region.calls_compiled == 0
    assert bc.compiler().failed == 1 and not bc.compile_pending(mlp)


def test_blocking_and_off_modes(backend: SlowBackend) -> None:
    on, off = _mlp(), _mlp()
    blocking = bc.deferred(on, "demo.on", mode="blocking")
    never = bc.deferred(off, "demo.off", mode="off")
    with torch.no_grad():
        blocking(torch.randn(2, 8))
        never(torch.randn(2, 8))
    assert backend.graphs == 1 and bc.compiler().pending() == 0
    assert blocking.calls_compiled == 1 and len(bc.compile_times()) == 1  # timed, for the next estimate


def test_the_svd_pipeline_renders_the_same_frames_while_its_regions_compile(backend: SlowBackend) -> None:
    from PIL import Image

    def render(pipe: object) -> np.ndarray:
        image = Image.new("RGB", (64, 64), (120, 90, 60))
        gen = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            return pipe(  # type: ignore[operator]
                image=image,
                height=64,
                width=64,
                num_frames=4,
                num_inference_steps=3,
                decode_chunk_size=2,
                generator=gen,
                output_type="np",
            ).frames[0]

    reference = render(tiny_models.build_image_to_video())
    pipe = tiny_models.build_image_to_video()
    apply_speedups(pipe, ["compile", "vae_compile"])
    regions = bc.regions_of(pipe.unet) + bc.regions_of(pipe.vae)
    unet_blocks = len(pipe.unet.down_blocks) + 1 + len(pipe.unet.up_blocks)
    assert len(regions) == unet_blocks + 1 and all(r.mode == "background" for r in regions)
    first = render(pipe)  # eager throughout or switching midway: the same math
    assert bc.compiler().wait(120)
    second = render(pipe)
    np.testing.assert_allclose(first, reference, atol=1e-6)
    np.testing.assert_allclose(second, reference, atol=1e-6)
    assert all(r.ready and not r.failed for r in regions)
    assert sum(r.calls_compiled for r in regions) > 0
    times = json.loads((bc.cache_root() / bc.TIMES_FILE).read_text())
    assert len(times) >= len(regions) and all(v >= 0 for v in times.values())


def test_offloaded_pipelines_compile_in_the_foreground(backend: SlowBackend) -> None:
    from openmora.loader import compile_in_foreground_all

    pipe = tiny_models.build_image_to_video()
    apply_speedups(pipe, ["compile"])
    compile_in_foreground_all(pipe)
    assert {r.mode for r in bc.regions_of(pipe.unet)} == {"blocking"}


def test_evicting_a_unit_waits_for_its_running_compile(backend: SlowBackend) -> None:
    from openmora.memory import GB, MemoryManager

    mlp = _mlp()
    region = bc.deferred(mlp, "demo.mlp", mode="background")
    manager = MemoryManager(budget_bytes=1 * GB, device="cpu")

    class Pipe:
        components = {"mlp": mlp}

        def to(self, *args: object, **kwargs: object) -> Pipe:
            return self

    manager.add("unit", Pipe(), reserve_bytes=0)
    manager.activate("unit")
    backend.release.clear()
    with torch.no_grad():
        region(torch.randn(2, 8))
    assert backend.started.wait(10)
    threading.Timer(0.3, backend.release.set).start()
    manager.evict("unit")  # must not move the weights while the trial call runs
    assert bc.compiler().pending() == 0 and region.ready


def test_the_cli_shows_the_background_compiles_and_their_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    from openmora.cli import _CliProgress

    with _CliProgress() as cli:
        cli(
            {
                "type": "compile",
                "phase": "queued",
                "name": "Unet.down_blocks.0",
                "background": True,
                "pending": 1,
                "estimate_s": 20.0,
            }
        )
        cli(
            {
                "type": "compile",
                "phase": "queued",
                "name": "Unet.up_blocks.0",
                "background": True,
                "pending": 2,
                "estimate_s": 10.0,
            }
        )
        assert cli.compile_estimate == 30.0
        cli(
            {"type": "compile", "phase": "end", "name": "Unet.down_blocks.0", "seconds": 19.0, "ok": True, "pending": 1}
        )
        cli({"type": "compile", "phase": "end", "name": "Unet.up_blocks.0", "seconds": 9.0, "ok": False, "pending": 0})
        for k in range(2):  # a later process: from the cache, said once
            cli(
                {
                    "type": "compile",
                    "phase": "queued",
                    "name": f"U.b{k}",
                    "background": False,
                    "pending": 1,
                    "estimate_s": 3.0,
                }
            )
            cli({"type": "compile", "phase": "end", "name": f"U.b{k}", "seconds": 3.0, "ok": True, "pending": 0})
    err = capsys.readouterr().err
    assert err.count("from the compile cache") == 1
    assert "compiling the models' hot blocks in the background" in err
    assert "Unet.up_blocks.0 stays eager" in err
    assert not cli.tasks  # the bar ended with the last compile


def test_a_signature_compiled_here_before_compiles_in_the_foreground(backend: SlowBackend) -> None:
    mlp = _mlp()
    x = torch.randn(2, 8)
    first = bc.deferred(mlp, "demo.mlp", mode="background")
    with torch.no_grad():
        first(x)
        assert bc.compiler().wait(10)
    events: list[dict] = []
    bc.compiler().add_listener(events.append)
    torch._dynamo.reset()  # a later process: the region's compiled code is gone, its time is on record
    bc._LEADERS.clear()
    again = _mlp()
    region = bc.deferred(again, "demo.mlp", mode="background")
    with torch.no_grad():
        out = region(x)
    assert (region.calls_compiled, region.calls_eager) == (1, 0) and region.ready
    assert bc.compiler().pending() == 0 and backend.graphs == 2
    torch.testing.assert_close(out, region.eager(x))
    assert [(e["phase"], e.get("background")) for e in events] == [("queued", False), ("end", None)]
    assert events[0]["estimate_s"] is not None


def test_the_foreground_rule_can_be_turned_off_for_an_a_b(
    backend: SlowBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlp = _mlp()
    x = torch.randn(2, 8)
    with torch.no_grad():
        bc.deferred(mlp, "demo.mlp", mode="background")(x)
        assert bc.compiler().wait(10)
    torch._dynamo.reset()
    bc._LEADERS.clear()
    monkeypatch.setenv("OPENMORA_COMPILE_CACHED", "background")
    region = bc.deferred(_mlp(), "demo.mlp", mode="background")
    with torch.no_grad():
        region(x)  # compiled before, but queued like a new signature: this call runs eagerly
    assert (region.calls_compiled, region.calls_eager) == (0, 1)
    assert bc.compiler().wait(10) and region.ready


def test_identical_blocks_share_one_background_compile(backend: SlowBackend) -> None:
    blocks = [_mlp(), _mlp(), _mlp()]
    regions = [bc.deferred(b, f"demo.blocks.{i}", mode="background") for i, b in enumerate(blocks)]
    x = torch.randn(2, 8)
    with torch.no_grad():
        backend.release.clear()
        for region in regions:  # one pass: the first queues, the others wait for it without a copy of their input
            region(x)
        assert bc.compiler().queued == 1 and all(bc.compile_pending(b) for b in blocks)
        backend.release.set()
        assert bc.compiler().wait(10)
        outs = [region(x) for region in regions]
    assert all(r.calls_compiled == 1 for r in regions) and not any(bc.compile_pending(b) for b in blocks)
    for block, out in zip(blocks, outs, strict=True):
        torch.testing.assert_close(out, block[2](block[1](block[0](x))))
