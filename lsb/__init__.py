"""lsb: Latent Schrödinger Bridge and diffusion-bridge methods as Hugging Face diffusers components.

``import lsb`` registers every lsb component module (lsb.schedulers.*, lsb.models.*) in ``sys.modules`` so that
a ``model_index.json`` naming them loads with ``DiffusionPipeline.from_pretrained`` (diffusers 0.42.1 resolves
non-diffusers libraries only among already-imported modules). The modules load lazily (on first attribute
access), and so do the pipelines: ``import lsb`` does not import torch.
"""

from pathlib import Path as _Path
from types import ModuleType as _ModuleType

from .io.assets import MINI_SD, MINI_SD3

__version__ = "0.1.0"


class _LazyComponentModule(_ModuleType):
    """A component module registered in ``sys.modules`` that runs its code on the first access to a name it
    defines. Dunder attributes already set by the import system (``__spec__``, ``__file__``, ``__path__`` ...)
    answer without loading, so tools walking ``sys.modules`` (``inspect.getmodule``) do not trigger it."""

    def __getattribute__(self, attr):
        d = _ModuleType.__getattribute__(self, "__dict__")
        if attr in ("__dict__", "__class__") or (attr.startswith("__") and attr.endswith("__") and attr in d):
            return _ModuleType.__getattribute__(self, attr)
        _load_lazy(self)
        return getattr(self, attr)

    def __setattr__(self, attr, value):
        _ModuleType.__getattribute__(self, "__dict__")[attr] = value


def _load_lazy(module) -> None:
    import sys

    object.__setattr__(module, "__class__", _ModuleType)  # first: re-entrant access sees a module being imported
    spec = module.__spec__
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise


def _register_lazy_components() -> None:
    """Put a lazily-running module object into ``sys.modules`` for every component module (lsb.schedulers.*,
    lsb.models.*): diffusers 0.42.1 resolves a ``model_index.json`` entry such as
    ``["lsb.schedulers.scheduling_lsb", "LSBScheduler"]`` only via ``sys.modules``, so the modules must be there
    after ``import lsb``; each runs (importing torch/diffusers) only on its first attribute access, so
    ``import lsb`` stays cheap (``lsb --help`` imports no torch)."""
    import importlib.util
    import sys

    root = _Path(__file__).parent
    for pkg in ("schedulers", "models"):
        folder = root / pkg
        names = [(f"lsb.{pkg}", folder / "__init__.py", [str(folder)])]
        names += [(f"lsb.{pkg}.{f.stem}", f, None) for f in sorted(folder.glob("*.py")) if f.stem != "__init__"]
        for name, path, search in names:
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=search)
            module = importlib.util.module_from_spec(spec)
            module.__class__ = _LazyComponentModule
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            setattr(sys.modules[parent], child, module)  # a lazy parent stores it without running


_register_lazy_components()

#: public component classes, imported on first use (``lsb.LSBScheduler``)
_COMPONENTS = {
    **{
        n: "lsb.schedulers"
        for n in ("LSBScheduler", "I2SBScheduler", "DDBMScheduler", "DBIMScheduler", "DDMScheduler", "DiffIRScheduler")
    },
    **{n: "lsb.models.diffir" for n in ("CPENS1", "CPENS2", "DIRformer", "PriorDenoiser")},
}

#: public names defined outside the pipeline files: the entry point and two outputs shared by several pipelines
_OTHER_PUBLIC = {
    "AutoPipelineForTranslation": ("lsb.surfaces.auto", "AutoPipelineForTranslation"),
    "RestorationPipelineOutput": ("lsb.helpers.restoration_tasks", "RestorationPipelineOutput"),
    "FlowEditPipelineOutput": ("lsb.helpers.flowedit", "FlowEditPipelineOutput"),
    "LatentSchrodingerBridgeStudentPipeline": (
        "lsb_pipelines.lsb_student.pipeline",
        "LatentSchrodingerBridgeStudentPipeline",
    ),
}


def _discover_pipelines() -> dict[str, tuple[str, str]]:
    """Every ``DiffusionPipeline`` and ``BaseOutput`` class of ``pipelines/<name>/pipeline.py``, found by reading the
    files (not importing them: ``import lsb`` stays free of torch): name -> (module, class)."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("lsb_pipelines")
    if spec is None or not spec.submodule_search_locations:
        return {}
    pattern = re.compile(r"^class (\w+)\(([^)]*)\):", re.MULTILINE)
    found = {}
    for folder in spec.submodule_search_locations:
        for path in sorted(_Path(folder).glob("*/pipeline.py")):
            for name, bases in pattern.findall(path.read_text(encoding="utf-8")):
                if re.search(r"\b(DiffusionPipeline|BaseOutput)\b", bases):
                    found[name] = (f"lsb_pipelines.{path.parent.name}.pipeline", name)
    return found


_PIPELINES = {**_discover_pipelines(), **_OTHER_PUBLIC}


def pipeline_dir(name: str) -> str:
    """Folder of a pipeline file, for ``DiffusionPipeline.from_pretrained(..., custom_pipeline=...)``."""
    import lsb_pipelines

    path = _Path(lsb_pipelines.__file__).parent / name
    if not (path / "pipeline.py").is_file():
        raise ValueError(f"no lsb pipeline named {name!r}")
    return str(path)


def pipeline_class_names() -> list[str]:
    """Names of every lsb pipeline class (``lsb.<name>`` imports it on first use)."""
    return [
        n for n, (module, _) in _PIPELINES.items() if n.endswith("Pipeline") and module.startswith("lsb_pipelines.")
    ]


def __getattr__(name):
    if name in _PIPELINES or name in _COMPONENTS:
        import importlib

        module, attr = _PIPELINES[name] if name in _PIPELINES else (_COMPONENTS[name], name)
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lsb' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "MINI_SD",
    "MINI_SD3",
    "LSBScheduler",
    "I2SBScheduler",
    "DDBMScheduler",
    "DBIMScheduler",
    "DDMScheduler",
    "DiffIRScheduler",
    "CPENS1",
    "CPENS2",
    "DIRformer",
    "PriorDenoiser",
    "pipeline_dir",
    "pipeline_class_names",
    *_PIPELINES,
]
