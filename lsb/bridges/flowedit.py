"""FlowEdit's update (Kulikov et al., ICCV 2025, "FlowEdit: Inversion-Free Text-Based Editing Using Pre-Trained
Flow Models"), as small pure functions over tensors.

A rectified-flow model at noise level s in [0, 1] sees ``z_s = (1 - s) x + s e`` and predicts the velocity
``v = e - x``. FlowEdit integrates, from ``Z = X_src`` at grid step ``n_max`` down to s = 0, the ODE whose
velocity is the difference of the model's velocities at two coupled points::

    Z_src   = (1 - s_i) X_src + s_i N,          N ~ N(0, I) drawn afresh at every step
    Z_tar   = Z + Z_src - X_src
    Z      <- Z + (s_{i-1} - s_i) [V(Z_tar, s_i, c_tar) - V(Z_src, s_i, c_src)]

(``s_{i-1}`` is the next, smaller noise level on the grid; with ``n_avg`` > 1 the bracket is the mean over
``n_avg`` independent draws of N). With no edit (c_tar = c_src and an exact model) the bracket vanishes in
expectation and Z stays at X_src; the ODE moves Z only along the difference of the two prompts' flows.

The grid convention is the one of diffusers' ``FlowMatchEulerDiscreteScheduler``: ``sigmas`` has T + 1
entries, decreasing from (near) 1 to the appended terminal 0; step i (0-based) goes from ``sigmas[i]`` to
``sigmas[i + 1]``. FlowEdit skips the first ``T - n_max`` steps and runs steps ``T - n_max, ..., T - n_min - 1``
(then, for ``n_min`` > 0, plain sampling under the target prompt for the last ``n_min`` steps).
"""

from __future__ import annotations

import torch

from .guidance import classifier_free_guidance

__all__ = [
    "flowedit_steps",
    "flowedit_source_latent",
    "flowedit_target_latent",
    "flowedit_update",
    "flowedit_start_sigma",
    "guided_velocity",
    "flow_euler_step",
]


def flowedit_steps(num_inference_steps: int, n_max: int, n_min: int = 0) -> tuple[range, range]:
    """Grid step indices FlowEdit runs: ``(edit_steps, sampling_steps)``.

    ``edit_steps`` = ``range(T - n_max, T - n_min)`` (the FlowEdit ODE), ``sampling_steps`` =
    ``range(T - n_min, T)`` (plain Euler sampling under the target prompt, the paper's optional ``n_min`` tail).
    ``n_max = 0`` runs nothing (the output is the input); ``n_max = T`` starts at the grid's first level.
    """
    for name, v in (("num_inference_steps", num_inference_steps), ("n_max", n_max), ("n_min", n_min)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    if not 0 <= n_max <= num_inference_steps:
        raise ValueError(f"n_max must lie in [0, num_inference_steps={num_inference_steps}], got {n_max}")
    if not 0 <= n_min <= n_max:
        raise ValueError(f"n_min must lie in [0, n_max={n_max}], got {n_min}")
    t = num_inference_steps
    return range(t - n_max, t - n_min), range(t - n_min, t)


def flowedit_start_sigma(sigmas: torch.Tensor, num_inference_steps: int, n_max: int) -> float:
    """The noise level FlowEdit starts at: ``sigmas[T - n_max]`` (0.0 when ``n_max = 0``)."""
    edit, _ = flowedit_steps(num_inference_steps, n_max)
    return float(sigmas[edit.start]) if n_max else 0.0


def flowedit_source_latent(x_src: torch.Tensor, sigma, noise: torch.Tensor) -> torch.Tensor:
    """``Z_src = (1 - s) X_src + s N``: the source image noised to level s along the straight flow path."""
    return (1.0 - sigma) * x_src + sigma * noise


def flowedit_target_latent(z: torch.Tensor, z_src: torch.Tensor, x_src: torch.Tensor) -> torch.Tensor:
    """``Z_tar = Z + Z_src - X_src``: the edit state carried by the same noise as the source branch."""
    return z + (z_src - x_src)


def flowedit_update(z: torch.Tensor, v_target: torch.Tensor, v_source: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """``Z <- Z + (s_next - s) (V_tar - V_src)``, computed in float32 (returned in ``z``'s dtype)."""
    delta = v_target.float() - v_source.float()
    return (z.float() + (float(sigma_next) - float(sigma)) * delta).to(z.dtype)


def flow_euler_step(x: torch.Tensor, velocity: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """One Euler step of the flow ODE, ``x + (s_next - s) v`` (``FlowMatchEulerDiscreteScheduler.step``)."""
    return (x.float() + (float(sigma_next) - float(sigma)) * velocity.float()).to(x.dtype)


def guided_velocity(v_uncond: torch.Tensor, v_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance on velocities, ``v_u + w (v_c - v_u)`` (:mod:`lsb.bridges.guidance`)."""
    return classifier_free_guidance(v_uncond, v_cond, guidance_scale)
