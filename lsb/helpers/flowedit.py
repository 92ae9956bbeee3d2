"""Functions the FlowEdit pipelines (SD3 and FLUX) share: the paper's defaults, input checks, the noise grid,
prompts broadcast to the images, one FlowEdit step over a velocity function, the whole loop (FlowEdit steps and
the ``n_min`` sampling tail, :func:`integrate_flowedit`), the two NFE counts and the output.

FlowEdit (Kulikov et al., ICCV 2025) is an inversion-free editor on a rectified-flow model; its update is
:mod:`lsb.bridges.flowedit`. Its published settings (fallenshock/FlowEdit, ``SD3_exp.yaml`` / ``FLUX_exp.yaml``)
are the defaults here:

=======  ==================  =====  ================================  ================================
model    num_inference_steps n_max  source guidance                   target guidance
=======  ==================  =====  ================================  ================================
SD3      50                  33     CFG 3.5 (negative prompt "")      CFG 13.5 (negative prompt "")
FLUX     28                  24     distilled guidance 1.5 (no CFG)   distilled guidance 5.5 (no CFG)
=======  ==================  =====  ================================  ================================

(n_avg = 1, n_min = 0 in both.) The grid is the scheduler's: ``FlowMatchEulerDiscreteScheduler.set_timesteps``
with the model's ``shift`` (SD3) or dynamic shifting from the image's token count (FLUX, sigmas
``linspace(1, 1/T, T)`` as ``FluxPipeline`` passes them).

NFE is counted two ways (``flowedit_counts``): ``nfe`` = batched transformer calls, ``forward_passes`` = latents
the transformer evaluates per image. SD3 with CFG on both branches evaluates [src-uncond, src-cond, tar-uncond,
tar-cond] in one call per step (4 forward passes); FLUX evaluates [src, tar] in one call (2).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import partial

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..families import flux, sd3
from .masks import blend
from ..bridges.flowedit import (
    flow_euler_step,
    flowedit_source_latent,
    flowedit_steps,
    flowedit_target_latent,
    flowedit_update,
)

__all__ = [
    "FlowEditPipelineOutput",
    "SD3_FLOWEDIT_DEFAULTS",
    "FLUX_FLOWEDIT_DEFAULTS",
    "check_flowedit_args",
    "check_flowedit_inputs",
    "flow_timesteps",
    "flowedit_counts",
    "flowedit_edit_step",
    "flowedit_output",
    "flowedit_prompt_for_batch",
    "flowedit_sampling_start",
    "flowedit_sampling_step",
    "image_seq_len_shift",
    "integrate_flowedit",
]


@dataclass
class FlowEditPipelineOutput(BaseOutput):
    """Output of the FlowEdit pipelines (SD3 and FLUX).

    Args:
        images: edited images (PIL list, numpy array or tensor per ``output_type``).
        nfe: batched transformer calls spent.
        forward_passes: latents the transformer evaluated per image (SD3 with CFG: 4 per step; FLUX: 2).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nfe: int
    forward_passes: int


#: FlowEdit's published settings, from the family records (lsb.families.sd3 / .flux).
SD3_FLOWEDIT_DEFAULTS = sd3.FLOWEDIT_DEFAULTS
FLUX_FLOWEDIT_DEFAULTS = flux.FLOWEDIT_DEFAULTS


def check_flowedit_inputs(image, source_prompt, target_prompt) -> None:
    """ValueError unless an image is given and both prompts are text (a string or a non-empty list of strings)."""
    if image is None:
        raise ValueError("`image` is required: the picture(s) to edit")
    for name, p in (("source_prompt", source_prompt), ("target_prompt", target_prompt)):
        if not (isinstance(p, str) or (isinstance(p, list) and p and all(isinstance(q, str) for q in p))):
            raise ValueError(f"{name} must be a string or a non-empty list of strings, got {p!r}")


def check_flowedit_args(
    num_inference_steps, n_max, n_min=0, n_avg=1, source_guidance_scale=None, target_guidance_scale=None
) -> tuple[range, range]:
    """Validate FlowEdit's step arguments (ValueError naming the bad one) and return the grid steps it runs
    (:func:`lsb.bridges.flowedit.flowedit_steps`)."""
    if isinstance(n_avg, bool) or not isinstance(n_avg, numbers.Integral) or n_avg < 1:
        raise ValueError(f"n_avg must be an integer >= 1, got {n_avg!r}")
    for name, w in (("source_guidance_scale", source_guidance_scale), ("target_guidance_scale", target_guidance_scale)):
        if w is not None and (isinstance(w, bool) or not isinstance(w, numbers.Real) or not np.isfinite(w)):
            raise ValueError(f"{name} must be a finite number, got {w!r}")
    return flowedit_steps(num_inference_steps, n_max, n_min)


def image_seq_len_shift(scheduler, image_seq_len: int) -> float:
    """``mu`` of dynamic shifting for ``image_seq_len`` transformer tokens (diffusers' ``calculate_shift``);
    ``scheduler`` is a scheduler or its config."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    cfg = getattr(scheduler, "config", scheduler)
    return calculate_shift(
        image_seq_len,
        cfg.get("base_image_seq_len", 256),
        cfg.get("max_image_seq_len", 4096),
        cfg.get("base_shift", 0.5),
        cfg.get("max_shift", 1.15),
    )


def flow_timesteps(scheduler, num_inference_steps: int, device, image_seq_len: int, family: str):
    """Set the scheduler's grid as the stock pipeline of ``family`` ("sd3", "flux" or "zimage") does; return
    ``(timesteps [T], sigmas [T + 1])`` (sigmas end with the terminal 0).

    SD3: ``set_timesteps(T)`` with the config's shift (and ``mu`` when the config uses dynamic shifting, as
    SD3.5 variants may). FLUX / Z-Image: ``sigmas = linspace(1, 1/T, T)`` and ``mu`` from the token count (used
    only by a scheduler with dynamic shifting; Z-Image-Turbo's has a static shift 3).
    """
    kwargs = {}
    if scheduler.config.get("use_dynamic_shifting", False):
        kwargs["mu"] = image_seq_len_shift(scheduler, image_seq_len)
    if family in (
        "flux",
        "zimage",
        "qwenimage",
    ):  # the default sigmas of FluxPipeline, ZImagePipeline, QwenImagePipeline
        sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
        scheduler.set_timesteps(sigmas=sigmas, device=device, **kwargs)
    elif family == "flux2":  # Flux2KleinPipeline: mu from the token count and the step count
        from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

        sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
        if scheduler.config.get("use_dynamic_shifting", False):
            kwargs["mu"] = compute_empirical_mu(image_seq_len=image_seq_len, num_steps=num_inference_steps)
        scheduler.set_timesteps(sigmas=sigmas, device=device, **kwargs)
    elif family == "sd3":
        scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)
    else:
        raise ValueError(f"family must be 'sd3', 'flux', 'flux2', 'zimage' or 'qwenimage', got {family!r}")
    return scheduler.timesteps, scheduler.sigmas


def flowedit_counts(
    n_edit_steps: int, n_sampling_steps: int, n_avg: int, latents_per_edit_call: int, latents_per_sampling_call: int
) -> tuple[int, int]:
    """``(nfe, forward_passes)``: batched transformer calls and latents evaluated per image.

    Each FlowEdit step makes ``n_avg`` batched calls (one per noise draw) of ``latents_per_edit_call`` latents
    per image (SD3 with CFG: 4; without: 2; FLUX: 2); each plain-sampling step (the ``n_min`` tail) one call of
    ``latents_per_sampling_call`` (SD3 CFG: 2; FLUX: 1).
    """
    nfe = n_edit_steps * n_avg + n_sampling_steps
    passes = n_edit_steps * n_avg * latents_per_edit_call + n_sampling_steps * latents_per_sampling_call
    return nfe, passes


def flowedit_edit_step(velocity_pair, z: torch.Tensor, x_src: torch.Tensor, sigma, sigma_next, noises) -> torch.Tensor:
    """One FlowEdit step. ``velocity_pair(z_src, z_tar) -> (v_src, v_tar)`` evaluates the (guided) model at the
    current level on both branches; ``noises`` holds the ``n_avg`` fresh draws N of this step. The bracket is
    averaged over the draws, then ``Z <- Z + (s_next - s) mean(V_tar - V_src)``."""
    v_src_sum = v_tar_sum = None
    for noise in noises:
        z_src = flowedit_source_latent(x_src, sigma, noise)
        z_tar = flowedit_target_latent(z, z_src, x_src)
        v_src, v_tar = velocity_pair(z_src, z_tar)
        v_src_sum = v_src.float() if v_src_sum is None else v_src_sum + v_src.float()
        v_tar_sum = v_tar.float() if v_tar_sum is None else v_tar_sum + v_tar.float()
    n = len(noises)
    return flowedit_update(z, v_tar_sum / n, v_src_sum / n, sigma, sigma_next)


def flowedit_sampling_start(z: torch.Tensor, x_src: torch.Tensor, sigma, noise: torch.Tensor) -> torch.Tensor:
    """Start of the paper's ``n_min`` tail: ``X_tar = Z + Z_src - X_src`` with ``Z_src`` the source at level s."""
    return flowedit_target_latent(z, flowedit_source_latent(x_src, sigma, noise), x_src)


def flowedit_sampling_step(x_tar: torch.Tensor, v_tar: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """One plain Euler sampling step under the target prompt (the ``n_min`` tail)."""
    return flow_euler_step(x_tar, v_tar, sigma, sigma_next)


def flowedit_prompt_for_batch(encode, prompt, batch: int) -> tuple:
    """One prompt (a string, or a list of 1 or ``batch`` strings) through ``encode(prompts) -> (embeds, pooled,
    *extra)`` (the pipeline's ``encode_prompt`` with its settings bound); a single prompt's embeddings are expanded to
    the ``batch`` images. Returns ``(embeds, pooled, *extra)`` (FLUX: the ``text_ids`` too)."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if len(prompts) not in (1, batch):
        raise ValueError(f"a prompt list has {len(prompts)} entries for {batch} images")
    embeds, pooled, *extra = encode(prompts)
    if embeds.shape[0] == 1:
        embeds, pooled = embeds.expand(batch, -1, -1), pooled.expand(batch, -1)
    return (embeds, pooled, *extra)


def integrate_flowedit(
    pipe,
    x_src: torch.Tensor,
    edit_steps: range,
    sampling_steps: range,
    n_avg: int,
    velocity_pair,
    target_velocity,
    *,
    device,
    generator=None,
    callback_on_step_end=None,
    callback_on_step_end_tensor_inputs: list[str] | None = None,
    region_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """FlowEdit's ODE from ``Z = X_src`` over the grid steps ``edit_steps``, then the optional ``n_min`` tail of plain
    target-prompt sampling over ``sampling_steps``, with ``pipe``'s progress bar; returns the final latents (Z, or
    X_tar after a tail), in the layout of ``x_src`` (FLUX: packed tokens). The grid is ``pipe.scheduler``'s
    ``timesteps`` / ``sigmas``, set by :func:`flow_timesteps` before.

    ``velocity_pair(z_src, z_tar, t) -> (v_src, v_tar)`` evaluates both (guided) branches in one batched call
    (:func:`flowedit_edit_step` averages it over ``n_avg`` fresh draws per step); ``target_velocity(x_tar, t)`` is the
    guided target velocity of the tail. The noise is drawn from ``generator`` on ``device``.
    ``callback_on_step_end(pipe, step, timestep, {"latents": state})`` runs after every step; a returned
    ``"latents"`` replaces the state. NaN/inf latents raise FloatingPointError naming the step.
    """
    timesteps, sigmas = pipe.scheduler.timesteps, pipe.scheduler.sigmas
    z = x_src.clone()
    x_tar = None
    with pipe.progress_bar(total=len(edit_steps) + len(sampling_steps)) as progress_bar:
        for i in [*edit_steps, *sampling_steps]:
            t, s, s_next = timesteps[i], sigmas[i], sigmas[i + 1]
            if i in edit_steps:
                noises = [
                    randn_tensor(x_src.shape, generator=generator, device=device, dtype=x_src.dtype)
                    for _ in range(n_avg)
                ]
                z = flowedit_edit_step(partial(velocity_pair, t=t), z, x_src, s, s_next, noises)
                if region_mask is not None:
                    z = blend(z, region_mask, x_src)
                current = z
            else:
                if x_tar is None:
                    noise = randn_tensor(x_src.shape, generator=generator, device=device, dtype=x_src.dtype)
                    x_tar = flowedit_sampling_start(z, x_src, s, noise)
                x_tar = flowedit_sampling_step(x_tar, target_velocity(x_tar, t), s, s_next)
                if region_mask is not None:
                    x_tar = blend(x_tar, region_mask, flowedit_source_latent(x_src, s_next, noise))
                current = x_tar
            if not torch.isfinite(current).all():
                raise FloatingPointError(f"NaN/inf in the latents after step {i} (sigma {float(s):.4f})")
            if callback_on_step_end is not None:
                res = callback_on_step_end(pipe, i, t, {k: current for k in callback_on_step_end_tensor_inputs or []})
                if res and "latents" in res:
                    if x_tar is None:
                        z = res["latents"]
                    else:
                        x_tar = res["latents"]
            progress_bar.update()
    return z if x_tar is None else x_tar


def flowedit_output(images, nfe: int, forward_passes: int, return_dict: bool = True):
    """A FlowEdit pipeline's return value: :class:`FlowEditPipelineOutput`, or ``(images, nfe, forward_passes)``."""
    if not return_dict:
        return (images, nfe, forward_passes)
    return FlowEditPipelineOutput(images=images, nfe=nfe, forward_passes=forward_passes)
