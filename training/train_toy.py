"""Train the ``toy`` models: small diffusers pipelines that learn the procedural toy scenes and follow their prompts.

Four jobs, run in this order (each reads what the ones before it saved under ``--out``):

* ``vae``: the image autoencoder (AutoencoderKL) and the video autoencoder (AutoencoderKLWan), trained to
  reconstruct toy frames and clips; their latent scale (``scaling_factor``, ``latents_mean``/``latents_std``) is
  measured afterwards and written into their configs, where the pipelines read it.
* ``t2i``: StableDiffusionPipeline. CLIP text encoder and UNet from scratch, DDPM epsilon loss on the betas of the
  scheduler the pipeline samples with, 10% empty prompts for classifier-free guidance.
* ``edit``: StableDiffusionInstructPix2PixPipeline. The 8-channel UNet (noisy latent + source latent, unscaled, as
  the pipeline passes it), the t2i text encoder fine-tuned on instructions, 5% / 5% / 5% dropped text / image /
  both (InstructPix2Pix's guidance needs both unconditional branches). Includes the pixel-art restyle.
* ``video``: WanImageToVideoPipeline, one transformer for image-to-video (first frame) and connect (first + last
  frame). Flow matching as Wan: ``x_t = (1 - s) x0 + s noise``, target ``noise - x0``, ``s`` drawn like the
  scheduler's shifted sigmas, timestep ``1000 s``; the condition latents and mask built exactly as the pipeline
  builds them (:func:`wan_condition`). Saved as ``image_to_video`` and ``connect_frames``.

Outputs in ``--out``: ``<role>/`` (``save_pretrained`` folders), ``components/`` (the autoencoders between jobs),
``log.jsonl`` (loss every ``--log-every`` steps), ``summary.json`` (per model: steps, seconds, final loss, device,
parameters; per role: saved MB), ``samples/`` (PNG grids and what ``openmora.toy.detect`` reads on them).

Example:
    python -m training.train_toy --out runs/toy --device cuda --minutes-per-model 4
    python -m training.train_toy --out /tmp/toy --device cpu --steps 3 --batch 2 --sample-steps 2
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training import toy_data, toy_models

logger = logging.getLogger("training.train_toy")

JOBS = ("vae", "t2i", "edit", "video", "video_decoder")
DEFAULT_JOBS = ("vae", "t2i", "edit", "video")  # video_decoder only when asked for (--only)
ROLES = ("text_to_image", "edit_image", "image_to_video", "connect_frames")
MAX_TOTAL_MB = 30.0
LR = {"vae_image": 1e-3, "vae_video": 1e-3, "t2i": 5e-4, "edit": 5e-4, "video": 5e-4, "video_decoder": 1e-4}
T2I_DROP = 0.1  # empty prompt share (classifier-free guidance)
EDIT_DROP = 0.05  # InstructPix2Pix: this share each of no text, no image, neither
VIDEO_DROP = 0.1
KL_WEIGHT = 1e-6
EMA_DECAY = 0.999
MIN_SNR_GAMMA = 5.0  # Min-SNR-gamma loss weights (Hang et al. 2023) for the epsilon-prediction UNets
T5_LENGTH = 512  # the Wan pipeline's default max_sequence_length: its embeddings are zero-padded to this


@dataclass
class Run:
    """What one ``train_toy`` invocation does; every field has a command-line flag of the same name."""

    out: Path
    device: str = "cpu"
    seed: int = 0
    minutes_per_model: float | None = None
    steps: int | None = None
    batch: int = 32
    only: tuple[str, ...] = DEFAULT_JOBS
    workers: int = 0
    log_every: int = 50
    sample_steps: int = 20
    minutes: dict[str, float] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)
    resume: bool = False
    lr: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    earlier: dict = field(default_factory=dict)  # summary.json's models as this run found them (--resume)

    @property
    def dev(self) -> torch.device:
        return torch.device(self.device)

    def budget(self, name: str) -> tuple[int | None, float | None]:
        """(steps, seconds) limits of model ``name``: its ``minutes`` entry, else the run's limits; with neither
        flag given, 5 minutes."""
        if name in self.minutes:
            return self.steps, self.minutes[name] * 60.0
        if self.steps is None and self.minutes_per_model is None:
            return None, 300.0
        return self.steps, None if self.minutes_per_model is None else self.minutes_per_model * 60.0

    def kept(self, name: str) -> bool:
        """Whether model ``name`` is asked to stay as saved (``--minutes NAME=0``): not trained this run."""
        return self.minutes.get(name) == 0

    def rate(self, name: str) -> float:
        """The learning rate of model ``name``: its ``--lr`` entry, else :data:`LR`'s."""
        return self.lr.get(name, LR[name])

    def batch_for(self, name: str) -> int:
        """Examples per step of model ``name``: its ``batches`` entry, else ``batch`` (pictures), a quarter of it
        (clips, video autoencoder) or half (clips, video model)."""
        share = {"vae_video": 4, "video": 2, "video_decoder": 4}.get(name, 1)
        return self.batches.get(name, max(1, self.batch // share))

    def autocast(self):
        if self.dev.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)


# ----- logging and bookkeeping -----


def _log(run: Run, record: dict) -> None:
    with open(run.out / "log.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _write_summary(run: Run) -> None:
    path = run.out / "summary.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    models = old.setdefault("models", {})
    for name, stats in run.summary.get("models", {}).items():
        before = run.earlier.get(name)  # a round of an earlier run: not one this run already wrote
        if run.resume and before and "history" not in stats:
            # A resumed model: its earlier rounds stay on record, and the totals count every round.
            earlier = before.get("history", []) + [
                {k: v for k, v in before.items() if not k.startswith(("history", "total_"))}
            ]
            stats["history"] = earlier
            stats["total_steps"] = stats["steps"] + sum(h["steps"] for h in earlier)
            stats["total_seconds"] = round(stats["seconds"] + sum(h["seconds"] for h in earlier), 3)
        models[name] = stats
    old.setdefault("roles", {}).update(run.summary.get("roles", {}))
    old["total_saved_mb"] = round(sum(r["saved_mb"] for r in old["roles"].values()), 3)
    old["run"] = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run).items() if k not in ("summary", "earlier")
    }
    path.write_text(json.dumps(old, indent=2) + "\n")


def _folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*.safetensors")) / 1e6


def save_folder(model, folder: Path) -> None:
    """``model.save_pretrained(folder)`` as safetensors, without the ``_name_or_path`` that diffusers writes into
    each config: it is the folder the weights were loaded from, a path on the training machine."""
    model.save_pretrained(folder, safe_serialization=True)
    for config in Path(folder).rglob("config.json"):
        data = json.loads(config.read_text())
        if data.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _save(run: Run, pipe, role: str, params: int) -> None:
    target = run.out / role
    save_folder(pipe, target)
    mb = _folder_mb(target)
    run.summary.setdefault("roles", {})[role] = {"saved_mb": round(mb, 3), "parameters": params}
    logger.info("saved %s: %.2f MB, %d parameters", target, mb, params)


# ----- the training loop -----


def train_loop(
    run: Run,
    name: str,
    modules: list[torch.nn.Module],
    step_loss: Callable[[dict], torch.Tensor],
    batches: Iterator,
    ema: bool = False,
) -> dict:
    """Adam on ``modules`` until the step or time budget is spent; ``step_loss(batch)`` returns the loss.

    Linear warmup over the first 5% of the steps (at most 100), then a constant rate; gradients clipped to 1.
    Logs the mean loss of every ``run.log_every`` steps (and of the last step) to ``log.jsonl``. With ``ema``, the
    modules end with an exponential moving average of their weights (decay ``min(EMA_DECAY, (1 + n) / (10 + n))``
    after step ``n``): diffusion samples from averaged weights are cleaner than from the last step's.
    """
    max_steps, max_seconds = run.budget(name)
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=run.rate(name), weight_decay=0.0, betas=(0.9, 0.99))
    averaged = [p.detach().clone() for p in params] if ema else []
    warmup = min(100, max(1, (max_steps or 2000) // 20))
    for m in modules:
        m.train()
    start, step, last = time.perf_counter(), 0, math.nan
    window, count = torch.zeros((), device=run.dev), 0  # summed on the device: no host sync per step

    def flush() -> float:
        mean = float(window) / max(count, 1)
        record = {"model": name, "step": step, "loss": mean, "seconds": round(time.perf_counter() - start, 3)}
        _log(run, record)
        logger.info("%s step %d loss %.5f (%.1f s)", name, step, mean, record["seconds"])
        return mean

    while True:
        elapsed = time.perf_counter() - start
        if (max_steps is not None and step >= max_steps) or (max_seconds is not None and elapsed >= max_seconds):
            break
        batch = next(batches)
        for group in opt.param_groups:
            group["lr"] = run.rate(name) * min(1.0, (step + 1) / warmup)
        with run.autocast():
            loss = step_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema:
            decay = min(EMA_DECAY, (1 + step) / (10 + step))
            torch._foreach_lerp_(averaged, [p.detach() for p in params], 1.0 - decay)
        step += 1
        window, count = window + loss.detach().float(), count + 1
        if step % run.log_every == 0 or step == 1:
            last = flush()
            window, count = torch.zeros((), device=run.dev), 0
    if count:
        last = flush()
    if ema:
        with torch.no_grad():
            torch._foreach_copy_(params, averaged)
    seconds = time.perf_counter() - start
    for m in modules:
        m.eval()
    stats = {
        "steps": step,
        "seconds": round(seconds, 3),
        "step_seconds": round(seconds / max(step, 1), 4),
        "final_loss": last,
        "device": run.device,
        "batch": run.batch_for(name),
        "parameters": sum(toy_models.parameters(m) for m in modules),
    }
    if not math.isfinite(last):
        raise RuntimeError(f"{name}: the loss is not finite ({last}) after {step} steps")
    run.summary.setdefault("models", {})[name] = stats
    return stats


# ----- shared pieces -----


def _noise_scheduler():
    """The DDPM view of the SD scheduler's betas: what ``add_noise`` at a training timestep means."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(toy_models.build_sd_scheduler().config)


class TokenCache:
    """Token ids per prompt, computed once: the toy prompts repeat, and the slow tokenizer's Python BPE (plus ftfy
    where installed) costs more per batch than these models' whole training step on a GPU.

    Example:
        >>> cache = TokenCache(toy_models.tokenizer())
        >>> cache.padded(["a red circle"], 77, torch.device("cpu"))[0].shape
        torch.Size([1, 77])
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.pad = tokenizer, tokenizer.pad_token_id
        self._ids: dict[tuple[str, int], list[int]] = {}

    def ids(self, prompt: str, max_length: int) -> list[int]:
        key = (prompt, max_length)
        if key not in self._ids:
            self._ids[key] = self.tokenizer(prompt, truncation=True, max_length=max_length).input_ids
        return self._ids[key]

    def padded(
        self, prompts: list[str], length: int | None, device: torch.device, max_length: int = 77
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention mask) of ``prompts``, padded to ``length`` (``None``: the longest prompt)."""
        rows = [self.ids(p, max_length if length is None else length) for p in prompts]
        width = length or max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        return ids.to(device), mask.to(device)


def _tokens(cache: TokenCache, prompts: list[str], device: torch.device) -> torch.Tensor:
    # As StableDiffusionPipeline.encode_prompt tokenizes: padded to 77, no attention mask (the CLIP config asks for
    # none).
    return cache.padded(prompts, cache.tokenizer.model_max_length, device)[0]


def _drop(prompts: list[str], rng: np.random.Generator, share: float) -> list[str]:
    return ["" if rng.random() < share else p for p in prompts]


def t5_embeds(cache: TokenCache, text_encoder, prompts: list[str], device: torch.device) -> torch.Tensor:
    """The Wan pipeline's prompt embeddings (``_get_t5_prompt_embeds``, max_sequence_length 512), computed over the
    batch's longest prompt only: the padded positions are masked out of attention, so the real tokens come out the
    same, and the pipeline zeroes the rest anyway.

    Example:
        >>> # equal to pipe._get_t5_prompt_embeds(prompts, max_sequence_length=512) (tests/test_train_toy.py)
    """
    from diffusers.pipelines.wan.pipeline_wan_i2v import prompt_clean

    ids, mask = cache.padded([prompt_clean(p) for p in prompts], None, device, max_length=T5_LENGTH)
    hidden = text_encoder(ids, mask).last_hidden_state
    hidden = hidden * mask[..., None].to(hidden.dtype)
    return F.pad(hidden, (0, 0, 0, T5_LENGTH - hidden.shape[1]))


def _wan_norm(vae, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(vae.config.latents_mean, device=device).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=device).view(1, -1, 1, 1, 1)
    return mean, std


def wan_condition(
    vae, first: torch.Tensor, last: torch.Tensor | None, connect: torch.Tensor | None, frames: int
) -> torch.Tensor:
    """The condition ``WanImageToVideoPipeline.prepare_latents`` builds, for a batch in which each sample is given
    its last frame or not: mask (``scale_factor_temporal`` channels) + normalised latents of [first, zeros..., last or zeros].

    Args:
        vae: the pipeline's AutoencoderKLWan.
        first: ``(B, 3, H, W)`` first frames in [-1, 1].
        last: ``(B, 3, H, W)`` last frames in [-1, 1], or ``None`` (image-to-video only).
        connect: ``(B,)`` bool, which samples get their last frame (connect mode); ``None``: none.
        frames: the clip's frame count (``scale_factor_temporal`` k + 1: the Wan encoder takes the first frame alone).
    """
    b, _, h, w = first.shape
    scale_t, scale_s = vae.config.scale_factor_temporal, vae.config.scale_factor_spatial
    lh, lw = h // scale_s, w // scale_s
    video = first.new_zeros(b, 3, frames, h, w)
    video[:, :, 0] = first
    mask = torch.ones(b, 1, frames, lh, lw, device=first.device)
    mask[:, :, 1:] = 0
    if last is not None and connect is not None:
        video[connect, :, -1] = last[connect].to(video.dtype)
        mask[connect, :, -1] = 1
    mean, std = _wan_norm(vae, first.device)
    latent = (vae.encode(video).latent_dist.mode() - mean) / std
    first_mask = torch.repeat_interleave(mask[:, :, 0:1], dim=2, repeats=scale_t)
    mask = torch.cat([first_mask, mask[:, :, 1:]], dim=2)
    mask = mask.view(b, -1, scale_t, lh, lw).transpose(1, 2)
    return torch.cat([mask.to(latent.dtype), latent], dim=1)


# ----- the jobs -----


def train_vae(run: Run) -> None:
    """Both autoencoders, then their latent statistics into their configs; saved under ``components/``. One asked
    to stay as saved (``--minutes vae_image=0`` or ``vae_video=0``) is neither trained nor re-measured."""
    rng = np.random.default_rng([run.seed, 1])
    for name, build, folder, kind, seed in (
        ("vae_image", toy_models.build_sd_vae, "sd_vae", "image", 10),
        ("vae_video", toy_models.build_wan_vae, "wan_vae", "clip", 20),
    ):
        saved = run.out / "components" / folder
        if run.kept(name):
            if not (saved / "config.json").is_file():
                raise SystemExit(f"--minutes {name}=0 keeps {saved}, which is missing: give {name} some minutes")
            logger.info("%s kept as saved in %s", name, saved)
            continue
        model = _start(run, build, saved)
        _fit_autoencoder(run, name, model, toy_data.stream(kind, run.batch_for(name), run.seed + seed, run.workers))
        save_folder(model, saved)
        sample = toy_data.image_batch(rng, 6)["pixels"] if kind == "image" else toy_data.clip_batch(rng, 3)["clips"]
        _sample_vae(run, name, model, sample)
    _write_summary(run)


def _fit_autoencoder(run: Run, name: str, vae, batches: Iterator) -> None:
    """Reconstruction (MSE + 0.1 L1, a touch of KL) on ``batches``, then the latent scale into the config: the
    image VAE's ``scaling_factor``, the video VAE's per-channel ``latents_mean``/``latents_std`` (of the mode, as
    the Wan pipeline normalises)."""
    key = "pixels" if name == "vae_image" else "clips"

    def loss(batch: dict) -> torch.Tensor:
        x = toy_data.to_tensor(batch[key], run.dev)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        return F.mse_loss(rec.float(), x) + 0.1 * F.l1_loss(rec.float(), x) + KL_WEIGHT * post.kl().mean()

    train_loop(run, name, [vae], loss, batches)
    with torch.no_grad():
        draws = [vae.encode(toy_data.to_tensor(next(batches)[key], run.dev)).latent_dist for _ in range(4)]
    if name == "vae_image":
        z = torch.cat([d.sample() for d in draws])
        vae.register_to_config(scaling_factor=float(1.0 / z.float().std()))
    else:
        z, dims = torch.cat([d.mode() for d in draws]).float(), (0, 2, 3, 4)
        vae.register_to_config(
            latents_mean=[float(v) for v in z.mean(dims)], latents_std=[float(v) for v in z.std(dims)]
        )


def _start(run: Run, build: Callable[[], torch.nn.Module], saved: Path) -> torch.nn.Module:
    """A model to train: with ``--resume`` the weights saved at ``saved`` (a ``save_pretrained`` folder) where they
    exist and have the shape ``build()`` has (same config, bar the measured latent statistics), else ``build()``;
    on the run's device. A saved model of another shape (the configs in ``toy_models`` changed since) is left out
    with a log line: its weights cannot load into the new shape."""
    model = build()
    if run.resume and (saved / "config.json").is_file():
        changed = _config_changes(model, saved)
        if changed:
            logger.info("%s in %s has another shape (%s): starting from the seed", type(model).__name__, saved,
                        ", ".join(changed))  # fmt: skip
        else:
            logger.info("resuming %s from %s", type(model).__name__, saved)
            return type(model).from_pretrained(saved).to(run.dev)
    return model.to(run.dev)


MEASURED = frozenset({"latents_mean", "latents_std", "scaling_factor"})  # written after training, not shape
# What transformers writes about the saving process, not the model: a folder saved by another transformers version
# (the GPU machine's, say) is the same shape.
SAVED_BY = frozenset({"transformers_version", "architectures", "dtype", "torch_dtype"})


def _config_changes(model: torch.nn.Module, saved: Path) -> list[str]:
    """The config keys whose saved value (``saved/config.json``) differs from ``model``'s, as ``key a -> b``."""
    old = json.loads((saved / "config.json").read_text())
    config = model.config  # a diffusers FrozenDict or a transformers PretrainedConfig
    new = json.loads(json.dumps(config.to_dict() if hasattr(config, "to_dict") else dict(config), default=str))
    return [f"{k} {old.get(k)} -> {v}" for k, v in new.items()
            if not k.startswith("_") and k not in MEASURED | SAVED_BY and k in old and old[k] != v]  # fmt: skip


def _load_component(run: Run, cls, name: str):
    path = run.out / "components" / name
    if not (path / "config.json").is_file():
        raise SystemExit(f"{path} is missing: run the vae job first (--only vae), or all jobs")
    return cls.from_pretrained(path).to(run.dev)


def train_t2i(run: Run) -> None:
    """Text-to-image: CLIP text encoder + UNet on the trained, frozen image VAE."""
    from diffusers import AutoencoderKL

    dev, rng = run.dev, np.random.default_rng([run.seed, 2])
    vae = _load_component(run, AutoencoderKL, "sd_vae").requires_grad_(False)
    saved = run.out / "text_to_image"
    text = _start(run, toy_models.build_clip_text_encoder, saved / "text_encoder")
    unet = _start(run, lambda: toy_models.build_sd_unet(4), saved / "unet")
    tok, noise_sched = TokenCache(toy_models.tokenizer()), _noise_scheduler()
    alphas = noise_sched.alphas_cumprod.to(dev)
    sf = vae.config.scaling_factor

    def loss(batch: dict) -> torch.Tensor:
        x = toy_data.to_tensor(batch["pixels"], dev)
        with torch.no_grad():
            lat = vae.encode(x).latent_dist.sample() * sf
        emb = text(_tokens(tok, _drop(batch["prompts"], rng, T2I_DROP), dev))[0]
        noisy, noise, t = _ddpm_noise(lat, alphas)
        return epsilon_loss(unet(noisy, t, emb).sample, noise, t, alphas)

    pipe = _fit_sd(run, "t2i", "image", 30, vae, text, unet, loss, toy_models.text_to_image_pipeline, "text_to_image")
    _sample_t2i(run, pipe)
    _write_summary(run)


def _fit_sd(run: Run, name: str, kind: str, seed_offset: int, vae, text, unet, loss, build, role: str):
    """Train a Stable Diffusion job's text encoder and UNet (with EMA) on ``kind`` batches, then build its pipeline
    with ``build(vae, text, unet)`` and save it as ``role``; returns the pipeline."""
    batches = toy_data.stream(kind, run.batch_for(name), run.seed + seed_offset, run.workers)
    train_loop(run, name, [text, unet], loss, batches, ema=True)
    pipe = build(vae, text, unet)
    _save(run, pipe, role, sum(map(toy_models.parameters, (vae, text, unet))))
    return pipe


def _ddpm_noise(lat: torch.Tensor, alphas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DDPM's forward process at a random timestep per example: (noisy latents, the noise, the timesteps)."""
    noise = torch.randn_like(lat)
    t = torch.randint(0, len(alphas), (len(lat),), device=lat.device)
    a = alphas[t].view(-1, 1, 1, 1)
    return a.sqrt() * lat + (1 - a).sqrt() * noise, noise, t


def epsilon_loss(pred: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """The epsilon MSE with Min-SNR-gamma weights ``min(SNR(t), gamma) / SNR(t)``: the nearly clean timesteps,
    whose noise is easy to read off and which plain MSE lets dominate the gradient, count less, so the layout and
    colour (decided at high noise) are learned in fewer steps.

    Example:
        >>> a = torch.linspace(0.999, 0.01, 1000)
        >>> float(epsilon_loss(torch.ones(2, 1), torch.zeros(2, 1), torch.tensor([999, 999]), a))  # SNR < 5
        1.0
    """
    a = alphas[t].float()
    snr = a / (1 - a)
    weight = snr.clamp(max=MIN_SNR_GAMMA) / snr
    per_example = F.mse_loss(pred.float(), noise.float(), reduction="none").flatten(1).mean(1)
    return (weight * per_example).mean()


def train_edit(run: Run) -> None:
    """InstructPix2Pix: the 8-channel UNet; VAE (frozen) and text encoder (fine-tuned) from the t2i pipeline."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    dev, rng = run.dev, np.random.default_rng([run.seed, 3])
    t2i, saved = run.out / "text_to_image", run.out / "edit_image"
    # The VAE and text encoder: the edit model's own when resuming it, else the text-to-image model's.
    start = saved if run.resume and (saved / "text_encoder").is_dir() else t2i
    if (start / "text_encoder").is_dir():
        vae = AutoencoderKL.from_pretrained(start / "vae").to(dev)
        text = CLIPTextModel.from_pretrained(start / "text_encoder").to(dev)
    else:
        logger.warning("no %s: the edit model's text encoder starts from scratch", t2i)
        vae, text = _load_component(run, AutoencoderKL, "sd_vae"), toy_models.build_clip_text_encoder().to(dev)
    vae.requires_grad_(False)
    unet = _start(run, lambda: toy_models.build_sd_unet(8), saved / "unet")
    tok, noise_sched = TokenCache(toy_models.tokenizer()), _noise_scheduler()
    alphas = noise_sched.alphas_cumprod.to(dev)
    sf = vae.config.scaling_factor

    def loss(batch: dict) -> torch.Tensor:
        src, tgt = toy_data.to_tensor(batch["source"], dev), toy_data.to_tensor(batch["target"], dev)
        with torch.no_grad():
            lat = vae.encode(tgt).latent_dist.sample() * sf
            cond = vae.encode(src).latent_dist.mode()  # the pipeline's image latents: the mode, unscaled
        # One draw per example: [0, d) no text, [d, 2d) no image, [2d, 3d) neither (the pipeline's zero image).
        r = rng.random(len(lat))
        no_text = (r < EDIT_DROP) | ((r >= 2 * EDIT_DROP) & (r < 3 * EDIT_DROP))
        no_image = (r >= EDIT_DROP) & (r < 3 * EDIT_DROP)
        prompts = ["" if drop else p for drop, p in zip(no_text, batch["prompts"], strict=True)]
        cond = cond * torch.tensor(~no_image, device=dev).view(-1, 1, 1, 1)
        emb = text(_tokens(tok, prompts, dev))[0]
        noisy, noise, t = _ddpm_noise(lat, alphas)
        return epsilon_loss(unet(torch.cat([noisy, cond], dim=1), t, emb).sample, noise, t, alphas)

    pipe = _fit_sd(run, "edit", "edit", 40, vae, text, unet, loss, toy_models.edit_image_pipeline, "edit_image")
    _sample_edit(run, pipe)
    _write_summary(run)


def train_video(run: Run) -> None:
    """Wan image-to-video + connect: UMT5 + transformer on the trained, frozen video VAE."""
    from diffusers import AutoencoderKLWan

    dev, rng = run.dev, np.random.default_rng([run.seed, 4])
    vae = _load_component(run, AutoencoderKLWan, "wan_vae").requires_grad_(False)
    saved = run.out / "image_to_video"
    text = _start(run, toy_models.build_umt5, saved / "text_encoder")
    model = _start(run, toy_models.build_wan_transformer, saved / "transformer")
    tok, shift = TokenCache(toy_models.tokenizer()), toy_models.WAN_SHIFT
    mean, std = _wan_norm(vae, dev)
    batch_size = run.batch_for("video")

    def loss(batch: dict) -> torch.Tensor:
        x = toy_data.to_tensor(batch["clips"], dev)
        connect = torch.tensor(batch["connect"], device=dev)
        with torch.no_grad():
            x0 = (vae.encode(x).latent_dist.mode() - mean) / std
            cond = wan_condition(vae, x[:, :, 0], x[:, :, -1], connect, x.shape[2])
        emb = t5_embeds(tok, text, _drop(list(batch["prompts"]), rng, VIDEO_DROP), dev)
        u = torch.rand(len(x0), device=dev)
        sigma = shift * u / (1 + (shift - 1) * u)  # the scheduler's shifted sigmas, drawn uniformly in u
        s = sigma.view(-1, 1, 1, 1, 1)
        noise = torch.randn_like(x0)
        xt = (1 - s) * x0 + s * noise
        pred = model(
            hidden_states=torch.cat([xt, cond], dim=1), timestep=sigma * 1000, encoder_hidden_states=emb
        ).sample
        return F.mse_loss(pred.float(), (noise - x0).float())

    clips = toy_data.stream("clip", batch_size, run.seed + 50, run.workers)
    train_loop(run, "video", [text, model], loss, clips, ema=True)
    pipe = toy_models.video_pipeline(vae, text, model)
    params = sum(map(toy_models.parameters, (vae, text, model)))
    for role in ("image_to_video", "connect_frames"):
        _save(run, pipe, role, params)
    _sample_video(run, pipe)
    _write_summary(run)


def train_video_decoder(run: Run) -> None:
    """The video autoencoder's decoder alone, from the saved video pipeline's VAE, its encoder frozen: the latents
    (and so the trained transformer, and the latent statistics in the config) stay exactly as they were, while the
    decoded frames get sharper and truer in colour. Saved into both video roles and ``components/wan_vae``."""
    from diffusers import AutoencoderKLWan

    dev, rng = run.dev, np.random.default_rng([run.seed, 5])
    source = run.out / "image_to_video" / "vae"
    if not (source / "config.json").is_file():
        raise SystemExit(f"{source} is missing: train the video model first (--only vae,video), or all jobs")
    vae = AutoencoderKLWan.from_pretrained(source).to(dev)
    vae.requires_grad_(False)
    decoder = [vae.decoder, vae.post_quant_conv]
    for m in decoder:
        m.requires_grad_(True)

    def loss(batch: dict) -> torch.Tensor:
        x = toy_data.to_tensor(batch["clips"], dev)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()  # what the pipelines decode: denoised latents near the mode
        rec = vae.decode(z).sample
        return F.mse_loss(rec.float(), x) + 0.1 * F.l1_loss(rec.float(), x)

    clips = toy_data.stream("clip", run.batch_for("video_decoder"), run.seed + 60, run.workers)
    train_loop(run, "video_decoder", decoder, loss, clips)
    vae.eval()
    for folder in (
        run.out / "image_to_video" / "vae",
        run.out / "connect_frames" / "vae",
        run.out / "components" / "wan_vae",
    ):
        if folder.parent.is_dir():
            save_folder(vae, folder)
    _sample_vae(run, "video_decoder", vae, toy_data.clip_batch(rng, 3)["clips"])
    _write_summary(run)


# ----- samples -----


def _grid(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of (N, H, W, 3) uint8 pictures into one picture, 2 px gaps."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    out = np.full((len(rows) * (h + 2), n * (w + 2), 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, p in enumerate(r):
            out[i * (h + 2) : i * (h + 2) + h, j * (w + 2) : j * (w + 2) + w] = p
    return out


def _write_samples(run: Run, name: str, rows: list[np.ndarray], notes: list[dict]) -> None:
    from PIL import Image

    folder = run.out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_grid(rows)).save(folder / f"{name}.png")
    (folder / f"{name}.json").write_text(json.dumps(notes, indent=2) + "\n")


def _reading(frames: np.ndarray) -> dict:
    from openmora.toy.detect import describe

    d = describe(frames)
    return {"shape": d.shape, "colour": d.colour, "background": d.background, "size": d.size, "motion": d.motion,
            "style": d.style, "found": d.found}  # fmt: skip


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)


@torch.no_grad()
def _sample_vae(run: Run, name: str, vae, pixels: np.ndarray) -> None:
    x = toy_data.to_tensor(pixels, run.dev)
    rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.float().clamp(-1, 1)
    rec = ((rec + 1) * 127.5).round().byte().cpu().numpy()
    if rec.ndim == 4:
        rec, rows = rec.transpose(0, 2, 3, 1), [pixels, rec.transpose(0, 2, 3, 1)]
    else:
        rec = rec.transpose(0, 2, 3, 4, 1)
        rows = [r for pair in zip(pixels, rec, strict=True) for r in pair]
    mae = float(np.abs(rec.astype(np.float32) - pixels.astype(np.float32)).mean())
    run.summary["models"][name]["reconstruction_mae"] = round(mae, 3)
    _write_samples(run, name, rows, [{"reconstruction_mae": mae}])


SAMPLE_PROMPTS = (
    "a large red circle moving left on a blue background",
    "a small yellow square staying still on a gray background",
    "a large white triangle moving up on a green background",
    "a large purple square moving right on a white background in pixel-art style",
)


def _generator(run: Run, seed: int) -> torch.Generator:
    return torch.Generator(run.dev).manual_seed(seed)


def _sample_t2i(run: Run, pipe) -> None:
    from openmora.toy.scenes import parse_prompt

    pics, notes = [], []
    for i, prompt in enumerate(SAMPLE_PROMPTS):
        out = pipe(prompt, height=64, width=64, num_inference_steps=run.sample_steps, guidance_scale=5.0,
                   generator=_generator(run, i), output_type="np").images[0]  # fmt: skip
        pics.append(_uint8(out))
        notes.append({"prompt": prompt, "asked": parse_prompt(prompt).values(), "read": _reading(pics[-1])})
    _write_samples(run, "text_to_image", [np.stack(pics)], notes)


def _sample_edit(run: Run, pipe) -> None:
    from PIL import Image

    from openmora.toy.scenes import Scene, render

    cases = [
        (Scene("circle", "red", "blue"), "make it green"),
        (Scene("square", "yellow", "gray", "small"), "make the background black"),
        (Scene("triangle", "white", "green"), "make it a circle"),
        (Scene("circle", "orange", "black"), "make it pixel-art"),
    ]
    rows, notes = [], []
    for i, (scene, instruction) in enumerate(cases):
        src = render(scene, frames=1)[0]
        out = pipe(instruction, image=Image.fromarray(src), num_inference_steps=run.sample_steps, guidance_scale=7.5,
                   image_guidance_scale=1.5, generator=_generator(run, i), output_type="np").images[0]  # fmt: skip
        rows.append(np.stack([src, _uint8(out)]))
        notes.append({"source": scene.prompt(), "instruction": instruction, "read": _reading(rows[-1][1])})
    _write_samples(run, "edit_image", rows, notes)


def _sample_video(run: Run, pipe) -> None:
    from PIL import Image

    from openmora.toy.scenes import Scene, render

    frames = toy_data.CLIP_FRAMES
    cases = [
        Scene("circle", "red", "blue", "large", "left", speed=1.5),
        Scene("square", "yellow", "gray", "small", "down", speed=2.0),
        Scene("triangle", "white", "green", "large", "right", speed=1.5, style="pixel-art"),
    ]
    rows, notes = [], []
    for i, scene in enumerate(cases):
        clip = render(scene, frames=frames)
        for connect in (False, True):
            out = pipe(image=Image.fromarray(clip[0]), last_image=Image.fromarray(clip[-1]) if connect else None,
                       prompt=scene.prompt(), height=64, width=64, num_frames=frames,
                       num_inference_steps=run.sample_steps, guidance_scale=5.0, generator=_generator(run, i),
                       output_type="np").frames[0]  # fmt: skip
            rows.append(_uint8(out))
            notes.append({"prompt": scene.prompt(), "mode": "connect" if connect else "image_to_video",
                          "read": _reading(rows[-1])})  # fmt: skip
    _write_samples(run, "video", rows, notes)


# ----- command line -----

TRAINERS: dict[str, Callable[[Run], None]] = {
    "vae": train_vae,
    "t2i": train_t2i,
    "edit": train_edit,
    "video": train_video,
    "video_decoder": train_video_decoder,
}


def pack(out: Path, dest: Path) -> dict[str, float]:
    """One .tar.gz per saved role folder, one of ``components/``, one of the logs and samples; returns MB per file."""
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    groups = {name: [out / name] for name in (*ROLES, "components") if (out / name).is_dir()}
    groups["logs"] = [out / n for n in ("log.jsonl", "summary.json", "samples") if (out / n).exists()]
    sizes = {}
    for name, paths in groups.items():
        target = dest / f"{name}.tar.gz"
        with tarfile.open(target, "w:gz") as tar:
            for path in paths:
                tar.add(path, arcname=path.name)
        sizes[target.name] = round(target.stat().st_size / 2**20, 2)
    return sizes


def init_from(weights: Path, out: Path) -> None:
    """Lay out a training folder ``out`` from trained role folders in ``weights`` (as the toy profile ships them:
    ``text_to_image``, ``edit_image``, ``image_to_video``; ``connect_frames`` is the same pipeline), so that
    ``--resume`` continues from them: the role folders, plus ``components/`` (the autoencoders) taken from them.

    Raises:
        ValueError: ``weights`` lacks a role folder, or ``out`` already holds one (nothing is overwritten).
    """
    import shutil

    shipped = ("text_to_image", "edit_image", "image_to_video")
    missing = [r for r in shipped if not (weights / r / "model_index.json").is_file()]
    if missing:
        raise ValueError(f"--init-from {weights}: no {', '.join(missing)} pipeline folder there; accepted is a "
                         f"folder holding {', '.join(shipped)} (e.g. openmora/toy/weights)")  # fmt: skip
    taken = [p.name for p in (*(out / r for r in ROLES), out / "components") if p.exists()]
    if taken:
        raise ValueError(f"--init-from: {out} already holds {', '.join(taken)}; give an empty --out or use --resume")
    for role in shipped:
        shutil.copytree(weights / role, out / role)
    if (weights / "connect_frames" / "model_index.json").is_file():
        shutil.copytree(weights / "connect_frames", out / "connect_frames")
    else:
        shutil.copytree(weights / "image_to_video", out / "connect_frames")
    shutil.copytree(weights / "text_to_image" / "vae", out / "components" / "sd_vae")
    shutil.copytree(weights / "image_to_video" / "vae", out / "components" / "wan_vae")
    logger.info("laid out %s from %s", out, weights)


def _per_model(
    parser: argparse.ArgumentParser, flag: str, text: str, kind: type, accepted: str, zero: bool = False
) -> dict:
    """``MODEL=VALUE,...`` into a dict; a name outside :data:`LR` or a value that is not ``kind`` and > 0 (>= 0
    with ``zero``) is a usage error naming what is accepted."""
    out = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, _, value = (part.strip() for part in item.partition("="))
        try:
            number = kind(value)
        except ValueError:
            number = None
        if name not in LR or number is None or not (number > 0 or (zero and number == 0)):
            parser.error(f"{flag} {item!r}: accepted is MODEL={accepted}, MODEL one of {', '.join(LR)}")
        out[name] = number
    return out


def main(argv: list[str] | None = None) -> dict:
    """Run the jobs ``--only`` names (default all, in order); returns the summary (also in ``--out``/summary.json)."""
    parser = argparse.ArgumentParser(prog="python -m training.train_toy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes-per-model", type=float)
    budget.add_argument("--steps", type=int)
    parser.add_argument(
        "--minutes",
        default="",
        help="per-model minutes over the other limits, e.g. vae_video=3,t2i=2; 0 keeps that model as saved "
        "(models: " + ", ".join(LR) + ")",
    )
    parser.add_argument(
        "--batches", default="", help="per-model batch sizes over --batch's, e.g. vae_video=16,video=32"
    )
    parser.add_argument(
        "--resume", action="store_true", help="start each model from its weights saved in --out, where there are any"
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        help="lay out --out from a folder of trained role folders (e.g. openmora/toy/weights, the shipped ones) "
        "and resume from them; --out must not hold role folders yet",
    )
    parser.add_argument("--lr", default="", help="per-model learning rates over the defaults, e.g. t2i=1e-3")
    parser.add_argument(
        "--batch", type=int, default=32, help="images per step (clips: a quarter for the VAE, half for video)"
    )
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_JOBS),
        help=f"comma-separated jobs from {', '.join(JOBS)} (default: {','.join(DEFAULT_JOBS)})",
    )
    parser.add_argument("--workers", type=int, default=None, help="data processes (default: 0 on CPU, 6 on CUDA)")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument(
        "--pack",
        type=Path,
        help="also write one .tar.gz per role folder, one of components/ and one of the logs and samples into "
        "this folder (a handful of files of a few MB each, to copy back from a machine that returns files only)",
    )
    args = parser.parse_args(argv)
    only = tuple(j.strip() for j in args.only.split(",") if j.strip())
    unknown = [j for j in only if j not in JOBS]
    if unknown or not only:
        parser.error(f"--only {args.only!r}: accepted are comma-separated names from {', '.join(JOBS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but CUDA is not available here; use --device cpu")
    for name, value in (("--steps", args.steps), ("--batch", args.batch), ("--log-every", args.log_every)):
        if value is not None and value < 1:
            parser.error(f"{name} {value}: accepted is a whole number >= 1")
    if args.minutes_per_model is not None and not args.minutes_per_model > 0:
        parser.error(f"--minutes-per-model {args.minutes_per_model}: accepted is a number > 0")
    minutes = _per_model(parser, "--minutes", args.minutes, float, "MINUTES (>= 0; 0 keeps it as saved)", zero=True)
    batches = _per_model(parser, "--batches", args.batches, int, "a whole number >= 1")
    rates = _per_model(parser, "--lr", args.lr, float, "RATE (> 0)")
    for name in (n for n, m in minutes.items() if m == 0 and n not in ("vae_image", "vae_video")):
        parser.error(f"--minutes {name}=0: only vae_image and vae_video can be kept as saved; leave {name}'s job "
                     "out of --only instead")  # fmt: skip
    workers = args.workers if args.workers is not None else (6 if args.device == "cuda" else 0)
    threads = os.environ.get("OPENMORA_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)
    if args.init_from is not None:
        try:
            init_from(args.init_from, args.out)
        except ValueError as err:
            parser.error(str(err))
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args.out, args.device, args.seed, args.minutes_per_model, args.steps, args.batch, only, workers,
              args.log_every, args.sample_steps, minutes, batches, args.resume or args.init_from is not None,
              rates)  # fmt: skip
    if run.resume and (run.out / "summary.json").is_file():
        run.earlier = json.loads((run.out / "summary.json").read_text()).get("models", {})
    for job in JOBS:
        if job in only:
            logger.info("job %s", job)
            TRAINERS[job](run)
            if args.pack:  # after every job: a run cut off later still hands back what it finished
                pack(run.out, args.pack)
    _write_summary(run)
    summary = json.loads((run.out / "summary.json").read_text())
    if args.pack:
        summary["packed"] = pack(run.out, args.pack)
    if summary["total_saved_mb"] > MAX_TOTAL_MB:
        logger.warning("saved weights total %.1f MB, over the %.0f MB budget", summary["total_saved_mb"], MAX_TOTAL_MB)
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = main()
    print(json.dumps({k: result[k] for k in ("models", "roles", "total_saved_mb") if k in result}, indent=2))
