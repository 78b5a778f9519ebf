"""Every test: CPU, offline, one torch thread, tiny pipelines built once per session, exactly one cost tier."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
# One thread: two threads on two busy cores were 10-50x slower. Offline: nothing may download.
os.environ["OPENMORA_TORCH_THREADS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402  (after the environment above: torch reads it at import)

torch.set_num_threads(1)

# The cost tiers (pyproject.toml [tool.pytest.ini_options] markers): each test carries exactly one of them, so
# `-m unit` and `-m "not slow"` select what they say. llm and gpu say what a test needs, on top of its tier.
COST_TIERS = ("unit", "integration", "slow")


def pytest_runtest_setup(item: pytest.Item) -> None:
    tiers = [t for t in COST_TIERS if item.get_closest_marker(t) is not None]
    if len(tiers) != 1:
        found = f"marked {', '.join(tiers)}" if tiers else "marked with no tier"
        pytest.fail(
            f"{item.nodeid} is {found}; mark it with exactly one of unit, integration, slow (pyproject.toml)",
            pytrace=False,
        )


@pytest.fixture(scope="session", autouse=True)
def _tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny models go to a cache of this test session unless OPENMORA_TEST_CACHE names a shared one."""
    shared = os.environ.get("OPENMORA_TEST_CACHE")
    cache = Path(shared) if shared else tmp_path_factory.mktemp("openmora-cache")
    # The embedded LLM (1.1 GB once assembled) stays in the user's cache: rebuilding it per session costs time and disk.
    if "OPENMORA_LLM_CACHE" not in os.environ:
        user = os.environ.get("OPENMORA_CACHE")
        os.environ["OPENMORA_LLM_CACHE"] = str(
            (Path(user).expanduser() if user else Path.home() / ".cache" / "openmora") / "llm"
        )
    os.environ["OPENMORA_CACHE"] = str(cache)
    return cache


def make_video(
    path: Path, frames: int = 10, width: int = 160, height: int = 120, fps: float = 30.0, seed: int = 0
) -> Path:
    """Write a small synthetic MP4 whose frames differ (a moving gradient plus noise)."""
    from openmora.video_io import write_video

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    clip = np.stack([np.roll(base, 4 * i, axis=1) for i in range(frames)])
    return write_video(clip, fps, path)


def make_image(path: Path, width: int = 200, height: int = 150, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Input files every test may read (never write)."""
    d = tmp_path_factory.mktemp("media")
    files = {
        "image": make_image(d / "photo.png"),
        "video_a": make_video(d / "a.mp4", frames=10, seed=1),
        "video_b": make_video(d / "b.mp4", frames=12, width=128, height=128, fps=24.0, seed=2),
    }
    for path in files.values():  # shared by every test: one that writes to a file fails instead of changing it
        path.chmod(0o444)
    return files
