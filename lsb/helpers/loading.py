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


#: Pipeline classes (model_index.json ``_class_name``) of SDXL checkpoints and of lsb's SDXL translators.
SDXL_PIPELINE_CLASSES = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
                         "StableDiffusionXLInpaintPipeline", "LatentSchrodingerBridgeXLPipeline", "DDIBXLPipeline")
SDXL_COMPONENTS = SD_COMPONENTS + ("text_encoder_2", "tokenizer_2")


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


def load_pipeline(cls, model: str | None = None, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None, **kwargs):
    """``cls.from_pretrained`` on a resolved model, moved to ``device``; float32 on CPU by default."""
    device, dtype = device_and_dtype(device, dtype)
    path = resolve_model(model)
    pipe = cls.from_pretrained(path, dtype=dtype, **kwargs)
    pipe.set_progress_bar_config(leave=False)
    return pipe.to(device)


