"""Resolve a model argument (embedded, local folder or Hub id) and load pipelines with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..io.assets import MINI_SD
from ..io.execution import default_device

SD_COMPONENTS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")


class ModelFolderError(FileNotFoundError):
    """A model folder that is missing or incomplete."""


def resolve_model(model: str | None) -> str:
    """``None``/"mini-sd" -> the embedded model; a local path must be a complete diffusers folder."""
    if model in (None, "", "mini-sd", "embedded"):
        model = MINI_SD
        if not (Path(model) / "model_index.json").is_file():
            raise ModelFolderError(f"the embedded model is missing from {model}; reinstall lsb or train it with "
                                   f"`lsb train mini-sd --stage all`")
    p = Path(model).expanduser()
    looks_local = p.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local:
        check_model_folder(p)
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


def load_pipeline(cls, model: str | None = None, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None, **kwargs):
    """``cls.from_pretrained`` on a resolved model, moved to ``device``; float32 on CPU by default."""
    device, dtype = device_and_dtype(device, dtype)
    path = resolve_model(model)
    pipe = cls.from_pretrained(path, dtype=dtype, **kwargs)
    pipe.set_progress_bar_config(leave=False)
    return pipe.to(device)


