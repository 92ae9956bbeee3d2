"""Z-Image (Turbo): a rectified-flow ``ZImageTransformer2DModel`` under one Qwen3 language model.

What differs from SD3 / FLUX.1 (read in diffusers' ``ZImagePipeline``, 0.42.1):

- the transformer takes **lists**: one ``(C, 1, h, w)`` latent per image (a frame axis of 1) and one caption tensor
  per prompt of its own length (the prompt's real tokens, :mod:`lsb.prompts.encoding_zimage`); it patchifies 2x2
  itself, so latents stay unpacked ``(B, C, h, w)`` and image sides are multiples of 16 px;
- its timestep is **1 - sigma** (``(1000 - t) / 1000`` of the scheduler's ``t = sigma x 1000``), and its output is
  **data - noise**: the pipeline negates the stacked output to get the velocity noise - data the flow-matching
  scheduler steps with. Both live only in :func:`network_call`;
- latents are FLUX.1's VAE latents ``(mode - shift_factor) * scaling_factor``;
- CFG, when used, is ``pos + s (pos - neg)`` against the negative prompt (default ""), so diffusers' scale ``s`` is
  a CFG weight ``w = s + 1``; Z-Image-Turbo is distilled and runs at ``guidance_scale=0`` (no negative pass);
- the grid is ``sigmas = linspace(1, 1/T, T)`` with the scheduler's static shift (Turbo: 3.0).
"""

from __future__ import annotations

from .record import EncoderSlot, ModelFamily, has_components

QWEN3 = EncoderSlot("qwen3", "tokenizer", "text_encoder")

#: FlowEdit has no published Z-Image setting: Turbo's own 8-step grid, editing from level 7 of 8 (about FLUX's
#: 24/28 start), no CFG on either branch (Turbo is guidance-distilled: diffusers runs it at guidance_scale 0).
FLOWEDIT_DEFAULTS = {
    "num_inference_steps": 8,
    "n_max": 7,
    "n_min": 0,
    "n_avg": 1,
    "source_guidance_scale": 0.0,
    "target_guidance_scale": 0.0,
}


def network_call(transformer, hidden_states, timestep, cond: dict):
    """The velocity (noise - data) for latents ``hidden_states`` (B, C, h, w) at the scheduler's ``timestep`` (sigma
    x 1000): the transformer takes the list of (C, 1, h, w) latents, ``(1000 - timestep) / 1000`` per row and the
    caption list ``cond["cap_feats"]`` (one per row), and predicts data - noise, negated here as ``ZImagePipeline``
    negates it."""
    import torch

    t = torch.as_tensor(timestep, device=hidden_states.device).expand(hidden_states.shape[0])
    latents = list(hidden_states.unsqueeze(2).unbind(dim=0))
    out = transformer(latents, (1000 - t) / 1000, cond["cap_feats"], return_dict=False)[0]
    return -torch.stack([o.float() for o in out]).squeeze(2).to(hidden_states.dtype)


def condition(cap_feats) -> dict:
    """The conditioning of one transformer call: the caption features, one ``(tokens_i, cap_feat_dim)`` tensor per
    latent row (a list; lengths may differ)."""
    return {"cap_feats": list(cap_feats)}


def matches(index: dict) -> bool:
    """A Z-Image transformer with its Qwen3 encoder, tokenizer and VAE."""
    return has_components(index, FAMILY)


FAMILY = ModelFamily(
    name="zimage",
    label="Z-Image",
    base="flow",
    network="transformer",
    network_classes=("ZImageTransformer2DModel",),
    pipeline_classes=(
        "ZImagePipeline",
        "ZImageImg2ImgPipeline",
        "LatentSchrodingerBridgeZImagePipeline",
        "FlowEditZImagePipeline",
    ),
    components=("vae", "text_encoder", "tokenizer", "transformer", "scheduler"),
    optional_components=(),
    encoder_slots=(QWEN3,),
    latent_patch=2,  # the transformer patchifies 2x2 itself: sides multiples of 2 x the VAE factor
    default_size=1024,  # ZImagePipeline's default: the transformer config has no sample size
    dtypes={"cuda": "bfloat16", "mps": "bfloat16", "cpu": "float32"},
    float16_unstable="",
    pipelines={
        "lsb": "lsb_pipelines.lsb_zimage.pipeline:LatentSchrodingerBridgeZImagePipeline",
        "flowedit": "lsb_pipelines.flowedit_zimage.pipeline:FlowEditZImagePipeline",
        "sdedit": "diffusers:ZImageImg2ImgPipeline",
    },
    method_defaults={"flowedit": FLOWEDIT_DEFAULTS},
    text_to_image="diffusers:ZImagePipeline",  # prompt optimization does not run on this family's LLM encoder
    encode_prompt="lsb.prompts.encoding_zimage:encode_prompt_zimage",
    network_call=network_call,
    condition=condition,
    matches=matches,
)

__all__ = ["FAMILY", "FLOWEDIT_DEFAULTS", "QWEN3", "condition", "matches", "network_call"]
