"""The restoration network: a Stable-Diffusion UNet that sees ``concat([x_t, x_T])``.

The degraded image's latent x_T (= I2SB's X_1) is concatenated to the UNet's input (the pretrained ``conv_in``
widened from 4 to 8 channels with zero weights, :func:`expand_conv_in`), and the UNet is conditioned on a fixed
text embedding (the empty prompt, :func:`empty_prompt_embeds`) through its cross-attention. :func:`unet_call` is
the one call of such a UNet; :func:`bridge_denoise` wraps it in a bridge scheduler's preconditioning.
"""

from __future__ import annotations

import torch

from ..io.execution import model_dtype


def expand_conv_in(unet, extra_channels: int = 4):
    """A copy of ``unet`` whose ``conv_in`` takes ``extra_channels`` more input channels, their weights zero.

    With zero weights the widened UNet computes exactly what the pretrained one computes on the first channels,
    so fine-tuning starts from the pretrained denoiser (as InstructPix2Pix / Palette-style concatenation does).
    """
    from diffusers import UNet2DConditionModel

    cfg = dict(unet.config)
    cfg["in_channels"] = unet.config.in_channels + extra_channels
    new = UNet2DConditionModel.from_config(cfg)
    state = {k: v.float() for k, v in unet.state_dict().items()}
    w = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([w, torch.zeros(w.shape[0], extra_channels, *w.shape[2:])], dim=1)
    new.load_state_dict(state)
    return new.to(unet.dtype)


def check_concat_unet(unet, latent_channels: int = 4) -> None:
    if unet.config.in_channels != 2 * latent_channels:
        raise ValueError(
            f"the restoration UNet must take {2 * latent_channels} input channels (x_t and the degraded "
            f"latent, concatenated); this one takes {unet.config.in_channels}"
        )


def unet_call(unet, x: torch.Tensor, cond: torch.Tensor, timestep, prompt_embeds: torch.Tensor) -> torch.Tensor:
    """One UNet call on ``concat([x, cond])`` at ``timestep`` (scalar or per sample) with the fixed embedding."""
    t = torch.as_tensor(timestep, device=x.device, dtype=torch.float32)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    dtype = model_dtype(getattr(unet, "module", unet))  # DDP-wrapped during multi-process training
    inp = torch.cat([x, cond], dim=1).to(dtype)
    return unet(inp, t, encoder_hidden_states=prompt_embeds.to(dtype), return_dict=False)[0].float()


def bridge_denoise(
    unet, scheduler, x: torch.Tensor, timestep, x_T: torch.Tensor, prompt_embeds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0hat, F): the preconditioned denoiser x0hat = c_skip x + c_out F(c_in x, c_noise; x_T) at ``timestep``.

    Works for every bridge scheduler (I2SB: an index; DDBM / DBIM: a time t), through their
    ``precondition_inputs`` / ``precondition_noise`` / ``precondition_outputs``.
    """
    x_in = scheduler.precondition_inputs(x, timestep)
    out = unet_call(unet, x_in, x_T, scheduler.precondition_noise(timestep), prompt_embeds)
    return scheduler.precondition_outputs(x, out.to(x.dtype), timestep), out


@torch.no_grad()
def empty_prompt_embeds(text_encoder, tokenizer, device=None) -> torch.Tensor:
    """The text encoder's embedding of the empty prompt, (1, tokens, dim): the fixed cross-attention input."""
    ids = tokenizer(
        [""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    device = device if device is not None else text_encoder.device
    return text_encoder(ids.to(device))[0]


__all__ = ["bridge_denoise", "check_concat_unet", "empty_prompt_embeds", "expand_conv_in", "unet_call"]
