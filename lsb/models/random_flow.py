"""SD3 / FLUX.1 components with random weights: tiny ones of the real classes, and the real architectures.

Used by tests and examples to run the flow pipelines offline (no downloads): the classes are the real
ones (``SD3Transformer2DModel``, ``FluxTransformer2DModel``, ``CLIPTextModelWithProjection``,
``CLIPTextModel``, ``T5EncoderModel``, ``AutoencoderKL`` with a ``shift_factor``,
``FlowMatchEulerDiscreteScheduler``), the CLIP tokenizer is the project's word tokenizer and the T5
tokenizer a small unigram vocabulary built in memory (:func:`build_t5_tokenizer`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import mini_sd
from .random_sd import load_config

#: Tiny VAE: 8x downsampling (64 px -> 8x8 latents), no quant convs (as SD3 / FLUX), a shift_factor.
TINY_VAE_CONFIG = {
    "block_out_channels": [4, 4, 8, 8],
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "norm_num_groups": 2,
    "sample_size": 64,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "scaling_factor": 1.5,
    "shift_factor": 0.1,
}


def build_t5_tokenizer(words=None, model_max_length: int = 512):
    """A ``T5TokenizerFast`` (unigram) whose vocabulary is ``words`` (default: the shapes-world caption words)
    plus single letters, built offline; ids 0/1/2 are <pad>/</s>/<unk> as in T5."""
    from transformers import T5TokenizerFast

    words = sorted({w.lower() for w in (words or mini_sd.caption_vocabulary() + list(mini_sd.TEMPLATE_WORDS))})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [("\u2581" + w, -1.0) for w in words]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def build_t5_encoder(tokenizer, d_model: int, seed: int = 0, **overrides):
    """A small ``T5EncoderModel`` (gated GELU, as T5 v1.1) with ``d_model`` features."""
    from transformers import T5Config, T5EncoderModel

    cfg = {
        "vocab_size": len(tokenizer),
        "d_model": d_model,
        "d_kv": 8,
        "d_ff": 2 * d_model,
        "num_layers": 1,
        "num_heads": 2,
        "feed_forward_proj": "gated-gelu",
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": 0,
        "dropout_rate": 0.0,
    }
    cfg.update(overrides)
    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(**cfg)).eval()  # built, not loaded: eval() as from_pretrained would


def build_clip_encoder(tokenizer, hidden_size: int, projection_dim: int | None, seed: int = 0):
    """A 2-layer CLIP text encoder (``CLIPTextModelWithProjection`` when ``projection_dim`` is given)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection_dim or hidden_size,
        hidden_act="gelu",
        **mini_sd.clip_token_ids(tokenizer),
    )
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection(cfg) if projection_dim else CLIPTextModel(cfg)).eval()


def flow_scheduler(**config):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**config)


def tiny_sd3_components(seed: int = 0, t5: bool = True, patch_size: int = 2) -> dict:
    """``StableDiffusion3Pipeline`` components at toy size (64 px images, 8x8x4 latents, 2x2 patches).

    CLIP-L/G stand-ins of widths 16/24 (projections 16/24 -> pooled 40), a T5 of width 48 =
    ``joint_attention_dim`` (or ``text_encoder_3=None`` with ``t5=False``).
    """
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    tok = mini_sd.build_tokenizer(max_length=77)
    joint = 48
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=patch_size,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=joint,
        caption_projection_dim=16,
        pooled_projection_dim=40,
        pos_embed_max_size=16,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    t5_tok = build_t5_tokenizer() if t5 else None
    return {
        "transformer": transformer,
        "scheduler": flow_scheduler(shift=3.0),
        "vae": vae,
        "text_encoder": build_clip_encoder(tok, 16, 16, seed),
        "tokenizer": tok,
        "text_encoder_2": build_clip_encoder(tok, 24, 24, seed + 1),
        "tokenizer_2": tok,
        "text_encoder_3": build_t5_encoder(t5_tok, joint, seed + 2) if t5 else None,
        "tokenizer_3": t5_tok,
    }


def tiny_flux_components(seed: int = 0, guidance_embeds: bool = True) -> dict:
    """``FluxPipeline`` components at toy size (64 px images, 8x8x4 latents packed to 16 tokens of 16).

    ``guidance_embeds=True`` is a FLUX.1-dev-like (guidance-distilled) transformer, False a schnell-like one.
    """
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    tok = mini_sd.build_tokenizer(max_length=77)
    t5_tok = build_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=16,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(2, 2, 4),
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    scheduler = flow_scheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return {
        "transformer": transformer,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": build_clip_encoder(tok, 16, None, seed),
        "tokenizer": tok,
        "text_encoder_2": build_t5_encoder(t5_tok, 32, seed + 1),
        "tokenizer_2": t5_tok,
    }


def load_flow_config(configs: str | Path, family: str, name: str) -> dict:
    """One component config of ``configs/<family>/<name>.json`` (e.g. ``sd3-medium``, ``transformer``)."""
    return load_config(configs, family, name)


def build_real_transformer(
    configs: str | Path,
    family: str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
):
    """The real SD3 / SD3.5 / FLUX.1 transformer of ``family`` with random weights (``device="meta"``: no memory)."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    cfg = load_flow_config(configs, family, "transformer")
    cls = FluxTransformer2DModel if family.startswith("flux") else SD3Transformer2DModel
    torch.manual_seed(seed)
    with torch.device(device):
        model = cls(**cfg)
    return model.to(dtype)


__all__ = [
    "TINY_VAE_CONFIG",
    "build_clip_encoder",
    "build_real_transformer",
    "build_t5_encoder",
    "build_t5_tokenizer",
    "flow_scheduler",
    "load_flow_config",
    "tiny_flux_components",
    "tiny_sd3_components",
]
