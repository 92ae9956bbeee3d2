"""One-step students of an LSB teacher: the math of the student's one network call and its folder format.

A student (``lsb distill``, :mod:`lsb.training.distill`) is a LoRA adapter on the teacher's own UNet. It maps the
teacher's initial bridge state straight to the teacher's translated latent in ONE network call:

    x_{t0} = (1 - t0) x_src + sigma_{t0} z                          (the teacher's start, same z)
    y      = sqrt(abar_k) x_{t0}                                    (the UNet's input scaling at timestep k)
    eps    = UNet_LoRA(y, k, target prompt)
    xhat   = (y - sqrt(1 - abar_k) eps) / sqrt(abar_k) = x_{t0} - c_k eps,   c_k = sqrt((1 - abar_k) / abar_k)

i.e. the UNet's own x0-parametrisation at a fixed *student timestep* k, read as a prediction of the teacher's
output (the end of its probability-flow ODE from the same x_{t0}, a deterministic map). The default k is where
c_k is about 1 (the residual x_{t0} - xhat the LoRA must produce then has the scale of a latent difference); at
the bridge's own level (k about 6 on the embedded model, c_k = sigma_{t0} = 0.08) the residual would have to be
12 times larger than anything the UNet was trained to output.

A student folder (:data:`STUDENT_FILE`, :data:`LORA_FILE`)::

    pytorch_lora_weights.safetensors    the LoRA, diffusers format (``pipe.load_lora_weights(folder)``)
    lsb_student.json                    base model, domains, teacher settings, student timestep, training record
    domains/source|target/learned_embeds.safetensors   learned domains (only when the teacher used them)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from ..bridges.schedules import sb_sigma

STUDENT_FILE = "lsb_student.json"
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' default LoRA file name
STUDENT_FORMAT = "lsb-student"


class StudentError(ValueError):
    """A student folder, or a use of one, that cannot work (one line, naming the folder or the setting)."""


def default_student_timestep(alphas_cumprod: torch.Tensor) -> int:
    """The timestep k whose noise-to-signal ratio sqrt((1 - abar_k) / abar_k) is nearest 1 (abar_k nearest 1/2)."""
    return int(torch.argmin((alphas_cumprod.double() - 0.5).abs()).item())


def check_student_timestep(timestep, num_train_timesteps: int, name: str = "student timestep") -> int:
    if isinstance(timestep, bool) or not isinstance(timestep, int) or not 0 <= timestep < num_train_timesteps:
        raise StudentError(f"{name} must be an integer in [0, {num_train_timesteps - 1}], got {timestep!r}")
    return timestep


def student_start(x_src: torch.Tensor, noise: torch.Tensor, t0: float, tau: float) -> torch.Tensor:
    """The teacher's initial bridge state x_{t0} = (1 - t0) x_src + sigma_{t0} z (LSBScheduler.prepare_initial_sample)."""
    return (1.0 - t0) * x_src + sb_sigma(t0, tau) * noise


def student_call(unet, x: torch.Tensor, timestep: int, alpha_bar: float, embeds: torch.Tensor) -> torch.Tensor:
    """One student network call: xhat = x - c_k UNet(sqrt(abar_k) x, k, embeds), c_k = sqrt((1 - abar_k) / abar_k)."""
    y = math.sqrt(alpha_bar) * x
    t = torch.full((x.shape[0],), timestep, device=x.device, dtype=torch.long)
    dtype = next(unet.parameters()).dtype  # also through a DDP wrapper (several training processes)
    eps = unet(y.to(dtype), t, encoder_hidden_states=embeds.to(dtype), return_dict=False)[0]
    return x - math.sqrt((1.0 - alpha_bar) / alpha_bar) * eps.to(x.dtype)


def student_translate_latents(
    unet,
    x_src: torch.Tensor,
    noise: torch.Tensor,
    embeds: torch.Tensor,
    *,
    t0: float,
    tau: float,
    timestep: int,
    alpha_bar: float,
) -> torch.Tensor:
    """The student's translation of source latents in one network call: xhat = student(x_{t0}), x_{t0} from ``noise``."""
    return student_call(unet, student_start(x_src, noise, t0, tau), timestep, alpha_bar, embeds)


# ---------------------------------------------------------------------------------------------- the folder
def resolve_student(folder: str | os.PathLike) -> Path:
    """A student folder, a ``lsb distill`` run folder whose ``final/`` holds the student, the name of a shipped
    student (``circle-square``, ``square-circle``: ``lsb/assets/students/<name>``) or a Hub repo id (``user/name``,
    an ``lsb export --student`` upload; downloaded) when no such folder exists here."""
    from ..io.assets import STUDENTS

    import re

    folder = Path(folder).expanduser()
    if not folder.exists() and (STUDENTS / str(folder)).is_dir():
        folder = STUDENTS / str(folder)
    elif not folder.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", str(folder)):  # a Hub repo (lsb export --student)
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(str(folder)))
        except Exception as e:  # noqa: BLE001  (offline, no such repo: one line)
            raise StudentError(
                f"--student {folder}: no such folder, and not a Hub repo that can be fetched ({e})"
            ) from None
    if not (folder / STUDENT_FILE).is_file() and (folder / "final" / STUDENT_FILE).is_file():
        return folder / "final"
    return folder


def read_student(folder: str | os.PathLike) -> dict:
    """The settings of a student folder (``lsb_student.json``), checked: the adapter file must be there."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise StudentError(f"--student {folder}: no such folder")
    info_path = folder / STUDENT_FILE
    if not info_path.is_file():
        raise StudentError(f"--student {folder}: not a student folder (no {STUDENT_FILE}; make one with lsb distill)")
    try:
        info = json.loads(info_path.read_text())
    except ValueError as e:
        raise StudentError(f"{info_path}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != STUDENT_FORMAT:
        raise StudentError(f"{info_path}: not an lsb student file (format is not {STUDENT_FORMAT!r})")
    for key in ("base_model", "base_signature", "source", "target", "teacher", "student"):
        if key not in info:
            raise StudentError(f"{info_path}: missing {key!r}")
    if not (folder / LORA_FILE).is_file():
        raise StudentError(f"--student {folder}: the adapter {LORA_FILE} is missing")
    return info


def student_domain_spec(folder: str | os.PathLike, info: dict, side: str) -> str:
    """The --source / --target spec of a student's domain: its text, or the learned file inside the folder."""
    entry = info[side]
    if entry.get("file"):
        path = Path(folder).expanduser() / entry["file"]
        if not path.is_file():
            raise StudentError(f"--student {folder}: the {side} domain file {entry['file']} is missing")
        return str(path)
    return str(entry["text"])


def unet_signature(unet) -> dict:
    """What identifies the base network a LoRA belongs to: its class, config and a fingerprint of its weights."""
    import hashlib

    cfg = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    h = hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, p in list(unet.state_dict().items())[:6]:
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return {"class": type(unet).__name__, "sha1": h.hexdigest()[:16]}


def check_student_base(info: dict, unet, folder, model_name: str | None = None) -> None:
    """StudentError unless ``unet`` is the network the student was distilled on (same class, config and weights)."""
    have = unet_signature(unet)
    want = info["base_signature"]
    if have != want:
        name = model_name or "this model"
        raise StudentError(
            f"--student {folder} was distilled on {info['base_model']} ({want.get('class')}); {name} is another "
            f"base ({have['class']}, weights differ): distil a student for it with lsb distill"
        )


__all__ = [
    "LORA_FILE",
    "STUDENT_FILE",
    "STUDENT_FORMAT",
    "StudentError",
    "check_student_base",
    "check_student_timestep",
    "default_student_timestep",
    "read_student",
    "resolve_student",
    "student_call",
    "student_domain_spec",
    "student_start",
    "student_translate_latents",
    "unet_signature",
]
