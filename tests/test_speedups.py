"""The output-preserving speedups keep outputs (lean attention, GPU-side uint8 frames, CUDA-graph
bookkeeping), checked on tiny real models on the CPU. Their speed is measured in bench/ on the H100, not here."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from openmora import tiny_models
from openmora.errors import InputError
from openmora.profiles import profile_from_dict
from openmora.speedups import apply_speedups
from openmora.speedups.attention import LeanAttnProcessor, install_lean_attention
from openmora.speedups.cuda_graphs import GraphedForward, _flatten, _rebuild, install_cuda_graphs
from openmora.speedups.group_norm import group_norm, install_cl_group_norm
from openmora.tools.context import to_uint8_frames

torch.set_num_threads(1)

# These speedups monkey-patch diffusers and transformers internals: a deprecation raised there is the first sign of
# the change that will break them, so here it fails the test (marks win over pyproject.toml's global ignore).
pytestmark = [
    pytest.mark.filterwarnings(r"error::DeprecationWarning:(diffusers|transformers)\b"),
    pytest.mark.filterwarnings(r"error::FutureWarning:(diffusers|transformers)\b"),
    # numpy 2 on torch's Tensor.__array__ (no copy keyword), met in diffusers' schedulers' np.array(tensor): between
    # torch and numpy, nothing a speedup touches. Listed last because the last filter applied wins.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]


def _svd_unet_inputs(unet: torch.nn.Module, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 4, unet.config.in_channels, 8, 12, generator=g)
    enc = torch.randn(2, 1, unet.config.cross_attention_dim, generator=g)
    added = torch.tensor([[6.0, 180.0, 0.1]] * 2)
    return sample, torch.tensor(1.5), enc, added


@pytest.mark.unit
def test_lean_attention_keeps_the_svd_unet_output():
    unet = tiny_models.build_image_to_video().unet.eval()
    sample, t, enc, added = _svd_unet_inputs(unet)
    with torch.no_grad():
        before = unet(sample, t, enc, added_time_ids=added).sample
        changed = install_lean_attention(unet)
        after = unet(sample, t, enc, added_time_ids=added).sample
    # spatial and temporal blocks each have a self- and a single-token cross-attention
    assert changed >= 4
    assert sum(isinstance(m.processor, LeanAttnProcessor) for m in unet.modules() if hasattr(m, "processor")) == changed
    assert after.shape == before.shape
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


GROUP_NORM_CASES = [
    ((2, 64, 6, 10), 32, True, torch.channels_last),
    ((2, 32, 5, 6, 8), 8, True, torch.channels_last_3d),
    ((3, 12, 7), 4, False, torch.contiguous_format),
    ((3, 12), 4, True, torch.contiguous_format),
]


def _group_norm_case(shape, groups, affine, layout) -> tuple[torch.Tensor, torch.nn.GroupNorm]:
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 3 + 5).contiguous(memory_format=layout)  # a mean far from 0: stability
    norm = torch.nn.GroupNorm(groups, shape[1], affine=affine)
    if affine:
        norm.weight.data = torch.randn(shape[1], generator=g)
        norm.bias.data = torch.randn(shape[1], generator=g)
    return x, norm


@pytest.mark.unit
@pytest.mark.parametrize(("shape", "groups", "affine", "layout"), GROUP_NORM_CASES)
def test_channel_first_group_norm_matches_torch(shape, groups, affine, layout):
    x, norm = _group_norm_case(shape, groups, affine, layout)
    ref = norm(x)
    got = group_norm(x, groups, norm.weight, norm.bias, norm.eps)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    half = group_norm(x.half(), groups, norm.weight, norm.bias, norm.eps)  # statistics in fp32 for fp16 inputs
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), ref, rtol=2e-3, atol=2e-3)


@pytest.mark.slow
def test_channel_first_group_norm_compiled_matches_torch():
    """Every case above through torch.compile, as one graph: one compile instead of one per shape (the first
    compile of a process costs ~10 s on two cores, each further one ~1 s)."""
    cases = [(*_group_norm_case(*case), case[1]) for case in GROUP_NORM_CASES]

    def all_cases(*xs: torch.Tensor) -> list[torch.Tensor]:
        return [
            group_norm(xs[i], groups, norm.weight, norm.bias, norm.eps) for i, (_, norm, groups) in enumerate(cases)
        ]

    compiled = torch.compile(all_cases, dynamic=False)
    got = compiled(*(x for x, _, _ in cases))
    for (x, norm, _), out in zip(cases, got, strict=True):
        torch.testing.assert_close(out, norm(x), rtol=1e-5, atol=1e-5)


@pytest.mark.unit
def test_speedups_touch_only_what_they_name_and_keep_the_svd_output():
    pipe = tiny_models.build_image_to_video()
    unet, vae = pipe.unet.eval(), pipe.vae.eval()
    sample, t, enc, added = _svd_unet_inputs(unet)
    latents = torch.randn(4, vae.config.latent_channels, 8, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = unet(sample, t, enc, added_time_ids=added).sample
        frames_before = vae.decode(latents, num_frames=4).sample

    def replaced(module: torch.nn.Module) -> int:
        return sum("forward" in m.__dict__ for m in module.modules() if isinstance(m, torch.nn.GroupNorm))

    apply_speedups(pipe, ["cl_group_norm"])  # nothing compiled: eager GroupNorm stays (one kernel beats ten)
    assert replaced(unet) == replaced(vae) == 0
    apply_speedups(pipe, ["channels_last"])
    convs = [m for m in unet.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert any(isinstance(m, torch.nn.Conv3d) for m in convs)  # SVD's temporal convs
    for m in convs:
        layout = torch.channels_last_3d if isinstance(m, torch.nn.Conv3d) else torch.channels_last
        assert m.weight.is_contiguous(memory_format=layout)
    install_cl_group_norm(unet)
    install_cl_group_norm(vae.decoder)
    assert replaced(unet) > 0 and replaced(vae.decoder) > 0 and replaced(vae.encoder) == 0
    with torch.no_grad():
        after = unet(sample, t, enc, added_time_ids=added).sample
        frames_after = vae.decode(latents, num_frames=4).sample
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(frames_after, frames_before, rtol=1e-4, atol=1e-5)


@pytest.mark.unit
def test_cl_group_norm_follows_the_compile_speedups(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # vae_compile would otherwise set it process-wide
    pipe = tiny_models.build_image_to_video()
    apply_speedups(pipe, ["vae_compile", "cl_group_norm"])  # only the decoder is compiled, so only it changes
    changed = [name for name, m in pipe.unet.named_modules() if "forward" in m.__dict__]
    assert changed == []
    norms = [m for m in pipe.vae.decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all("forward" in m.__dict__ for m in norms)


@pytest.mark.unit
def test_lean_short_self_attention_matches_the_default_processor():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=4, dim_head=8).eval()
    x = torch.randn(6, 25, 32)
    with torch.no_grad():
        ref = AttnProcessor2_0()(attn, x)
        short = LeanAttnProcessor()._attend(attn, x, x, cross=False, short=True)  # q, k, v as one GEMM
        unfused = LeanAttnProcessor(fuse_qkv=False)._attend(attn, x, x, cross=False, short=True)
        long_fused = LeanAttnProcessor(fuse_long_qkv=True)._attend(attn, x, x, cross=False, short=False)
        single = LeanAttnProcessor()(attn, x, encoder_hidden_states=x[:, :1])
        single_ref = AttnProcessor2_0()(attn, x, encoder_hidden_states=x[:, :1])
    torch.testing.assert_close(short, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(unfused, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(long_fused, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(single, single_ref, rtol=1e-5, atol=1e-6)
    assert single.shape == (6, 25, 32)


@pytest.mark.unit
def test_fused_qkv_only_for_plain_projections():
    from diffusers.models.attention_processor import Attention

    from openmora.speedups.attention import _fused_qkv

    attn = Attention(query_dim=32, heads=4, dim_head=8).eval()
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        q, k, v = _fused_qkv(attn, x)
        torch.testing.assert_close(torch.cat([q, k, v], -1), torch.cat([attn.to_q(x), attn.to_k(x), attn.to_v(x)], -1))
    # a hook may change the weight it runs with (offload, layerwise casting): the stored weight is not to be trusted
    handle = attn.to_k.register_forward_pre_hook(lambda *_: None)
    assert _fused_qkv(attn, x) is None
    handle.remove()
    assert _fused_qkv(attn, x.double()) is None  # weights in another dtype than the activations
    assert _fused_qkv(attn, x) is not None


@pytest.mark.unit
def test_gpu_image_prep_wraps_svd_only_and_leaves_the_cpu_path_alone():
    from PIL import Image

    from openmora.speedups.gpu_image_prep import install_gpu_image_prep

    svd = tiny_models.build_image_to_video()
    frame = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    with torch.no_grad():
        before = svd._encode_image(frame, torch.device("cpu"), 1, True)
        assert install_gpu_image_prep(svd) and not install_gpu_image_prep(svd)  # installed once
        after = svd._encode_image(frame, torch.device("cpu"), 1, True)
    assert torch.equal(before, after)  # off CUDA the pipeline's own path runs
    assert not install_gpu_image_prep(tiny_models.build_text_to_image())  # no CLIP image input to prepare
    assert "gpu_image_prep" in profile_from_dict(_profile_with(["gpu_image_prep"])).roles["image_to_video"].speedups


def _profile_with(speedups: list[str]) -> dict:
    return {
        "name": "t",
        "width": 96,
        "height": 64,
        "roles": {"image_to_video": {"pipeline": "StableVideoDiffusionPipeline", "model": "x", "speedups": speedups}},
    }


@pytest.mark.integration
def test_streamed_decode_hands_over_the_pipeline_frames_chunk_by_chunk():
    from PIL import Image

    from openmora.tools.image_to_video import decode_streamed

    pipe = tiny_models.build_image_to_video()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    kw = dict(image=image, height=64, width=96, num_frames=8, num_inference_steps=2, decode_chunk_size=3)
    got: list[tuple[int, int]] = []
    with torch.inference_mode():
        whole = to_uint8_frames(pipe(**kw, generator=torch.Generator().manual_seed(0), output_type="pt").frames)[0]
        latents = pipe(**kw, generator=torch.Generator().manual_seed(0), output_type="latent").frames
        frames = decode_streamed(pipe, latents, 3, lambda f, i: got.append((i, len(f))))
    assert got == [(0, 3), (3, 3), (6, 2)]  # the pipeline's own chunks, in order
    assert frames.shape == (8, 64, 96, 3) and np.array_equal(frames, whole)  # bit for bit


@pytest.mark.unit
def test_only_resident_svd_pipelines_decode_chunk_by_chunk():
    from openmora.tools.image_to_video import _decodes_in_chunks

    svd = tiny_models.build_image_to_video()
    assert _decodes_in_chunks(svd)
    svd.vae._hf_hook = object()  # accelerate's model offload: the pipeline decodes itself, as before
    assert not _decodes_in_chunks(svd)
    assert not _decodes_in_chunks(tiny_models.build_text_to_image())


@pytest.mark.integration
def test_no_step_sync_asks_the_gpu_once_per_call_and_keeps_the_frames(monkeypatch):
    from diffusers import StableVideoDiffusionPipeline
    from PIL import Image

    from openmora.speedups.no_step_sync import install_no_step_sync

    pipe = tiny_models.build_image_to_video()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    kw = dict(image=image, height=64, width=96, num_frames=4, num_inference_steps=3, output_type="pt")
    reads = {"n": 0}
    real_max = torch.Tensor.max

    def counting_max(self, *a, **k):
        reads["n"] += 1
        return real_max(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "max", counting_max)

    def run() -> tuple[torch.Tensor, int]:
        reads["n"] = 0
        with torch.inference_mode():
            frames = pipe(**kw, generator=torch.Generator().manual_seed(0)).frames
        return frames, reads["n"]

    before, reads_before = run()
    assert install_no_step_sync(pipe) and not install_no_step_sync(pipe)
    after, reads_after = run()
    again, reads_again = run()  # a second call asks again (a new guidance tensor), once
    assert torch.equal(before, after) and torch.equal(after, again)
    assert reads_before - reads_after == 2 * 3 - 1 and reads_again == reads_after  # two per step -> one per call
    assert isinstance(pipe, StableVideoDiffusionPipeline) and type(pipe).__name__ == "StableVideoDiffusionPipeline"
    assert not install_no_step_sync(tiny_models.build_text_to_image())


@pytest.mark.unit
def test_tensor_frames_convert_to_the_same_bytes_as_numpy():
    g = torch.Generator().manual_seed(1)
    video = torch.rand(1, 5, 3, 6, 10, generator=g) * 1.2 - 0.1  # (B, F, C, H, W), some values out of [0, 1]
    video[0, 0, 0, 0, :4] = torch.tensor([0.5 / 255, 1.5 / 255, 2.5 / 255, 254.5 / 255])  # rounding ties
    from_numpy = to_uint8_frames(video.permute(0, 1, 3, 4, 2).numpy())
    from_torch = to_uint8_frames(video)
    assert from_torch.dtype == np.uint8 and from_torch.shape == (1, 5, 6, 10, 3)
    np.testing.assert_array_equal(from_torch, from_numpy)


@pytest.mark.integration
def test_svd_pipeline_pt_output_gives_the_same_frames_as_np():
    pipe = tiny_models.build_image_to_video()
    pipe.set_progress_bar_config(disable=True)
    image = np.full((64, 64, 3), 100, np.uint8)
    from PIL import Image

    kw = dict(image=Image.fromarray(image), height=64, width=64, num_frames=3, num_inference_steps=2)
    a = to_uint8_frames(pipe(generator=torch.Generator().manual_seed(0), output_type="np", **kw).frames)[0]
    b = to_uint8_frames(pipe(generator=torch.Generator().manual_seed(0), output_type="pt", **kw).frames)[0]
    assert a.shape == b.shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(a, b)


@pytest.mark.unit
def test_graph_signature_round_trip_and_cpu_fallback():
    tensors: list[torch.Tensor] = []
    args = (torch.zeros(2, 3), torch.tensor(5.0))
    kwargs = {"added": {"a": torch.ones(1)}, "return_dict": False, "extra": None}
    key = _flatten((args, kwargs), tensors)
    hash(key)
    assert len(tensors) == 3
    rebuilt_args, rebuilt_kwargs = _rebuild(key, tensors)
    assert rebuilt_args[0] is tensors[0] and rebuilt_kwargs["added"]["a"] is tensors[2]
    assert rebuilt_kwargs["return_dict"] is False and rebuilt_kwargs["extra"] is None
    # a different shape is a different signature
    assert _flatten(((torch.zeros(3, 3),), {}), []) != _flatten(((torch.zeros(2, 3),), {}), [])

    unet = tiny_models.build_text_to_image().unet.eval()
    graphed = install_cuda_graphs(unet)
    assert isinstance(unet.forward, GraphedForward) and install_cuda_graphs(unet) is graphed  # idempotent
    x = torch.randn(2, 4, 8, 8)
    enc = torch.randn(2, 7, unet.config.cross_attention_dim)
    with torch.no_grad():
        out = unet(x, torch.tensor(10), enc).sample
        ref = graphed.eager(x, torch.tensor(10), enc).sample
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert graphed.replays == 0 and not graphed.graphs  # CPU weights: always eager


@pytest.mark.unit
def test_profiles_accept_the_new_speedups_and_name_them_in_errors():
    role = {"pipeline": "StableVideoDiffusionPipeline", "model": "tiny:image_to_video"}
    p = profile_from_dict({"name": "x", "roles": {"image_to_video": {**role, "speedups": ["lean_attention"]}}})
    assert p.roles["image_to_video"].speedups == ["lean_attention"]
    with pytest.raises(InputError, match="cuda_graphs"):
        profile_from_dict({"name": "x", "roles": {"image_to_video": {**role, "speedups": ["warp"]}}})


@pytest.mark.unit
def test_eviction_releases_cuda_graphs():
    from openmora.memory import GB, MemoryManager

    pipe = tiny_models.build_text_to_image()
    graphed = install_cuda_graphs(pipe.unet)
    graphed.graphs["fake"] = object()  # stands in for a captured graph (no CUDA here)
    moves: list[str] = []
    manager = MemoryManager(10 * GB, torch.device("cuda"), mover=lambda m, d: moves.append(str(d)))
    manager.add("sd", pipe, reserve_bytes=0)
    manager.activate("sd")
    manager.evict("sd")
    assert "cpu" in moves and not graphed.graphs


@pytest.mark.unit
def test_compile_caches_go_to_the_openmora_cache_unless_the_user_chose_a_folder(tmp_path, monkeypatch):
    from openmora.speedups.compile import persistent_compile_cache

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("OPENMORA_CACHE", str(tmp_path / "cache"))
    pipe = tiny_models.build_image_to_video()
    apply_speedups(pipe, ["vae_compile"])  # wraps the decoder for compilation; nothing compiles until a call
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert persistent_compile_cache() == str(tmp_path / "mine")


@pytest.mark.unit
def test_install_graphs_picks_the_denoiser_and_the_encoders_by_speedup():
    from openmora.speedups.cuda_graphs import install_graphs

    t2i, i2v = tiny_models.build_text_to_image(), tiny_models.build_image_to_video()
    assert install_graphs(t2i, ["encoder_graphs"]) == ["text_encoder"]
    assert isinstance(t2i.text_encoder.forward, GraphedForward) and not isinstance(t2i.unet.forward, GraphedForward)
    assert install_graphs(i2v, ["cuda_graphs", "encoder_graphs"]) == ["unet", "image_encoder"]
    assert isinstance(i2v.image_encoder.forward, GraphedForward) and isinstance(i2v.unet.forward, GraphedForward)
    assert install_graphs(tiny_models.build_text_to_image(), ["compile"]) == []
    # a graphed encoder keeps transformers' output type and values (eager here: CPU weights)
    ids = t2i.tokenizer(["a fox"], padding="max_length", max_length=t2i.tokenizer.model_max_length, return_tensors="pt")
    with torch.no_grad():
        out = t2i.text_encoder(ids.input_ids, output_hidden_states=True)
        ref = t2i.text_encoder.forward.eager(ids.input_ids, output_hidden_states=True)
    assert type(out) is type(ref) and len(out.hidden_states) == len(ref.hidden_states)
    torch.testing.assert_close(out.hidden_states[-2], ref.hidden_states[-2], rtol=0, atol=0)
