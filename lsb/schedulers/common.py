"""Pieces shared by the lsb schedulers: the working dtype of a step, its noise, the x0hat clamp, per-sample
coefficients, the diffusers step-index bookkeeping, and for the paired-bridge schedulers their times, grid start,
`add_noise` and explicit EDM-style preconditioning."""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..bridges.paired import broadcast_coef


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a step computes in: half/bfloat16 are upcast to float32; float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def step_noise(like: torch.Tensor, generator=None, variance_noise: torch.Tensor | None = None) -> torch.Tensor:
    """Standard normal noise of ``like``'s shape, device and dtype: the pre-drawn ``variance_noise`` when given,
    else drawn with ``generator``."""
    if variance_noise is not None:
        return variance_noise.to(device=like.device, dtype=like.dtype)
    return randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def clip_prediction(x0_hat: torch.Tensor, config) -> torch.Tensor:
    """x0hat clamped to [-`clip_sample_range`, `clip_sample_range`] when the scheduler's `config.clip_sample` is set,
    else unchanged."""
    if config.clip_sample:
        bound = config.clip_sample_range
        return x0_hat.clamp(-bound, bound)
    return x0_hat


def per_sample_coef(values: torch.Tensor, like: torch.Tensor, dtype: torch.dtype | None = None):
    """A coefficient looked up for one timestep (a Python float) or one per sample (shape (B, 1, ..., 1) on `like`'s
    device, in `dtype`, by default `like`'s)."""
    if values.numel() == 1:
        return values.item()
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(device=like.device, dtype=dtype or like.dtype)


def bridge_times_of(timestep) -> torch.Tensor:
    """Continuous bridge time(s) as a float64 CPU tensor: as given for one value, flattened to (B,) for one per
    sample."""
    t = torch.as_tensor(timestep, dtype=torch.float64).cpu()
    return t.reshape(-1) if t.numel() > 1 else t


def grid_start(bridge, t_max_offset: float) -> float:
    """The first time T - `t_max_offset` of a paired-bridge sampling grid; ValueError unless it exceeds t_min."""
    t_start = bridge.t_max - t_max_offset
    if not t_start > bridge.t_min:
        raise ValueError(f"T - t_max_offset = {t_start} must exceed t_min = {bridge.t_min}.")
    return t_start


def bridge_step_inputs(sample: torch.Tensor, x_T: torch.Tensor, model_output: torch.Tensor, config):
    """The working copies of one paired-bridge step, in the work dtype of `sample`: (x_t, x_T, x0hat), the denoiser's
    x0hat clamped per `config` (`clip_prediction`)."""
    dtype = work_dtype(sample.dtype)
    return sample.to(dtype), x_T.to(dtype), clip_prediction(model_output.to(dtype), config)


def bridge_add_noise(
    bridge, original_samples: torch.Tensor, noise: torch.Tensor, timesteps, x_T: torch.Tensor
) -> torch.Tensor:
    """A draw a_t x_T + b_t x_0 + c_t noise of `bridge`'s marginal at time(s) t (one, or one per sample), computed in
    the work dtype and returned in x_0's dtype (the `add_noise` of the paired-bridge schedulers)."""
    dtype = work_dtype(original_samples.dtype)
    x = bridge.marginal(original_samples.to(dtype), x_T.to(dtype), bridge_times_of(timesteps), noise.to(dtype))
    return x.to(original_samples.dtype)


_NOT_NEEDED = object()  # `_begin_step`'s x_T default: the scheduler's step takes no degraded endpoint


class StepIndexMixin:
    """diffusers' `step_index` / `begin_index` / `set_begin_index` contract over `_step_index` / `_begin_index`."""

    @property
    def step_index(self):
        """The index of the next network call; it increases by 1 after each `step`."""
        return self._step_index

    @property
    def begin_index(self):
        """The index of the first call, set by a pipeline with `set_begin_index`."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0):
        """Sets the index of the first call (run from the pipeline before inference)."""
        self._begin_index = begin_index

    def _init_step_index(self, timestep=None):
        self._step_index = 0 if self._begin_index is None else self._begin_index

    def _begin_step(self, num_calls: int, timestep=None, *, x_T=_NOT_NEEDED) -> int:
        """The entry check of `step`: the index of this call (starting the count at `begin_index`).

        ValueError before `set_timesteps`, when a paired-bridge `step` that needs the degraded endpoint got
        `x_T=None` (pass `x_T` only there), and once all `num_calls` calls of the schedule were made. `timestep`
        goes to `_init_step_index` (schedulers that find their first index from it).
        """
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None'; run `set_timesteps` first.")
        if x_T is None:
            raise ValueError(f"{type(self).__name__}.step needs the degraded endpoint `x_T`.")
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        if i >= num_calls:
            raise ValueError(f"All {num_calls} calls of the schedule were made; run `set_timesteps`.")
        return i

    def _end_step(self, output_cls, dtype: torch.dtype, return_dict: bool, *tensors: torch.Tensor):
        """The exit of `step`: count the call and return `tensors` in `dtype`, as `output_cls` or a tuple."""
        self._step_index += 1
        outputs = tuple(x.to(dtype) for x in tensors)
        if not return_dict:
            return outputs
        return output_cls(*outputs)


class PreconditionedBridgeMixin:
    """Explicit preconditioning through `self.preconditioning` (as EDMEulerScheduler exposes it).

    `scalings(t)` returns (c_skip, c_in, c_out, c_noise); the pipeline feeds the network
    `precondition_inputs(x_t, t)` and `precondition_noise(t)`, and turns its raw output F into the
    denoiser with `precondition_outputs(x_t, F, t)`.
    """

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        """The identity: the input preconditioning is explicit (`precondition_inputs`)."""
        return sample

    def _scalings(self, timestep, like: torch.Tensor):
        return [broadcast_coef(v, like) for v in self.preconditioning.scalings(bridge_times_of(timestep))]

    def precondition_inputs(self, sample: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        """c_in x_t (DDBM: A^(-1/2), A = a^2 sigma_T^2 + b^2 sigma_0^2 + 2 a b cov + c^2; I2SB: 1)."""
        return self._scalings(timestep, sample)[1] * sample

    def precondition_noise(self, timestep: float | torch.Tensor) -> torch.Tensor:
        """The network's time input c_noise (DDBM: 1000 / 4 log(t + 1e-44); I2SB: its noise level)."""
        t = torch.as_tensor(timestep, dtype=torch.float64).cpu()
        return torch.as_tensor(self.preconditioning.scalings(t)[3], dtype=torch.float64).to(torch.float32)

    def precondition_outputs(
        self, sample: torch.Tensor, model_output: torch.Tensor, timestep: float | torch.Tensor
    ) -> torch.Tensor:
        """The denoiser x0hat = c_skip x_t + c_out F."""
        c_skip, _, c_out, _ = self._scalings(timestep, sample)
        return c_skip * sample + c_out * model_output
