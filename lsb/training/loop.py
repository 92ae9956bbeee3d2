"""One accelerate training loop for every method in the toolkit.

A method supplies a :class:`TrainingTask` (its trainable modules, how a batch is drawn, its loss, how
to write samples and how to export the result); :func:`train` runs it with accelerate: gradient
accumulation, multi-process launch, mixed precision, gradient clipping, a progress bar, EMA,
checkpoints every ``checkpoint_every`` steps (``save_state``) and exact resume from the newest one.

Batches are a pure function of ``(seed, step, micro-batch)`` (the micro-batch index counts gradient
accumulation and processes; see :func:`train`), so a resumed run sees exactly the batches an
uninterrupted run would have seen, with no data-loader state to checkpoint. The loop's own state
(step, EMA weights) is written next to accelerate's files as JSON and safetensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, NoReturn

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    ProjectConfiguration,
    gather_object,
    set_seed,
)
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..io.files import write_json_atomic

CHECKPOINT_PREFIX = "checkpoint-"


@dataclasses.dataclass
class TrainConfig:
    """Loop settings shared by every training task."""

    output_dir: str
    max_steps: int = 1000
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    lr_warmup_steps: int = 0
    lr_schedule: str = "cosine"  # "cosine" | "constant"
    min_lr_ratio: float = 0.05
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    seed: int = 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    sample_every: int = 0  # 0 = only at the end
    ema_decay: float = 0.0  # 0 = no EMA
    log_every: int = 10
    progress: bool = True
    #: stop early (checkpoint, samples and export as at the end) once this many seconds have passed in
    #: this run; 0 = no limit. For fixed time slots (e.g. a lent GPU); the LR schedule is not shortened.
    max_seconds: float = 0.0


class TrainingTask:
    """What a method provides to :func:`train`. Subclasses override the methods below."""

    name = "task"
    #: under several processes, wrap the modules with DDP's ``find_unused_parameters=True`` (needed when a
    #: forward of a wrapped module leaves some of its trainable parameters without a gradient)
    ddp_find_unused_parameters = False

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def parameters(self) -> Iterable[torch.nn.Parameter] | list[dict]:
        """Parameters (or optimizer param groups) to optimise; default: all of trainable_modules."""
        return [p for m in self.trainable_modules().values() for p in m.parameters() if p.requires_grad]

    def ema_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters to keep an EMA of (default: the same as the optimised ones)."""
        params = self.parameters()
        if params and isinstance(params[0], dict):
            return [p for g in params for p in g["params"]]
        return list(params)

    def batch(self, rng: np.random.Generator, step: int, device: torch.device) -> Any:
        raise NotImplementedError

    def loss(self, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Hook after each optimizer step (e.g. restore frozen embedding rows)."""

    def sample(self, step: int, out_dir: Path) -> None:
        """Write a sample grid for ``step`` into ``out_dir`` (main process only)."""

    def export(self, out_dir: Path) -> None:
        """Write the final artefact (main process only, EMA weights swapped in)."""


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    d = Path(output_dir)
    if not d.is_dir():
        return None
    found = []
    for p in d.iterdir():
        m = re.fullmatch(CHECKPOINT_PREFIX + r"(\d+)", p.name)
        if m and (p / "trainer_state.json").is_file():  # written last: a complete checkpoint
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if cfg.lr_warmup_steps and step < cfg.lr_warmup_steps:
            return (step + 1) / cfg.lr_warmup_steps
        if cfg.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.lr_warmup_steps) / max(1, cfg.max_steps - cfg.lr_warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


class _EMA:
    """Exponential moving average of a list of parameters, saved as safetensors."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().clone().float() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # warm-up as in common EMA practice
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach().float(), 1 - d)

    def swap(self) -> None:
        """Exchange live and EMA weights (call twice to restore)."""
        with torch.no_grad():
            for s, p in zip(self.shadow, self.params):
                tmp = p.detach().clone()
                p.copy_(s.to(p.dtype))
                s.copy_(tmp.float())

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{i}": s.contiguous() for i, s in enumerate(self.shadow)}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if len(tensors) != len(self.shadow):
            raise ValueError(f"EMA checkpoint has {len(tensors)} tensors, the model {len(self.shadow)}")
        for i, s in enumerate(self.shadow):
            s.copy_(tensors[f"ema.{i}"])


def is_main_process() -> bool:
    """Whether this is the main process (or the only one); for writing run summaries once after :func:`train`."""
    from accelerate import PartialState

    return PartialState().is_main_process


def weights_digest(params: Iterable[torch.Tensor]) -> str:
    """SHA-1 of the raw bytes of ``params`` (to check that data-parallel replicas hold the same weights)."""
    h = hashlib.sha1()
    for p in params:
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def make_accelerator(cfg: TrainConfig, task: TrainingTask | None = None) -> Accelerator:
    """The loop's Accelerator: on the CPU (gloo backend under ``accelerate launch``) when no accelerator
    device exists; one LR-scheduler step per optimizer step whatever the number of processes
    (``split_batches``: accelerate otherwise steps a prepared scheduler ``num_processes`` times; the loop
    draws its own batches, so no data loader is affected)."""
    from ..io.execution import default_device

    handlers = []
    if task is not None and task.ddp_find_unused_parameters:
        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    return Accelerator(
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mixed_precision=cfg.mixed_precision,
        project_config=ProjectConfiguration(project_dir=str(cfg.output_dir)),
        cpu=default_device().type == "cpu",
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        kwargs_handlers=handlers,
    )


def _prepare(task: TrainingTask, cfg: TrainConfig, accelerator: Accelerator):
    """The task's modules, AdamW and the LR schedule, prepared by accelerate: (wrapped modules, optimizer,
    LR scheduler); sets ``task.wrapped_modules`` (the DDP-wrapped modules, for tasks that need them in loss())."""
    set_seed(cfg.seed)
    if accelerator.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    modules = task.trainable_modules()
    params = task.parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    prepared = accelerator.prepare(*modules.values(), optimizer, lr_sched)
    wrapped = dict(zip(modules, prepared[: len(modules)]))
    optimizer, lr_sched = prepared[len(modules) :]
    task.wrapped_modules = wrapped
    return wrapped, optimizer, lr_sched


def _resume(accelerator: Accelerator, out: Path, task: TrainingTask, ema: _EMA | None) -> int:
    """Load the newest complete checkpoint of ``out`` (accelerate's state, then the EMA); returns its step (0: none)."""
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        return 0
    accelerator.load_state(str(ckpt))
    state = json.loads((ckpt / "trainer_state.json").read_text())
    step = int(state["step"])
    if ema is not None and (ckpt / "ema.safetensors").is_file():
        ema.load_tensors(load_file(str(ckpt / "ema.safetensors")))
    accelerator.print(f"resumed {task.name} from {ckpt} at step {step}")
    return step


def _save_checkpoint(
    accelerator: Accelerator, out: Path, step: int, task: TrainingTask, cfg: TrainConfig, ema: _EMA | None
) -> None:
    """``checkpoint-<step>``: accelerate's state, the EMA and ``trainer_state.json`` (written last: the mark of a
    complete checkpoint); older checkpoints beyond ``keep_checkpoints`` are removed."""
    path = out / f"{CHECKPOINT_PREFIX}{step}"
    accelerator.wait_for_everyone()
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        if ema is not None:
            save_file(ema.state_tensors(), str(path / "ema.safetensors"))
        write_json_atomic(path / "trainer_state.json", {"step": step, "task": task.name})
        olds = sorted(
            (int(p.name[len(CHECKPOINT_PREFIX) :]), p)
            for p in out.glob(CHECKPOINT_PREFIX + "*")
            if p.name[len(CHECKPOINT_PREFIX) :].isdigit() and p != path
        )
        for _, p in olds[: max(0, len(olds) - (cfg.keep_checkpoints - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()


def _summary(accelerator: Accelerator, task: TrainingTask, step: int, seconds: float, logs: dict) -> dict:
    """What :func:`train` returns (with ``replicas_in_sync`` under several processes)."""
    result = {
        "steps": step,
        "seconds": seconds,
        "last": logs,
        "processes": accelerator.num_processes,
        "weights_sha1": weights_digest(task.ema_parameters()),
    }
    if accelerator.num_processes > 1:
        digests = gather_object([result["weights_sha1"]])
        result["replicas_in_sync"] = len(set(digests)) == 1
    return result


def train(task: TrainingTask, cfg: TrainConfig, accelerator: Accelerator | None = None) -> dict:
    """Run (or resume) training of ``task``; returns a summary dict (steps, seconds, last losses, the number
    of processes, ``weights_sha1`` of the optimised parameters and, under several processes,
    ``replicas_in_sync``: whether every process ends with the same weights).

    Under ``accelerate launch`` with N processes each process draws its own batches (a different data
    stream per process) and DDP averages the gradients, so a step sees N times the per-process batch;
    micro-batch ``k = accumulation_index * N + process_index`` of a step is the same draw as micro-batch
    ``k`` of a single process with N times the gradient accumulation steps.
    """
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = accelerator or make_accelerator(cfg, task)
    wrapped, optimizer, lr_sched = _prepare(task, cfg, accelerator)
    ema = _EMA(task.ema_parameters(), cfg.ema_decay) if cfg.ema_decay > 0 else None
    step = _resume(accelerator, out, task, ema)
    samples_dir = out / "samples"
    bar = tqdm(
        total=cfg.max_steps,
        initial=step,
        desc=f"train {task.name}",
        disable=not (cfg.progress and accelerator.is_local_main_process),
    )
    t_start, logs, history = time.time(), {}, []
    micro = 0
    while step < cfg.max_steps:
        k = (micro % cfg.gradient_accumulation_steps) * accelerator.num_processes + accelerator.process_index
        rng = np.random.default_rng([cfg.seed, step, k, 0])  # one process: (seed, step, micro-batch, 0) as ever
        batch = task.batch(rng, step, accelerator.device)
        with accelerator.accumulate(*wrapped.values()):
            for m in wrapped.values():
                m.train()
            loss, logs = task.loss(batch, step)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{task.name}: loss became {loss.item()} at step {step}")
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.max_grad_norm:
                accelerator.clip_grad_norm_(task.ema_parameters(), cfg.max_grad_norm)
            optimizer.step()
            lr_sched.step()
            optimizer.zero_grad(set_to_none=True)
        micro += 1
        if not accelerator.sync_gradients:
            continue
        task.after_step(step)
        step += 1
        if ema is not None:
            ema.update(step)
        bar.update(1)
        logs = {"loss": float(loss.detach()), **logs, "lr": lr_sched.get_last_lr()[0]}
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
            history.append({"step": step, **logs})
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            _save_checkpoint(accelerator, out, step, task, cfg, ema)
        if accelerator.is_main_process and cfg.sample_every and step % cfg.sample_every == 0:
            _with_ema(ema, lambda step=step: task.sample(step, samples_dir))
        if _out_of_time(accelerator, cfg, step, t_start):
            accelerator.print(f"{task.name}: time budget of {cfg.max_seconds:.0f} s reached at step {step}")
            if step % cfg.checkpoint_every:
                _save_checkpoint(accelerator, out, step, task, cfg, ema)
            break
    bar.close()
    seconds = time.time() - t_start
    if accelerator.is_main_process:
        _with_ema(ema, lambda: (task.sample(step, samples_dir), task.export(out / "final")))
        with open(out / "train_log.jsonl", "a") as f:
            for row in history:
                f.write(json.dumps(row) + "\n")
    accelerator.wait_for_everyone()
    return _summary(accelerator, task, step, seconds, logs)


def _out_of_time(accelerator: Accelerator, cfg: TrainConfig, step: int, t_start: float) -> bool:
    """Whether the run's ``max_seconds`` are spent, checked every ``log_every`` steps and agreed by every process
    (so that all stop at the same step)."""
    if not (cfg.max_seconds and step % cfg.log_every == 0 and step < cfg.max_steps):
        return False
    over = torch.tensor(float(time.time() - t_start > cfg.max_seconds), device=accelerator.device)
    return accelerator.reduce(over, reduction="max").item() > 0


_left_a_process_group = False


def leave_process_group() -> bool:
    """Destroy the torch.distributed group of a multi-process ``accelerate launch`` run (entry points call it
    on their way out); returns whether there was one. Safe to call more than once."""
    global _left_a_process_group
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        _left_a_process_group = True
        return True
    return False


def exit_process(code: int | None = 0) -> NoReturn:
    """End this process with exit status ``code`` (``None`` is 0).

    A worker of a multi-process launch (one that held a process group) leaves the group, flushes its output and
    ends with ``os._exit``: objects still holding the gloo group (the DDP reducer, the accelerator) would
    otherwise be torn down during interpreter finalization, where gloo's worker threads can abort the process
    ("terminate called without an active exception", SIGABRT) after every result was written, and the
    launcher then reports the whole run as failed. A single process exits normally (``SystemExit``).
    """
    code = 0 if code is None else int(code)
    if leave_process_group() or _left_a_process_group:
        import logging
        import sys

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    raise SystemExit(code)


def _with_ema(ema: _EMA | None, fn) -> None:
    if ema is not None:
        ema.swap()
    try:
        fn()
    finally:
        if ema is not None:
            ema.swap()
