"""Cheap checks of a local model folder before any weights load (issue 22 item 4): one line naming the folder (or the
file) and the problem, instead of a torch ``RuntimeError`` about channels or a diffusers traceback.

* :func:`check_folder_kind`: the folder holds the kind of model the caller needs. A text-to-image model (what
  ``lsb translate``, ``lsb learn-domain``, ``lsb export`` and the demo use) is not an lsb restoration model (its UNet
  takes the degraded image's latents as extra channels), nor an inpainting / upscaling pipeline; a component must
  come from a library that is installed (or from code shipped in the folder).
* :func:`check_weight_files`: every model component has its weights, each ``.safetensors`` file is complete (its
  header parses and the file is as long as the header says: an interrupted download is caught), each shard a
  ``*.safetensors.index.json`` names is there, each ``.bin`` (a zip archive) has its central directory, and every
  file is readable. Only headers are read, never the tensors.

No torch here (the core layer); :func:`lsb.helpers.loading.resolve_model` calls :func:`check_model_files`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import zipfile
from pathlib import Path

from .runs import shown


class ModelFilesError(ValueError):
    """A model folder of the wrong kind, or with missing, truncated or unreadable weight files."""


#: lsb's restoration pipelines (``lsb restore`` runs them; they cannot translate)
RESTORATION_PIPELINES = (
    "BridgeRestorationPipeline",
    "ConditionalDiffusionRestorationPipeline",
    "DiffIRPipeline",
    "DDMPipeline",
)
#: libraries a component may come from without code shipped in the folder
KNOWN_LIBRARIES = ("diffusers", "transformers")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
#: a safetensors header longer than this is not a header (the format caps it at 100 MB)
MAX_HEADER = 100_000_000


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except PermissionError:
        raise ModelFilesError(f"{shown(path)} is not readable") from None
    except (OSError, ValueError) as e:
        raise ModelFilesError(f"{shown(path)} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelFilesError(f"{shown(path)} is not a JSON object")
    return data


def check_model_files(folder, kind: str = "text-to-image") -> None:
    """:func:`check_folder_kind` then :func:`check_weight_files` on a local diffusers folder (a folder without a
    ``model_index.json`` is left to the caller's own message)."""
    root = Path(folder)
    if not (root / "model_index.json").is_file():
        return
    index = _json(root / "model_index.json")  # read once for both checks
    check_folder_kind(root, kind, index)
    check_weight_files(root, index)


def check_folder_kind(folder, kind: str = "text-to-image", index: dict | None = None) -> None:
    """A :class:`ModelFilesError` when ``folder`` is not a ``kind`` model (``"text-to-image"`` or ``"restoration"``)
    or names a component of a library that is not installed (``index``: its ``model_index.json``, if already read)."""
    root = Path(folder)
    index = _json(root / "model_index.json") if index is None else index
    name = index.get("_class_name")
    name = name[-1] if isinstance(name, list) else name
    if kind == "text-to-image" and name in RESTORATION_PIPELINES:
        raise ModelFilesError(
            f"model folder {shown(root)} is an lsb restoration model ({name}), not a text-to-image model; "
            f"use it with `lsb restore --model {shown(root)}`"
        )
    for comp, entry in index.items():
        if comp.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or entry[0] is None:
            continue
        library = str(entry[0]).split(".")[0]
        shipped = (root / f"{entry[0]}.py").is_file() or (root / comp / f"{entry[0]}.py").is_file()
        if library not in KNOWN_LIBRARIES and library != "lsb" and not shipped:
            if importlib.util.find_spec(library) is None:
                raise ModelFilesError(
                    f"model folder {shown(root)}: component {comp} is a {entry[1]} of the library {library!r}, "
                    f"which is not installed (a pipeline of another library?)"
                )
    if kind == "text-to-image":
        if "unet" not in index and "transformer" not in index:
            raise ModelFilesError(
                f"model folder {shown(root)} holds a {name or 'pipeline'} without a unet or transformer: not a "
                f"text-to-image diffusion model lsb can translate with"
            )
        _check_latent_channels(root, index, name)


def _check_latent_channels(root: Path, index: dict, name) -> None:
    """A text-to-image denoiser takes exactly the VAE's latent channels (FLUX: packed 2 x 2, four times as many)."""
    vae_cfg = root / "vae" / "config.json"
    if "vae" not in index or not vae_cfg.is_file():
        return
    latent = _json(vae_cfg).get("latent_channels")
    for comp, factor in (("unet", (1,)), ("transformer", (1, 4))):
        cfg = root / comp / "config.json"
        if comp not in index or not cfg.is_file():
            continue
        channels = _json(cfg).get("in_channels")
        if isinstance(latent, int) and isinstance(channels, int) and channels not in [latent * f for f in factor]:
            what = f"a {name}" if isinstance(name, str) else "a pipeline"
            raise ModelFilesError(
                f"model folder {shown(root)} is {what} whose {comp} takes {channels} input channels but its VAE gives "
                f"{latent}: an inpainting, upscaling or restoration model, not a text-to-image model"
            )


def check_weight_files(folder, index: dict | None = None) -> None:
    """A :class:`ModelFilesError` naming the first missing, truncated or unreadable weight file of ``folder``'s
    components (see the module docstring; ``index``: its ``model_index.json``, if already read)."""
    root = Path(folder)
    index = _json(root / "model_index.json") if index is None else index
    for comp, entry in index.items():
        if comp.startswith("_") or not isinstance(entry, list) or entry[0] is None:
            continue
        sub = root / comp
        if not (sub / "config.json").is_file():
            continue  # tokenizers, schedulers, feature extractors: no weights
        if not os.access(sub, os.R_OK | os.X_OK):
            raise ModelFilesError(f"model folder {shown(root)}: {comp}/ is not readable")
        files = sorted(p for p in sub.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
        shard_indexes = sorted(sub.glob("*.index.json"))
        if not files and not shard_indexes:
            raise ModelFilesError(
                f"model folder {shown(root)}: {comp}/ holds no weights (.safetensors or .bin); an incomplete copy "
                f"or download?"
            )
        for shard_index in shard_indexes:
            weight_map = _json(shard_index).get("weight_map") or {}
            for shard in sorted(set(weight_map.values())):
                if not (sub / shard).is_file():
                    raise ModelFilesError(
                        f"model folder {shown(root)}: {comp}/{shard} is missing (named by {shard_index.name}); "
                        f"an incomplete download?"
                    )
        for f in files:
            check_weight_file(f)


def check_weight_file(path) -> None:
    """One weight file: readable, and complete (safetensors: header and length; .bin: a zip with its directory)."""
    p = Path(path)
    if not os.access(p, os.R_OK):
        raise ModelFilesError(f"weight file {shown(p)} is not readable")
    size = p.stat().st_size
    if size == 0:
        problem = "it is empty"
    elif p.name.endswith(".safetensors"):
        problem = _safetensors_problem(p, size)
    else:
        with open(p, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"  # torch.save's format; an old-style pickle is left to the loader
        problem = _zip_problem(p) if zipped else None
    if problem:
        raise ModelFilesError(f"weight file {shown(p)} is damaged: {problem}; an interrupted download? fetch it again")


def _safetensors_problem(p: Path, size: int) -> str | None:
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes, too short for a safetensors header"
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, size - 8):
                return f"its header claims {n} bytes but the file has {size}"
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"unreadable header ({type(e).__name__})"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            return f"tensor {key!r} has no data offsets"
        end = max(end, int(offsets[1]))
    expected = 8 + n + end
    if size < expected:
        return f"truncated ({size} of {expected} bytes)"
    return None


def _zip_problem(p: Path) -> str | None:
    try:
        with zipfile.ZipFile(p) as z:
            z.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        return f"not a complete archive ({e})"
    return None


__all__ = [
    "KNOWN_LIBRARIES",
    "ModelFilesError",
    "RESTORATION_PIPELINES",
    "check_folder_kind",
    "check_model_files",
    "check_weight_file",
    "check_weight_files",
]
