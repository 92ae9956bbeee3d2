"""THE classifier-free-guidance combination of the project: ``out_uncond + w (out_cond - out_uncond)``.

Applied to whatever the model outputs (epsilon, v, a flow velocity), as diffusers' pipelines do. The translation
pipelines build their one-call guided network with :func:`lsb.helpers.ddib.cfg_network`, which combines with this.
"""

from __future__ import annotations


def classifier_free_guidance(out_uncond, out_cond, guidance_scale: float):
    """``out_uncond + w (out_cond - out_uncond)`` (w = 1: the conditional output; w = 0: the unconditional)."""
    return out_uncond + guidance_scale * (out_cond - out_uncond)


__all__ = ["classifier_free_guidance"]
