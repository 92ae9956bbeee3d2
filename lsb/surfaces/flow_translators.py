"""The translation methods on rectified-flow models (SD3 / SD3.5, FLUX.1), kept as the flow benchmark's entry point.

Everything here goes through :mod:`lsb.surfaces.methods` (the one method registry) and :mod:`lsb.families`:
``translate_flow`` is :func:`lsb.surfaces.translators.translate` returning ``(images, nfe, forward_passes)``.
"""

from __future__ import annotations

from ..families import FAMILIES, family_of
from . import methods
from .methods import check_method

#: the methods of the rectified-flow families
FLOW_METHODS = FAMILIES["sd3"].methods


def flowedit_budget(family: str, nfe: int | None, n_max_fraction: float | None = None) -> dict:
    """FlowEdit's ``num_inference_steps`` / ``n_max`` for ``family`` ("sd3" / "flux") at a budget of ``nfe`` calls
    (:func:`lsb.surfaces.methods.flowedit_budget`)."""
    return methods.flowedit_budget(FAMILIES[family], nfe, n_max_fraction)


def translate_flow(method: str, pipe, images, source_prompt, target_prompt, **kwargs):
    """Run ``method`` on an SD3 / FLUX ``pipe``; returns ``(images, nfe, forward_passes)`` (see
    :func:`lsb.surfaces.translators.translate` for the arguments)."""
    family = family_of(pipe)
    if family.base != "flow":
        raise ValueError(f"translate_flow needs an SD3 / FLUX pipeline; this is {family.label}")
    kwargs = {"nfe": None, "guidance_scale": None, "tau": None, "t0": None, **kwargs}
    if method != "flowedit":  # FlowEdit's own settings, accepted (unset) for every method as the benchmark passes them
        for key in ("source_guidance_scale", "n_max_fraction"):
            if kwargs.get(key, None) is None:
                kwargs.pop(key, None)
    return check_method(method, family).translate(pipe, family, images, source_prompt, target_prompt, **kwargs)


__all__ = ["FLOW_METHODS", "flowedit_budget", "translate_flow"]
