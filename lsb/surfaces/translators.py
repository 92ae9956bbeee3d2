"""One entry point for every translation method and model family: load the object a method needs, translate with it.

``load_translator(method, model)`` detects the model's family (:mod:`lsb.families`) before any weights load,
checks that the method runs on it (:mod:`lsb.surfaces.methods`), and loads the family's pipeline for the method
(an lsb pipeline, or diffusers' stock img2img pipeline for SDEdit) in the family's dtype;
``translate(method, pipe, ...)`` runs it at a budget of ``nfe`` network calls. The CLI, the demo, export,
:class:`lsb.AutoPipelineForTranslation` and the benchmarks all go through these two functions.
"""

from __future__ import annotations

import warnings

from ..families import FAMILIES, family_of
from .methods import check_method, get_method

#: The methods of SD 1.x/2.x models (kept for callers that iterate the VP methods; see lsb.surfaces.methods.METHODS).
METHODS = FAMILIES["sd"].methods


def export_components() -> dict:
    """The custom components that ``lsb export`` writes, mapped to the installed classes they re-export: an export
    loads through lsb without running its own code (see :func:`lsb.helpers.loading.load_pipeline`)."""
    from ..schedulers import LSBScheduler

    return {("scheduling_lsb", "LSBScheduler"): LSBScheduler}


def load_translator(
    method: str,
    model: str | None = None,
    device=None,
    trust_remote_code: bool | None = None,
    dtype=None,
    offload: str | None = None,
    quantize: str | None = None,
    **kwargs,
):
    """The pipeline object that :func:`translate` needs for ``method`` on ``model``.

    ``model``: the embedded mini SD (None, "mini-sd"), the embedded mini SD3 ("mini-sd3"), a local diffusers folder
    of a supported family, an ``lsb export`` folder or a Hub id. The family's pipeline for ``method`` is loaded with
    :func:`lsb.helpers.loading.load_pipeline`: ``dtype`` None / "auto" is the family's recommended dtype on the
    device (``ModelFamily.dtypes``); ``kwargs`` go to ``from_pretrained``. An unsupported model or a method the
    family lacks is a ValueError (one line) before any weights load. An ``lsb export`` (local or Hub) loads with the
    installed lsb classes: none of its code runs; other custom code runs only with ``trust_remote_code`` (None: a
    local folder you name is trusted, a Hub id is not).

    Memory (:mod:`lsb.helpers.memory`): ``offload`` "model" / "sequential" is diffusers' model / sequential CPU
    offload (an accelerator is needed); ``quantize`` "int8" / "float8" quantizes the denoiser and the text encoders
    with torchao (diffusers' ``PipelineQuantizationConfig``). A local folder whose weights will not fit the
    accelerator as asked is a :class:`~lsb.helpers.memory.MemoryPlanError` naming the options that would, before
    any weights load.
    """
    from ..helpers.loading import absent_components, detect_model_family, float16_warning, load_pipeline
    from ..helpers.memory import memory_options

    get_method(method)  # an unknown method first, before any look-up
    family = FAMILIES[detect_model_family(model)]
    spec = check_method(method, family)
    if dtype is not None and dtype != "auto" and float16_warning(family, dtype):
        warnings.warn(float16_warning(family, dtype), stacklevel=2)
    cls = family.pipeline_class(method)
    device, dtype, memory = memory_options(model, family, device, dtype, offload, quantize)
    kwargs = {**absent_components(model), **spec.load_kwargs(family), **memory, **kwargs}
    pipe = load_pipeline(
        cls,
        model,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        known=export_components(),
        **kwargs,
    )
    if spec.prepare is not None:
        spec.prepare(pipe)
    return pipe


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
    mask_image=None,
    mask_feather: float | None = None,
    **kwargs,
):
    """Translate ``images`` from the source to the target domain with ``method`` at a budget of ``nfe`` network calls.

    Args:
        method: a name of :data:`lsb.surfaces.methods.METHODS` that runs on ``pipe``'s family; ``pipe`` the object
            :func:`load_translator` returned for it.
        images: PIL image(s) (or numpy / tensor images, see the pipelines); sides multiples of the family's factor.
        source_prompt / target_prompt: text, a list of texts, or (VP models) embedding tensors (batch, tokens, dim).
        nfe: batched network calls per image batch (>= 2; None: the model's default). LSB: NFE - 1 solver steps +
            final denoise; SDEdit: nfe denoising steps; DDIB: nfe // 2 inversion + the rest sampling; FlowEdit: nfe
            edit steps n_max (None: its published setting).
        guidance_scale: LSB's w on the predictor difference; SDEdit's CFG (source prompt as negative) or FLUX's
            distilled guidance; DDIB's CFG; FlowEdit's target guidance. None: the model folder's
            ``lsb_defaults.json``, else each method's default.
        tau, t0: the paper's tau and t_0 (None: the folder's defaults, else the paper's 5.29 / 0.2); SDEdit uses them
            only for its start level; DDIB and FlowEdit ignore them.
        generator: torch generator(s); DDIB is deterministic and ignores it.
        output_type: "pil", "np", "pt" or "latent".
        return_forward_passes: also return the latents evaluated per image (LSB 2 per call, SDEdit 2 with CFG,
            FlowEdit on SD3 4).
        mask_image / mask_feather: translate a region only (white = may change, black = keep; every method and
            family; :mod:`lsb.helpers.masks`): pixels outside the mask are the input's.
        kwargs: method-specific extras (e.g. FlowEdit's ``source_guidance_scale``, ``max_sequence_length``).

    Returns:
        ``(images, nfe_spent)``, or ``(images, nfe_spent, forward_passes)``.
    """
    if method == "student":  # a one-step student (lsb distill, lsb.surfaces.students): its own settings, 1 call
        from .students import student_translate

        images, nfe_spent, passes = student_translate(pipe, images, generator=generator, output_type=output_type)
        return (images, nfe_spent, passes) if return_forward_passes else (images, nfe_spent)
    from ..families import native_resolution
    from ..helpers.masks import check_mask_method
    from ..helpers.memory import tile_vae_for

    family = family_of(pipe)
    spec = check_method(method, family)
    check_mask_method(method, mask_image)  # one line for a method that cannot take a mask
    if mask_image is not None:
        kwargs.update(mask_image=mask_image, mask_feather=mask_feather)
    tile_vae_for(pipe, images, native_resolution(pipe))  # inputs beyond the native size: VAE tiling
    images, spent, passes = spec.translate(
        pipe,
        family,
        images,
        source_prompt,
        target_prompt,
        nfe=nfe,
        guidance_scale=guidance_scale,
        tau=tau,
        t0=t0,
        generator=generator,
        output_type=output_type,
        **kwargs,
    )
    return (images, spent, passes) if return_forward_passes else (images, spent)


__all__ = ["METHODS", "export_components", "load_translator", "translate"]
