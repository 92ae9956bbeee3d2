"""``lsb.AutoPipelineForTranslation``: the right family's translation pipeline for a model, as diffusers'
``AutoPipelineForImage2Image`` picks the right image-to-image pipeline."""

from __future__ import annotations

import inspect


class AutoPipelineForTranslation:
    r"""Load the translation pipeline for a model's family and a method.

    The family (SD 1.x/2.x, SDXL, SD3 / SD3.5, FLUX.1, Z-Image, Qwen-Image, FLUX.2) is read from the model's ``model_index.json`` before any
    weights load (:mod:`lsb.families`); ``method`` picks the pipeline:

    ==========  ==========================================  ==========================================
    method      SD 1.x/2.x, SDXL (VP)                       SD3 / SD3.5, FLUX.1, Z-Image, Qwen-Image (flow)
    ==========  ==========================================  ==========================================
    "lsb"       LatentSchrodingerBridge(XL)Pipeline          LatentSchrodingerBridge{SD3,Flux,ZImage,QwenImage,Flux2}Pipeline
    "flowedit"  --                                          FlowEdit{SD3,Flux,ZImage,QwenImage,Flux2}Pipeline
    "sdedit"    diffusers' StableDiffusion(XL)Img2Img (DDIM)  diffusers' {StableDiffusion3,Flux,ZImage,QwenImage}Img2Img (not FLUX.2)
    "ddib"      DDIB(XL)Pipeline                             --
    ==========  ==========================================  ==========================================

    Example::

        import lsb

        pipe = lsb.AutoPipelineForTranslation.from_pretrained(lsb.MINI_SD, method="lsb")
        out = pipe(image, source_prompt="a circle", target_prompt="a square")

    This class cannot be instantiated; use :meth:`from_pretrained` or :meth:`from_pipe`.
    """

    def __init__(self, *args, **kwargs):
        raise EnvironmentError(
            f"{type(self).__name__} is designed to be instantiated with "
            f"`{type(self).__name__}.from_pretrained(model, method=...)` or `.from_pipe(pipe, method=...)`"
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_or_path=None,
        method: str = "lsb",
        device=None,
        dtype=None,
        offload=None,
        quantize=None,
        **kwargs,
    ):
        """The pipeline that runs ``method`` on ``pretrained_model_or_path``.

        Args:
            pretrained_model_or_path: a local diffusers folder, a Hub id, an ``lsb export`` folder, or an embedded
                model (``lsb.MINI_SD`` / None / "mini-sd", ``lsb.MINI_SD3`` / "mini-sd3").
            method: "lsb", "flowedit", "sdedit" or "ddib", where the family supports it; another combination is a
                ValueError naming what the family supports (before any weights load).
            device: where to put the pipeline (default: the best available accelerator, else the CPU).
            offload: "none", "model" or "sequential": diffusers' CPU offload (needs an accelerator).
            quantize: "int8" or "float8": torchao weight-only quantization of the transformer / UNet and the text
                encoders (docs/guides/big-models.md).
            dtype: a torch dtype or "float32" / "float16" / "bfloat16"; None or "auto": the dtype diffusers runs
                the family in on that device (FLUX.1 bfloat16 on CUDA, SD float16, everything float32 on CPU).
            kwargs: passed to the pipeline's ``from_pretrained`` (``variant``, ``trust_remote_code``, components...).
        """
        from .translators import load_translator

        return load_translator(
            method, pretrained_model_or_path, device=device, dtype=dtype, offload=offload, quantize=quantize, **kwargs
        )

    @classmethod
    def from_pipe(cls, pipeline, method: str = "lsb", **kwargs):
        """The ``method`` pipeline of ``pipeline``'s family built from ``pipeline``'s components (no weights load,
        no copies: the modules are shared). ``kwargs`` replace components."""
        from ..families import family_of
        from .methods import check_method

        family = family_of(pipeline)
        spec = check_method(method, family)
        target = family.pipeline_class(method)
        accepted = inspect.signature(target.__init__).parameters
        parts = {k: v for k, v in pipeline.components.items() if k in accepted}
        extra = {k: v for k, v in spec.load_kwargs(family).items() if k in accepted and k not in parts}
        pipe = target(**{**parts, **extra, **kwargs})
        if spec.prepare is not None:
            spec.prepare(pipe)
        return pipe


__all__ = ["AutoPipelineForTranslation"]
