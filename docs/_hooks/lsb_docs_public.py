"""What the documentation site documents, computed from the code (shared by the mkdocs hook and the griffe extension).

``public_api()`` maps every name of ``lsb.__all__`` to the module path where it is defined. ``lsb/__init__.py``
resolves most names lazily (``lsb.__getattr__``), which griffe, reading the source statically, cannot follow; so the
names are imported here and their ``__module__`` / ``__qualname__`` give the real path
(``LatentSchrodingerBridgePipeline`` -> ``lsb_pipelines.lsb.pipeline.LatentSchrodingerBridgePipeline``). A value
without a module of its own (``MINI_SD``, a string) is documented where ``lsb/__init__.py`` imports it from.
"""

from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path


@functools.cache
def public_api() -> dict[str, str]:
    """``{public name: path of its definition}`` for every name of ``lsb.__all__``, in ``__all__``'s order."""
    import lsb

    imported = _static_imports(Path(lsb.__file__))
    paths = {}
    for name in lsb.__all__:
        obj = getattr(lsb, name)  # a name of __all__ that does not resolve fails the build here
        if inspect.isclass(obj) or inspect.isfunction(obj):
            paths[name] = f"{obj.__module__}.{obj.__qualname__}"
        elif name in imported:
            paths[name] = imported[name]
        else:
            raise ValueError(f"lsb.{name} is neither a class nor a function nor imported by name in lsb/__init__.py")
    return paths


def _static_imports(init: Path) -> dict[str, str]:
    """``from .x.y import NAME`` lines of ``lsb/__init__.py`` as ``{NAME: "lsb.x.y.NAME"}``."""
    out = {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                out[alias.asname or alias.name] = f"lsb.{node.module}.{alias.name}"
    return out


def kind(name: str) -> str:
    """The API section a public name belongs to."""
    import lsb

    obj = getattr(lsb, name)
    if inspect.isclass(obj):
        from diffusers import DiffusionPipeline, SchedulerMixin
        from diffusers.utils import BaseOutput

        if issubclass(obj, DiffusionPipeline):
            return "Pipelines"
        if issubclass(obj, BaseOutput):
            return "Pipeline outputs"
        if issubclass(obj, SchedulerMixin):
            return "Schedulers"
        import torch

        if issubclass(obj, torch.nn.Module):
            return "Models"
        return "Classes"
    if inspect.isfunction(obj):
        return "Functions"
    return "Constants"


SECTIONS = ["Pipelines", "Pipeline outputs", "Schedulers", "Models", "Classes", "Functions", "Constants"]
