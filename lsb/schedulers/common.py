"""Pieces shared by the lsb schedulers: the working dtype of a step, the diffusers step-index
bookkeeping, and explicit EDM-style preconditioning for the paired-bridge schedulers."""

from __future__ import annotations

import torch

from ..bridges.paired import _bcast


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a step computes in: half/bfloat16 are upcast to float32; float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


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
        return [_bcast(v, like) for v in self.preconditioning.scalings(t.reshape(-1) if t.numel() > 1 else t)]

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
