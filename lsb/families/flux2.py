"""FLUX.2 (dev; klein 4B / 9B): a rectified-flow ``Flux2Transformer2DModel`` under a language model: Mistral3 (dev,
``Flux2Pipeline``) or Qwen3 (klein, ``Flux2KleinPipeline``), read in diffusers 0.42.1.

- latents: ``AutoencoderKLFlux2`` (32 channels in the real model), posterior mode, **patchified** 2x2 to
  ``(B, 4C, h/2, w/2)`` (channel order (c, dy, dx)), normalised with the VAE's BatchNorm running statistics
  ``(x - mean) / sqrt(var + eps)`` (no scaling / shift factor), then flattened to tokens ``(B, (h/2)(w/2), 4C)``;
- position ids are 4-D: ``(0, row, col, 0)`` per image token, ``(0, 0, 0, l)`` per text token;
- the transformer takes ``t / 1000`` (sigma) cast to the latents' dtype and predicts the velocity noise - data;
  dev is guidance-distilled (``config.guidance_embeds``: the guidance value, float32, one per row; diffusers'
  default 4.0, no negative prompt); klein has no guidance embedding;
- klein's CFG: the base models (``is_distilled`` False in ``model_index.json``) use ``neg + s (pos - neg)`` against
  "" when ``s > 1``; the distilled ones take none (a scale given to them is refused);
- grid: ``linspace(1, 1/T, T)`` with ``mu`` from ``compute_empirical_mu(tokens, T)`` (it depends on T).
"""

from __future__ import annotations

from .record import EncoderSlot, ModelFamily, has_components

QWEN3_KLEIN = EncoderSlot("qwen3", "tokenizer", "text_encoder")  # dev: a Mistral3 in the same slot

#: Flux2Pipeline's default distilled guidance (FLUX.2-dev)
DEFAULT_DISTILLED_GUIDANCE = 4.0

#: FlowEdit has no published FLUX.2 setting: FLUX.1's grid and start level (T = 28, n_max = 24) with CFG 1.5 / 4.0
#: (Flux2KleinPipeline's default guidance 4.0) on klein base models, none on distilled ones; on dev the scales are the
#: distilled guidance of each branch, FLUX.1-dev's published 1.5 / 5.5 (``DEV_FLOWEDIT_GUIDANCE``).
FLOWEDIT_DEFAULTS = {
    "num_inference_steps": 28,
    "n_max": 24,
    "n_min": 0,
    "n_avg": 1,
    "source_guidance_scale": 1.5,
    "target_guidance_scale": 4.0,
}
DEV_FLOWEDIT_GUIDANCE = (1.5, 5.5)


def network_call(transformer, hidden_states, timestep, cond: dict):
    """The velocity tokens for latent tokens ``hidden_states`` (B, N, 4C) at the scheduler's ``timestep`` (sigma x
    1000), as ``Flux2KleinPipeline`` calls the transformer."""
    import torch

    t = torch.as_tensor(timestep, device=hidden_states.device).expand(hidden_states.shape[0]).to(hidden_states.dtype)
    return transformer(
        hidden_states=hidden_states,
        timestep=t / 1000,
        guidance=cond.get("guidance"),
        encoder_hidden_states=cond["encoder_hidden_states"],
        txt_ids=cond["txt_ids"],
        img_ids=cond["img_ids"],
        return_dict=False,
    )[0]


def condition(prompt_embeds, token_height: int, token_width: int, guidance=None) -> dict:
    """The conditioning of one call on ``B = len(prompt_embeds)`` rows of a ``token_height`` x ``token_width``
    (patchified) latent: text embeddings, text ids ``(B, L, 4)`` = (0, 0, 0, l), image ids ``(B, h w, 4)`` =
    (0, row, col, 0) (int64, as diffusers builds them), and dev's distilled guidance (a number or one per row;
    None for klein)."""
    import torch

    rows, length = prompt_embeds.shape[:2]
    one = torch.arange(1)
    txt = torch.cartesian_prod(one, one, one, torch.arange(length))
    img = torch.cartesian_prod(one, torch.arange(token_height), torch.arange(token_width), one)
    device = prompt_embeds.device
    if guidance is not None:
        guidance = torch.as_tensor(guidance, device=device, dtype=torch.float32)
        guidance = guidance.expand(rows) if guidance.ndim == 0 else guidance
    return {
        "encoder_hidden_states": prompt_embeds,
        "txt_ids": txt.unsqueeze(0).expand(rows, -1, -1).to(device),
        "img_ids": img.unsqueeze(0).expand(rows, -1, -1).to(device),
        "guidance": guidance,
    }


def matches(index: dict) -> bool:
    """A FLUX.2 transformer with its text encoder, tokenizer (or processor) and VAE."""
    return has_components(index, FAMILY)


FAMILY = ModelFamily(
    name="flux2",
    label="FLUX.2",
    base="flow",
    network="transformer",
    network_classes=("Flux2Transformer2DModel",),
    pipeline_classes=(
        "Flux2Pipeline",
        "Flux2KleinPipeline",
        "LatentSchrodingerBridgeFlux2Pipeline",
        "FlowEditFlux2Pipeline",
    ),
    components=("vae", "text_encoder", "tokenizer", "transformer", "scheduler"),
    optional_components=(),
    encoder_slots=(QWEN3_KLEIN,),
    latent_patch=2,  # patchified 2x2 outside the transformer (its config patch_size is 1)
    default_size=1024,
    dtypes={"cuda": "bfloat16", "mps": "bfloat16", "cpu": "float32"},
    float16_unstable="",
    pipelines={
        "lsb": "lsb_pipelines.lsb_flux2.pipeline:LatentSchrodingerBridgeFlux2Pipeline",
        "flowedit": "lsb_pipelines.flowedit_flux2.pipeline:FlowEditFlux2Pipeline",
    },
    method_defaults={"flowedit": FLOWEDIT_DEFAULTS},
    text_to_image="diffusers:Flux2Pipeline",  # prompt optimization does not run on this family's LLM encoder
    encode_prompt="lsb.prompts.encoding_flux2:encode_prompt_flux2",
    network_call=network_call,
    condition=condition,
    matches=matches,
)

__all__ = [
    "DEFAULT_DISTILLED_GUIDANCE",
    "DEV_FLOWEDIT_GUIDANCE",
    "FAMILY",
    "FLOWEDIT_DEFAULTS",
    "QWEN3_KLEIN",
    "condition",
    "matches",
    "network_call",
]
