"""Resolve a model argument (embedded, local folder or Hub id) and load pipelines with clear errors."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import torch

from ..io.assets import MINI_SD
from ..io.execution import default_device
from ..io.quiet import quiet_loading_if_requested
from ..io.weights import check_model_files

SD_COMPONENTS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")


class ModelFolderError(FileNotFoundError):
    """A model folder that is missing or incomplete."""


class CustomCodeError(ValueError):
    """A model whose loading would run code shipped with it, without ``trust_remote_code``."""


#: Libraries whose classes a model_index.json entry may name without running code from the model.
LIBRARIES = ("diffusers", "transformers")


def resolve_model(model: str | None) -> str:
    """``None``/"mini-sd" -> the embedded model; a local path must be a complete diffusers folder."""
    if model in (None, "", "mini-sd", "embedded"):
        model = MINI_SD
        if not (Path(model) / "model_index.json").is_file():
            raise ModelFolderError(
                f"the embedded model is missing from {model}; reinstall lsb or train it with "
                f"`lsb train mini-sd --stage all`"
            )
    p = Path(model).expanduser()
    looks_local = p.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local:
        check_model_files(p)  # wrong kind, truncated or unreadable weights: one line (lsb.io.weights)
        family = detect_model_family(str(p)) if p.is_dir() else "sd"
        check_model_folder(p, FLOW_COMPONENTS.get(family, SD_COMPONENTS))
        return str(p)
    return model  # a Hub repo id; diffusers reports download/offline problems itself


def model_index_file(p: Path, what: str = "model", kind: str = "model") -> Path:
    """``p / "model_index.json"``, or a :class:`ModelFolderError` naming the ``what`` folder ``p`` when it does not
    exist, is a file or has no model index (``kind``: the diffusers folder expected, "model" or "pipeline")."""
    if not p.exists():
        raise ModelFolderError(f"{what} folder {p} does not exist")
    if not p.is_dir():
        raise ModelFolderError(f"{what} path {p} is a file; expected a diffusers {kind} folder")
    index = p / "model_index.json"
    if not index.is_file():
        raise ModelFolderError(f"{p} is not a diffusers {kind} folder: model_index.json is missing")
    return index


def device_and_dtype(device, dtype) -> tuple[torch.device, torch.dtype]:
    """``device`` (default :func:`default_device`) and ``dtype`` (default float16 on cuda, float32 elsewhere)."""
    device = torch.device(device) if device is not None else default_device()
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    return device, dtype


def check_model_folder(path: str | Path, components=SD_COMPONENTS) -> None:
    p = Path(path)
    index = model_index_file(p)
    try:
        entries = json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise ModelFolderError(f"{index} is not valid JSON ({e})") from None
    missing = []
    for name in components:
        if name not in entries:
            missing.append(f"{name} (not in model_index.json)")
        elif not (p / name).is_dir() or not any((p / name).iterdir()):
            missing.append(f"{name}/ (folder missing or empty)")
    if missing:
        raise ModelFolderError(f"model folder {p} is incomplete: {', '.join(missing)}")


#: Pipeline classes (model_index.json ``_class_name``) of SDXL checkpoints and of lsb's SDXL translators.
SDXL_PIPELINE_CLASSES = (
    "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline",
    "LatentSchrodingerBridgeXLPipeline",
    "DDIBXLPipeline",
)
SDXL_COMPONENTS = SD_COMPONENTS + ("text_encoder_2", "tokenizer_2")
#: The folders an SD3 / FLUX model must hold (SD3's T5, text_encoder_3, is optional).
FLOW_COMPONENTS = {
    family: ("vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "transformer", "scheduler")
    for family in ("sd3", "flux")
}


def absent_components(model) -> dict:
    """``{"text_encoder_3": None, "tokenizer_3": None}`` for a local SD3 folder saved without T5 (its
    ``model_index.json`` holds nulls there, and diffusers 0.42 refuses to load it unless told), else ``{}``."""
    if model is None:
        return {}
    index = Path(str(model)).expanduser() / "model_index.json"
    if not index.is_file():
        return {}
    entries = json.loads(index.read_text())
    return {
        k: None
        for k in ("text_encoder_3", "tokenizer_3")
        if k in entries and (not isinstance(entries[k], list) or entries[k][0] is None)
    }


def detect_model_family(model: str | None) -> str:
    """The model family of a ``--model`` argument, from its ``model_index.json``, before any weights load.

    ``"sdxl"`` for an SDXL pipeline class or a UNet folder with a second text encoder (``text_encoder_2``),
    ``"sd3"`` / ``"flux"`` for an SD3 / FLUX transformer, else ``"sd"`` (SD 1.x/2.x; also when the index of a Hub
    id cannot be read offline). The embedded model (None) is ``"sd"``. A local SDXL folder is checked for all of its
    components (:data:`SDXL_COMPONENTS`).
    """
    if model in (None, "", "mini-sd", "embedded"):
        return "sd"
    p = Path(str(model)).expanduser()
    try:
        if p.is_dir():
            index = json.loads((p / "model_index.json").read_text())
        else:
            from huggingface_hub import hf_hub_download

            index = json.loads(Path(hf_hub_download(str(model), "model_index.json")).read_text())
    except Exception:  # noqa: BLE001 (missing / offline / not a pipeline): the loader reports it
        return "sd"
    name = index.get("_class_name")
    name = name[-1] if isinstance(name, list) else name
    transformer = (index.get("transformer") or [None, None])[-1]
    if transformer == "SD3Transformer2DModel":
        return "sd3"
    if transformer == "FluxTransformer2DModel":
        return "flux"
    second = index.get("text_encoder_2")
    if name in SDXL_PIPELINE_CLASSES or ("unet" in index and isinstance(second, list) and second[-1] is not None):
        if p.is_dir():
            check_model_folder(p, SDXL_COMPONENTS)
        return "sdxl"
    return "sd"


def load_pipeline(
    cls,
    model: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool | None = None,
    known=None,
    **kwargs,
):
    """``cls.from_pretrained`` on a resolved model, moved to ``device``; float32 on CPU by default.

    A model whose model_index.json names code shipped with it (an ``lsb export`` folder: ``pipeline.py``,
    ``scheduler/scheduling_lsb.py``) is built with :func:`load_pipeline_without_code` when every such entry is in
    ``known`` (``(module, class)`` -> installed class) or is the pipeline entry; otherwise its code runs only with
    ``trust_remote_code``: None (default) trusts a local folder the caller named, never a Hub id. Refused:
    a :class:`CustomCodeError` (one line) before any download of weights.
    """
    device, dtype = device_and_dtype(device, dtype)
    quiet_loading_if_requested()  # the lsb CLI: no nested loading bars (lsb.io.quiet)
    path = resolve_model(model)
    known = dict(known or {})
    try:
        index = read_model_index(path)
    except Exception:  # noqa: BLE001 (offline, missing repo, ...): diffusers reports it below, as before
        index = {}
    custom = custom_code_entries(index, known)
    if custom == ["_class_name"]:  # only the pipeline class is custom: build cls from the components, no code runs
        pipe = load_pipeline_without_code(cls, path, known, dtype, **kwargs)
    elif custom:
        if not (trust_remote_code or (trust_remote_code is None and Path(path).is_dir())):
            raise CustomCodeError(
                f"model {model} contains custom code ({', '.join(custom)}): pass "
                f"--trust-remote-code (trust_remote_code=True) to run it, after reviewing it"
            )
        pipe = cls.from_pretrained(path, dtype=dtype, trust_remote_code=True, **kwargs)
    else:
        pipe = cls.from_pretrained(path, dtype=dtype, **kwargs)
    pipe.set_progress_bar_config(leave=False)
    return pipe.to(device)


def read_model_index(model: str) -> dict:
    """The model_index.json of a local folder or a Hub repo (downloaded; offline: from the cache)."""
    p = Path(model)
    if p.is_dir():
        return json.loads((p / "model_index.json").read_text())
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(model, "model_index.json")).read_text())


def custom_code_entries(index: dict, known=()) -> list[str]:
    """Entries of a model_index.json that name code shipped with the model (not a class of :data:`LIBRARIES`
    nor one of ``known`` ``(module, class)`` pairs): ``"_class_name"`` for a custom pipeline, else the component."""
    custom = []
    pipe_entry = index.get("_class_name")
    if isinstance(pipe_entry, list) and tuple(pipe_entry) not in known:
        custom.append("_class_name")
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or entry[0] is None:
            continue
        if entry[0] not in LIBRARIES and tuple(entry) not in known:
            custom.append(name)
    return custom


def load_pipeline_without_code(cls, path: str, known: dict, dtype: torch.dtype, **kwargs):
    """``cls`` built from the components listed in ``path``'s model_index.json, each loaded with its library class
    (``known`` maps the model's own ``(module, class)`` entries to installed classes), so that no code shipped with
    the model runs. The pipeline entry of the index is ignored: ``cls`` is used. ``kwargs`` override components."""
    index = read_model_index(path)
    accepted = inspect.signature(cls.__init__).parameters
    parts = {}
    for name, entry in index.items():
        if name.startswith("_") or name not in accepted or name in kwargs:
            continue
        if not isinstance(entry, list):
            parts[name] = entry  # e.g. requires_safety_checker
            continue
        library, class_name = entry
        if library is None or class_name is None:
            parts[name] = None
            continue
        klass = known.get(tuple(entry))
        if klass is None:
            if library not in LIBRARIES:
                raise CustomCodeError(f"model {path}: component {name} is custom code ({library}.py)")
            klass = getattr(importlib.import_module(library), class_name)
        is_module = isinstance(klass, type) and issubclass(klass, torch.nn.Module)
        parts[name] = klass.from_pretrained(path, subfolder=name, **({"dtype": dtype} if is_module else {}))
    pipe = cls(**parts, **kwargs)
    pipe.register_to_config(_name_or_path=str(path))
    return pipe
