"""The model families lsb supports, and the one place that tells which family a model is.

:func:`family_of` answers for a loaded pipeline (by its denoiser's class), :func:`family_of_index` for a
``model_index.json`` dict, :func:`detect_family` for what a user names (the embedded model, a local folder or a
Hub id) before any weights load; :func:`read_model_index` is the one reader of ``model_index.json``.
Adding a family: write its module (a :class:`~lsb.families.record.ModelFamily` named ``FAMILY``) and add it to
:data:`FAMILIES`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..io.assets import EMBEDDED_MODELS, embedded_path
from . import flux, flux2, qwenimage, sd, sd3, sdxl, zimage
from .record import ModelFamily, index_entry_class, index_pipeline_class

#: name -> record (each record's ``matches`` excludes the others, so the order is only the order of messages)
FAMILIES: dict[str, ModelFamily] = {
    f.name: f for f in (sd.FAMILY, sdxl.FAMILY, sd3.FAMILY, flux.FAMILY, zimage.FAMILY, qwenimage.FAMILY, flux2.FAMILY)
}


#: lsb's own pipelines that are not text-to-image translators (a folder of one is refused by name)
OTHER_LSB_PIPELINES = {
    "BridgeRestorationPipeline": "an lsb restoration bridge (run it with `lsb restore --model ...`)",
    "ConditionalDiffusionRestorationPipeline": "an lsb restoration model (run it with `lsb restore --model ...`)",
    "DiffIRPipeline": "an lsb DiffIR restoration model (run it with `lsb restore --model ...`)",
    "DDMPipeline": "an lsb DDM model (lsb.DDMPipeline)",
}


class UnsupportedModelError(ValueError):
    """A model of a family lsb does not run (another library's pipeline, an lsb restoration bridge, ...)."""


def get_family(name: str) -> ModelFamily:
    """The record named ``name`` ("sd", "sdxl", "sd3", "flux"); ValueError naming the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; lsb supports {', '.join(FAMILIES)}")
    return FAMILIES[name]


def supported_labels() -> str:
    """ "SD 1.x/2.x, SDXL, SD3 / SD3.5, FLUX.1" for messages."""
    return ", ".join(f.label for f in FAMILIES.values())


def family_of(pipe) -> ModelFamily:
    """The family of a loaded pipeline (or any object with its components as attributes), by its denoiser.

    A transformer is matched by class (and base classes); a UNet with a second text encoder is SDXL, alone SD.
    Anything else is an :class:`UnsupportedModelError` naming what was found and the supported families.
    """
    for attr in ("transformer", "unet"):
        network = getattr(pipe, attr, None)
        if network is None:
            continue
        names = {c.__name__ for c in type(network).__mro__}
        if attr == "unet" and "UNet2DConditionModel" in names:
            return sdxl.FAMILY if getattr(pipe, "text_encoder_2", None) is not None else sd.FAMILY
        for family in FAMILIES.values():
            if family.network == attr and names & set(family.network_classes):
                return family
        raise UnsupportedModelError(
            f"{type(pipe).__name__} has {attr}={type(network).__name__}, which lsb does not run; "
            f"supported: {supported_labels()}"
        )
    raise UnsupportedModelError(
        f"{type(pipe).__name__} has neither a unet nor a transformer: not a text-to-image model lsb runs "
        f"(supported: {supported_labels()})"
    )


def family_of_index(index: dict, where: str = "this model") -> ModelFamily:
    """The family of a ``model_index.json`` dict; :class:`UnsupportedModelError` (one line) for any other model."""
    name = index_pipeline_class(index)
    if name in OTHER_LSB_PIPELINES:
        raise UnsupportedModelError(
            f"{where} is {OTHER_LSB_PIPELINES[name]}, not a text-to-image model; lsb translates with "
            f"{supported_labels()} models"
        )
    found = [family for family in FAMILIES.values() if family.matches(index)]
    if len(found) > 1:  # e.g. an SDXL pipeline class saved without text_encoder_2: the class decides
        found = [f for f in found if index_pipeline_class(index) in f.pipeline_classes] or found
    if found:
        return found[0]
    network = index_entry_class(index, "unet") or index_entry_class(index, "transformer")
    what = (name or "a folder without a pipeline class") + (f" with {network}" if network else "")
    missing = [
        f"{family.label} needs {', '.join(c for c in family.components if not index_entry_class(index, c))}"
        for family in FAMILIES.values()
        if index_entry_class(index, family.network) in family.network_classes
    ]
    hint = f" ({'; '.join(missing)})" if missing else ""
    raise UnsupportedModelError(
        f"{where} is a {what}{hint}: not a model lsb translates with; supported: {supported_labels()}"
    )


def read_model_index(model) -> dict:
    """The ``model_index.json`` of a local folder or a Hub repo (downloaded; offline: from the cache).

    Errors are the library's (FileNotFoundError, json errors, Hub errors); callers decide what they mean.
    """
    path = Path(str(model)).expanduser()
    if path.is_dir():
        return json.loads((path / "model_index.json").read_text())
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(str(model), "model_index.json")).read_text())


def native_resolution(model_or_pipe) -> int | None:
    """The image side (px) a translation model was built for, from a loaded pipeline or from what a user names
    (embedded name, local folder): the network's ``sample_size`` x the VAE factor, else the family's default
    (FLUX.1: 1024). None for a Hub id or a folder whose family cannot be read (its loader reports that)."""
    if hasattr(model_or_pipe, "vae_scale_factor"):  # a loaded pipeline
        family = family_of(model_or_pipe)
        network = getattr(model_or_pipe, family.network)
        size = getattr(network.config, "sample_size", None)
        size = getattr(model_or_pipe, "default_sample_size", None) if size is None else size
        return family.native_size({"sample_size": size}, model_or_pipe.vae_scale_factor)
    from ..io.images import model_native_size

    folder = embedded_path(model_or_pipe) or Path(str(model_or_pipe)).expanduser()
    if not Path(folder).is_dir():
        return None
    try:
        family = detect_family(str(folder), default=None)
    except Exception:  # noqa: BLE001
        return None
    return model_native_size(folder) or family.default_size


def pixel_multiple(pipe) -> int:
    """The side multiple (px) a pipeline's images must have: the VAE factor x the family's latent packing x the
    network's own patch size (SD: 8; SD3: 8 x 2; FLUX.1: 8 x 2)."""
    family = family_of(pipe)
    patch = getattr(getattr(pipe, family.network).config, "patch_size", 1) if family.base == "flow" else 1
    return int(pipe.vae_scale_factor) * family.latent_patch * int(patch or 1)


def detect_family(model, default: str | None = "sd") -> ModelFamily:
    """The family of what a user names, from its ``model_index.json``, before any weights load.

    ``model``: None / an embedded name (:data:`EMBEDDED_MODELS`), a local diffusers folder or a Hub id. A folder or
    index of an unsupported model is an :class:`UnsupportedModelError`. When the index cannot be read at all (a
    missing folder, a Hub id offline), the ``default`` family is returned (None: the error is raised): the loader
    then reports the real problem.
    """
    embedded = embedded_path(model)
    source = embedded or model
    try:
        index = read_model_index(source)
    except Exception:  # noqa: BLE001 (missing / offline / not a pipeline): the loader reports it
        if default is None:
            raise
        return get_family(default)
    return family_of_index(index, where=str(model if embedded is None else source))


__all__ = [
    "EMBEDDED_MODELS",
    "FAMILIES",
    "OTHER_LSB_PIPELINES",
    "UnsupportedModelError",
    "detect_family",
    "embedded_path",
    "family_of",
    "family_of_index",
    "get_family",
    "native_resolution",
    "pixel_multiple",
    "read_model_index",
    "supported_labels",
]
