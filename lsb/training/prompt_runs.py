"""The run folder of prompt optimization: what a run records, and the checks before a rerun resumes it.

A run folder holds ``domain_config.json`` (:data:`RUN_CONFIG_NAME`: the run's settings, images and prompt) and
``train_result.json`` (:data:`TRAIN_RESULT_NAME`: the loop's summary), next to the loop's ``checkpoint-N``
folders. :func:`check_run_folder` refuses, before any model loads, a rerun whose settings differ from the recorded
ones or whose ``steps`` lie behind the newest checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ..data.domain_images import DomainImages
from ..io.images import list_images
from ..io.runs import FolderClaim, shown
from ..prompts.domains import EMBEDS_NAME
from ..prompts.tokens import PromptOptimizationError
from .loop import CHECKPOINT_PREFIX, latest_checkpoint

RUN_CONFIG_NAME = "domain_config.json"
TRAIN_RESULT_NAME = "train_result.json"  # the loop's summary of the last run (steps, processes, ...)


#: settings a resumed run must share with the run in its folder (``steps`` may grow: the learning rate is constant,
#: so a longer run equals one uninterrupted run of that length); ``resume_anyway`` accepts other values
RESUME_KEYS = (
    "token",
    "num_vectors",
    "image_files",
    "learning_rate",
    "batch_size",
    "seed",
    "base_model",
    "initializer_token",
    "templates",
    "resolution",
)


def check_run_folder(out: Path, settings: dict, steps: int, resume_anyway: bool = False) -> None:
    """Refuse to resume a run folder whose recorded settings differ from ``settings`` (the token always; the others
    of :data:`RESUME_KEYS` that both sides know unless ``resume_anyway``), or that is already past ``steps``."""
    cfg_path = out / RUN_CONFIG_NAME
    ours = run_files(out)
    if ours and not cfg_path.is_file():
        raise PromptOptimizationError(
            f"{shown(out)} holds {shown(ours[0].name)} but no {RUN_CONFIG_NAME}: not a run lsb learn-domain wrote, "
            f"and lsb never replaces a file it did not write; choose a new output folder"
        )
    if cfg_path.is_file():
        try:
            old = json.loads(cfg_path.read_text())
        except ValueError as e:
            raise PromptOptimizationError(f"{cfg_path} is not valid JSON ({e}); use a new output_dir") from None
        keys = [k for k in settings if k in old and settings[k] is not None]
        if resume_anyway:
            keys = [k for k in keys if k in ("token", "num_vectors")]  # another token is another run
        diff = {k: (old.get(k), settings[k]) for k in keys if old.get(k) != settings[k]}
        if diff:
            changes = ", ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in diff.items())
            hint = "" if set(diff) <= {"token", "num_vectors"} else " (or pass --resume-anyway / resume_anyway=True)"
            raise PromptOptimizationError(
                f"{out} holds a run with other settings ({changes}); resume it with the same settings "
                f"or use a new output_dir{hint}"
            )
    ckpt = latest_checkpoint(out)
    if ckpt is not None:
        done = int(ckpt.name[len(CHECKPOINT_PREFIX) :])
        if done > steps:
            raise PromptOptimizationError(
                f"{out} already holds a run at step {done}, beyond steps={steps}; use its "
                f"learned_embeds-steps-N.safetensors files or a new output_dir"
            )


#: the families whose text encoders prompt optimization trains a token row in (CLIP / T5); not the LLM encoders of
#: Z-Image, Qwen-Image and FLUX.2 (docs/guides/new-families.md)
PROMPT_OPTIMIZATION_FAMILIES = ("sd", "sdxl", "sd3", "flux")


def check_prompt_optimization_family(name: str) -> None:
    """One line for a family whose text encoder prompt optimization does not train (before any weights load)."""
    if name not in PROMPT_OPTIMIZATION_FAMILIES:
        from ..families import get_family

        raise PromptOptimizationError(
            f"learning a domain token is not implemented for {get_family(name).label} models (an LLM text encoder); "
            "translate with text prompts, or learn the domain on an SD / SDXL / SD3 / FLUX.1 model"
        )


def run_files(out: Path) -> list[Path]:
    """The files and folders of ``out`` that a learn-domain run writes (so that one found without the run's
    ``domain_config.json`` is someone else's, and is never replaced)."""
    if not out.is_dir():
        return []
    names = {EMBEDS_NAME, TRAIN_RESULT_NAME, "train_log.jsonl", "samples", "final"}
    return sorted(
        p
        for p in out.iterdir()
        if p.name in names
        or p.name.startswith(CHECKPOINT_PREFIX)
        or (p.name.startswith("learned_embeds-steps-") and p.name.endswith(".safetensors"))
    )


@contextlib.contextmanager
def claimed_run_folder(out: Path):
    """The run folder ``out`` claimed by this run (created if missing, locked: a second run into it is refused) for
    the ``with`` block; under ``accelerate launch`` the main process claims it. A run that wrote nothing leaves no
    folder it created behind."""
    claim = FolderClaim(out, "output_dir") if os.environ.get("RANK", "0") == "0" else None
    if claim is not None:
        claim.take()
    try:
        yield
    except BaseException:
        if claim is not None and claim.created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    finally:
        if claim is not None:
            claim.release()


def _short(v) -> str:
    if isinstance(v, list) and len(v) > 3:
        return f"[{len(v)} items: {', '.join(map(repr, v[:2]))}, ...]"
    return repr(v)


def run_settings(images, model, max_images: int | None, **recorded) -> dict:
    """The settings a rerun must share (:data:`RESUME_KEYS`): ``recorded`` (token, num_vectors, learning_rate,
    batch_size, seed, initializer_token, resolution), the image files (unless ``images`` is already a dataset) and the
    base model (unless ``model`` is a loaded pipeline)."""
    settings = dict(recorded)
    if not isinstance(images, DomainImages):
        files = list_images([images] if isinstance(images, (str, os.PathLike)) else list(images))
        settings["image_files"] = [str(f.resolve()) for f in files[:max_images]]
    if not (hasattr(model, "unet") or hasattr(model, "transformer")):
        settings["base_model"] = "mini-sd" if model is None else str(model)
    return settings


def run_record(settings: dict, task, base_model: str | None, steps: int) -> dict:
    """What ``domain_config.json`` holds: ``settings`` completed by the task (initializer, templates, prompt, the
    images it trains on, their resolution) and the base model and step count."""
    domain = task.images
    return {
        **settings,
        "initializer_token": task.initializer_token,
        "templates": list(task.templates),
        "prompt": task.prompt_template,
        "base_model": base_model,
        "images": len(domain),
        "image_files": [str(Path(f).resolve()) for f in domain.files],
        "resolution": domain.size,
        "batch_size": settings["batch_size"],
        "learning_rate": settings["learning_rate"],
        "seed": settings["seed"],
        "steps": steps,
    }


__all__ = [
    "RESUME_KEYS",
    "PROMPT_OPTIMIZATION_FAMILIES",
    "RUN_CONFIG_NAME",
    "TRAIN_RESULT_NAME",
    "check_prompt_optimization_family",
    "check_run_folder",
    "claimed_run_folder",
    "run_files",
    "run_record",
    "run_settings",
]
