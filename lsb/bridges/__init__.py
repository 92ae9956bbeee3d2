"""The bridge math as small pure functions over tensors and floats (no diffusers classes)."""

from .matching import (
    alpha_bar_to_sb_time,
    alpha_bar_to_timestep,
    sb_alpha_bar,
    sb_time_to_timestep,
    timestep_to_alpha_bar,
)
from .schedules import (
    alphas_cumprod_from_betas,
    betas_for_schedule,
    sb_marginal,
    sb_sigma,
    sb_sigma_dot,
    sb_sigma_integral,
)
from .updates import (
    NOISE_PREDICTORS,
    PREDICTION_TYPES,
    ddim_step,
    euler_step,
    model_output_to_eps,
    multistep_step,
    sb_noise_predictor,
    sb_predictors,
    sb_velocity,
)

__all__ = [
    "NOISE_PREDICTORS",
    "PREDICTION_TYPES",
    "alpha_bar_to_sb_time",
    "alpha_bar_to_timestep",
    "alphas_cumprod_from_betas",
    "betas_for_schedule",
    "ddim_step",
    "euler_step",
    "model_output_to_eps",
    "multistep_step",
    "sb_alpha_bar",
    "sb_marginal",
    "sb_noise_predictor",
    "sb_predictors",
    "sb_sigma",
    "sb_sigma_dot",
    "sb_sigma_integral",
    "sb_time_to_timestep",
    "sb_velocity",
    "timestep_to_alpha_bar",
]
