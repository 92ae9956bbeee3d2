"""The DDIB loop (DDIM inversion, then DDIM sampling), once, for the SD and SDXL DDIB pipelines.

Dual Diffusion Implicit Bridges (Su, Song, Meng & Ermon, ICLR 2023) as the LSB paper runs it (METHODS.md
section 2 (b)): ``NFE // 2`` DDIMInverseScheduler steps from the source latent up to the last training timestep,
then ``NFE - NFE // 2`` DDIMScheduler steps down under the target prompt; one (batched) UNet call per step.
The pipelines differ only in their conditioning, so they pass a ``network(x, t)`` per phase, usually built with
:func:`cfg_network` over a ``call(x, t, cond)`` that knows the model's keyword arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from .masks import blend
from ..bridges.guidance import classifier_free_guidance
from ..io.settings import check_nfe

#: Scheduler settings DDIB needs on top of the model's own scheduler config (see the DDIB pipeline's docstring).
DDIB_SCHEDULER_OVERRIDES = {"timestep_spacing": "trailing", "clip_sample": False, "thresholding": False}


def split_ddib_nfe(nfe: int) -> tuple[int, int]:
    """(inversion steps, sampling steps) = (NFE // 2, NFE - NFE // 2): one UNet call per step."""
    nfe = check_nfe(nfe)
    return nfe // 2, nfe - nfe // 2


def ddib_schedulers(scheduler, num_inversion_steps: int, num_sampling_steps: int, device):
    """The inverse and forward DDIM schedulers for one call (``scheduler`` is the pipeline's DDIMScheduler and is
    set up for sampling), checked to meet at the same timestep."""
    if not isinstance(scheduler, DDIMScheduler):
        raise TypeError(
            f"DDIB needs a DDIMScheduler, found {type(scheduler).__name__}; "
            f"set pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)"
        )
    keys = inspect.signature(DDIMInverseScheduler.__init__).parameters
    inverse = DDIMInverseScheduler.from_config({k: v for k, v in scheduler.config.items() if k in keys})
    inverse.set_timesteps(num_inversion_steps, device=device)
    scheduler.set_timesteps(num_sampling_steps, device=device)
    if int(inverse.timesteps[-1]) != int(scheduler.timesteps[0]):
        raise ValueError(
            f"the DDIM inversion ends at timestep {int(inverse.timesteps[-1])} but sampling starts at "
            f"{int(scheduler.timesteps[0])}; DDIB needs timestep_spacing='trailing' "
            f"(the scheduler has {scheduler.config.timestep_spacing!r})"
        )
    return inverse, scheduler


def cat_batch(*conds):
    """Concatenate conditionings along the batch: tensors, or (nested) dicts of tensors such as SDXL's
    ``{"encoder_hidden_states": ..., "added_cond_kwargs": {"text_embeds": ..., "time_ids": ...}}``."""
    if isinstance(conds[0], dict):
        return {k: cat_batch(*(c[k] for c in conds)) for k in conds[0]}
    return torch.cat(list(conds))


def cfg_network(call: Callable, negative, positive, guidance_scale: float) -> Callable:
    """``network(x, t)`` = ``out_neg + w (out_pos - out_neg)`` of ``call(x, t, cond)`` in exactly ONE model call.

    ``w = 1`` evaluates only ``positive`` and ``w = 0`` only ``negative`` (batch B); any other ``w`` one batched call
    on ``[negative; positive]`` (batch 2B), concatenated here once, not per step. Guidance is applied to the raw
    model output (epsilon or v), as diffusers' Stable Diffusion pipelines do.
    """
    if guidance_scale == 1.0:
        return lambda x, t: call(x, t, positive)
    if guidance_scale == 0.0:
        return lambda x, t: call(x, t, negative)
    both = cat_batch(negative, positive)

    def network(x, t):
        out_neg, out_pos = call(torch.cat([x, x]), t, both).chunk(2)
        return classifier_free_guidance(out_neg, out_pos, guidance_scale)

    return network


def integrate_ddib(
    pipe,
    latents: torch.Tensor,
    inverse,
    sampler,
    inversion_network: Callable,
    sampling_network: Callable,
    *,
    set_phase: Callable[[str | None], None] | None = None,
    callback_on_step_end: Callable | None = None,
    callback_on_step_end_tensor_inputs: list[str] | None = None,
    callback_state: dict[str, Any] | None = None,
    region_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """DDIM-invert ``latents`` with ``inverse`` under ``inversion_network``, then sample with ``sampler`` under
    ``sampling_network``; one network call per step, ``pipe.progress_bar`` over both phases.

    ``set_phase("inversion" | "sampling")`` is called before each step (and ``None`` at the end, also on error) so a
    callback can read the phase. ``callback_on_step_end(pipe, i, t, tensors)`` counts steps over both phases; a
    returned ``"latents"`` replaces the state.

    ``region_mask`` (a user mask on the latent grid, :func:`lsb.helpers.masks.layout_mask`): after every sampling step
    the kept region is put back on the source's own DDIM path, ``sqrt(abar) x_src + sqrt(1 - abar) e`` at the level
    of the new state, with e the noise the inversion found (``(x_T - sqrt(abar_T) x_src) / sqrt(1 - abar_T)``, so the
    path passes through the inverted latent x_T), and x_src itself after the last step.

    Returns:
        ``(latents, inverted_latents, nfe)``: the sampled latents, the DDIB latent at the end of the inversion and the
        number of network calls.
    """
    steps = [("inversion", inverse, t) for t in inverse.timesteps]
    steps += [("sampling", sampler, t) for t in sampler.timesteps]
    num_inversion_steps = len(inverse.timesteps)
    names = list(callback_on_step_end_tensor_inputs or [])
    state = dict(callback_state or {})
    inverted = None
    source = latents
    try:
        with pipe.progress_bar(total=len(steps)) as progress_bar:
            for i, (phase, scheduler, t) in enumerate(steps):
                if set_phase is not None:
                    set_phase(phase)
                network = inversion_network if phase == "inversion" else sampling_network
                model_output = network(scheduler.scale_model_input(latents, t), t)
                latents = scheduler.step(model_output, t, latents, return_dict=False)[0]
                if not torch.isfinite(latents).all():
                    raise FloatingPointError(f"NaN/inf in the latents after {phase} step {i} (timestep {int(t)})")
                if i == num_inversion_steps - 1:
                    inverted = latents.clone()
                if region_mask is not None and phase == "sampling":
                    latents = blend(latents, region_mask, ddib_kept_state(sampler, source, inverted, t))
                if callback_on_step_end is not None:
                    local = {"latents": latents, **state}
                    res = callback_on_step_end(pipe, i, t, {k: local[k] for k in names})
                    latents = (res or {}).get("latents", latents)
                progress_bar.update()
    finally:
        if set_phase is not None:
            set_phase(None)
    return latents, inverted, len(steps)


def ddib_kept_state(sampler, source: torch.Tensor, inverted: torch.Tensor, t) -> torch.Tensor:
    """The source's DDIM path at the level DDIM sampling reaches from timestep ``t`` (its ``prev_timestep``):
    sqrt(abar) x_src + sqrt(1 - abar) e with e = (x_T - sqrt(abar_T) x_src) / sqrt(1 - abar_T) (x_T: the inverted
    latent at the sampler's first timestep T); x_src itself below timestep 0."""
    abar = sampler.alphas_cumprod.to(torch.float64)
    prev = int(t) - sampler.config.num_train_timesteps // sampler.num_inference_steps
    if prev < 0:
        return source
    a_top, a = abar[int(sampler.timesteps[0])].item(), abar[prev].item()
    x0, x_top = source.double(), inverted.double()
    noise = (x_top - a_top**0.5 * x0) / (1 - a_top) ** 0.5
    return (a**0.5 * x0 + (1 - a) ** 0.5 * noise).to(source.dtype)


__all__ = [
    "DDIB_SCHEDULER_OVERRIDES",
    "ddib_kept_state",
    "cat_batch",
    "cfg_network",
    "ddib_schedulers",
    "integrate_ddib",
    "split_ddib_nfe",
]
