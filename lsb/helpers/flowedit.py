"""Functions the FlowEdit pipelines (SD3 and FLUX) share: the paper's defaults, input checks, the noise grid,
one FlowEdit step over a velocity function, and the two NFE counts.

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

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput

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
    "flow_timesteps",
    "flowedit_counts",
    "flowedit_edit_step",
    "flowedit_sampling_start",
    "flowedit_sampling_step",
    "image_seq_len_shift",
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


#: fallenshock/FlowEdit ``SD3_exp.yaml`` (SD3-medium).
SD3_FLOWEDIT_DEFAULTS = {
    "num_inference_steps": 50,
    "n_max": 33,
    "n_min": 0,
    "n_avg": 1,
    "source_guidance_scale": 3.5,
    "target_guidance_scale": 13.5,
}
#: fallenshock/FlowEdit ``FLUX_exp.yaml`` (FLUX.1-dev; guidance = the distilled guidance embedding's value).
FLUX_FLOWEDIT_DEFAULTS = {
    "num_inference_steps": 28,
    "n_max": 24,
    "n_min": 0,
    "n_avg": 1,
    "source_guidance_scale": 1.5,
    "target_guidance_scale": 5.5,
}


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
    """Set the scheduler's grid as the stock pipeline of ``family`` ("sd3" or "flux") does; return
    ``(timesteps [T], sigmas [T + 1])`` (sigmas end with the terminal 0).

    SD3: ``set_timesteps(T)`` with the config's shift (and ``mu`` when the config uses dynamic shifting, as
    SD3.5 variants may). FLUX: ``sigmas = linspace(1, 1/T, T)`` and ``mu`` from the token count.
    """
    kwargs = {}
    if scheduler.config.get("use_dynamic_shifting", False):
        kwargs["mu"] = image_seq_len_shift(scheduler, image_seq_len)
    if family == "flux":
        sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
        scheduler.set_timesteps(sigmas=sigmas, device=device, **kwargs)
    elif family == "sd3":
        scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)
    else:
        raise ValueError(f"family must be 'sd3' or 'flux', got {family!r}")
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
