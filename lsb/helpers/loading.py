"""Resolve a model argument (embedded, local folder or Hub id) and load pipelines with clear errors."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import torch

from ..families import FAMILIES, ModelFamily, detect_family, embedded_path, read_model_index
from ..io.execution import default_device
from ..io.quiet import quiet_loading_if_requested
from ..io.weights import check_model_files

SD_COMPONENTS = FAMILIES["sd"].components


class ModelFolderError(FileNotFoundError):
    """A model folder that is missing or incomplete."""


class CustomCodeError(ValueError):
    """A model whose loading would run code shipped with it, without ``trust_remote_code``."""


#: Libraries whose classes a model_index.json entry may name without running code from the model.
LIBRARIES = ("diffusers", "transformers")


def resolve_model(model: str | None) -> str:
    """None / an embedded name ("mini-sd", "mini-sd3") -> the embedded model's folder; a local path must be a
    complete diffusers folder of a supported family (its components checked); a Hub id is returned as is."""
    embedded = embedded_path(model)
    if embedded is not None:
        model = embedded
        if not (Path(model) / "model_index.json").is_file():
            raise ModelFolderError(
                f"the embedded model is missing from {model}; reinstall lsb or train it with `lsb train`"
            )
    p = Path(model).expanduser()
    looks_local = p.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local:
        check_model_files(p)  # wrong kind, truncated or unreadable weights: one line (lsb.io.weights)
        family = detect_family(str(p)) if p.is_dir() else FAMILIES["sd"]
        check_model_folder(p, family.components)
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


def device_and_dtype(device, dtype, family: ModelFamily | None = None) -> tuple[torch.device, torch.dtype]:
    """``device`` (default :func:`default_device`) and ``dtype``: a dtype or its name ("float16", "bfloat16",
    "float32"); None or "auto" is the dtype diffusers runs ``family`` in on that device (its record's
    ``dtypes``; no family: float16 on cuda, float32 elsewhere)."""
    device = torch.device(device) if device is not None else default_device()
    if dtype is None or dtype == "auto":
        if family is not None:
            dtype = family.dtype_name(device.type)
        else:
            dtype = "float16" if device.type == "cuda" else "float32"
    return device, as_dtype(dtype)


def as_dtype(dtype) -> torch.dtype:
    """A torch dtype from a dtype or one of the names "float32", "float16", "bfloat16" (ValueError otherwise)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {', '.join(names)} (or auto), got {dtype!r}")
    return names[dtype]


def float16_warning(family: ModelFamily, dtype) -> str | None:
    """The one-line warning for running ``family`` in float16 when it is unstable there, else None."""
    if as_dtype(dtype) == torch.float16 and family.float16_unstable:
        return f"{family.label} in float16 may give NaNs or black images: {family.float16_unstable}"
    return None


def check_model_folder(path: str | Path, components=SD_COMPONENTS) -> None:
    p = Path(path)
    index = model_index_file(p)
    try:
        entries = read_model_index(p)  # THE reader (lsb.families)
    except ValueError as e:  # json.JSONDecodeError
        raise ModelFolderError(f"{index} is not valid JSON ({e})") from None
    missing = []
    for name in components:
        if name not in entries:
            missing.append(f"{name} (not in model_index.json)")
        elif not (p / name).is_dir() or not any((p / name).iterdir()):
            missing.append(f"{name}/ (folder missing or empty)")
    if missing:
        raise ModelFolderError(f"model folder {p} is incomplete: {', '.join(missing)}")


def absent_components(model) -> dict:
    """``{name: None}`` for each optional text encoder / tokenizer of the family that a local folder saved as null
    (an SD3 folder without T5: diffusers 0.42 refuses to load it unless told), else ``{}``."""
    if model is None or not (Path(str(model)).expanduser() / "model_index.json").is_file():
        return {}
    family = family_or_none(model)
    if family is None:
        return {}
    entries = read_model_index(model)
    optional_encoders = {a for s in family.encoder_slots for a in (s.tokenizer_attr, s.text_encoder_attr)}
    return {
        k: None
        for k in family.optional_components
        if k in optional_encoders and k in entries and (not isinstance(entries[k], list) or entries[k][0] is None)
    }


def detect_model_family(model: str | None) -> str:
    """The family name of a ``--model`` argument (:func:`lsb.families.detect_family`), before any weights load; a
    local folder is also checked for its family's components."""
    family = detect_family(model)
    p = Path(str(model)).expanduser() if embedded_path(model) is None else None
    if p is not None and p.is_dir():
        check_model_folder(p, family.components)
    return family.name


def load_pipeline(
    cls,
    model: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool | None = None,
    known=None,
    offload: str = "none",
    **kwargs,
):
    """``cls.from_pretrained`` on a resolved model, moved to ``device`` (``offload`` "model" / "sequential": CPU
    offload to it, :func:`lsb.helpers.memory.apply_offload`); float32 on CPU by default.

    A model whose model_index.json names code shipped with it (an ``lsb export`` folder: ``pipeline.py``,
    ``scheduler/scheduling_lsb.py``) is built with :func:`load_pipeline_without_code` when every such entry is in
    ``known`` (``(module, class)`` -> installed class) or is the pipeline entry; otherwise its code runs only with
    ``trust_remote_code``: None (default) trusts a local folder the caller named, never a Hub id. Refused:
    a :class:`CustomCodeError` (one line) before any download of weights.
    """
    quiet_loading_if_requested()  # the lsb CLI: no nested loading bars (lsb.io.quiet)
    path = resolve_model(model)
    device, dtype = device_and_dtype(device, dtype, family_or_none(path))
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
    from .memory import apply_offload

    return apply_offload(pipe, offload, device)


def family_or_none(model) -> ModelFamily | None:
    """The family of ``model`` when its index can be read and is a supported family, else None (for dtype defaults:
    loading reports any real problem)."""
    try:
        return detect_family(model, default=None)
    except Exception:  # noqa: BLE001
        return None


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
    the model runs. The pipeline entry of the index is ignored: ``cls`` is used. ``kwargs`` override components;
    a ``quantization_config`` (diffusers' ``PipelineQuantizationConfig``) goes to the components it maps."""
    index = read_model_index(path)
    quant_mapping = getattr(kwargs.pop("quantization_config", None), "quant_mapping", None) or {}
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
        extra = {"dtype": dtype} if is_module else {}
        if is_module and name in quant_mapping:
            extra["quantization_config"] = quant_mapping[name]
        parts[name] = klass.from_pretrained(path, subfolder=name, **extra)
    pipe = cls(**parts, **kwargs)
    pipe.register_to_config(_name_or_path=str(path))
    return pipe
