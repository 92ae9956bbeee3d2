# Copyright 2025 The lsb authors. Licensed under the Apache License, Version 2.0.
"""LSBScheduler: the Latent Schrödinger Bridge ODE sampler as a diffusers scheduler, on a VP diffusion base
(Stable Diffusion 1.x / 2.x / XL) or a rectified-flow base (SD3 / SD3.5, FLUX.1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..io.settings import PAPER_TRANSLATION, check_t0, check_tau
from ..bridges.flow import flow_level_to_sb_time, flow_timestep, sigma_to_flow_level, velocity_to_noise
from ..bridges.matching import (
    alpha_bar_to_sb_time,
    alpha_bar_to_timestep,
    sb_alpha_bar,
    timestep_to_alpha_bar,
)
from ..bridges.schedules import alphas_cumprod_from_betas, betas_for_schedule, sb_sigma
from ..bridges.updates import (
    NOISE_PREDICTORS,
    PREDICTION_TYPES,
    ddim_step,
    euler_step,
    model_output_to_eps,
    multistep_step,
    sb_noise_predictor,
    sb_predictors,
)
from .common import StepIndexMixin, work_dtype as _work_dtype

SOLVERS = ("euler", "ddim", "multistep")
FLOW_PREDICTION = "flow_prediction"  # diffusers' name for a velocity model (DPMSolver / UniPC `use_flow_sigmas`)
LSB_PREDICTION_TYPES = PREDICTION_TYPES + (FLOW_PREDICTION,)

# init keys of diffusers' flow-matching schedulers that no VP scheduler has
FLOW_CONFIG_KEYS = frozenset(
    {
        "shift",
        "use_dynamic_shifting",
        "base_shift",
        "max_shift",
        "base_image_seq_len",
        "max_image_seq_len",
        "invert_sigmas",
        "shift_terminal",
        "time_shift_type",
        "stochastic_sampling",
    }
)


def config_base(config: Mapping) -> str:
    """The base model family a scheduler config belongs to: ``"flow"`` (rectified flow: SD3 / SD3.5, FLUX.1) or
    ``"vp"`` (VP diffusion: Stable Diffusion 1.x / 2.x / XL).

    Decided in this order: an explicit ``prediction_type`` (``"flow_prediction"`` is flow, any other VP); a
    ``_class_name`` of diffusers' ``FlowMatch*`` schedulers; a key only flow-matching schedulers have (``shift``,
    ``use_dynamic_shifting``, ...); otherwise VP. Works on any diffusers scheduler's ``config``, a
    ``scheduler_config.json`` dict or an ``LSBScheduler`` config.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config_base needs a scheduler config mapping, got {type(config).__name__}.")
    if "prediction_type" in config:
        return "flow" if config["prediction_type"] == FLOW_PREDICTION else "vp"
    name = config.get("_class_name")
    if isinstance(name, str) and name.startswith("FlowMatch"):
        return "flow"
    if FLOW_CONFIG_KEYS.intersection(config):
        return "flow"
    return "vp"


@dataclass
class LSBSchedulerOutput(BaseOutput):
    """
    Output of [`LSBScheduler.step`].

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The bridge state x at the next bridge time; after the last call, the translated (clean) latent.
        pred_source_sample (`torch.Tensor`):
            The source predictor xhat_0 = E[x_0 | x_t] at the current bridge time.
        pred_target_sample (`torch.Tensor`):
            The target predictor xhat_1 = E[x_1 | x_t] at the current bridge time.
    """

    prev_sample: torch.Tensor
    pred_source_sample: torch.Tensor | None = None
    pred_target_sample: torch.Tensor | None = None


class LSBScheduler(StepIndexMixin, SchedulerMixin, ConfigMixin):
    """
    `LSBScheduler` integrates the probability-flow ODE of the Latent Schrödinger Bridge, introduced in
    "Latent Schrödinger Bridge: Prompting Latent Diffusion for Fast Unpaired Image-to-Image Translation"
    (Kim, Kim & Ye 2024, arXiv 2411.14863), with a pretrained latent model queried under a source prompt and a
    target prompt: a VP diffusion model (Stable Diffusion 1.x / 2.x / XL; `base == "vp"`) or a rectified-flow model
    (SD3 / SD3.5, FLUX.1; `prediction_type="flow_prediction"`, `base == "flow"`).

    The bridge between a source latent x_0 and a target latent x_1 is
    x_t = (1 - t) x_0 + t x_1 + sigma_t z with sigma_t = sqrt(tau t (1 - t)), t in [t0, 1], and its ODE is

        dx/dt = w (xhat_1 - xhat_0) + sigma_dot_t epshat                  (w = ``guidance_scale`` of `step`)

    **VP base.** Each model call is made at the SD timestep s whose `alphas_cumprod` equals
    alphabar = 1 / (1 + sigma_t^2) (SNR matching, continuous in s) on the input y = sqrt(alphabar) x
    (`scale_model_input`). From the two noise predictions eps_0 (source prompt) and eps_1 (target prompt):
    xhat_i = x - sigma_t eps_i.

    **Flow base.** A rectified-flow model at level s sees z_s = (1 - s) x + s e and predicts v = e - x. Each call is
    made at the level s = sigma_t / (1 + sigma_t) (noise-to-signal s / (1 - s) = sigma_t; `flow_levels`) on the input
    z = (1 - s) x (`scale_model_input`); `timesteps` = s * `num_train_timesteps`, the value SD3's transformer takes
    (FLUX pipelines pass `timestep / 1000`, i.e. s). From the two velocities v_i the noise predictions are
    eps_i = z + (1 - s) v_i (`lsb.bridges.flow.velocity_to_noise`), and then xhat_i = x - sigma_t eps_i = z - s v_i as
    on the VP base: the solvers are the same code on both bases. The flow scheduler's `shift` / dynamic shifting
    (`mu`) does not apply: LSB's grid is in bridge time, and s keeps its meaning under any shift. Build it with
    `LSBScheduler.from_config(flow_match_scheduler.config)`; the flow-matching keys stay in the config (hidden),
    so `FlowMatchEulerDiscreteScheduler.from_config(lsb.config)` gives the model's own scheduler back. The VP tables
    (`betas`, `alphas`, `alphas_cumprod`) are `None` on the flow base.

    `num_inference_steps` is the NFE: one (batched two-prompt) model call per entry of `timesteps`.

    Differences from diffusers' scheduler contract:
        - `step` takes the two prompts' outputs, `[source; target]` concatenated along the batch (twice the batch of
          `sample`), or `target_model_output` separately; a single output of the sample's batch serves both prompts.
        - `set_timesteps` needs NFE >= 2; with `solver="euler"` the last two `timesteps` are equal (the final call
          denoises at the last Euler noise level), and timesteps repeat in general (t and 1 - t share one noise
          level): the scheduler counts calls (`step_index`) instead of searching `timesteps` after the first call.
        - `add_noise` draws the bridge marginal from the source endpoint, (1 - t) x_src + sigma_t noise, at the bridge
          time of each timestep; `prepare_initial_sample` is the usual entry point.
        - `trained_betas` and the VP beta schedule apply to the VP base only (a flow base with `trained_betas` is
          refused).

    This model inherits from [`SchedulerMixin`] and [`ConfigMixin`]. Check the superclass documentation for the
    generic methods the library implements for all schedulers such as loading and saving.

    Args:
        num_train_timesteps (`int`, defaults to 1000):
            The number of diffusion steps the VP model was trained with.
        beta_start (`float`, defaults to 0.00085):
            The starting `beta` value of the VP model's schedule.
        beta_end (`float`, defaults to 0.012):
            The final `beta` value of the VP model's schedule.
        beta_schedule (`str`, defaults to `"scaled_linear"`):
            The VP beta schedule: `linear`, `scaled_linear` or `squaredcos_cap_v2` (as in diffusers).
        trained_betas (`np.ndarray` or `list[float]`, *optional*):
            Pass an array of betas directly to the constructor to bypass `beta_start` and `beta_end`.
        prediction_type (`str`, defaults to `"epsilon"`):
            What the model predicts, and so the base: `epsilon`, `v_prediction` (e.g. SD 2.x 768) or `sample` for a
            VP model; `flow_prediction` (the velocity e - x) for a rectified-flow model (SD3, FLUX). `from_config` of
            a flow-matching scheduler config (`FlowMatchEulerDiscreteScheduler`) sets `flow_prediction` when the
            config names no `prediction_type`. Always written to the config as an explicit value, so the base
            survives a round trip through a compatible diffusers scheduler.
        tau (`float`, defaults to 5.29):
            The paper's tau, the variance of the Brownian reference (sigma_t^2 = tau t (1 - t)). The official code's
            `--tau` is sqrt(tau): its default 2.3 is tau = 5.29.
        t0 (`float`, defaults to 0.2):
            The paper's t_0, the bridge time the sampler starts from (0 < t0 < 1); the initial state is
            x_{t0} = (1 - t0) x_src + sigma_{t0} z (`prepare_initial_sample`).
        solver (`str`, defaults to `"euler"`):
            `euler`: the paper's sampler, NFE - 1 Euler steps on linspace(t0, 1, NFE) and a final call that returns
            the target predictor xhat_1 at the last Euler time (1 - dt). `ddim`: NFE analytic first-order steps
            on linspace(t0, 1, NFE + 1) (D and epshat held constant, sigma integrated exactly, lands on sigma = 0).
            `multistep`: the same grid, two-step Adams-type (D and each prompt's eps extrapolated linearly from the
            previous call, the `switch` applied after extrapolation; exact for linearly varying predictors).
        noise_predictor (`str`, defaults to `"switch"`):
            epshat: `switch` (the paper) uses eps_0 for t <= 1/2 and eps_1 after; `interpolate` uses
            (1 - t) eps_0 + t eps_1, the exact E[z | x_t] when the endpoint predictors are exact.
        official_final_renoise (`bool`, defaults to `False`):
            Reproduce the official code's last step for `solver="euler"`: instead of returning xhat_1, return
            sqrt(a) xhat_1 + sqrt(1 - a) eps_1 with a = `alphas_cumprod[19]` (its "SD step 20" with a prepended 1.0).
            VP base only.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers] + ["FlowMatchEulerDiscreteScheduler"]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        trained_betas: list[float] | None = None,
        prediction_type: Literal["epsilon", "v_prediction", "sample", "flow_prediction"] = "epsilon",
        tau: float = PAPER_TRANSLATION.tau,  # 5.29 (lsb.io.settings)
        t0: float = PAPER_TRANSLATION.t0,  # 0.2
        solver: Literal["euler", "ddim", "multistep"] = "euler",
        noise_predictor: Literal["switch", "interpolate"] = "switch",
        official_final_renoise: bool = False,
    ):
        if prediction_type not in LSB_PREDICTION_TYPES:
            raise ValueError(f"Unknown prediction_type {prediction_type!r}; expected one of {LSB_PREDICTION_TYPES}.")
        if solver not in SOLVERS:
            raise ValueError(f"Unknown solver {solver!r}; expected one of {SOLVERS}.")
        if noise_predictor not in NOISE_PREDICTORS:
            raise ValueError(f"Unknown noise_predictor {noise_predictor!r}; expected one of {NOISE_PREDICTORS}.")
        self._check_bridge(t0, tau)
        # the base is never a silent default: a config that passes through a compatible scheduler keeps it
        defaults = self.config.get("_use_default_values", [])
        if "prediction_type" in defaults:
            self.register_to_config(_use_default_values=[k for k in defaults if k != "prediction_type"])

        if prediction_type == FLOW_PREDICTION:
            if trained_betas is not None:
                raise ValueError(
                    "trained_betas is a VP beta schedule; a flow-base LSBScheduler (prediction_type="
                    "'flow_prediction') has none."
                )
            if official_final_renoise:
                raise ValueError("official_final_renoise re-noises with SD's alphas_cumprod: VP base only.")
            self.betas = self.alphas = self.alphas_cumprod = None
        else:
            # float32 like DDIMScheduler's; alphas_cumprod float64, index k = training timestep k; kept on CPU
            self.betas = betas_for_schedule(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
            self.alphas = 1.0 - self.betas
            self.alphas_cumprod = alphas_cumprod_from_betas(
                num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas
            )
        self.init_noise_sigma = 1.0

        self.num_inference_steps = None
        self.timesteps = torch.empty(0, dtype=torch.float32)
        self.bridge_times = torch.empty(0, dtype=torch.float64)
        self.alpha_bars = torch.empty(0, dtype=torch.float64)
        self.flow_levels = torch.empty(0, dtype=torch.float64)
        self.sigmas = torch.empty(0, dtype=torch.float64)
        self.schedule_t0 = float(t0)
        self.schedule_tau = float(tau)
        self._next_times: list[float] = []
        self._history = None
        self._step_index = None
        self._begin_index = None

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """
        diffusers' `from_config`; a flow-matching scheduler's config (`FlowMatchEulerDiscreteScheduler`, or any
        config `config_base` calls `"flow"`) without a `prediction_type` gives the flow base
        (`prediction_type="flow_prediction"`), e.g. `LSBScheduler.from_config(sd3_pipe.scheduler.config)`.
        """
        if isinstance(config, Mapping) and "prediction_type" not in kwargs and config_base(config) == "flow":
            kwargs["prediction_type"] = FLOW_PREDICTION
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @property
    def base(self) -> str:
        """The model family this scheduler drives: `"flow"` (rectified flow, `prediction_type="flow_prediction"`)
        or `"vp"` (VP diffusion). Pipelines check it to refuse a flow scheduler for a VP model and the reverse."""
        return "flow" if self.config.prediction_type == FLOW_PREDICTION else "vp"

    @staticmethod
    def _check_bridge(t0: float, tau: float) -> None:
        check_t0(t0)  # THE checks (lsb.io.settings)
        check_tau(tau)

    def set_timesteps(
        self,
        num_inference_steps: int,
        device: str | torch.device | None = None,
        t0: float | None = None,
        tau: float | None = None,
    ):
        """
        Sets the bridge times and their SNR-matched model timesteps (run before inference).

        VP base: `timesteps` are the (continuous, float32) SD timesteps with alphas_cumprod = 1 / (1 + sigma_t^2).
        Flow base: `timesteps` = s * `num_train_timesteps` (float32) at the matched levels `flow_levels` (float64)
        s = sigma_t / (1 + sigma_t). On both, `bridge_times` (t), `sigmas` (sigma_t), `alpha_bars` and `flow_levels`
        are float64 tensors on CPU, one entry per call.

        Args:
            num_inference_steps (`int`):
                The NFE (model calls), at least 2; for `euler` NFE - 1 Euler steps plus the final denoise call.
            device (`str` or `torch.device`, *optional*):
                The device `timesteps` is moved to. Bridge coefficients stay on CPU in float64.
            t0 (`float`, *optional*):
                Overrides the configured start time t_0 for this schedule.
            tau (`float`, *optional*):
                Overrides the configured tau (the paper's tau) for this schedule.
        """
        t0 = self.config.t0 if t0 is None else float(t0)
        tau = self.config.tau if tau is None else float(tau)
        self._check_bridge(t0, tau)
        if int(num_inference_steps) != num_inference_steps or num_inference_steps < 2:
            raise ValueError(
                f"num_inference_steps (the NFE) must be an integer >= 2 for LSBScheduler, got {num_inference_steps}."
            )
        nfe = int(num_inference_steps)

        if self.config.solver == "euler":
            grid = torch.linspace(t0, 1.0, nfe, dtype=torch.float64).tolist()  # K = nfe - 1 Euler steps
            times = grid[:-1] + [grid[-2]]  # last call: final denoise at the noise level of t = 1 - dt
            next_times = grid[1:] + [1.0]
        else:
            grid = torch.linspace(t0, 1.0, nfe + 1, dtype=torch.float64).tolist()
            times, next_times = grid[:-1], grid[1:]

        self.schedule_t0, self.schedule_tau = t0, tau
        self.bridge_times = torch.tensor(times, dtype=torch.float64)
        self.sigmas = sb_sigma(self.bridge_times, tau)
        self.alpha_bars = sb_alpha_bar(self.bridge_times, tau)
        self.flow_levels = sigma_to_flow_level(self.sigmas)
        if self.base == "vp":
            self.timesteps = alpha_bar_to_timestep(self.alpha_bars, self.alphas_cumprod).to(
                device=device, dtype=torch.float32
            )
        else:
            self.timesteps = flow_timestep(self.flow_levels, self.config.num_train_timesteps).to(
                device=device, dtype=torch.float32
            )
        self._next_times = next_times
        self.num_inference_steps = nfe

        self._history = None
        self._step_index = None
        self._begin_index = None

    def index_for_timestep(self, timestep: float | torch.Tensor, schedule_timesteps: torch.Tensor | None = None) -> int:
        """The first index of `timestep` in the schedule (the nearest one if it is not in it)."""
        if schedule_timesteps is None:
            schedule_timesteps = self.timesteps
        timestep = torch.as_tensor(timestep, dtype=schedule_timesteps.dtype, device=schedule_timesteps.device)
        matches = (schedule_timesteps == timestep).nonzero()
        if len(matches) > 0:
            return matches[0].item()
        return (schedule_timesteps - timestep).abs().argmin().item()

    def _init_step_index(self, timestep):
        if self.begin_index is None:
            self._step_index = 0 if timestep is None else self.index_for_timestep(timestep)
        else:
            self._step_index = self._begin_index

    def prepare_initial_sample(
        self,
        source_latents: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """
        The initial bridge state x_{t_start} = (1 - t_start) x_src + sigma_{t_start} z from the source latents.

        t_start is the bridge time of the first call (t_0, or that of `begin_index`); the unknown t_start x_1 term is
        omitted, as in the paper. `noise` defaults to a standard normal drawn with `generator`.
        """
        if self.num_inference_steps is None:
            t_start = self.config.t0
            tau = self.config.tau
        else:
            t_start = self.bridge_times[self.begin_index or 0].item()
            tau = self.schedule_tau
        if noise is None:
            noise = randn_tensor(
                source_latents.shape, generator=generator, device=source_latents.device, dtype=source_latents.dtype
            )
        work_dtype = _work_dtype(source_latents.dtype)
        x = (1.0 - t_start) * source_latents.to(work_dtype) + sb_sigma(t_start, tau) * noise.to(work_dtype)
        return x.to(source_latents.dtype)

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        """
        SNR matching: the model input for the current bridge state x.

        VP base: y = sqrt(alphabar) x, after `set_timesteps` with alphabar = 1 / (1 + sigma_t^2) of the current call;
        without a schedule, the `alphas_cumprod` of `timestep` (interpolated). Flow base: z = (1 - s) x with the
        current call's level s = sigma_t / (1 + sigma_t); without a schedule, s = `timestep` / `num_train_timesteps`.
        """
        flow = self.base == "flow"
        if self.num_inference_steps is None:
            if timestep is None:
                raise ValueError("scale_model_input needs `timestep` before `set_timesteps` was called.")
            if flow:
                return sample * (1.0 - torch.as_tensor(timestep).item() / self.config.num_train_timesteps)
            alpha_bar = timestep_to_alpha_bar(torch.as_tensor(timestep).cpu(), self.alphas_cumprod).item()
        else:
            if self.step_index is None:
                self._init_step_index(timestep)
            i = min(self.step_index, len(self.alpha_bars) - 1)
            if flow:
                return sample * (1.0 - self.flow_levels[i].item())
            alpha_bar = self.alpha_bars[i].item()
        return sample * alpha_bar**0.5

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        target_model_output: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        return_dict: bool = True,
    ) -> LSBSchedulerOutput | tuple:
        """
        One model call of the LSB ODE: move the bridge state x_t to the next bridge time.

        Args:
            model_output (`torch.Tensor`):
                The model's output on `scale_model_input(sample)` (VP base: as `prediction_type` says; flow base: the
                velocity): either the source-prompt output (then pass
                `target_model_output`), or `[source; target]` concatenated along the batch (twice the batch of
                `sample`, the pipeline's single batched call). If it has the batch of `sample` and no
                `target_model_output` is given, it is used for both prompts (a pure bridge denoising move).
            timestep (`float` or `torch.Tensor`):
                The current entry of `timesteps` (used only to find the first index).
            sample (`torch.Tensor`):
                The current bridge state x_t.
            target_model_output (`torch.Tensor`, *optional*):
                The target-prompt output, if not concatenated into `model_output`.
            guidance_scale (`float`, defaults to 1.0):
                The paper's CFG weight w on the predictor difference xhat_1 - xhat_0 (the source prompt acts as the
                negative prompt); 1 is the plain bridge ODE.
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`LSBSchedulerOutput`] or a tuple.

        Returns:
            [`LSBSchedulerOutput`] or `tuple` `(prev_sample, pred_source_sample, pred_target_sample)`.
        """
        i = self._begin_step(self.num_inference_steps, timestep)

        if target_model_output is None and model_output.shape[0] == 2 * sample.shape[0]:
            model_output, target_model_output = model_output.chunk(2)
        elif target_model_output is None:
            target_model_output = model_output

        # upcast (float64 stays float64); scalar coefficients are Python floats (float64)
        work_dtype = _work_dtype(sample.dtype)
        x = sample.to(work_dtype)
        t, t_next, tau = self.bridge_times[i].item(), self._next_times[i], self.schedule_tau
        # the base only changes how the network output becomes the two prompts' noise predictions
        if self.base == "vp":
            alpha_bar = self.alpha_bars[i].item()
            y = alpha_bar**0.5 * x
            kind = self.config.prediction_type
            eps_src = model_output_to_eps(model_output.to(work_dtype), y, alpha_bar, kind)
            eps_tgt = model_output_to_eps(target_model_output.to(work_dtype), y, alpha_bar, kind)
        else:
            s = self.flow_levels[i].item()
            z = (1.0 - s) * x
            eps_src = velocity_to_noise(model_output.to(work_dtype), z, s)
            eps_tgt = velocity_to_noise(target_model_output.to(work_dtype), z, s)
        xhat_src, xhat_tgt, epshat = sb_predictors(x, eps_src, eps_tgt, t, tau, self.config.noise_predictor)

        solver = self.config.solver
        if solver == "euler" and i == self.num_inference_steps - 1:
            prev_sample = xhat_tgt  # final denoise: the target predictor at the last Euler noise level
            if self.config.official_final_renoise:
                a = self.alphas_cumprod[19].item()
                prev_sample = a**0.5 * xhat_tgt + (1 - a) ** 0.5 * eps_tgt
        elif solver == "euler":
            prev_sample = euler_step(x, xhat_src, xhat_tgt, epshat, t, t_next, tau, guidance_scale)
        elif solver == "ddim" or self._history is None:
            prev_sample = ddim_step(x, xhat_src, xhat_tgt, epshat, t, t_next, tau, guidance_scale)
        else:
            t_prev, prev_eps_src, prev_eps_tgt, prev_delta = self._history
            # previous noise on the current branch of the switch (no jump inside the difference)
            t_ref = t if self.config.noise_predictor == "switch" else t_prev
            prev_epshat = sb_noise_predictor(prev_eps_src, prev_eps_tgt, t_ref, self.config.noise_predictor)
            prev_sample = multistep_step(
                x, xhat_src, xhat_tgt, epshat, t, t_next, tau, guidance_scale, prev_delta, prev_epshat, t_prev
            )
        if solver == "multistep":
            self._history = (t, eps_src, eps_tgt, xhat_tgt - xhat_src)

        return self._end_step(LSBSchedulerOutput, sample.dtype, return_dict, prev_sample, xhat_src, xhat_tgt)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: float | torch.Tensor
    ) -> torch.Tensor:
        """
        The bridge marginal from the source endpoint, (1 - t) x_src + sigma_t noise, at the bridge time t of each
        timestep (diffusers' forward-process API; `prepare_initial_sample` is the usual entry point).

        A timestep of the current schedule uses its own bridge time; any other timestep uses the source-side
        (t <= 1/2) bridge time with its noise level (VP: 1 / (1 + tau t (1 - t)) = alphas_cumprod(timestep); flow:
        sigma_t = s / (1 - s), s = timestep / `num_train_timesteps`), or t = 1/2 beyond the bridge's largest noise
        level.
        """
        tau = self.schedule_tau
        steps = torch.as_tensor(timesteps).reshape(-1).cpu()
        times = []
        for s in steps.tolist():
            if self.num_inference_steps is not None and bool((self.timesteps.cpu() == s).any()):
                times.append(self.bridge_times[self.index_for_timestep(s, self.timesteps.cpu())].item())
            elif self.base == "flow":
                level = s / self.config.num_train_timesteps
                times.append(flow_level_to_sb_time(level, tau, side="source").item())
            else:
                alpha_bar = timestep_to_alpha_bar(s, self.alphas_cumprod)
                times.append(alpha_bar_to_sb_time(alpha_bar, tau, side="source").item())
        t = torch.tensor(times, dtype=torch.float64)
        if t.numel() == 1:
            t = t.expand(original_samples.shape[0])
        t = t.reshape(-1, *([1] * (original_samples.ndim - 1)))
        work_dtype = _work_dtype(original_samples.dtype)
        device = original_samples.device
        signal_coef = (1 - t).to(device=device, dtype=work_dtype)
        noise_coef = sb_sigma(t, tau).to(device=device, dtype=work_dtype)
        noisy = signal_coef * original_samples.to(work_dtype) + noise_coef * noise.to(work_dtype)
        return noisy.to(original_samples.dtype)

    def __len__(self):
        return self.config.num_train_timesteps
