"""The denoiser call of prompt optimization, one function per model family: THE place where training prompts meet
the network (UNet or transformer) with that family's conditioning and timestep convention.

Each ``<family>_prediction(task, encoders, b)`` takes the :class:`~lsb.training.prompt_task.PromptOptimizationTask`
(its tokenizers, frozen denoiser and settings), ``encoders`` (the trainable text-encoder copies keyed like
:func:`lsb.prompts.encoder_slots.text_encoder_slots`, autograd on) and a batch ``b`` (``latents``, ``noise``,
``t``, ``prompts``; SD also ``ids`` / ``mask``), and returns what the denoiser predicts at the batch's noise level:

- SD 1.x/2.x, SDXL (VP): the UNet at ``z_t = noise_scheduler.add_noise(latents, noise, t)``, diffusers' integer
  timestep ``t`` (``alphas_cumprod[t]``, METHODS.md pitfall 3); SDXL adds the pooled embedding and time ids.
- SD3, FLUX (rectified flow): the transformer's velocity at ``z_s = (1 - s) x + s e``, at the scheduler's timestep
  ``1000 s`` (each family's own convention, packing, ids and guidance are applied by its ``network_call``).

Every denoiser call goes through the family's one network call (:mod:`lsb.families`).

:data:`PREDICTIONS` maps a family to its function; :func:`flow_level_shift` is the flow families' map from uniform
training levels to the scheduler's shifted ones.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..families import flux, sd, sd3, sdxl


def sd_prediction(task, encoders: dict, b: dict) -> torch.Tensor:
    """The SD 1.x/2.x UNet's output at the noised latents under the batch's token ids (the CLIP text encoder's last
    hidden state; its attention mask only where the encoder's config asks for one)."""
    te = encoders["clip_l"]
    mask = b["mask"] if getattr(task.text_encoder.config, "use_attention_mask", False) else None
    cond = te(b["ids"], attention_mask=mask)[0]
    noisy = task.noise_scheduler.add_noise(b["latents"], b["noise"], b["t"])
    return sd.network_call(task.unet, noisy.to(task.unet.dtype), b["t"], sd.condition(cond.to(task.unet.dtype)))


def sdxl_prediction(task, encoders: dict, b: dict) -> torch.Tensor:
    """The SDXL UNet's output at the noised latents under the batch's prompts, encoded by ``encoders``
    (``clip_l`` / ``clip_g``): both penultimate hidden states concatenated, the pooled embedding of the second, and
    ``add_time_ids = (size, size, 0, 0, size, size)`` (training images are center squares at the model resolution;
    diffusers' SDXL training scripts condition on original size, crop and target size likewise)."""
    from ..prompts.encoding_sdxl import encode_prompt_sdxl

    noisy = task.noise_scheduler.add_noise(b["latents"], b["noise"], b["t"])
    device, dtype = noisy.device, task.unet.dtype
    embeds, pooled = encode_prompt_sdxl(
        encoders["clip_l"],
        encoders["clip_g"],
        task.tokenizers["clip_l"],
        task.tokenizers["clip_g"],
        b["prompts"],
        device=device,
    )
    size = task.images.size
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], device=device, dtype=dtype).repeat(noisy.shape[0], 1)
    return sdxl.network_call(
        task.unet, noisy.to(dtype), b["t"], sdxl.condition(embeds.to(dtype), pooled.to(dtype), time_ids)
    )


def _flow_point(b: dict) -> torch.Tensor:
    """``z_s = (1 - s) x + s e``: the rectified-flow path at the batch's levels ``s`` (``b["t"]``)."""
    x, e, s = b["latents"], b["noise"], b["t"]
    return (1.0 - s)[:, None, None, None] * x + s[:, None, None, None] * e


def sd3_prediction(task, encoders: dict, b: dict) -> torch.Tensor:
    """The SD3 transformer's velocity at ``z_s`` under the batch's prompts (CLIP-L, CLIP-G and, when present, T5;
    timestep ``1000 s``)."""
    from ..prompts.encoding_sd3 import encode_prompt_sd3

    net, tok = task.network, task.tokenizers
    dtype = net.dtype
    z, s = _flow_point(b), b["t"]
    embeds, pooled = encode_prompt_sd3(
        encoders["clip_l"],
        encoders["clip_g"],
        encoders.get("t5xxl"),
        tok["clip_l"],
        tok["clip_g"],
        tok.get("t5xxl"),
        b["prompts"],
        device=b["latents"].device,
        max_sequence_length=task.max_sequence_length,
        joint_attention_dim=net.config.joint_attention_dim,
    )
    return sd3.network_call(net, z.to(dtype), s * 1000, sd3.condition(embeds.to(dtype), pooled.to(dtype)))


def flux_prediction(task, encoders: dict, b: dict) -> torch.Tensor:
    """The FLUX transformer's velocity at ``z_s`` under the batch's prompts (CLIP-L pooled + T5; timestep ``s``,
    2x2-packed latents and their position ids, the distilled guidance of FLUX.1-dev), unpacked to [N, C, h, w]."""
    from ..prompts.encoding_flux import encode_prompt_flux

    net, tok = task.network, task.tokenizers
    dtype = net.dtype
    z, s = _flow_point(b), b["t"]
    device = b["latents"].device
    embeds, pooled, text_ids = encode_prompt_flux(
        encoders["clip_l"],
        encoders["t5xxl"],
        tok["clip_l"],
        tok["t5xxl"],
        b["prompts"],
        device=device,
        max_sequence_length=task.max_sequence_length,
    )
    h, w = z.shape[-2:]
    guidance = None if task.distilled_guidance is None else float(task.distilled_guidance)
    cond = flux.condition(embeds.to(dtype), pooled.to(dtype), text_ids.to(dtype), h, w, guidance=guidance)
    out = flux.network_call(net, flux.pack_latents(z).to(dtype), s * 1000, cond)
    return flux.unpack_latents(out, h, w)


#: family -> its denoiser call (:func:`lsb.prompts.encoder_slots.model_family` names the family).
PREDICTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "sd": sd_prediction,
    "sdxl": sdxl_prediction,
    "sd3": sd3_prediction,
    "flux": flux_prediction,
}


def flow_level_shift(scheduler_config: dict, family: str, latent_shape) -> Callable[[np.ndarray], np.ndarray]:
    """The map u -> s that turns uniform training levels into the model's: SD3 ``shift * u / (1 + (shift - 1) u)``
    (static shift), FLUX (dynamic shifting) ``e^mu / (e^mu + 1/u - 1)`` with ``mu`` for the image's token count
    (``latent_shape`` [N, C, h, w]; FLUX packs 2x2 patches)."""
    if scheduler_config.get("use_dynamic_shifting", False):
        from ..helpers.flowedit import image_seq_len_shift

        h, w = latent_shape[-2:]
        mu = image_seq_len_shift(scheduler_config, (h // 2) * (w // 2))  # 2x2 patches (FLUX packing, SD3 patches)
        return lambda u: np.exp(mu) / (np.exp(mu) + (1.0 / u - 1.0))
    shift = float(scheduler_config.get("shift", 1.0))
    return lambda u: shift * u / (1.0 + (shift - 1.0) * u)


__all__ = [
    "PREDICTIONS",
    "flow_level_shift",
    "flux_prediction",
    "sd3_prediction",
    "sd_prediction",
    "sdxl_prediction",
]
