"""Distil an LSB teacher into a one-step student (``lsb distill``): one network call per image instead of NFE.

Data: a folder of SOURCE images only (unpaired, no targets). The teacher is the LSB pipeline on the same model,
with its source / target domains (text or learned-domain files) and its settings (NFE, tau, t0, guidance, solver;
unset: the model folder's ``lsb_defaults.json``). For every source image and each of ``noise_draws`` noises z the
teacher's probability-flow ODE is integrated once from x_{t0} = (1 - t0) x_src + sigma_{t0} z; the pairs
(x_src, z) -> teacher latent are **cached once** in ``<out>/teacher-cache.safetensors`` (cost: NFE batched UNet
calls on [source; target] per image and draw, i.e. the cost of translating the folder once; recorded in the file
and in ``distill_config.json``). The ODE from a given x_{t0} is deterministic, so the student learns a function,
not an average.

Student: LoRA adapters (peft, through diffusers' ``add_adapter``) on the teacher's own UNet, conditioned on the
target prompt, called once at a fixed student timestep k (:mod:`lsb.helpers.student`: xhat = x_{t0} - c_k eps).

Objective: plain regression on the teacher's latents, mean squared error. Why: the teacher's output is a
deterministic function of the student's input (same x_{t0}), so regression has one right answer per input and
needs no adversary, no cycle and no paired data; the shapes-world benchmark (benchmarks/distill.py) shows what it
reaches. See docs/guides/students.md for what was tried.

Training runs on the shared accelerate loop (:mod:`lsb.training.loop`): checkpoints every ``checkpoint_every``
steps, exact resume from the newest one in the output folder, several processes under ``accelerate launch``. The
student is written to ``<out>/final`` (a student folder: LoRA in the diffusers format + ``lsb_student.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..io.files import write_json_atomic, write_text_atomic
from ..helpers.student import (
    LORA_FILE,
    STUDENT_FILE,
    STUDENT_FORMAT,
    check_student_timestep,
    default_student_timestep,
    student_call,
    student_start,
    unet_signature,
)
from .bridge import LORA_TARGETS  # the same adapter targets as the bridge LoRA fine-tunes
from .loop import CHECKPOINT_PREFIX, TrainConfig, TrainingTask, latest_checkpoint, train

RUN_CONFIG_NAME = "distill_config.json"
CACHE_NAME = "teacher-cache.safetensors"
#: settings a resumed run must share with the run in its folder
RESUME_KEYS = (
    "base_model",
    "source",
    "target",
    "teacher",
    "image_files",
    "noise_draws",
    "student_timestep",
    "lora_rank",
    "batch_size",
    "learning_rate",
    "seed",
)
#: fraction of the folder's images the teacher's own model may read as the target domain before it is refused
MIXED_LIMIT = 0.25


class DistillError(ValueError):
    """A distillation that cannot run (reported in one line before training)."""


# ---------------------------------------------------------------------------------------------- teacher
def teacher_settings(model, nfe=None, tau=None, t0=None, guidance=None, solver=None) -> dict:
    """The teacher's settings: the given ones, else the model folder's ``lsb_defaults.json`` (else the paper's);
    checked (NFE >= 2, tau > 0, 0 < t0 < 1, finite guidance, a known solver): a ValueError naming the setting."""
    from ..io.settings import SOLVERS, check_guidance, check_nfe, check_t0, check_tau, translation_defaults

    d = translation_defaults(model)
    out = {
        "num_inference_steps": check_nfe(d.num_inference_steps if nfe is None else nfe, name="--teacher-nfe"),
        "tau": check_tau(d.tau if tau is None else tau, "--tau"),
        "t0": check_t0(d.t0 if t0 is None else t0, "--t0"),
        "guidance_scale": check_guidance(d.guidance_scale if guidance is None else guidance, "--guidance"),
        "solver": d.solver if solver is None else solver,
    }
    if out["solver"] not in SOLVERS:
        raise ValueError(f"--solver must be one of {', '.join(SOLVERS)}, got {out['solver']!r}")
    return out


def load_teacher(model, device):
    """The LSB pipeline of ``model`` (None: the embedded mini SD) in float32 on ``device``."""
    from lsb_pipelines.lsb.pipeline import LatentSchrodingerBridgePipeline

    from ..helpers.loading import load_pipeline

    pipe = load_pipeline(LatentSchrodingerBridgePipeline, model, device=device, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompt_embeds(pipe, prompt: str) -> torch.Tensor:
    """(1, tokens, dim) text embeddings of ``prompt`` (text or a learned token's template) on the pipeline's device."""
    from ..prompts.encoding import encode_text

    return encode_text(pipe, prompt, pipe.unet.device).float()


@torch.no_grad()
def domain_votes(pipe, latents: torch.Tensor, source: str, target: str, seed: int = 0, timesteps=(100, 250, 400)):
    """Per image, whether the model explains it better with the target prompt than with the source one (a diffusion
    classifier: the noise-prediction error summed over a few fixed noise levels, same noise under both prompts)."""
    sched = pipe.scheduler
    abar = sched.alphas_cumprod
    g = torch.Generator().manual_seed(seed)
    device = pipe.unet.device
    embeds = torch.cat([prompt_embeds(pipe, source), prompt_embeds(pipe, target)])
    errs = torch.zeros(2, len(latents), dtype=torch.float64)
    for k in timesteps:
        a = float(abar[k])
        noise = torch.randn(latents.shape, generator=g)
        y = (a**0.5 * latents + (1 - a) ** 0.5 * noise).to(device)
        n = len(latents)
        out = pipe.unet(
            torch.cat([y, y]),
            torch.full((2 * n,), k, device=device),
            encoder_hidden_states=embeds.repeat_interleave(n, dim=0),
            return_dict=False,
        )[0].float()
        err = ((out - torch.cat([noise, noise]).to(device)) ** 2).flatten(1).mean(1).double().cpu()
        errs += err.reshape(2, n)
    return errs[1] < errs[0]


def check_source_folder(pipe, latents: torch.Tensor, source: str, target: str, allow_mixed: bool, files) -> dict:
    """Refuse a folder that the teacher's model reads as mixed (more than :data:`MIXED_LIMIT` of its images closer to
    the target prompt); returns the vote counts."""
    n = min(len(latents), 64)
    votes = domain_votes(pipe, latents[:n], source, target)
    frac = float(votes.float().mean())
    record = {"checked": n, "read_as_target": int(votes.sum()), "limit": MIXED_LIMIT}
    if frac > MIXED_LIMIT and not allow_mixed:
        examples = ", ".join(Path(files[i]).name for i in torch.nonzero(votes).flatten()[:3].tolist())
        raise DistillError(
            f"the images look mixed: {int(votes.sum())} of {n} checked read as the target domain {target!r} rather "
            f"than the source {source!r} (e.g. {examples}); give a folder of source images only "
            "(or --allow-mixed if the source domain is right)"
        )
    return record


@torch.no_grad()
def teacher_outputs(pipe, x_src, noise, source, target, settings, batch_size=64, note=None) -> torch.Tensor:
    """The teacher's translated latents for source latents ``x_src`` and start noises ``noise`` (same shape)."""
    outs, t = [], time.time()
    device = pipe.unet.device
    for i in range(0, len(x_src), batch_size):
        xs = x_src[i : i + batch_size].to(device)
        z = noise[i : i + batch_size].to(device)
        pipe.scheduler.register_to_config(solver=settings["solver"])
        pipe.scheduler.set_timesteps(
            settings["num_inference_steps"], device=device, t0=settings["t0"], tau=settings["tau"]
        )
        latents = pipe.prepare_latents(xs, noise=z)
        src, tgt = pipe.encode_prompt(source, target, device, len(xs), torch.float32)
        hidden = torch.cat([src, tgt])

        def network(model_input, t, hidden=hidden):
            return pipe.unet(model_input, t, encoder_hidden_states=hidden, return_dict=False)[0]

        from ..helpers.bridge_loop import integrate_bridge

        latents, _ = integrate_bridge(pipe, latents, network, settings["guidance_scale"], progress_bar=False)
        outs.append(latents.float().cpu())
        if note is not None and (i // batch_size) % 10 == 0:
            note(f"teacher: {i + len(xs)}/{len(x_src)} latents ({time.time() - t:.0f} s)")
    return torch.cat(outs)


def teacher_cache(pipe, images, source, target, settings, noise_draws, seed, path: Path, note=None) -> dict:
    """``{"x_src", "noise", "teacher"}`` (N * noise_draws rows), from ``path`` if it was written for these settings,
    else computed and written atomically (with its cost in seconds in the metadata)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    key = json.dumps(
        {
            "files": [str(f) for f in images.files],
            "source": source,
            "target": target,
            "teacher": settings,
            "draws": noise_draws,
            "seed": seed,
        },
        sort_keys=True,
    )
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") == key:
                return {k: f.get_tensor(k) for k in f.keys()} | {"seconds": float(meta.get("seconds", "nan"))}
    t = time.time()
    latents = images.encode(pipe.vae, batch_size=64)
    x_src = latents.repeat(noise_draws, 1, 1, 1)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x_src.shape, generator=g)
    teacher = teacher_outputs(pipe, x_src, noise, source, target, settings, note=note)
    seconds = time.time() - t
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tensors = {"x_src": x_src.contiguous(), "noise": noise.contiguous(), "teacher": teacher.contiguous()}
    save_file(tensors, str(tmp), metadata={"key": key, "seconds": f"{seconds:.3f}"})
    os.replace(tmp, path)
    return tensors | {"seconds": seconds}


# ---------------------------------------------------------------------------------------------- task
class DistillTask(TrainingTask):
    """Regress the LoRA student's one-call output on the teacher's latents (mean squared error)."""

    name = "distill"

    def __init__(
        self,
        pipe,
        target_embeds,
        cache: dict,
        *,
        settings: dict,
        timestep: int,
        lora_rank: int = 8,
        batch_size: int = 64,
        seed: int = 0,
    ):
        from peft import LoraConfig

        self.pipe = pipe
        self.unet = pipe.unet
        self.unet.requires_grad_(False)
        pipe.vae.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):  # the LoRA's initial weights follow the run's seed
            torch.manual_seed(seed)
            self.unet.add_adapter(
                LoraConfig(r=lora_rank, lora_alpha=lora_rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
            )
        self.embeds = target_embeds.detach().float().cpu()
        self.x_src, self.noise, self.teacher = cache["x_src"], cache["noise"], cache["teacher"]
        self.t0, self.tau = settings["t0"], settings["tau"]
        self.timestep = timestep
        self.alpha_bar = float(pipe.scheduler.alphas_cumprod[timestep])
        self.batch_size = batch_size

    def trainable_modules(self):
        return {"unet": self.unet}

    def batch(self, rng, step, device):
        idx = torch.from_numpy(rng.integers(len(self.x_src), size=self.batch_size))
        return {k: getattr(self, k)[idx].to(device) for k in ("x_src", "noise", "teacher")}

    def predict(self, unet, x_src, noise):
        x = student_start(x_src, noise, self.t0, self.tau)
        embeds = self.embeds.to(x.device).expand(len(x), -1, -1)
        return student_call(unet, x, self.timestep, self.alpha_bar, embeds)

    def loss(self, b, step):
        pred = self.predict(self.wrapped_modules["unet"], b["x_src"], b["noise"])
        mse = F.mse_loss(pred.float(), b["teacher"])
        return mse, {"mse": float(mse.detach())}

    @torch.no_grad()
    def sample(self, step, out_dir):
        """Source | teacher | student of the first 8 cached rows, decoded, as one grid."""
        from ..io.images import make_grid, save_image
        from ..io.latents import decode_latents

        n = min(8, len(self.x_src))
        dev = self.unet.device
        was = self.unet.training
        self.unet.eval()
        stud = self.predict(self.unet, self.x_src[:n].to(dev), self.noise[:n].to(dev))
        self.unet.train(was)
        pics = [
            decode_latents(self.pipe.vae, self.pipe.image_processor, z.to(dev), "pil")
            for z in (self.x_src[:n], self.teacher[:n], stud)
        ]
        save_image(make_grid([im for row in pics for im in row], nrow=n), Path(out_dir) / f"distill-{step:06d}.png")

    def export(self, out_dir):
        """The LoRA (diffusers format) and ``lsb_student.json`` (written by :func:`distill`'s ``info``)."""
        write_student(self.unet, Path(out_dir), self.info)


def lora_state_dict(unet) -> dict:
    """The UNet's LoRA weights as peft names them (``lora_A`` / ``lora_B``): ``save_lora_weights`` prefixes them with
    ``unet.``, and ``load_lora_weights`` reads them back. (diffusers' ``convert_state_dict_to_diffusers`` would rename
    only the attention projections to the old ``lora.down`` names, and a file mixing both is loaded without them.)"""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(unet)


def write_student(unet, out: Path, info: dict, domain_files: dict | None = None) -> Path:
    """Write a student folder (:mod:`lsb.helpers.student`) atomically: a staging folder renamed into place."""
    from diffusers import StableDiffusionPipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=lora_state_dict(unet), safe_serialization=True)
    for side, src in (info.get("_domain_sources") or {}).items():
        dest = tmp / info[side]["file"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    public = {k: v for k, v in info.items() if not k.startswith("_")}
    public["adapter_bytes"] = (tmp / LORA_FILE).stat().st_size
    (tmp / STUDENT_FILE).write_text(json.dumps(public, indent=2) + "\n")
    if out.exists():
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


# ---------------------------------------------------------------------------------------------- one call
def _domain_entry(spec: str, side: str) -> tuple[dict, str | None]:
    from ..prompts.domains import domain_file

    path = domain_file(spec)
    if path is None:
        return {"text": str(spec)}, None
    return {"file": f"domains/{side}/{path.name}", "learned_from": str(path)}, str(path)


def _check_run_folder(out: Path, settings: dict, steps: int) -> None:
    path = out / RUN_CONFIG_NAME
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError as e:
            raise DistillError(f"{path} is not valid JSON ({e}); use a new output folder") from None
        diff = [k for k in RESUME_KEYS if k in old and old[k] != settings.get(k)]
        if diff:
            raise DistillError(
                f"{out} holds a distillation with other settings ({', '.join(diff)}); resume it with the same "
                "settings or use a new output folder"
            )
    ckpt = latest_checkpoint(out)
    if ckpt is not None and int(ckpt.name[len(CHECKPOINT_PREFIX) :]) > steps:
        raise DistillError(f"{out} already holds a run at {ckpt.name}, beyond --steps {steps}")


def distill(
    images,
    source: str,
    target: str,
    model=None,
    *,
    output_dir,
    teacher_nfe: int | None = None,
    tau: float | None = None,
    t0: float | None = None,
    guidance: float | None = None,
    solver: str | None = None,
    steps: int = 1500,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    lora_rank: int = 8,
    student_timestep: int | None = None,
    noise_draws: int = 1,
    seed: int = 0,
    checkpoint_every: int = 250,
    max_images: int | None = None,
    allow_mixed: bool = False,
    device=None,
    max_seconds: float = 0.0,
    progress: bool = True,
    note: Callable[[str], None] | None = None,
) -> Path:
    """Distil the LSB translator ``source -> target`` of ``model`` into a one-call LoRA student; returns the student
    folder ``<output_dir>/final``. Rerun with the same arguments to resume from the newest checkpoint."""
    from accelerate import PartialState

    from ..io.execution import default_device
    from ..prompts.domains import load_domain
    from .prompt_optimization import DomainImages, model_resolution

    note = note or (lambda m: None)
    settings = teacher_settings(model, teacher_nfe, tau, t0, guidance, solver)
    _check_training_numbers(steps, batch_size, lora_rank, noise_draws, checkpoint_every, learning_rate)
    out = Path(output_dir)
    state = PartialState(cpu=(torch.device(device) if device else default_device()).type == "cpu")
    device = torch.device(device) if device is not None else state.device
    pipe = load_teacher(model, device)
    k_max = pipe.scheduler.config.num_train_timesteps
    timestep = default_student_timestep(pipe.scheduler.alphas_cumprod) if student_timestep is None else student_timestep
    check_student_timestep(timestep, k_max, "--student-timestep")
    data = DomainImages(images, model_resolution(pipe), max_images=max_images, note=note)
    src_prompt, tgt_prompt = load_domain(pipe, source), load_domain(pipe, target)
    src_entry, src_file = _domain_entry(source, "source")
    tgt_entry, tgt_file = _domain_entry(target, "target")
    base_name = "mini-sd" if model in (None, "mini-sd", "embedded") else str(model)
    run = dict(base_model=base_name, source=source, target=target, teacher=settings)
    run.update(image_files=[str(f) for f in data.files], noise_draws=noise_draws, student_timestep=timestep)
    run.update(lora_rank=lora_rank, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    _check_run_folder(out, run, steps)
    out.mkdir(parents=True, exist_ok=True)
    latents = data.encode(pipe.vae, batch_size=64)
    votes = check_source_folder(pipe, latents, src_prompt, tgt_prompt, allow_mixed, data.files)
    teacher = (pipe, data, src_prompt, tgt_prompt, settings, noise_draws, seed, out / CACHE_NAME, note)
    cache = _shared_teacher_cache(state, teacher)
    if state.is_main_process:
        write_json_atomic(
            out / RUN_CONFIG_NAME, run | {"teacher_cache_seconds": cache["seconds"], "mixed_check": votes}
        )
    base_signature = unet_signature(pipe.unet)  # before the LoRA is added
    task = DistillTask(pipe, prompt_embeds(pipe, tgt_prompt), cache, settings=settings, timestep=timestep,
                       lora_rank=lora_rank, batch_size=batch_size, seed=seed)  # fmt: skip
    task.info = _student_info(base_name, base_signature, (src_entry, src_file), (tgt_entry, tgt_file), run)
    task.info.update(source_prompt=src_prompt, target_prompt=tgt_prompt)
    cfg = TrainConfig(str(out), max_steps=steps, learning_rate=learning_rate, weight_decay=0.0, seed=seed)
    cfg.lr_warmup_steps, cfg.checkpoint_every = min(50, steps // 10), checkpoint_every
    cfg.progress, cfg.max_seconds = progress, max_seconds
    result = train(task, cfg)
    if state.is_main_process:
        _record_training(out, result, len(data), run, cache["seconds"])
    return out / "final"


def _shared_teacher_cache(state, teacher: tuple):
    """The teacher's outputs (:func:`teacher_cache`): computed (or read) by the main process first, then read by the
    others from its file."""
    cache = teacher_cache(*teacher) if state.is_main_process else None
    state.wait_for_everyone()
    return cache if cache is not None else teacher_cache(*teacher)


def _check_training_numbers(steps, batch_size, lora_rank, noise_draws, checkpoint_every, learning_rate) -> None:
    """Positive integers and a positive finite learning rate; one line naming the option otherwise."""
    for name, v in (
        ("--steps", steps),
        ("--batch-size", batch_size),
        ("--lora-rank", lora_rank),
        ("--noise-draws", noise_draws),
        ("--checkpoint-every", checkpoint_every),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise DistillError(f"{name} must be a positive integer, got {v!r}")
    if not (isinstance(learning_rate, (int, float)) and np.isfinite(learning_rate) and learning_rate > 0):
        raise DistillError(f"--lr must be a positive number, got {learning_rate!r}")


def _student_info(base_name: str, base_signature, source: tuple, target: tuple, run: dict) -> dict:
    """The student record (``lsb_student.json``) before training: base model and network signature, domains, the
    teacher's settings and the student's call (one network call at its timestep from the teacher's start)."""
    settings = run["teacher"]
    return {
        "format": STUDENT_FORMAT,
        "version": 1,
        "base_model": base_name,
        "base_signature": base_signature,
        "family": "sd",
        "source": source[0],
        "target": target[0],
        "teacher": settings,
        "student": {
            "nfe": 1,
            "timestep": run["student_timestep"],
            "lora_rank": run["lora_rank"],
            "t0": settings["t0"],
            "tau": settings["tau"],
        },
        "_domain_sources": {s: f for s, (_, f) in (("source", source), ("target", target)) if f},
    }


def _record_training(out: Path, result: dict, images: int, run: dict, cache_seconds: float) -> None:
    """The training's cost and result added to the student record, and the loop's summary (seconds summed over
    resumed runs), both written atomically."""
    info_path = out / "final" / STUDENT_FILE
    info = json.loads(info_path.read_text())
    prev = json.loads((out / "train_result.json").read_text()) if (out / "train_result.json").is_file() else {}
    seconds = float(prev.get("seconds_total", 0.0)) + result["seconds"]
    info["training"] = {
        "images": images,
        "noise_draws": run["noise_draws"],
        "steps": result["steps"],
        "batch_size": run["batch_size"],
        "learning_rate": run["learning_rate"],
        "processes": result["processes"],
        "teacher_cache_seconds": round(cache_seconds, 1),
        "train_seconds": round(seconds, 1),
        "final_mse": result["last"].get("mse"),
    }
    write_text_atomic(info_path, json.dumps(info, indent=2) + "\n")
    write_json_atomic(out / "train_result.json", result | {"seconds_total": seconds})


__all__ = ["DistillError", "DistillTask", "distill", "teacher_settings", "write_student"]
