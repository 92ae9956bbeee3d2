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

# LSB on a rectified-flow base (SD3 / FLUX): SNR matching and velocity conversions
from .flow import (  # noqa: E402
    flow_interpolant,
    flow_level,
    flow_level_to_sb_time,
    flow_level_to_sigma,
    flow_model_input_scale,
    flow_predictors,
    flow_timestep,
    flow_velocity,
    sb_time_to_flow_timestep,
    sigma_to_flow_level,
    velocity_to_noise,
    velocity_to_sample,
)

__all__ += [
    "flow_interpolant",
    "flow_level",
    "flow_level_to_sb_time",
    "flow_level_to_sigma",
    "flow_model_input_scale",
    "flow_predictors",
    "flow_timestep",
    "flow_velocity",
    "sb_time_to_flow_timestep",
    "sigma_to_flow_level",
    "velocity_to_noise",
    "velocity_to_sample",
]

# paired bridges (I2SB, DDBM VP / VE, DBIM): one schedule core, preconditionings and one-step updates
from .paired import (  # noqa: E402
    SCHEDULES,
    BridgeSchedule,
    DDBMPreconditioning,
    I2SBBridgeSchedule,
    I2SBPreconditioning,
    VEBridgeSchedule,
    VPBridgeSchedule,
    dbim_multistep_step,
    dbim_noise_level,
    dbim_step,
    ddbm_ode_drift,
    ddbm_sde_drift,
    i2sb_betas,
    i2sb_posterior_step,
    i2sb_stds,
    i2sb_step_indices,
    karras_times,
    make_bridge_schedule,
    make_preconditioning,
)

__all__ += [
    "SCHEDULES",
    "BridgeSchedule",
    "DDBMPreconditioning",
    "I2SBBridgeSchedule",
    "I2SBPreconditioning",
    "VEBridgeSchedule",
    "VPBridgeSchedule",
    "dbim_multistep_step",
    "dbim_noise_level",
    "dbim_step",
    "ddbm_ode_drift",
    "ddbm_sde_drift",
    "i2sb_betas",
    "i2sb_posterior_step",
    "i2sb_stds",
    "i2sb_step_indices",
    "karras_times",
    "make_bridge_schedule",
    "make_preconditioning",
]
