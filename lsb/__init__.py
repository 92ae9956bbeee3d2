"""lsb: Latent Schrödinger Bridge and diffusion-bridge methods as Hugging Face diffusers components.

``import lsb`` registers every lsb component class (schedulers, models) in ``sys.modules`` so that a
``model_index.json`` naming them loads with ``DiffusionPipeline.from_pretrained`` (diffusers 0.42.1
resolves non-diffusers libraries only among already-imported modules). Pipelines are imported lazily.
"""

from pathlib import Path as _Path

from .io.assets import MINI_SD, MINI_SD3

__version__ = "0.1.0"

from .schedulers import DBIMScheduler, DDBMScheduler, DDMScheduler, I2SBScheduler, LSBScheduler  # noqa: E402  (eager: from_pretrained)

from .schedulers import DiffIRScheduler  # noqa: E402
from .models.diffir import CPENS1, CPENS2, DIRformer, PriorDenoiser  # noqa: E402  (DiffIR components)

_PIPELINES = {
    "LatentSchrodingerBridgePipeline": ("lsb_pipelines.lsb.pipeline", "LatentSchrodingerBridgePipeline"),
    "LSBPipelineOutput": ("lsb_pipelines.lsb.pipeline", "LSBPipelineOutput"),
    "DDIBPipeline": ("lsb_pipelines.ddib.pipeline", "DDIBPipeline"),
    "DDIBPipelineOutput": ("lsb_pipelines.ddib.pipeline", "DDIBPipelineOutput"),
    "DiffIRPipeline": ("lsb_pipelines.diffir.pipeline", "DiffIRPipeline"),
    "DiffIRPipelineOutput": ("lsb_pipelines.diffir.pipeline", "DiffIRPipelineOutput"),
    "BridgeRestorationPipeline": ("lsb_pipelines.bridge.pipeline", "BridgeRestorationPipeline"),
    "ConditionalDiffusionRestorationPipeline": ("lsb_pipelines.palette.pipeline",
                                                "ConditionalDiffusionRestorationPipeline"),
    "RestorationPipelineOutput": ("lsb.helpers.restoration", "RestorationPipelineOutput"),
    "DDMPipeline": ("lsb_pipelines.ddm.pipeline", "DDMPipeline"),
    "DDMPipelineOutput": ("lsb_pipelines.ddm.pipeline", "DDMPipelineOutput"),
    "LatentSchrodingerBridgeSD3Pipeline": ("lsb_pipelines.lsb_sd3.pipeline", "LatentSchrodingerBridgeSD3Pipeline"),
    "LatentSchrodingerBridgeFluxPipeline": ("lsb_pipelines.lsb_flux.pipeline", "LatentSchrodingerBridgeFluxPipeline"),
    "FlowEditSD3Pipeline": ("lsb_pipelines.flowedit_sd3.pipeline", "FlowEditSD3Pipeline"),
    "FlowEditFluxPipeline": ("lsb_pipelines.flowedit_flux.pipeline", "FlowEditFluxPipeline"),
    "LatentSchrodingerBridgeXLPipeline": ("lsb_pipelines.lsb_xl.pipeline", "LatentSchrodingerBridgeXLPipeline"),
    "DDIBXLPipeline": ("lsb_pipelines.ddib_xl.pipeline", "DDIBXLPipeline"),
    "FlowEditPipelineOutput": ("lsb.helpers.flowedit", "FlowEditPipelineOutput"),
}


def pipeline_dir(name: str) -> str:
    """Folder of a pipeline file, for ``DiffusionPipeline.from_pretrained(..., custom_pipeline=...)``."""
    import lsb_pipelines

    path = _Path(lsb_pipelines.__file__).parent / name
    if not (path / "pipeline.py").is_file():
        raise ValueError(f"no lsb pipeline named {name!r}")
    return str(path)


def pipeline_class_names() -> list[str]:
    """Names of every lsb pipeline class (``lsb.<name>`` imports it on first use)."""
    return [n for n in _PIPELINES if n.endswith("Pipeline")]


def __getattr__(name):
    if name in _PIPELINES:
        import importlib

        module, attr = _PIPELINES[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lsb' has no attribute {name!r}")


__all__ = ["MINI_SD", "MINI_SD3", "LSBScheduler", "I2SBScheduler", "DDBMScheduler", "DBIMScheduler", "DDMScheduler", "DiffIRScheduler", "CPENS1", "CPENS2", "DIRformer", "PriorDenoiser", "pipeline_dir", "pipeline_class_names", *_PIPELINES]
