"""THE translation settings: the paper's defaults, a model folder's own (``lsb_defaults.json``), and THE checks.

A model folder carries the LSB settings that suit it in ``<folder>/lsb_defaults.json`` (diffusers ignores files it
does not know, so ``StableDiffusionPipeline.from_pretrained`` loads the folder without a warning)::

    {"translation": {"num_inference_steps": 8, "tau": 0.35, "t0": 0.02, "guidance_scale": 3.0, "solver": "euler"}}

A folder without the file (any stock Stable Diffusion checkpoint) gets the paper's settings
(:data:`PAPER_TRANSLATION`: 8 NFE, tau 5.29, t0 0.2, w 11, Euler; METHODS.md section 2). The CLI, the Python
pipeline, the demo and exported translators all resolve their unset arguments through :func:`translation_defaults`,
so one model gives one picture whichever surface runs it.

This module imports no torch (the CLI reads it for ``--help``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
from pathlib import Path

from .assets import embedded_path

#: the file name, at a model (or export) folder's root
DEFAULTS_FILE = "lsb_defaults.json"
SOLVERS = ("euler", "ddim", "multistep")


# ---------------------------------------------------------------------------------------------- checks
def check_nfe(nfe, minimum: int = 2, name: str = "num_inference_steps (NFE)") -> int:
    """``nfe`` as an int, or a ValueError if it is not an integer >= ``minimum``."""
    if isinstance(nfe, bool) or not isinstance(nfe, numbers.Integral) or nfe < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {nfe!r}")
    return int(nfe)


def check_tau(tau, name: str = "tau") -> float:
    """The paper's tau (variance of the bridge's Brownian reference): a finite number > 0."""
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"{name} must be a positive number, got {tau!r}")
    return float(tau)


def check_t0(t0, name: str = "t0") -> float:
    """The bridge start time t_0: a number strictly between 0 and 1."""
    if isinstance(t0, bool) or not isinstance(t0, numbers.Real) or not 0 < t0 < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {t0!r}")
    return float(t0)


def check_guidance(guidance_scale, name: str = "guidance_scale") -> float:
    """A guidance weight: a finite number (0 and negative weights are legal; NaN / inf are not)."""
    if (
        isinstance(guidance_scale, bool)
        or not isinstance(guidance_scale, numbers.Real)
        or not math.isfinite(guidance_scale)
    ):
        raise ValueError(f"{name} must be a finite number, got {guidance_scale!r}")
    return float(guidance_scale)


def check_bridge_settings(num_inference_steps, tau, t0) -> None:
    """The LSB pipelines' NFE / tau / t0 checks (None: resolved later), as one ValueError naming the input."""
    check_nfe(num_inference_steps)
    if tau is not None:
        check_tau(tau)
    if t0 is not None:
        check_t0(t0)


@dataclasses.dataclass(frozen=True)
class TranslationDefaults:
    """One model's translation settings, named as the pipeline's arguments (``solver``: the LSBScheduler's)."""

    num_inference_steps: int = 8
    tau: float = 5.29
    t0: float = 0.2
    guidance_scale: float = 11.0
    solver: str = "euler"

    def __post_init__(self):
        check_nfe(self.num_inference_steps, name="num_inference_steps")
        check_tau(self.tau)
        check_t0(self.t0)
        check_guidance(self.guidance_scale, name="guidance_scale")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


#: the LSB paper's settings (tau 5.29 is the official code's --tau 2.3 squared), for folders without their own
PAPER_TRANSLATION = TranslationDefaults()


# ---------------------------------------------------------------------------------------------- files
def read_translation_defaults(path) -> TranslationDefaults:
    """The settings in a ``lsb_defaults.json`` file; a ValueError naming the file if it is malformed."""
    path = Path(path)
    try:
        entry = json.loads(path.read_text())["translation"]
        return TranslationDefaults(**entry)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a valid {DEFAULTS_FILE} ({e})") from e


@functools.lru_cache(maxsize=64)
def _hub_file(repo_id: str):
    """The Hub repo's ``lsb_defaults.json``, or None.

    From the local cache; downloaded only when the model itself is not cached yet (its model_index.json is not), i.e.
    when loading it needs the network anyway, so an offline run of a cached model never waits on retries here.
    """
    try:
        import huggingface_hub

        cached = huggingface_hub.try_to_load_from_cache(repo_id, DEFAULTS_FILE)
        if isinstance(cached, str):
            return cached
        model_cached = isinstance(huggingface_hub.try_to_load_from_cache(repo_id, "model_index.json"), str)
        if cached is not None or model_cached or os.environ.get("HF_HUB_OFFLINE"):
            return None  # known to be absent, already fetched without it, or offline
        return huggingface_hub.hf_hub_download(repo_id, DEFAULTS_FILE)
    except Exception:  # noqa: BLE001  (no file, no network, not a repo id: the paper's settings)
        return None


def translation_defaults(model=None, fallback: TranslationDefaults | None = PAPER_TRANSLATION):
    """The translation settings of ``model``: None (the embedded mini SD), a local folder, a Hub id, or a loaded
    pipeline (the folder it was loaded from, ``pipe.config._name_or_path``; none: the paper's).

    A folder or repo with ``lsb_defaults.json`` gives its settings, any other ``fallback`` (the paper's,
    :data:`PAPER_TRANSLATION`).
    """
    if model is not None and not isinstance(model, (str, os.PathLike)):
        config = getattr(model, "config", None)
        model = getattr(config, "_name_or_path", None) if config is not None else None
        if not model:
            return fallback
    model = embedded_path(model) or model
    folder = Path(model)
    if folder.is_dir():
        file = folder / DEFAULTS_FILE
        return read_translation_defaults(file) if file.is_file() else fallback
    if isinstance(model, str) and model.count("/") == 1 and not model.startswith((".", "/")):
        found = _hub_file(model)
        if found:
            return read_translation_defaults(found)
    return fallback


def resolve_translation_args(
    pipe, num_inference_steps=None, guidance_scale=None, tau=None, t0=None, *, default_guidance_scale=None
):
    """A translation pipeline's unset (None) call arguments from its folder's ``lsb_defaults.json``.

    Without that file: 8 NFE and w 11 (the paper's; ``default_guidance_scale`` replaces the 11 for a family whose
    pipeline has its own, e.g. SD3's 7), ``tau`` / ``t0`` stay None (= the scheduler's config, whose defaults are the
    paper's 5.29 / 0.2). Given values are returned unchanged; ``guidance_scale`` is checked finite.
    Returns ``(num_inference_steps, guidance_scale, tau, t0)``.
    """
    own = translation_defaults(pipe, fallback=None)
    d = own or PAPER_TRANSLATION
    nfe = d.num_inference_steps if num_inference_steps is None else num_inference_steps
    if guidance_scale is None:
        guidance_scale = (
            default_guidance_scale if own is None and default_guidance_scale is not None else d.guidance_scale
        )
    w = check_guidance(guidance_scale)
    if own is not None:
        tau = own.tau if tau is None else tau
        t0 = own.t0 if t0 is None else t0
    return nfe, w, tau, t0


def write_translation_defaults(folder, defaults: TranslationDefaults) -> Path:
    """Write ``<folder>/lsb_defaults.json`` (e.g. into an export, from the source model's settings)."""
    path = Path(folder) / DEFAULTS_FILE
    path.write_text(json.dumps({"translation": defaults.as_dict()}, indent=2) + "\n")
    return path


__all__ = [
    "DEFAULTS_FILE",
    "SOLVERS",
    "TranslationDefaults",
    "PAPER_TRANSLATION",
    "check_nfe",
    "check_tau",
    "check_t0",
    "check_guidance",
    "check_bridge_settings",
    "read_translation_defaults",
    "translation_defaults",
    "resolve_translation_args",
    "write_translation_defaults",
]
