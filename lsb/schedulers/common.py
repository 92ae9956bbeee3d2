"""Pieces shared by the lsb schedulers: the working dtype of a step, the diffusers step-index
bookkeeping, and explicit EDM-style preconditioning for the paired-bridge schedulers."""

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
        t = torch.as_tensor(timestep, dtype=torch.float64).cpu()
        return [broadcast_coef(v, like) for v in self.preconditioning.scalings(t.reshape(-1) if t.numel() > 1 else t)]

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
