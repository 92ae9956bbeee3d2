"""Where a pipeline computes, found without diffusers' per-call module walks when nothing is offloaded.

``DiffusionPipeline._execution_device`` first asks every component whether group offloading is on (a
walk over all its submodules, for each component), then falls back to ``pipe.device`` (which inspects
the ``__init__`` signature and asks each component for its device). On the embedded mini SD at batch 1
that is about 5 ms of a 0.2 s translation. :func:`execution_device` gives the same answer: when no
submodule of any component carries an accelerate (``_hf_hook``) or diffusers (``_diffusers_hook``)
hook it returns the first non-CPU component device (else the first one), as ``pipe.device`` does; as
soon as any hook is present (offloading, caching, layerwise casting ...) it defers to diffusers.
"""

from __future__ import annotations

import contextlib

import torch

_HOOK_ATTRS = ("_hf_hook", "_diffusers_hook")


def _modules(pipe) -> list[torch.nn.Module]:
    return [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]


def _any_hooked(modules) -> bool:
    return any(attr in sub.__dict__ for m in modules for sub in m.modules() for attr in _HOOK_ATTRS)


def has_hooks(pipe) -> bool:
    """Whether any submodule of any component carries an accelerate or diffusers hook."""
    return _any_hooked(_modules(pipe))


def execution_device(pipe) -> torch.device:
    """``pipe._execution_device``, answered from the parameters when no component has hooks."""
    modules = _modules(pipe)
    if not modules or _any_hooked(modules):
        return pipe._execution_device
    devices = []
    for m in modules:
        first = next(m.parameters(), None)
        if first is None:
            first = next(m.buffers(), None)
        if first is not None:
            devices.append(first.device)
    if not devices:
        return pipe._execution_device
    return next((d for d in devices if d.type not in ("cpu", "meta")), devices[0])


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """``model.dtype`` (the compute dtype), without diffusers' per-call walk over every submodule when
    nothing is hooked: the first floating-point parameter outside ``_keep_in_fp32_modules``. Hooked
    models (layerwise casting keeps weights in a storage dtype) and models without parameters defer to
    ``model.dtype``."""
    if any("_diffusers_hook" in sub.__dict__ for sub in model.modules()):
        return model.dtype
    keep = getattr(model, "_keep_in_fp32_modules", None) or ()
    for name, param in model.named_parameters():
        if param.is_floating_point() and not any(k in name for k in keep):
            return param.dtype
    return model.dtype


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def process_state(device=None):
    """accelerate's ``PartialState``, on the CPU (gloo) backend when no accelerator is in use."""
    from accelerate import PartialState

    import os

    flag = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    dev = torch.device(device) if device is not None else default_device()
    return PartialState(cpu=flag or dev.type == "cpu")


@contextlib.contextmanager
def process_map(fn, jobs: list):
    """``map(fn, jobs)`` (results in order) in a pool of up to 16 worker processes when there are more than two
    jobs and cores for them, else in this process; the pool is shut down when the ``with`` block ends."""
    from concurrent.futures import ProcessPoolExecutor

    import os

    workers = min(len(jobs), os.cpu_count() or 1, 16)
    pool = ProcessPoolExecutor(workers) if workers > 2 else None
    try:
        yield pool.map(fn, jobs) if pool else map(fn, jobs)
    finally:
        if pool:
            pool.shutdown()
