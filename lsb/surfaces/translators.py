"""One entry point for every translation method: load the object a method needs, translate with it.

``load_translator(method, model)`` returns the LSB or DDIB pipeline, or diffusers' stock img2img pipeline
for SDEdit; ``translate(method, pipe, ...)`` runs it at a budget of ``nfe`` network calls. The CLI, the demo,
export and the benchmarks all go through these two functions.
"""

from __future__ import annotations

from ..helpers.sdedit import as_ddim, check_prompt_arg, sdedit_translate, split_prompt
from ..io.settings import check_nfe, translation_defaults

METHODS = ("lsb", "sdedit", "ddib")  # SD / SDXL (VP); SD3 / FLUX: lsb.surfaces.flow_translators.FLOW_METHODS


def export_components() -> dict:
    """The custom components that ``lsb export`` writes, mapped to the installed classes they re-export: an export
    loads through lsb without running its own code (see :func:`lsb.helpers.loading.load_pipeline`)."""
    from ..schedulers import LSBScheduler

    return {("scheduling_lsb", "LSBScheduler"): LSBScheduler}


def load_translator(
    method: str, model: str | None = None, device=None, trust_remote_code: bool | None = None, **kwargs
):
    """The pipeline object that :func:`translate` needs for ``method``, loaded with :func:`lsb.loading.load_pipeline`.

    * ``"lsb"``: :class:`lsb.LatentSchrodingerBridgePipeline`
    * ``"ddib"``: :class:`lsb_pipelines.ddib.pipeline.DDIBPipeline`
    * ``"sdedit"``: diffusers' ``StableDiffusionImg2ImgPipeline`` with a ``DDIMScheduler`` (no safety checker)

    An SDXL model (:func:`lsb.helpers.loading.detect_model_family`) gets the SDXL classes instead
    (:func:`load_sdxl_translator`).

    ``model`` is the embedded mini SD (None), a local diffusers SD folder, an ``lsb export`` folder or a Hub id;
    ``kwargs`` go to ``from_pretrained`` (e.g. ``dtype``). An ``lsb export`` (local or Hub) loads with the installed
    lsb classes: none of its code runs. Other models with custom code run it only with ``trust_remote_code``
    (None: a local folder you name is trusted, a Hub id is not).
    """
    from functools import partial

    from ..helpers.loading import load_pipeline as load

    load_pipeline = partial(load, trust_remote_code=trust_remote_code, known=export_components())

    from ..helpers.loading import detect_model_family

    family = detect_model_family(model)
    if family in ("sd3", "flux"):  # rectified flow: lsb / flowedit / sdedit (lsb.surfaces.flow_translators)
        from .flow_translators import load_flow_translator

        return load_flow_translator(method, model, family, load_pipeline, device=device, **kwargs)
    if family == "sdxl":
        return load_sdxl_translator(method, model, load_pipeline, device=device, **kwargs)
    if method == "lsb":
        from lsb_pipelines.lsb.pipeline import LatentSchrodingerBridgePipeline

        return load_pipeline(LatentSchrodingerBridgePipeline, model, device=device, **kwargs)
    if method == "ddib":
        from lsb_pipelines.ddib.pipeline import DDIBPipeline

        return load_pipeline(DDIBPipeline, model, device=device, **kwargs)
    if method == "sdedit":
        from diffusers import StableDiffusionImg2ImgPipeline

        kwargs.setdefault("safety_checker", None)
        kwargs.setdefault("requires_safety_checker", False)
        pipe = load_pipeline(StableDiffusionImg2ImgPipeline, model, device=device, **kwargs)
        as_ddim(pipe)
        return pipe
    raise ValueError(f"unknown translation method {method!r}; expected one of {METHODS}")


def load_sdxl_translator(method: str, model: str, load_pipeline, device=None, **kwargs):
    """The SDXL object :func:`translate` needs for ``method``, loaded with ``load_pipeline(cls, model, ...)``:
    :class:`lsb.LatentSchrodingerBridgeXLPipeline` ("lsb"), ``lsb_pipelines.ddib_xl.pipeline.DDIBXLPipeline``
    ("ddib"), or diffusers' ``StableDiffusionXLImg2ImgPipeline`` with a ``DDIMScheduler`` and no watermark
    ("sdedit")."""
    if method == "lsb":
        from lsb_pipelines.lsb_xl.pipeline import LatentSchrodingerBridgeXLPipeline

        return load_pipeline(LatentSchrodingerBridgeXLPipeline, model, device=device, **kwargs)
    if method == "ddib":
        from lsb_pipelines.ddib_xl.pipeline import DDIBXLPipeline

        return load_pipeline(DDIBXLPipeline, model, device=device, **kwargs)
    if method == "sdedit":
        from diffusers import StableDiffusionXLImg2ImgPipeline

        kwargs.setdefault("add_watermarker", False)
        pipe = load_pipeline(StableDiffusionXLImg2ImgPipeline, model, device=device, **kwargs)
        as_ddim(pipe)
        return pipe
    if method == "flowedit":
        raise ValueError("flowedit runs on rectified-flow models (SD3 / FLUX); this is an SDXL (VP) model")
    raise ValueError(f"unknown translation method {method!r}; expected one of {METHODS}")


def translate(
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
    return_forward_passes: bool = False,
):
    """Translate ``images`` from the source to the target domain with ``method`` at a budget of ``nfe`` UNet calls.

    SD3 / FLUX pipelines (a ``transformer``) go to :func:`lsb.surfaces.flow_translators.translate_flow`
    ("lsb", "flowedit", "sdedit"; None arguments: each method's own defaults). ``return_forward_passes``: return
    ``(images, nfe_spent, forward_passes)``, the latents evaluated per image (LSB 2 per call, SDEdit 2 with CFG,
    FlowEdit on SD3 4).

    Args:
        method: "lsb", "sdedit" or "ddib"; ``pipe`` the matching object from :func:`load_translator`.
        images: PIL image(s) (or numpy / tensor images, see the pipelines); sides multiples of 8.
        source_prompt / target_prompt: text, a list of texts, or embedding tensors (batch, tokens, dim).
        nfe: UNet forward calls per image batch (>= 2; None: the model's default). LSB: NFE - 1 solver steps + final denoise (its scheduler);
            SDEdit: nfe DDIM denoising steps; DDIB: nfe // 2 inversion + nfe - nfe // 2 sampling steps.
        guidance_scale: CFG weight w (None: the model folder's ``lsb_defaults.json``, else the paper's 11). LSB: w on the predictor difference with the source as
            negative; SDEdit: CFG with the source prompt as negative; DDIB: CFG with the null prompt as negative.
        tau, t0: the paper's tau and t_0 (None: the model folder's ``lsb_defaults.json``, else the paper's 5.29 / 0.2,
            :func:`lsb.io.settings.translation_defaults`); SDEdit uses them only for its start noise level; DDIB ignores them.
        generator: torch generator(s); DDIB is deterministic and ignores it.
        output_type: "pil", "np", "pt" or "latent".

    Returns:
        (images, nfe_spent): the translations and the UNet calls actually made.
    """
    if method == "student":  # a one-step student (lsb distill, lsb.surfaces.students): its own settings, 1 call
        from .students import student_translate

        images, nfe_spent, passes = student_translate(pipe, images, generator=generator, output_type=output_type)
        return (images, nfe_spent, passes) if return_forward_passes else (images, nfe_spent)
    if getattr(pipe, "transformer", None) is not None:  # SD3 / FLUX: lsb, flowedit, sdedit
        from .flow_translators import translate_flow

        images, nfe_spent, passes = translate_flow(
            method,
            pipe,
            images,
            source_prompt,
            target_prompt,
            nfe=nfe,
            guidance_scale=guidance_scale,
            tau=tau,
            t0=t0,
            generator=generator,
            output_type=output_type,
        )
        return (images, nfe_spent, passes) if return_forward_passes else (images, nfe_spent)
    if method == "flowedit":
        raise ValueError("flowedit runs on rectified-flow models (SD3 / FLUX); this is an SD / SDXL (VP) model")
    if method not in METHODS:
        raise ValueError(f"unknown translation method {method!r}; expected one of {METHODS}")
    defaults = translation_defaults(pipe)  # the settings the model folder carries (none: the paper's)
    nfe = check_nfe(defaults.num_inference_steps if nfe is None else nfe, name="nfe")
    check_prompt_arg("source_prompt", source_prompt)
    check_prompt_arg("target_prompt", target_prompt)
    w = defaults.guidance_scale if guidance_scale is None else float(guidance_scale)
    src_text, src_embeds = split_prompt(source_prompt)
    tgt_text, tgt_embeds = split_prompt(target_prompt)
    prompts = dict(
        source_prompt=src_text, target_prompt=tgt_text, source_prompt_embeds=src_embeds, target_prompt_embeds=tgt_embeds
    )

    if method == "sdedit":
        outs, spent = sdedit_translate(
            pipe,
            images,
            source_prompt,
            target_prompt,
            nfe=nfe,
            t0=defaults.t0 if t0 is None else t0,
            tau=defaults.tau if tau is None else tau,
            guidance_scale=w,
            generator=generator,
            output_type=output_type,
        )
        return (outs, spent, (2 if w > 1 else 1) * spent) if return_forward_passes else (outs, spent)
    if method == "lsb":
        out = pipe(
            images,
            num_inference_steps=nfe,
            guidance_scale=w,
            tau=tau,
            t0=t0,
            generator=generator,
            output_type=output_type,
            **prompts,
        )
    else:
        out = pipe(
            images, num_inference_steps=nfe, guidance_scale=w, generator=generator, output_type=output_type, **prompts
        )
    if return_forward_passes:  # LSB: [source; target] per call; DDIB: [null; prompt] per call
        return out.images, out.nfe, getattr(out, "forward_passes", 2 * out.nfe)
    return out.images, out.nfe


__all__ = ["METHODS", "export_components", "load_translator", "translate"]
