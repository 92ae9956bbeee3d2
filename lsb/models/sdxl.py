"""Stable Diffusion XL shaped components: a tiny random model for tests and examples, and the real architecture.

SDXL conditions its UNet on two CLIP text encoders (the penultimate hidden states of CLIP-L and OpenCLIP-bigG
concatenated along the feature axis), the pooled projection of the second one and six micro-conditioning numbers
(original size, crop corner, target size), the last two through ``addition_embed_type="text_time"``:

    projection_class_embeddings_input_dim = 6 * addition_time_embed_dim + text_encoder_2.config.projection_dim

:func:`tiny_sdxl_components` builds that with the real classes (``UNet2DConditionModel``, ``AutoencoderKL``,
``CLIPTextModel``, ``CLIPTextModelWithProjection``, the SDXL ``EulerDiscreteScheduler``) at toy widths for 64 px
images (latents 4 x 8 x 8); stock ``StableDiffusionXLPipeline(**components)`` runs it on CPU in well under a
second. :func:`real_sdxl_components` builds the published architecture (``shared/configs/sdxl``; 2567M-parameter
UNet) with random weights. Both use the project's offline word tokenizer for the two tokenizers (vocabulary
sizes adjusted), since the CLIP BPE files cannot be downloaded here.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch

from . import mini_sd

#: The scheduler SDXL base ships (shared/configs/sdxl/scheduler.json).
SDXL_SCHEDULER_CONFIG = dict(
    _class_name="EulerDiscreteScheduler",
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
    prediction_type="epsilon",
    timestep_spacing="leading",
    interpolation_type="linear",
    use_karras_sigmas=False,
    trained_betas=None,
)

#: The trained VAE of the embedded mini SD (lsb.MINI_SD/vae), reused by the tiny SDXL model.
EMBEDDED_VAE = Path(__file__).resolve().parents[1] / "assets" / "mini-sd" / "vae"

#: Toy widths: text encoders of 16 and 24 features (cross-attention 40), pooled projection 8, time embeds 4.
TINY_TEXT_CONFIG = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    projection_dim=16,
    hidden_act="quick_gelu",
)
TINY_TEXT_2_CONFIG = dict(TINY_TEXT_CONFIG, hidden_size=24, intermediate_size=48, projection_dim=8, hidden_act="gelu")
TINY_TIME_EMBED_DIM = 4


def _text_config(tokenizer, cfg: dict):
    from transformers import CLIPTextConfig

    cfg = dict(cfg)
    cfg.update(mini_sd.clip_token_ids(tokenizer), max_position_embeddings=tokenizer.model_max_length)
    return CLIPTextConfig(**cfg)


def tiny_sdxl_components(
    prediction_type: str = "epsilon", seed: int = 0, force_upcast: bool = True, vae: str = "embedded"
) -> dict:
    """``vae``, ``text_encoder``, ``text_encoder_2``, ``tokenizer``, ``tokenizer_2``, ``unet``, ``scheduler`` of a tiny
    SDXL-shaped model (64 px images, latents 4 x 8 x 8), built with SDXL's classes in about a second.

    UNet and text encoders are random. ``vae="embedded"`` (default) is the trained 64 px VAE of the embedded mini SD
    (:data:`lsb.MINI_SD`), so that decoded images are images (a random decoder amplifies a 1 % latent change into a
    0.5 pixel change); ``vae="random"`` a random AutoencoderKL with SDXL's ``scaling_factor`` 0.13025.
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tok, tok_2 = mini_sd.build_tokenizer(), mini_sd.build_tokenizer()
    torch.manual_seed(seed)
    te = CLIPTextModel(_text_config(tok, TINY_TEXT_CONFIG))
    torch.manual_seed(seed + 1)
    te_2 = CLIPTextModelWithProjection(_text_config(tok_2, TINY_TEXT_2_CONFIG))
    cross = TINY_TEXT_CONFIG["hidden_size"] + TINY_TEXT_2_CONFIG["hidden_size"]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        cross_attention_dim=cross,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TINY_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * TINY_TIME_EMBED_DIM + TINY_TEXT_2_CONFIG["projection_dim"],
        norm_num_groups=4,
    )
    if vae == "embedded":
        vae = AutoencoderKL.from_pretrained(str(EMBEDDED_VAE), force_upcast=force_upcast)
    elif vae == "random":
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            block_out_channels=[4, 4, 8, 8],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            latent_channels=4,
            norm_num_groups=2,
            sample_size=64,
            scaling_factor=0.13025,
            force_upcast=force_upcast,
        )
    else:
        raise ValueError(f"vae must be 'embedded' or 'random', got {vae!r}")
    cfg = dict(SDXL_SCHEDULER_CONFIG, prediction_type=prediction_type)
    return {
        "vae": vae,
        "text_encoder": te,
        "text_encoder_2": te_2,
        "tokenizer": tok,
        "tokenizer_2": tok_2,
        "unet": unet,
        "scheduler": EulerDiscreteScheduler.from_config(cfg),
    }


def save_tiny_sdxl(path: str | Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Write the tiny model as a stock ``StableDiffusionXLPipeline`` folder (the layout of an SDXL checkpoint)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(prediction_type, seed), add_watermarker=False)
    pipe.save_pretrained(path)
    return Path(path)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def real_sdxl_components(configs: str | Path, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict:
    """The published SDXL base architecture (``configs/sdxl/*.json``) with random weights, built directly in ``dtype``
    (bfloat16 halves the 10 GB a float32 UNet needs). Tokenizers: the offline word tokenizer at 77 tokens."""
    import json

    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(configs) / "sdxl"

    def cfg(name):
        return json.loads((folder / f"{name}.json").read_text())

    tok, tok_2 = mini_sd.build_tokenizer(max_length=77), mini_sd.build_tokenizer(max_length=77)
    torch.manual_seed(seed)
    with _default_dtype(dtype):
        unet = UNet2DConditionModel(**cfg("unet"))
        vae = AutoencoderKL(**cfg("vae"))
        te = CLIPTextModel(_text_config(tok, cfg("text_encoder")))
        te_2 = CLIPTextModelWithProjection(_text_config(tok_2, cfg("text_encoder_2")))
    scfg = cfg("scheduler")
    return {
        "vae": vae,
        "text_encoder": te,
        "text_encoder_2": te_2,
        "tokenizer": tok,
        "tokenizer_2": tok_2,
        "unet": unet,
        "scheduler": EulerDiscreteScheduler.from_config(copy.deepcopy(scfg)),
    }


__all__ = ["SDXL_SCHEDULER_CONFIG", "real_sdxl_components", "save_tiny_sdxl", "tiny_sdxl_components"]
