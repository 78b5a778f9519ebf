"""Slow tier (CUDA): CUDA-graph replay is bit-identical to eager and re-captures after the weights move (denoisers,
and the CLIP text and image encoders with transformers' output types); the lean
attention's memory-efficient path matches diffusers' default processor in fp16, its Triton kernel for short sequences
is as close to fp32 attention as torch's kernel (eager and compiled); the GPU-side CLIP input preparation gives the
CPU path's embedding; the compiled per-channel GroupNorm
(cl_group_norm) stays as close to fp32 as torch's own on channels-last fp16 activations."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from openmora import tiny_models
from openmora.speedups.attention import LeanAttnProcessor
from openmora.speedups.cuda_graphs import install_cuda_graphs

# These speedups monkey-patch diffusers and transformers internals: a deprecation raised there is the first sign of
# the change that will break them, so here it fails the test (marks win over pyproject.toml's global ignore).
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.filterwarnings(r"error::DeprecationWarning:(diffusers|transformers)\b"),
    pytest.mark.filterwarnings(r"error::FutureWarning:(diffusers|transformers)\b"),
    # numpy 2 on torch's Tensor.__array__ (no copy keyword), met in diffusers' schedulers' np.array(tensor): between
    # torch and numpy, nothing a speedup touches. Listed last because the last filter applied wins.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]


def test_cuda_graph_replay_is_bit_identical_and_recaptures_after_a_move():
    unet = tiny_models.build_text_to_image().unet.eval().to("cuda", torch.float16)
    graphed = install_cuda_graphs(unet)
    g = torch.Generator("cuda").manual_seed(0)
    enc = torch.randn(2, 7, unet.config.cross_attention_dim, device="cuda", dtype=torch.float16, generator=g)
    with torch.no_grad():
        for step in range(3):
            x = torch.randn(2, 4, 16, 16, device="cuda", dtype=torch.float16, generator=g)
            t = torch.tensor(900 - 100 * step, device="cuda")
            out = unet(x, t, enc, return_dict=False)[0]
            ref = graphed.eager(x, t, enc, return_dict=False)[0]
            assert torch.equal(out, ref)
        assert graphed.replays == 3 and graphed.captures == 1
        keep = [p.data for p in unet.parameters()]  # hold the old storage so the move back gets new addresses
        unet.to("cpu")
        unet.to("cuda")  # new weight storage: the graph must be captured again, not replayed on stale pointers
        out = unet(x, t, enc, return_dict=False)[0]
        assert torch.equal(out, graphed.eager(x, t, enc, return_dict=False)[0])
        assert graphed.captures == 2
        del keep


def test_encoder_graphs_replay_clip_text_and_vision_like_eager():
    # Replay runs the captured kernels; under capture cuBLAS may pick another GEMM algorithm than eager does, so the
    # fp16 outputs agree to fp16 rounding rather than bit for bit (on an H100 CLIP's text encoder was not bit-identical).
    from openmora.speedups.cuda_graphs import install_graphs

    t2i, i2v = tiny_models.build_text_to_image(), tiny_models.build_image_to_video()
    text = t2i.text_encoder.eval().to("cuda", torch.float16)
    vision = i2v.image_encoder.eval().to("cuda", torch.float16)
    assert install_graphs(t2i, ["encoder_graphs"]) == ["text_encoder"]
    assert install_graphs(i2v, ["encoder_graphs"]) == ["image_encoder"]
    tok = t2i.tokenizer
    size = vision.config.image_size
    close = dict(rtol=2e-3, atol=2e-3)
    with torch.inference_mode():
        for prompt in ("a fox in snow", "", "a city at night, rain"):  # same shapes: one graph, replayed
            ids = tok([prompt], padding="max_length", max_length=tok.model_max_length, return_tensors="pt")
            ids = ids.input_ids.to("cuda")
            out = text(ids, output_hidden_states=True)
            ref = text.forward.eager(ids, output_hidden_states=True)
            assert type(out) is type(ref) and len(out.hidden_states) == len(ref.hidden_states)
            for a, b in zip(out.hidden_states, ref.hidden_states, strict=True):
                torch.testing.assert_close(a, b, **close)
            torch.testing.assert_close(out.pooler_output, ref.pooler_output, **close)
            pixels = torch.rand(1, 3, size, size, device="cuda", dtype=torch.float16)
            torch.testing.assert_close(vision(pixels).image_embeds, vision.forward.eager(pixels).image_embeds, **close)
    assert text.forward.captures == 1 and text.forward.replays == 3
    assert vision.forward.captures == 1 and vision.forward.replays == 3


def test_lean_short_attention_on_cuda_matches_default():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    attn = Attention(query_dim=128, heads=2, dim_head=64).eval().to("cuda", torch.float16)
    x = torch.randn(4096, 25, 128, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        ref = AttnProcessor2_0()(attn, x)
        lean = LeanAttnProcessor()(attn, x)
    err = ((lean.float() - ref.float()).norm() / ref.float().norm()).item()
    assert err < 2e-3, err


@pytest.mark.parametrize("sequences,heads,tokens", [(2 * 9216, 5, 25), (2 * 576, 20, 25), (64, 2, 7), (64, 2, 64)])
def test_short_attention_kernel_matches_fp32_attention_eager_and_compiled(sequences, heads, tokens):
    from openmora.speedups import short_attention

    if short_attention.triton is None:
        pytest.skip("this torch build has no Triton: the lean processor uses torch's memory-efficient kernel instead")
    g = torch.Generator("cuda").manual_seed(0)
    width = heads * 64
    qkv = torch.randn(sequences, tokens, 3 * width, device="cuda", dtype=torch.float16, generator=g)
    q, k, v = (t.view(sequences, tokens, heads, 64).transpose(1, 2) for t in qkv.chunk(3, -1))  # strided, as fused
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    ref = ref.transpose(1, 2).reshape(sequences, tokens, width)
    efficient = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, False)[0]
    efficient = efficient.transpose(1, 2).reshape(sequences, tokens, width)
    assert short_attention.supported(q, k, v)
    out = short_attention.short_attention(q, k, v)
    compiled = torch.compile(short_attention.short_attention, fullgraph=True)(q, k, v)

    def err(x):
        return ((x.float() - ref).norm() / ref.norm()).item()

    assert out.shape == (sequences, tokens, width) and out.is_contiguous()
    assert err(out) <= 1.2 * err(efficient) + 1e-5, (err(out), err(efficient))  # fp16 rounding, as torch's kernel
    torch.testing.assert_close(compiled, out, rtol=2e-3, atol=2e-3)  # inductor relaunches it (its own build options)
    assert not short_attention.supported(q.float(), k.float(), v.float())
    with pytest.raises(ValueError, match="tokens <= 64"):
        long = torch.zeros(1, 1, 65, 64, device="cuda", dtype=torch.float16)
        short_attention.short_attention(long, long, long)


def test_streamed_decode_on_cuda_equals_the_pipeline_frames():
    import numpy as np

    from openmora.tools.context import to_uint8_frames
    from openmora.tools.image_to_video import decode_streamed

    pipe = tiny_models.build_image_to_video().to("cuda")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    kw = dict(image=image, height=64, width=96, num_frames=8, num_inference_steps=2, decode_chunk_size=3)
    got = []
    with torch.inference_mode():
        whole = to_uint8_frames(pipe(**kw, generator=torch.Generator().manual_seed(0), output_type="pt").frames)[0]
        latents = pipe(**kw, generator=torch.Generator().manual_seed(0), output_type="latent").frames
        frames = decode_streamed(pipe, latents, 3, lambda f, i: got.append((i, f.copy())))
    assert [(i, len(f)) for i, f in got] == [(0, 3), (3, 3), (6, 2)]
    assert np.array_equal(frames, whole) and np.array_equal(np.concatenate([f for _, f in got]), whole)


def test_gpu_image_prep_gives_the_cpu_path_embedding():
    from openmora.speedups.gpu_image_prep import install_gpu_image_prep

    svd = tiny_models.build_image_to_video().to("cuda")
    yy, xx = torch.meshgrid(torch.arange(576), torch.arange(1024), indexing="ij")
    frame = Image.fromarray(torch.stack([xx * 7 % 256, yy % 256, (xx + yy) * 13 % 256], -1).to(torch.uint8).numpy())
    with torch.no_grad():
        cpu_path = svd._encode_image(frame, torch.device("cuda"), 1, True)
        assert install_gpu_image_prep(svd)
        gpu_path = svd._encode_image(frame, torch.device("cuda"), 1, True)
    torch.testing.assert_close(gpu_path, cpu_path, rtol=1e-4, atol=1e-5)


def test_cuda_graphs_keep_inference_mode_and_no_grad_apart_and_release():
    unet = tiny_models.build_text_to_image().unet.eval().to("cuda", torch.float16)
    graphed = install_cuda_graphs(unet)
    x = torch.randn(2, 4, 16, 16, device="cuda", dtype=torch.float16)
    enc = torch.randn(2, 7, unet.config.cross_attention_dim, device="cuda", dtype=torch.float16)
    t = torch.tensor(500, device="cuda")
    with torch.inference_mode():
        a = unet(x, t, enc, return_dict=False)[0]
    with torch.no_grad():  # buffers captured in inference mode cannot be written here: a second graph
        b = unet(x, t, enc, return_dict=False)[0]
    assert torch.equal(a, b) and graphed.captures == 2 and len(graphed.graphs) == 2
    graphed.release()
    assert not graphed.graphs


def test_pinned_evictions_round_trip_weights_and_keep_changes_made_on_the_gpu():
    from openmora.host_copies import PinnedMover

    unet = tiny_models.build_text_to_image().unet.eval().to("cuda", torch.float16)
    unet.to(memory_format=torch.channels_last)
    before = {n: t.detach().clone() for n, t in unet.state_dict().items()}
    params = list(unet.parameters())
    mover = PinnedMover()
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(2, 4, 16, 16, device="cuda", dtype=torch.float16, generator=g)
    enc = torch.randn(2, 7, unet.config.cross_attention_dim, device="cuda", dtype=torch.float16, generator=g)
    with torch.no_grad():
        ref = unet(x, torch.tensor(500, device="cuda"), enc).sample
        weights = sum(p.numel() * p.element_size() for p in unet.parameters())
        allocated = torch.cuda.memory_allocated()
        mover(unet, torch.device("cpu"))
        assert all(p.device.type == "cpu" and p.is_pinned() for p in unet.parameters())
        assert torch.cuda.memory_allocated() <= allocated - weights  # the GPU copies are gone
        assert mover.pinned_bytes() > 0
        mover(unet, torch.device("cuda"))
        assert [id(p) for p in unet.parameters()] == [id(p) for p in params]  # the same Parameter objects
        for n, t in unet.state_dict().items():
            assert t.device.type == "cuda" and t.stride() == before[n].stride() and torch.equal(t, before[n]), n
        assert torch.equal(unet(x, torch.tensor(500, device="cuda"), enc).sample, ref)
        # A weight changed on the GPU (say a LoRA fused in) survives the next round trip: no stale host copy.
        unet.conv_in.weight.add_(1.0)
        changed = unet.conv_in.weight.detach().clone()
        pinned = mover.pinned_bytes()
        mover(unet, torch.device("cpu"))
        mover(unet, torch.device("cuda"))
        assert torch.equal(unet.conv_in.weight, changed)
        assert mover.pinned_bytes() == pinned  # the second eviction reused the pinned copies


def test_group_offload_streams_the_blocks_and_keeps_the_rest_on_the_gpu():
    """Under the 24 GB mode's group offload the denoiser's blocks stream from the host while its embedders and output
    projection stay on the GPU (counted by the manager), and the result is the resident run's."""
    from openmora.memory import MemoryManager

    pipe = tiny_models.build_connect_frames()
    pipe.set_progress_bar_config(disable=True)
    size = {"height": 64, "width": 96, "num_frames": 5, "num_inference_steps": 2, "output_type": "latent"}
    first, last = Image.new("RGB", (96, 64), (200, 40, 10)), Image.new("RGB", (96, 64), (10, 40, 200))

    def run():
        gen = torch.Generator("cpu").manual_seed(0)
        with torch.inference_mode():
            return pipe(image=first, last_image=last, prompt="a fox", generator=gen, **size).frames.cpu()

    pipe.to("cuda")
    resident = run()
    pipe.to("cpu")
    manager = MemoryManager(budget_bytes=1 << 30, device="cuda")
    unit = manager.add("connect", pipe, reserve_bytes=0, placement="group")
    offloaded = run()
    transformer = pipe.transformer
    outside = {n: t for n, t in transformer.named_parameters() if not n.startswith("blocks.")}
    assert all(t.device.type == "cuda" for t in outside.values()), "embedders/output projection left the GPU"
    assert all(t.device.type == "cpu" for t in transformer.blocks.parameters()), "blocks should stream from the host"
    assert unit.kept_bytes >= sum(t.numel() * t.element_size() for t in outside.values()) > 0
    assert manager.resident_bytes() == unit.kept_bytes
    torch.testing.assert_close(offloaded, resident, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "layout"),
    [((4, 320, 36, 64), torch.channels_last), ((1, 128, 6, 72, 128), torch.channels_last_3d)],
)
def test_cl_group_norm_compiled_on_cuda_is_as_close_to_fp32_as_torch(shape, layout):
    import torch.nn.functional as F

    from openmora.speedups.group_norm import group_norm

    g = torch.Generator("cuda").manual_seed(0)
    x = (torch.randn(shape, device="cuda", generator=g) * 3 + 1).half().contiguous(memory_format=layout)
    w = torch.randn(shape[1], device="cuda", generator=g).half()
    b = torch.randn(shape[1], device="cuda", generator=g).half()
    ref = F.silu(F.group_norm(x.float(), 32, w.float(), b.float(), 1e-6))  # fp32 reference
    eager = F.silu(F.group_norm(x, 32, w, b, 1e-6))  # what diffusers runs without the speedup
    compiled = torch.compile(lambda t: F.silu(group_norm(t, 32, w, b, 1e-6)), dynamic=False)
    with torch.inference_mode():
        out = compiled(x)

    def err(a: torch.Tensor) -> float:
        return ((a.float() - ref).norm() / ref.norm()).item()

    assert out.shape == x.shape and out.dtype == torch.float16
    assert err(out) <= max(2 * err(eager), 1e-3), (err(out), err(eager))


def test_background_compile_then_cuda_graphs_on_cuda_keep_the_frames(monkeypatch, tmp_path):
    """The UNet's regions compile in the background while the first render runs eagerly; its CUDA graph is captured
    only once they are compiled (a capture of the eager stand-in would replay uncompiled code); frames match eager."""
    import weakref

    from openmora.speedups import apply_speedups
    from openmora.speedups import compile as bc
    from openmora.speedups.cuda_graphs import GraphedForward

    monkeypatch.setenv("OPENMORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(bc, "_COMPILER", None)
    monkeypatch.setattr(bc, "_LEADERS", weakref.WeakValueDictionary())

    def render(pipe):
        gen = torch.Generator("cpu").manual_seed(0)
        with torch.inference_mode():
            return pipe(
                image=Image.new("RGB", (64, 64), (120, 90, 60)),
                height=64,
                width=64,
                num_frames=4,
                num_inference_steps=3,
                decode_chunk_size=2,
                generator=gen,
                output_type="pt",
            ).frames[0]

    eager = tiny_models.build_image_to_video().to("cuda", torch.float16)
    reference = render(eager)
    pipe = tiny_models.build_image_to_video()
    apply_speedups(pipe, ["compile", "vae_compile"])
    pipe.to("cuda", torch.float16)
    apply_speedups(pipe, ["cuda_graphs"], when="resident")
    graphed = pipe.unet.forward
    assert isinstance(graphed, GraphedForward)
    first = render(pipe)
    assert graphed.captures == 0  # the regions were still compiling: no graph of the eager stand-in
    assert bc.compiler().wait(600)
    second = render(pipe)
    assert graphed.captures == 1 and graphed.replays > 0
    assert all(r.ready and not r.failed for r in bc.regions_of(pipe.unet))
    torch.testing.assert_close(first, reference, rtol=0, atol=2e-3)
    torch.testing.assert_close(second, reference, rtol=0, atol=2e-3)
