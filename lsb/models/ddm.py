"""The two-head output convention of a DDM network on plain diffusers UNets.

A DDM network predicts the attenuation parameters (C for the constant attenuation, K and C for the
linear one) and the noise eps. We keep diffusers' own model classes (UNet2DConditionModel,
UNet2DModel; they save and load with ``from_pretrained`` unchanged) and split the output CHANNELS:

    out_channels = heads * c,   c = latent (or pixel) channels
    constant:  output[:, 0:c] = C,                        output[:, c:2c] = eps          (heads = 2)
    linear:    output[:, 0:c] = K,  output[:, c:2c] = C,  output[:, 2c:3c] = eps        (heads = 3)

An image-conditioned model (super-resolution, inpainting) takes the condition's latent concatenated
after the noisy latent on the channel axis: in_channels = 2 c, channels [0:c] = x_t, [c:2c] = condition.
The split is the last ``heads * c`` channels' order above; nothing else about the UNet changes, so a
trained DDM UNet is an ordinary diffusers folder.
"""

from __future__ import annotations

import torch

from ..bridges.ddm import check_attenuation

HEADS = {"constant": 2, "linear": 3}


def num_heads(attenuation: str) -> int:
    """Number of c-channel blocks in the output: 2 (C, eps) or 3 (K, C, eps)."""
    return HEADS[check_attenuation(attenuation)]


def split_heads(model_output: torch.Tensor, attenuation: str) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(K or None, C, eps) from a (B, heads * c, H, W) output."""
    h = num_heads(attenuation)
    if model_output.ndim < 2 or model_output.shape[1] % h:
        raise ValueError(
            f"a {attenuation} DDM output needs a channel count divisible by {h}, got shape {tuple(model_output.shape)}"
        )
    parts = model_output.chunk(h, dim=1)
    return (parts[0], parts[1], parts[2]) if h == 3 else (None, parts[0], parts[1])


def merge_heads(C: torch.Tensor, eps: torch.Tensor, K: torch.Tensor | None = None) -> torch.Tensor:
    """The inverse of :func:`split_heads` (e.g. to build a training target)."""
    return torch.cat([C, eps] if K is None else [K, C, eps], dim=1)


def ddm_unet_channels(latent_channels: int, attenuation: str, image_conditioned: bool = False) -> dict:
    """``in_channels`` / ``out_channels`` of a DDM UNet on ``latent_channels`` latents."""
    return {
        "in_channels": latent_channels * (2 if image_conditioned else 1),
        "out_channels": latent_channels * num_heads(attenuation),
    }


def check_ddm_unet(unet, latent_channels: int, attenuation: str) -> bool:
    """Validate a UNet against the convention; returns whether it is image-conditioned.

    Raises ValueError naming the mismatch (e.g. a plain epsilon UNet given to a DDM scheduler).
    """
    cfg = unet.config
    heads = num_heads(attenuation)
    if cfg.out_channels != heads * latent_channels:
        raise ValueError(
            f"the UNet has out_channels={cfg.out_channels}, but a {attenuation} DDM scheduler needs "
            f"{heads} x {latent_channels} = {heads * latent_channels} (heads "
            f"{'K, C, eps' if heads == 3 else 'C, eps'}); is this a DDM model, and is the scheduler's "
            f"`attenuation` the one it was trained with?"
        )
    if cfg.in_channels == latent_channels:
        return False
    if cfg.in_channels == 2 * latent_channels:
        return True
    raise ValueError(
        f"the UNet has in_channels={cfg.in_channels}; a DDM UNet takes {latent_channels} "
        f"(unconditional/text) or {2 * latent_channels} (image-conditioned) channels"
    )
