"""Checks of command-line arguments, run before any model is loaded: each failure is one ``ValueError`` line
naming the argument (``lsb: error: ...``, exit 2).

Numbers must be finite and in range, paths must exist and be readable, a domain or model that looks like a path
must exist (a misspelled folder is not taken as a text prompt or a Hub id), a learned embedding must be finite,
and the device must be available. Only :func:`check_device` imports torch.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from ..io.images import DEFAULT_MAX_PIXELS, ImageInputError

from ..io.assets import EMBEDDED_MODELS, MINI_SD3

EMBEDDED_NAMES = (None, "", *EMBEDDED_MODELS)


def embedded_model(model):
    """``--model`` with the embedded SD3 name ("mini-sd3") replaced by its folder (None / "mini-sd" stay: every
    surface reads them as the embedded mini SD)."""
    return str(MINI_SD3) if model == "mini-sd3" else model


class ArgumentError(ValueError):
    """A command-line argument that cannot be used; the message names it."""


def finite(value, flag: str, *, low=None, high=None, low_open=False, high_open=False, integer=False):
    """``value`` if it is a finite number in the range, else an :class:`ArgumentError` naming ``flag``."""
    if value is None:
        return value
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ArgumentError(f"{flag} must be an integer, got {value!r}")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArgumentError(f"{flag} must be a finite number, got {value!r}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        raise ArgumentError(f"{flag} must be {' and '.join(x for x in (lo, hi) if x)}, got {value}")
    return value


def positive_int(value, flag: str):
    return finite(value, flag, low=1, integer=True)


def check_seed(seed, flag: str = "--seed") -> int:
    return finite(seed, flag, low=0, high=2**63 - 1, integer=True)


def check_max_pixels(value, flag: str = "--max-pixels") -> int:
    return DEFAULT_MAX_PIXELS if value is None else finite(value, flag, low=64, integer=True)


def check_size_arg(size, flag: str = "--size"):
    if size is None:
        return None
    finite(size, flag, low=8, integer=True)
    if size % 8:
        raise ArgumentError(f"{flag} must be a multiple of 8 (the VAE's factor), got {size}")
    return size


def looks_like_path(spec: str) -> bool:
    """A name with a path separator, a leading ``.``/``~``, or a ``.safetensors`` suffix."""
    s = str(spec)
    return "/" in s or os.sep in s or s.startswith((".", "~")) or s.endswith(".safetensors")


def check_domain_arg(spec: str, flag: str) -> str:
    """A domain given as text or as a learned-domain file / folder: one that looks like a path must exist, and the
    embeddings in it must be finite (read without torch)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ArgumentError(f"{flag} is empty; give a text prompt or a learned_embeds.safetensors file/folder")
    p = Path(spec).expanduser()
    if not p.exists():
        if looks_like_path(spec):
            raise ArgumentError(f"{flag} {spec}: no such file or folder (a text prompt must not look like a path)")
        return spec
    from ..prompts.domains import EMBEDS_NAME, DomainFileError

    f = p / EMBEDS_NAME if p.is_dir() else p
    if not f.is_file():
        raise DomainFileError(f"{flag} {spec}: no {EMBEDS_NAME} there")
    if not os.access(f, os.R_OK):
        raise DomainFileError(f"{flag} {f}: not readable")
    check_embeddings_finite(f, flag)
    return spec


def check_embeddings_finite(path, flag: str = "domain") -> None:
    """A :class:`~lsb.prompts.domains.DomainFileError` when a learned-domain file holds NaN or infinite values
    (corrupt files are left to the loader's own message)."""
    import numpy as np

    from ..prompts.domains import DomainFileError

    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            bad = [k for k in f.keys() if not np.isfinite(np.asarray(f.get_tensor(k), dtype=np.float64)).all()]
    except Exception:  # noqa: BLE001 (bf16 or corrupt files: the loader reports those)
        return
    if bad:
        raise DomainFileError(
            f"{flag} {path}: the learned embedding {bad[0]!r} holds NaN or infinite values "
            f"(a diverged run?); learn the domain again, e.g. with a lower --lr"
        )


def check_model_arg(model, flag: str = "--model"):
    """A ``--model`` that looks like a local path must exist (an error naming it, not a Hub look-up): it starts
    with ``.``, ``/`` or ``~``, has two or more ``/``, or its first part is a folder here (``models/nothere`` with
    a ``models`` folder). Complete folders are checked by the loader."""
    if model in EMBEDDED_NAMES:
        return model
    s = str(model)
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ArgumentError(f"{flag} {model} is a file; expected a diffusers model folder")
        return model
    first = Path(s.split("/")[0]).expanduser()
    if s.startswith((".", "/", "~")) or s.count("/") != 1 or os.sep != "/" and os.sep in s or first.is_dir():
        raise ArgumentError(
            f"{flag} {model}: model folder {model} does not exist (not looked up on the Hub: it names a local path)"
        )
    return model


def check_model_folder_before_load(model, flag: str = "--model"):
    """A local ``--model`` folder (or the embedded model) checked as the loader will find it, before the model
    loads: complete, of the right kind, its weight files whole (:func:`lsb.helpers.loading.resolve_model`,
    :mod:`lsb.io.weights`). A Hub id is left to the loader."""
    from ..helpers.loading import resolve_model

    return resolve_model(model)


def hub_failure(model, err: BaseException, flag: str = "--model") -> ArgumentError:
    """One line for a Hub id that could not be loaded (offline, no such repo, no access)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ArgumentError(
        f"{flag} {model}: not a local folder, and loading it from the Hub failed ({type(err).__name__}: {first[:200]})"
    )


def check_device(device, flag: str = "--device"):
    """``device`` parsed by torch and available here (cuda / mps present, index in range)."""
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ArgumentError(f"{flag} {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ArgumentError(f"{flag} {device}: no CUDA GPU is available here; use --device cpu (or leave it out)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ArgumentError(f"{flag} {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ArgumentError(f"{flag} {device}: MPS is not available here; use --device cpu (or leave it out)")
    elif dev.type not in ("cpu",):
        if not getattr(getattr(torch, dev.type, None), "is_available", lambda: False)():
            raise ArgumentError(f"{flag} {device}: device type {dev.type} is not available here")
    return device


#: diffusers' notices on a failed Hub look-up; the command reports the failure itself, in one line
HUB_NOTICES = ("Couldn't connect to the Hub", "Will try to load from local cache")


class _DropHubNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in HUB_NOTICES)


def quiet_loading() -> None:
    """No loading bars from diffusers / transformers while a command loads its model (the command shows its own
    progress; :func:`lsb.io.quiet.quiet_loading_bars`), and no Hub-connection notices before the command's own
    one-line error. Every other library warning still prints."""
    from ..io.quiet import quiet_loading_bars

    quiet_loading_bars()
    for name in ("diffusers", "diffusers.pipelines.pipeline_utils", "diffusers.pipelines.pipeline_loading_utils"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropHubNotices) for f in logger.filters):
            logger.addFilter(_DropHubNotices())


def check_readable_file(path, flag: str, what: str = "file") -> Path:
    p = Path(path)
    if not p.exists():
        raise ImageInputError(f"{flag} {path}: no such {what}")
    if p.is_dir():
        raise ImageInputError(f"{flag} {path}: is a folder, not a {what}")
    if not os.access(p, os.R_OK):
        raise ImageInputError(f"{flag} {path}: not readable")
    return p


__all__ = [
    "ArgumentError",
    "check_device",
    "check_domain_arg",
    "check_embeddings_finite",
    "check_max_pixels",
    "check_model_arg",
    "check_model_folder_before_load",
    "check_readable_file",
    "check_seed",
    "check_size_arg",
    "finite",
    "hub_failure",
    "looks_like_path",
    "positive_int",
]
