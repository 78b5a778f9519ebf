"""The ``toy`` models' configs: the tiny profile's pipeline classes, sized to learn the toy scenes at 64x64.

Sizes are chosen so that the four saved pipelines stay under 30 MB of float32 safetensors together (the video
pipeline is saved twice, as ``image_to_video`` and ``connect_frames``) and a CPU thread generates a 9-frame clip in
seconds. The tokenizers are the tiny profile's (byte-level, no vocabulary file); the text encoders learn the closed
toy vocabulary from scratch with the denoisers.

One Wan transformer serves both video roles, so it takes no CLIP image embedding (``image_dim=None``, as in Wan 2.2
I2V): with a first+last-frame image embedding (``pos_embed_seq_len``) the pipeline cannot run without a last frame,
and without it the pipeline cannot run with one. The frames condition the transformer through the latents and the
mask, which the pipeline builds the same way in both modes.

Example:
    >>> from training.toy_models import build_sd_vae, parameters
    >>> parameters(build_sd_vae()) > 0
    True
"""

from __future__ import annotations

import torch

from openmora.tiny_models import _tokenizer

SEED = 0
WAN_SHIFT = 3.0  # flow-matching timestep shift; Wan uses 3 at 480p, 5-7 at 720p: small latents need little


def parameters(model: torch.nn.Module) -> int:
    """The number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def tokenizer():
    """The tiny profile's byte-level CLIP tokenizer (also the Wan pipeline's, as in ``tiny_models``)."""
    return _tokenizer()


def build_sd_vae():
    """AutoencoderKL with 4x downsampling (16x16x4 latents at 64x64): pixel-art cells are 4 px, one latent each."""
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED)
    return AutoencoderKL(
        block_out_channels=[32, 32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=16,
        mid_block_add_attention=False,
    )


def build_clip_text_encoder():
    """A 4-layer CLIP text transformer; vocabulary and positions as the tiny tokenizer needs (514 tokens, 77)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(SEED)
    return CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=64,
            intermediate_size=256,
            num_attention_heads=4,
            num_hidden_layers=4,
            vocab_size=600,
            max_position_embeddings=77,
        )
    )


def build_sd_unet(in_channels: int):
    """UNet2DConditionModel on 16x16 latents: 4 input channels for text-to-image, 8 for InstructPix2Pix."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(SEED)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 48, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def build_sd_scheduler():
    """Euler with the DDPM linear betas (terminal SNR near zero, so pure noise is a fair start at 64x64) and
    trailing timesteps (the first step starts at t=999, where training saw pure-ish noise)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="epsilon",
        timestep_spacing="trailing",
    )


WAN_Z = 8  # video latent channels


def build_wan_vae():
    """AutoencoderKLWan with 4x spatial, 2x temporal compression (9 frames -> 5 latent frames of 16x16x8).

    Wan's own 8x/4x (3 latent frames of 8x8) left a 64x64 toy clip too few latents: a VAE of this size trained for
    minutes blurred the shapes and shifted hues, and every video model inherits what its autoencoder loses.
    """
    from diffusers import AutoencoderKLWan

    torch.manual_seed(SEED)
    return AutoencoderKLWan(
        base_dim=12,
        z_dim=WAN_Z,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * WAN_Z,
        latents_std=[1.0] * WAN_Z,
        scale_factor_spatial=4,
        scale_factor_temporal=2,
    )


def build_umt5():
    """A 3-layer UMT5 encoder over the tiny tokenizer's ids."""
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(SEED)
    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=600,
            d_model=64,
            d_kv=16,
            d_ff=256,
            num_layers=3,
            num_heads=4,
            relative_attention_num_buckets=16,
            relative_attention_max_distance=64,
            pad_token_id=1,
            eos_token_id=1,
            decoder_start_token_id=1,
        )
    )


def build_wan_transformer():
    """WanTransformer3DModel: 18 input channels (8 noisy + 2 mask, one per frame of the autoencoder's temporal
    factor, + 8 condition), 2x2 patches (64 tokens a latent frame), no image embedding."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(SEED)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=4,
        attention_head_dim=24,
        in_channels=2 * WAN_Z + 2,
        out_channels=WAN_Z,
        text_dim=64,
        freq_dim=64,
        ffn_dim=256,
        num_layers=4,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
        image_dim=None,
    )


def build_wan_scheduler():
    """Flow-matching Euler with :data:`WAN_SHIFT`; training draws its sigmas the same way (see ``train_toy``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=WAN_SHIFT)


def _sd_pipeline(cls_name: str, vae, text_encoder, unet):
    import diffusers

    return getattr(diffusers, cls_name)(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer(),
        unet=unet,
        scheduler=build_sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def text_to_image_pipeline(vae, text_encoder, unet):
    return _sd_pipeline("StableDiffusionPipeline", vae, text_encoder, unet)


def edit_image_pipeline(vae, text_encoder, unet):
    return _sd_pipeline("StableDiffusionInstructPix2PixPipeline", vae, text_encoder, unet)


def video_pipeline(vae, text_encoder, transformer):
    from diffusers import WanImageToVideoPipeline

    return WanImageToVideoPipeline(
        tokenizer=tokenizer(),
        text_encoder=text_encoder,
        vae=vae,
        scheduler=build_wan_scheduler(),
        image_processor=None,
        image_encoder=None,
        transformer=transformer,
    )
