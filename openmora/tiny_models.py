"""The embedded ``tiny`` models: small random-weight diffusers pipelines built from configs in code.

Each role gets a real pipeline of the same class the ``mora`` profile uses (Stable Diffusion, InstructPix2Pix,
Stable Video Diffusion, Wan image-to-video with a last frame), shrunk so that it runs at 96x64 on one CPU thread
in about a second. Weights are random (fixed seeds), so pictures are noise, but every stage -- tokenizer, text and
image encoders, UNet/transformer, scheduler, VAE -- is the real code. A pipeline is built once, written with
``save_pretrained`` into the cache, and from then on loaded with ``from_pretrained`` like any real model.

Example:
    >>> from openmora.tiny_models import ensure_tiny_model
    >>> path = ensure_tiny_model("text_to_image")  # doctest: +SKIP
    >>> (path / "model_index.json").exists()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

# The cache folder: openmora.settings is the one place that reads OPENMORA_CACHE (still importable from here).
from openmora.settings import cache_root

logger = logging.getLogger(__name__)

# Bump when a builder changes, so caches made by older code are not reused.
TINY_VERSION = "v1"
_SEED = 0


def _bytes_to_unicode() -> dict[int, str]:
    # The byte-to-printable-character map of GPT-2/CLIP byte-level BPE.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _tokenizer():
    """A CLIP BPE tokenizer over single bytes (no merges): every text tokenizes, no vocabulary file needed."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    for ch in chars:
        vocab.setdefault(ch + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)  # 514 tokens


def clip_image_processor(size: int):
    """CLIP's image preprocessing (OpenAI mean/std, bicubic, centre crop) at ``size``: Wan's image encoder input."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        crop_size=size,
        do_center_crop=True,
        do_normalize=True,
        do_resize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        resample=3,
        size=size,
    )


def _clip_text_encoder(hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(_SEED)
    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=600,
        max_position_embeddings=77,
    )
    return CLIPTextModel(config).eval()


def _sd_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(_SEED)
    return AutoencoderKL(
        # Four levels give the real 8x spatial downscale, so the UNet works on 8x12 latents at 96x64.
        block_out_channels=[32, 32, 32, 32],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=32,
    ).eval()


def _sd_unet(in_channels: int):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(_SEED)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    ).eval()


def _sd_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )


def build_text_to_image():
    """Stable Diffusion (the same pipeline class as SD 1.x/2.x) at toy size."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=_sd_vae(),
        text_encoder=_clip_text_encoder(),
        tokenizer=_tokenizer(),
        unet=_sd_unet(in_channels=4),
        scheduler=_sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def build_edit_image():
    """InstructPix2Pix: the UNet takes the noisy latents and the source image's latents (8 channels)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    return StableDiffusionInstructPix2PixPipeline(
        vae=_sd_vae(),
        text_encoder=_clip_text_encoder(),
        tokenizer=_tokenizer(),
        unet=_sd_unet(in_channels=8),
        scheduler=_sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def build_image_to_video():
    """Stable Video Diffusion (img2vid) at toy size, with SVD's own scheduler settings."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(_SEED)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=8,
        projection_class_embeddings_input_dim=96,
        addition_time_embed_dim=32,
    ).eval()
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    torch.manual_seed(_SEED)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=[32, 32, 32, 32],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        latent_channels=4,
    ).eval()
    torch.manual_seed(_SEED)
    # SVD resizes the conditioning image to 224x224 before CLIP, so the vision tower must take 224.
    vision = CLIPVisionConfig(
        hidden_size=32,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=224,
        intermediate_size=37,
        patch_size=32,
    )
    image_encoder = CLIPVisionModelWithProjection(vision).eval()
    feature_extractor = CLIPImageProcessor(crop_size=224, size=224)
    return StableVideoDiffusionPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler, feature_extractor=feature_extractor
    )


def build_connect_frames():
    """Wan 2.1 image-to-video with a last frame (Wan's first+last-frame mode) at toy size."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(_SEED)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()
    torch.manual_seed(_SEED)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=600,
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=1,
            eos_token_id=1,
            decoder_start_token_id=1,
        )
    ).eval()
    image_size, patch = 32, 4
    image_tokens = (image_size // patch) ** 2 + 1  # patches + CLS
    torch.manual_seed(_SEED)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=36,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=4,
        # First+last-frame mode: the image embeddings of both frames are concatenated.
        pos_embed_seq_len=2 * image_tokens,
    ).eval()
    torch.manual_seed(_SEED)
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=4,
            projection_dim=4,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            intermediate_size=16,
            patch_size=patch,
        )
    ).eval()
    image_processor = clip_image_processor(image_size)
    return WanImageToVideoPipeline(
        tokenizer=_tokenizer(),
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        image_processor=image_processor,
        image_encoder=image_encoder,
        transformer=transformer,
    )


BUILDERS: dict[str, Callable] = {
    "text_to_image": build_text_to_image,
    "edit_image": build_edit_image,
    "image_to_video": build_image_to_video,
    "connect_frames": build_connect_frames,
}


def ensure_tiny_model(name: str, cache_dir: Path | None = None) -> Path:
    """Return the folder of tiny model ``name``, building and saving it first if the cache lacks it.

    The folder appears atomically (built in a temporary sibling, then renamed), so an interrupted build never
    leaves a half-written model behind.

    Args:
        name: one of ``BUILDERS`` (``text_to_image``, ``edit_image``, ``image_to_video``, ``connect_frames``).
        cache_dir: where tiny models live; default ``cache_root()/tiny-<version>``.
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(BUILDERS)}")
    root = Path(cache_dir) if cache_dir else cache_root() / f"tiny-{TINY_VERSION}"
    target = root / name
    if (target / "model_index.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    logger.info("building tiny %s model into %s (once)", name, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        with torch.no_grad():
            BUILDERS[name]().save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            # Another process built it meanwhile; theirs is as good as ours.
            if not (target / "model_index.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
