# Copyright 2025 The lsb authors. Licensed under the Apache License, Version 2.0.
"""DDMScheduler: the sampler of Decoupled Diffusion Models (image-to-zero + zero-to-noise) for diffusers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..bridges.ddm import (
    attenuation_parameters,
    check_attenuation,
    ddm_forward,
    ddm_input_scale,
    ddm_nfe,
    ddm_predict_x0,
    ddm_step,
    ddm_time_grid,
)
from ..models.ddm import merge_heads, split_heads
from .common import StepIndexMixin, clip_prediction, per_sample_coef, step_noise, work_dtype as _work_dtype


@dataclass
class DDMSchedulerOutput(BaseOutput):
    """
    Output of [`DDMScheduler.step`].

    Args:
        prev_sample (`torch.Tensor`):
            x_{t-s}; after the last call, the sample at t = 0.
        pred_original_sample (`torch.Tensor`):
            x0hat = x_t - H_t - sqrt(t) eps_hat from this call's heads (clipped when `clip_sample`).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class DDMScheduler(StepIndexMixin, SchedulerMixin, ConfigMixin):
    """
    `DDMScheduler` runs the sampler of "Decoupled Diffusion Models: Simultaneous Image-to-Zero and Zero-to-Noise
    Diffusion" (Huang, Qin, Liu, Xu; arXiv 2306.13720), whose forward process is

        x_t = x_0 + H_t + sqrt(t) eps,  t in [0, 1],  H_t = C t (constant) or K t^2/2 + C t (linear),  x_0 + H_1 = 0

    so x_1 = eps. Given the attenuation parameters and the noise the reverse step of any size s is exact
    (the Brownian-bridge posterior, see [`lsb.bridges.ddm`]):

        x_{t-s} = x_t + H_{t-s} - H_t - (s / sqrt(t)) eps_hat + sqrt(s (t - s) / t) z

    The constant attenuation is exactly the Gaussian schedule alpha_t = 1 - t, sigma_t = sqrt(t).

    **Model output.** `model_output` is the two-head output of a DDM network, split on the channel axis
    ([`lsb.models.ddm`]): `[C, eps]` (constant) or `[K, C, eps]` (linear), each with the sample's channels.

    **Time grid and NFE.** `set_timesteps(N)` builds the official grid: N equal steps of 1/N from t = 1; with
    `denoise=True` (the official default) the last one is split into (1/N - t_min) and t_min, so **the sampler makes
    N + 1 network calls** (the paper's "10 steps" costs 11 NFE) and its last call is at t = t_min. `self.nfe` and
    `len(self.timesteps)` give the NFE; `DDMScheduler.nfe_for(N, denoise)` computes it without a scheduler.
    `timesteps` holds the network's time input, `num_train_timesteps * t` (a diffusers UNet's sinusoidal embedding
    expects values in [0, 1000]); `times` holds t itself.

    **Correct C** (`correct_c=True`, the official sampler): each step forms x0hat = x_t - H_t - sqrt(t) eps_hat,
    clips it (when `clip_sample`), then replaces the C head by -x0hat (-x0hat - K/2 for the linear attenuation,
    whose K_hat is first clamped to [-1, 1]); the raw C head enters only through x0hat.

    **Input scaling.** `scale_model_input` multiplies x_t by c_in = 1 / sqrt((1 - t)^2 + t) (unit variance for
    unit-variance latents; `scale_input=False` feeds x_t unscaled).

    Differences from diffusers' scheduler contract:
        - `model_output` is not shaped like `sample`: it carries two (constant) or three (linear attenuation) heads on
          the channel axis (`[C, eps]` / `[K, C, eps]`); `step` refuses any other channel count.
        - With `denoise=True` the NFE is `num_inference_steps + 1` (`len(timesteps)`, `nfe`).
        - `add_noise` of the linear attenuation needs the slope `K`; there is no `trained_betas` (no beta schedule:
          x_t = x_0 + H_t + sqrt(t) eps).
        - `_compatibles` is empty: the decoupled forward process is no VP / flow process of diffusers' schedulers.

    Args:
        num_train_timesteps (`int`, defaults to 1000):
            Scale of the network's time input: timestep = num_train_timesteps * t.
        attenuation (`str`, defaults to `"constant"`):
            `constant` (h_t = C) or `linear` (h_t = K t + C).
        t_min (`float`, defaults to 1e-4):
            The smallest time fed to the network (the official `eps`); also the length of the split-off last step.
        denoise (`bool`, defaults to `True`):
            Split the last step as the official sampler does (NFE = N + 1); `False` gives NFE = N.
        correct_c (`bool`, defaults to `True`):
            The official "correct C" (see above).
        eta (`float`, defaults to 1.0):
            Share of the posterior noise: 1 = the paper's posterior draw; 0 = the deterministic step that keeps
            sqrt(t - s) of the predicted noise (DDIM's eta for this process).
        clip_sample (`bool`, defaults to `False`):
            Clamp x0hat and the final sample to [-clip_sample_range, clip_sample_range] (the official pixel-space
            models clamp to [-1, 1]; latents should not be clamped).
        clip_sample_range (`float`, defaults to 1.0):
            The clamp bound.
        scale_input (`bool`, defaults to `True`):
            Whether `scale_model_input` applies c_in.
    """

    _compatibles = []
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        attenuation: Literal["constant", "linear"] = "constant",
        t_min: float = 1e-4,
        denoise: bool = True,
        correct_c: bool = True,
        eta: float = 1.0,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        scale_input: bool = True,
    ):
        check_attenuation(attenuation)
        if not 0.0 < t_min < 1.0:
            raise ValueError(f"t_min must be in (0, 1), got {t_min}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        self.init_noise_sigma = 1.0  # x_1 = eps
        self.num_inference_steps = None
        self.nfe = None
        self.timesteps = torch.empty(0)
        self.times: list[float] = []
        self.step_sizes: list[float] = []
        self._step_index = None
        self._begin_index = None

    @staticmethod
    def nfe_for(num_inference_steps: int, denoise: bool = True) -> int:
        """Network calls for N = `num_inference_steps`: N + 1 with `denoise`, else N."""
        return ddm_nfe(num_inference_steps, denoise)

    @property
    def attenuation(self) -> str:
        return self.config.attenuation

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        """
        Sets the network calls of the official grid (run before inference).

        Args:
            num_inference_steps (`int`):
                N, the number of equal steps of 1/N. The NFE is N + 1 with `denoise=True` (see the class docstring).
            device (`str` or `torch.device`, *optional*):
                The device `timesteps` is moved to.
        """
        grid = ddm_time_grid(num_inference_steps, self.config.denoise, self.config.t_min)
        self.times = [t for t, _ in grid]
        self.step_sizes = [s for _, s in grid]
        self.timesteps = torch.tensor(
            [t * self.config.num_train_timesteps for t in self.times], dtype=torch.float32, device=device
        )
        self.num_inference_steps = int(num_inference_steps)
        self.nfe = len(grid)
        self._step_index = None
        self._begin_index = None

    def _time_of(self, timestep) -> torch.Tensor:
        return torch.as_tensor(timestep, dtype=torch.float64) / self.config.num_train_timesteps

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        """c_in x_t, c_in = 1 / sqrt((1 - t)^2 + t) (identity with `scale_input=False`). `timestep` is one value or one
        per sample, in `timesteps` units; None uses the current step."""
        if not self.config.scale_input:
            return sample
        if timestep is None:
            if self._step_index is None:
                self._init_step_index()
            t = torch.tensor(self.times[self._step_index], dtype=torch.float64)
        else:
            t = self._time_of(timestep)
        c = ddm_input_scale(t)
        if c.numel() > 1:
            c = c.reshape(-1, *([1] * (sample.ndim - 1))).to(sample.device)
            return (sample.to(_work_dtype(sample.dtype)) * c.to(_work_dtype(sample.dtype))).to(sample.dtype)
        return sample * c.item()

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> DDMSchedulerOutput | tuple:
        """
        One network call: move x_t to x_{t-s} on the grid of `set_timesteps`.

        Args:
            model_output (`torch.Tensor`):
                The two-head output `[C, eps]` or `[K, C, eps]` at (`sample`, `timestep`).
            timestep (`float` or `torch.Tensor`):
                The current entry of `timesteps` (the scheduler tracks its position by a call counter).
            sample (`torch.Tensor`):
                The current state x_t.
            generator (`torch.Generator`, *optional*):
                Random generator for the posterior noise.
            variance_noise (`torch.Tensor`, *optional*):
                Pre-drawn standard normal noise for the posterior draw (instead of `generator`).
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`DDMSchedulerOutput`] or a tuple.

        Returns:
            [`DDMSchedulerOutput`] or `tuple` `(prev_sample, pred_original_sample)`.
        """
        i = self._begin_step(len(self.times))
        expect = model_output.shape[1] if model_output.ndim > 1 else -1
        heads = 3 if self.attenuation == "linear" else 2
        if expect != heads * sample.shape[1]:
            raise ValueError(
                f"model_output has {expect} channels; a {self.attenuation} DDM needs {heads} x "
                f"{sample.shape[1]} (heads {'K, C, eps' if heads == 3 else 'C, eps'})"
            )
        t, s = self.times[i], self.step_sizes[i]

        work_dtype = _work_dtype(sample.dtype)
        x = sample.to(work_dtype)
        K, C, eps = split_heads(model_output.to(work_dtype), self.attenuation)
        if K is not None:
            K = K.clamp(-1, 1)
        x0_hat = clip_prediction(ddm_predict_x0(x, t, C, eps, K), self.config)
        if self.config.correct_c:
            C = attenuation_parameters(x0_hat, K)

        noise = None
        if self.config.eta > 0 and s < t:
            noise = step_noise(x, generator, variance_noise)
        x = ddm_step(x, t, s, C, eps, K, eta=self.config.eta, noise=noise)
        if self.config.clip_sample and i == len(self.times) - 1:
            x = x.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)

        return self._end_step(DDMSchedulerOutput, sample.dtype, return_dict, x, x0_hat)

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: float | torch.Tensor,
        K: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        x_t = x_0 + H_t + sqrt(t) noise at `timesteps` (`num_train_timesteps * t`; one value or one per sample).
        The linear attenuation needs the slope `K` (training draws it with [`lsb.bridges.ddm.sample_linear_k`]).
        """
        if (K is None) != (self.attenuation == "constant"):
            raise ValueError("add_noise: pass `K` exactly when attenuation='linear'")
        work_dtype = _work_dtype(original_samples.dtype)
        t = per_sample_coef(self._time_of(timesteps).reshape(-1), original_samples, work_dtype)
        x = ddm_forward(
            original_samples.to(work_dtype), noise.to(work_dtype), t, None if K is None else K.to(work_dtype)
        )
        return x.to(original_samples.dtype)

    def get_target(
        self, original_samples: torch.Tensor, noise: torch.Tensor, K: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The training target in the two-head layout: `[C, noise]` or `[K, C, noise]`, C = -x_0 (- K/2)."""
        if (K is None) != (self.attenuation == "constant"):
            raise ValueError("get_target: pass `K` exactly when attenuation='linear'")
        return merge_heads(attenuation_parameters(original_samples, K), noise, K)

    def __len__(self):
        return self.config.num_train_timesteps
