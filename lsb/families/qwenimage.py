"""Qwen-Image: a rectified-flow ``QwenImageTransformer2DModel`` under Qwen2.5-VL (read in diffusers'
``QwenImagePipeline``, 0.42.1).

- latents are 5-D VAE latents ``(B, C, 1, H/8, W/8)`` (a video VAE with one frame), normalised per channel with the
  VAE config's ``latents_mean`` / ``latents_std``: ``(z - mean) / std``; the transformer sees them packed in 2x2
  patches ``(B, (h/2)(w/2), 4C)`` (FLUX.1's packing) with RoPE from ``img_shapes = [[(1, h/2, w/2)]] * B``;
- the text is the last hidden states of the describing template (:mod:`lsb.prompts.encoding_qwenimage`) with an
  ``encoder_hidden_states_mask`` (None when every token is real);
- the transformer takes ``t / 1000`` (sigma) cast to the latents' dtype and predicts the velocity noise - data;
- CFG is "true CFG" only with a negative prompt: ``neg + s (pos - neg)`` rescaled per token to the conditional
  prediction's norm (:func:`true_cfg`), ``true_cfg_scale`` 4.0 by default.
"""

from __future__ import annotations

from .record import EncoderSlot, ModelFamily, has_components

QWEN25VL = EncoderSlot("qwen25vl", "tokenizer", "text_encoder")

#: FlowEdit has no published Qwen-Image setting (FlowEdit issue #28 asks for one): FLUX.1's grid and start level
#: (T = 28, n_max = 24) with true CFG against "" on both branches (scale 1.5 source, 4.0 target: diffusers' default).
FLOWEDIT_DEFAULTS = {
    "num_inference_steps": 28,
    "n_max": 24,
    "n_min": 0,
    "n_avg": 1,
    "source_guidance_scale": 1.5,
    "target_guidance_scale": 4.0,
}


def network_call(transformer, hidden_states, timestep, cond: dict):
    """The packed velocity for packed latents ``hidden_states`` (B, N, 4C) at the scheduler's ``timestep`` (sigma x
    1000), as ``QwenImagePipeline`` calls it: ``t`` cast to the latents' dtype, divided by 1000."""
    import torch

    t = torch.as_tensor(timestep, device=hidden_states.device).expand(hidden_states.shape[0]).to(hidden_states.dtype)
    return transformer(
        hidden_states=hidden_states,
        timestep=t / 1000,
        guidance=None,
        encoder_hidden_states_mask=cond["encoder_hidden_states_mask"],
        encoder_hidden_states=cond["encoder_hidden_states"],
        img_shapes=cond["img_shapes"],
        return_dict=False,
    )[0]


def condition(prompt_embeds, prompt_mask, latent_height: int, latent_width: int) -> dict:
    """The conditioning of one call on ``B = len(prompt_embeds)`` packed latents of an ``h`` x ``w`` VAE latent."""
    rows = prompt_embeds.shape[0]
    return {
        "encoder_hidden_states": prompt_embeds,
        "encoder_hidden_states_mask": prompt_mask,
        "img_shapes": [[(1, latent_height // 2, latent_width // 2)]] * rows,
    }


def true_cfg(pos, neg, scale: float):
    """QwenImagePipeline's true CFG: ``neg + s (pos - neg)``, rescaled per token to ``pos``'s norm."""
    import torch

    comb = neg + scale * (pos - neg)
    return comb * (torch.norm(pos, dim=-1, keepdim=True) / torch.norm(comb, dim=-1, keepdim=True))


def matches(index: dict) -> bool:
    return has_components(index, FAMILY)


FAMILY = ModelFamily(
    name="qwenimage",
    label="Qwen-Image",
    base="flow",
    network="transformer",
    network_classes=("QwenImageTransformer2DModel",),
    pipeline_classes=(
        "QwenImagePipeline",
        "QwenImageImg2ImgPipeline",
        "LatentSchrodingerBridgeQwenImagePipeline",
        "FlowEditQwenImagePipeline",
    ),
    components=("vae", "text_encoder", "tokenizer", "transformer", "scheduler"),
    optional_components=(),
    encoder_slots=(QWEN25VL,),
    latent_patch=1,  # the 2x2 packing is the transformer config's patch_size (2), which pixel_multiple counts
    default_size=1024,  # QwenImagePipeline's default 128 latents x 8
    dtypes={"cuda": "bfloat16", "mps": "bfloat16", "cpu": "float32"},
    float16_unstable="",
    pipelines={
        "lsb": "lsb_pipelines.lsb_qwenimage.pipeline:LatentSchrodingerBridgeQwenImagePipeline",
        "flowedit": "lsb_pipelines.flowedit_qwenimage.pipeline:FlowEditQwenImagePipeline",
        "sdedit": "diffusers:QwenImageImg2ImgPipeline",
    },
    method_defaults={"flowedit": FLOWEDIT_DEFAULTS},
    text_to_image="diffusers:QwenImagePipeline",  # prompt optimization does not run on this family's LLM encoder
    encode_prompt="lsb.prompts.encoding_qwenimage:encode_prompt_qwenimage",
    network_call=network_call,
    condition=condition,
    matches=matches,
)

__all__ = ["FAMILY", "FLOWEDIT_DEFAULTS", "QWEN25VL", "condition", "matches", "network_call", "true_cfg"]
