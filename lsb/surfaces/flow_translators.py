"""The translation methods on rectified-flow models (SD3 / SD3.5, FLUX.1): load and run LSB, FlowEdit, SDEdit.

:func:`lsb.surfaces.translators.load_translator` / ``translate`` hand SD3 / FLUX models to these two functions:

* ``"lsb"``: :class:`lsb.LatentSchrodingerBridgeSD3Pipeline` / ``...FluxPipeline`` (NFE = batched calls on
  [source; target]: 2 forward passes per call);
* ``"flowedit"``: :class:`lsb.FlowEditSD3Pipeline` / :class:`lsb.FlowEditFluxPipeline` (Kulikov et al. 2025). At
  a budget of ``nfe`` calls it runs ``n_max = nfe`` FlowEdit steps on a grid of
  ``T = round(nfe * T_paper / n_max_paper)`` levels (the paper's start level kept: SD3 33 of 50, FLUX 24 of 28);
  ``nfe=None`` is the paper's setting. SD3 evaluates 4 latents per call (CFG on both branches), FLUX 2;
* ``"sdedit"``: diffusers' ``StableDiffusion3Img2ImgPipeline`` / ``FluxImg2ImgPipeline`` from LSB's start level
  (:func:`lsb.helpers.sdedit.sdedit_flow_translate`).

Every run reports ``(images, nfe, forward_passes)``: batched transformer calls and latents evaluated per image.
"""

from __future__ import annotations


from ..helpers.loading import absent_components
from ..helpers.flowedit import FLUX_FLOWEDIT_DEFAULTS, SD3_FLOWEDIT_DEFAULTS
from ..helpers.sdedit import sdedit_flow_translate
from ..io.settings import PAPER_TRANSLATION

FLOW_METHODS = ("lsb", "flowedit", "sdedit")
FLOWEDIT_DEFAULTS = {"sd3": SD3_FLOWEDIT_DEFAULTS, "flux": FLUX_FLOWEDIT_DEFAULTS}


def load_flow_translator(method: str, model, family: str, load_pipeline, device=None, **kwargs):
    """The SD3 / FLUX object :func:`translate_flow` needs for ``method``, via ``load_pipeline(cls, model, ...)``."""
    if method not in FLOW_METHODS:
        raise ValueError(
            f"method {method!r} has no version for {family} (rectified-flow) models; expected one of {FLOW_METHODS}"
        )
    kwargs = {**absent_components(model), **kwargs}
    if method == "lsb":
        if family == "sd3":
            from lsb_pipelines.lsb_sd3.pipeline import LatentSchrodingerBridgeSD3Pipeline as cls
        else:
            from lsb_pipelines.lsb_flux.pipeline import LatentSchrodingerBridgeFluxPipeline as cls
    elif method == "flowedit":
        if family == "sd3":
            from lsb_pipelines.flowedit_sd3.pipeline import FlowEditSD3Pipeline as cls
        else:
            from lsb_pipelines.flowedit_flux.pipeline import FlowEditFluxPipeline as cls
    else:
        from diffusers import FluxImg2ImgPipeline, StableDiffusion3Img2ImgPipeline

        cls = StableDiffusion3Img2ImgPipeline if family == "sd3" else FluxImg2ImgPipeline
    return load_pipeline(cls, model, device=device, **kwargs)


def flowedit_budget(family: str, nfe: int | None, n_max_fraction: float | None = None) -> dict:
    """FlowEdit's ``num_inference_steps`` / ``n_max`` at a budget of ``nfe`` calls (None: the paper's setting).

    ``n_max_fraction`` = n_max / T sets the start level ``sigmas[T - n_max]`` (None: the paper's, 33/50 for SD3 and
    24/28 for FLUX); T = round(nfe / n_max_fraction)."""
    d = FLOWEDIT_DEFAULTS[family]
    if nfe is None:
        return {"num_inference_steps": d["num_inference_steps"], "n_max": d["n_max"]}
    fraction = d["n_max"] / d["num_inference_steps"] if n_max_fraction is None else float(n_max_fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"n_max_fraction must lie in (0, 1], got {n_max_fraction!r}")
    steps = max(int(nfe), int(round(nfe / fraction)))
    return {"num_inference_steps": steps, "n_max": int(nfe)}


def pipeline_family(pipe) -> str:
    """ "sd3" or "flux" by the pipeline's transformer class (ValueError otherwise)."""
    from ..helpers.sdedit import flow_family

    return flow_family(pipe)


def translate_flow(
    method: str,
    pipe,
    images,
    source_prompt,
    target_prompt,
    nfe: int | None = None,
    guidance_scale: float | None = None,
    tau: float | None = None,
    t0: float | None = None,
    generator=None,
    output_type: str = "pil",
    max_sequence_length: int | None = None,
    source_guidance_scale: float | None = None,
    n_max_fraction: float | None = None,
    **kwargs,
):
    """Run ``method`` on an SD3 / FLUX ``pipe``; returns ``(images, nfe, forward_passes)``.

    ``guidance_scale``: LSB's w; FlowEdit's *target* guidance (CFG for SD3, distilled for FLUX; the source
    branch keeps ``source_guidance_scale``, default the paper's); SDEdit's CFG (SD3) / distilled guidance (FLUX).
    ``tau``, ``t0``: LSB's bridge (and SDEdit's start level); FlowEdit ignores them. None: each method's defaults.
    ``kwargs`` go to the method, e.g. ``mask_image`` / ``mask_feather`` (a region only, every method:
    :mod:`lsb.helpers.masks`).
    """
    family = pipeline_family(pipe)
    extra = {} if max_sequence_length is None else {"max_sequence_length": max_sequence_length}
    if method == "flowedit":
        d = FLOWEDIT_DEFAULTS[family]
        src_w = d["source_guidance_scale"] if source_guidance_scale is None else source_guidance_scale
        tar_w = d["target_guidance_scale"] if guidance_scale is None else guidance_scale
        if family == "flux" and not getattr(pipe.transformer.config, "guidance_embeds", False):
            if guidance_scale is not None or source_guidance_scale is not None:
                raise ValueError(
                    "guidance given for a FLUX transformer without guidance embedding (FLUX.1-schnell): "
                    "leave --guidance / guidance_scale unset"
                )
            src_w = tar_w = None  # schnell: no guidance embedding
        out = pipe(
            images,
            source_prompt,
            target_prompt,
            **flowedit_budget(family, nfe, n_max_fraction),
            generator=generator,
            source_guidance_scale=src_w,
            target_guidance_scale=tar_w,
            output_type=output_type,
            **extra,
            **kwargs,
        )
        return out.images, out.nfe, out.forward_passes
    if method == "sdedit":
        return sdedit_flow_translate(
            pipe,
            images,
            source_prompt,
            target_prompt,
            nfe=8 if nfe is None else nfe,
            t0=PAPER_TRANSLATION.t0 if t0 is None else t0,
            tau=PAPER_TRANSLATION.tau if tau is None else tau,
            guidance_scale=guidance_scale,
            generator=generator,
            output_type=output_type,
            **extra,
            **kwargs,
        )
    if method == "lsb":
        given = {
            k: v
            for k, v in (("num_inference_steps", nfe), ("guidance_scale", guidance_scale), ("tau", tau), ("t0", t0))
            if v is not None
        }
        out = pipe(
            images,
            source_prompt=source_prompt,
            target_prompt=target_prompt,
            generator=generator,
            output_type=output_type,
            **given,
            **extra,
            **kwargs,
        )
        return out.images, out.nfe, getattr(out, "forward_passes", 2 * out.nfe)
    raise ValueError(f"unknown method {method!r} for {family} models; expected one of {FLOW_METHODS}")


__all__ = [
    "FLOW_METHODS",
    "FLOWEDIT_DEFAULTS",
    "absent_components",
    "load_flow_translator",
    "flowedit_budget",
    "translate_flow",
]
