"""Batched classifier-free guidance (``batched_cfg``) gives Wan's output with one transformer call per
step instead of two, on the tiny real Wan first+last-frame pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from openmora import tiny_models
from openmora.speedups.batched_cfg import install_batched_cfg

torch.set_num_threads(1)

# batched_cfg wraps diffusers' Wan transformer call: a deprecation raised in diffusers or transformers is the first
# sign of the change that will break it, so here it fails the test (marks win over pyproject.toml's global ignore).
pytestmark = [
    pytest.mark.filterwarnings(r"error::DeprecationWarning:(diffusers|transformers)\b"),
    pytest.mark.filterwarnings(r"error::FutureWarning:(diffusers|transformers)\b"),
    # numpy 2 on torch's Tensor.__array__ (no copy keyword), met in diffusers' schedulers' np.array(tensor): between
    # torch and numpy, nothing a speedup touches. Listed last because the last filter applied wins.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]


def _frames(seed: int = 3) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(seed)
    return tuple(Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)) for _ in range(2))


def _count_calls(module: torch.nn.Module) -> list[int]:
    """Record the batch size of every call that reaches the transformer's own forward (installed before the
    speedup, so it sees the calls the wrapper makes, not the pipeline's)."""
    sizes: list[int] = []
    forward = module.forward

    def recording(hidden_states, *args, **kwargs):
        sizes.append(hidden_states.shape[0])
        return forward(hidden_states, *args, **kwargs)

    module.forward = recording
    return sizes


def _run(pipe, guidance_scale: float = 5.0, steps: int = 3, **extra) -> np.ndarray:
    first, last = _frames()
    with torch.inference_mode():
        out = pipe(
            image=first,
            last_image=last,
            prompt="a fox in snow",
            height=64,
            width=96,
            num_frames=5,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(7),
            output_type="latent",
            **extra,
        )
    return out.frames


@pytest.mark.integration
def test_batched_cfg_keeps_wans_output_with_one_call_per_step():
    reference_pipe = tiny_models.build_connect_frames()
    reference_pipe.set_progress_bar_config(disable=True)
    ref_sizes = _count_calls(reference_pipe.transformer)
    reference = _run(reference_pipe)

    pipe = tiny_models.build_connect_frames()
    pipe.set_progress_bar_config(disable=True)
    sizes = _count_calls(pipe.transformer)
    assert install_batched_cfg(pipe)
    batched = _run(pipe)

    assert ref_sizes == [1] * 6  # 3 steps x (cond, uncond)
    assert sizes == [2] * 3  # 3 steps x one batch of both
    state = pipe._openmora_batched_cfg
    assert (state.batched_calls, state.served, state.unmatched) == (3, 3, 0)
    assert batched.shape == reference.shape
    torch.testing.assert_close(torch.as_tensor(batched), torch.as_tensor(reference), rtol=1e-4, atol=1e-5)


@pytest.mark.integration
def test_batched_cfg_leaves_unguided_calls_alone_and_reinstalls_once():
    pipe = tiny_models.build_connect_frames()
    pipe.set_progress_bar_config(disable=True)
    sizes = _count_calls(pipe.transformer)
    assert install_batched_cfg(pipe) and install_batched_cfg(pipe)  # a second install is a no-op
    _run(pipe, guidance_scale=1.0, steps=2)
    assert sizes == [1, 1]  # no guidance: one call per step, nothing batched
    assert pipe._openmora_batched_cfg.batched_calls == 0


@pytest.mark.unit
def test_an_uncond_call_that_does_not_match_the_batch_runs_on_its_own():
    pipe = tiny_models.build_connect_frames()
    assert install_batched_cfg(pipe)
    den, state = pipe.transformer, pipe._openmora_batched_cfg
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 36, 2, 8, 12, generator=g)
    t = torch.tensor([500.0])
    pos, neg, other = (torch.randn(1, 512, 32, generator=g) for _ in range(3))
    img = torch.randn(2, 65, 4, generator=g)  # first+last frame: two images per sample
    state.mine().negative = neg
    pipe._guidance_scale = 5.0  # what the pipeline's __call__ sets before its loop

    def call(encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return den(
            hidden_states=hidden,
            timestep=t,
            encoder_hidden_states=encoder_hidden_states,
            encoder_hidden_states_image=img,
            return_dict=False,
        )[0]

    with torch.inference_mode():
        with den.cache_context("cond"):
            call(pos)
        with den.cache_context("uncond"):  # a different negative than the one batched: must be computed
            got = call(other)
        state.mine().negative = None  # nothing to batch with: the plain model
        want = call(other)
    assert state.unmatched == 1 and state.served == 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.unit
def test_pipelines_without_separate_cfg_calls_are_left_unchanged():
    pipe = tiny_models.build_image_to_video()  # SVD batches its guidance itself
    forward = pipe.unet.forward
    assert not install_batched_cfg(pipe)
    assert pipe.unet.forward == forward
