"""Two-stage DiffIR training on the shapes world's restoration tasks, with the shared accelerate loop.

Stages (each its own resumable run folder under ``<out>/``; METHODS.md section 4 (b)):

``s1``     CPEN_S1 + DIRformer on L1: ``Z = CPEN_S1(degraded, clean)``, ``out = DIRformer(degraded, Z)``.
``s2``     starts from the stage-1 DIRformer (CPEN_S2 and the prior denoiser from scratch; a frozen CPEN_S1 gives
           the target prior ``Z_S1``). Each step: ``Z_T = add_noise(Z_S1, eps, T-1)``; ``D = CPEN_S2(degraded)``;
           all T = 4 deterministic posterior-mean steps *with gradients*; ``Ẑ`` = the last state.
           Phase A (the first ``phase_a`` fraction of steps): only CPEN_S2 + denoiser, on ``L_diff = mean|Ẑ - Z_S1|``.
           Phase B: everything jointly on ``L1(DIRformer(degraded, Ẑ), clean) + L_diff``, so the reconstruction
           gradient flows through the whole 4-step chain.
``plain``  the no-prior ablation: a DIRformer with ``prior_dim=0`` trained on L1 for as many steps as s1 + s2.

``s2`` exports ``<out>/s2/final`` and ``plain`` exports ``<out>/plain/final``, each a :class:`lsb.DiffIRPipeline`
folder (float32 safetensors, every file < 8 MiB) whose config records the task.

Data: ``cache_size`` training pairs (scenes 0.. of the train split, degraded with ``lsb.data.degradations``)
are rendered once, in parallel, and kept as uint8 tensors on the training device; batches are drawn from them with
the loop's per-step generator, so a resumed run sees the same batches. Pixel space, images in [-1, 1]; inpainting
inputs carry the hole mask as a 4th channel.

    python -m lsb.training.diffir --task inpaint --stage diffir --out runs/diffir-inpaint --steps 3000 --batch-size 128
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data import shapes
from ..data.degradations import degrade, inpaint_mask
from ..io.execution import process_state
from ..io.images import uint8_to_pixels
from ..models.diffir import CPENS1, CPENS2, DIRformer, PriorDenoiser, count_parameters
from ..schedulers.scheduling_diffir import DiffIRScheduler
from ..io.files import write_json_atomic
from .loop import TrainConfig, TrainingTask, is_main_process, exit_process, train

TASKS = ("inpaint", "sr4")
STAGES = ("s1", "s2", "plain", "diffir", "all")


# ----------------------------------------------------------------------------------------- data
def _render_pairs(args) -> tuple[np.ndarray, np.ndarray]:
    task, split, start, n = args
    clean, deg = [], []
    for s in shapes.scenes(split, n, start=start):
        a = shapes.render_array(s)
        clean.append(a)
        deg.append(np.asarray(degrade(Image.fromarray(a), task), dtype=np.uint8))
    return np.stack(clean), np.stack(deg)


def paired_arrays(
    task: str, n: int, split: str = "train", start: int = 0, workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, degraded) uint8 tensors (n, 3, 64, 64) of scenes start..start+n-1 of ``split`` (deterministic).

    Identical to ``PairedShapesDataset(task, split, n, start)`` (tested), only faster (``workers`` processes).
    """
    if task not in TASKS:
        raise ValueError(f"unknown DiffIR task {task!r}; choose from {', '.join(TASKS)}")
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = max(1, -(-n // (4 * workers)))
    jobs = [(task, split, start + i, min(chunk, n - i)) for i in range(0, n, chunk)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as ex:
            parts = list(ex.map(_render_pairs, jobs))
    else:
        parts = [_render_pairs(j) for j in jobs]
    clean = np.concatenate([p[0] for p in parts])
    deg = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(clean).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(deg).permute(
        0, 3, 1, 2
    ).contiguous()


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [-1, 1] (as lsb.data.datasets.to_tensor)."""
    return uint8_to_pixels(x)


def model_input(task: str, degraded: torch.Tensor) -> torch.Tensor:
    """DIRformer / CPEN input: the degraded image in [-1, 1], plus the hole mask channel for inpainting."""
    if task != "inpaint":
        return degraded
    m = torch.from_numpy(inpaint_mask(degraded.shape[-2:]))[None, None].to(degraded)
    return torch.cat([degraded, m.expand(degraded.shape[0], 1, *degraded.shape[-2:])], dim=1)


# ---------------------------------------------------------------------------------------- models
@dataclasses.dataclass
class DiffIRRecipe:
    """Model sizes and training settings (the defaults are the GPU recipe; tests shrink them)."""

    dim: int = 24
    num_blocks: tuple = (1, 2, 2)
    heads: tuple = (1, 2, 4)
    num_refinement_blocks: int = 1
    ffn_expansion_factor: float = 2.0
    unshuffle: int = 2
    prior_dim: int = 256
    cpen_width: int = 24
    cpen_res: int = 1
    denoise_res: int = 1
    steps: int = 3000  # per stage (s1, s2); plain gets 2 x steps unless plain_steps is set
    plain_steps: int | None = None
    batch_size: int = 64
    learning_rate: float = 5e-4
    warmup: int = 100
    phase_a: float = 0.25  # fraction of s2 steps that trains only CPEN_S2 + denoiser (paper: 100k / 400k)
    ema_decay: float = 0.995
    cache_size: int = 20000
    mixed_precision: str = "no"
    checkpoint_every: int = 500
    seed: int = 0
    workers: int = 0
    progress: bool = True
    max_seconds: float = 0.0  # per-stage wall-time cap (0 = none); plain gets 2x; the steps reached are reported

    def dirformer(self, task: str, prior: bool = True) -> DIRformer:
        return DIRformer(
            in_channels=4 if task == "inpaint" else 3,
            dim=self.dim,
            num_blocks=tuple(self.num_blocks),
            heads=tuple(self.heads),
            num_refinement_blocks=self.num_refinement_blocks,
            ffn_expansion_factor=self.ffn_expansion_factor,
            unshuffle=self.unshuffle,
            prior_dim=self.prior_dim if prior else 0,
        )

    def cpen_s1(self, task: str) -> CPENS1:
        return CPENS1(
            in_channels=4 if task == "inpaint" else 3,
            width=self.cpen_width,
            n_res=self.cpen_res,
            prior_dim=self.prior_dim,
        )

    def cpen_s2(self, task: str) -> CPENS2:
        return CPENS2(
            in_channels=4 if task == "inpaint" else 3,
            width=self.cpen_width,
            n_res=self.cpen_res,
            prior_dim=self.prior_dim,
        )

    def denoiser(self) -> PriorDenoiser:
        return PriorDenoiser(prior_dim=self.prior_dim, n_res=self.denoise_res, num_train_timesteps=4)


class _PairsTask(TrainingTask):
    """Shared batch drawing (from the cached pairs) and sample grids."""

    def __init__(self, task: str, pairs: tuple[torch.Tensor, torch.Tensor], batch_size: int):
        self.task, self.batch_size = task, batch_size
        self.clean_u8, self.deg_u8 = pairs
        self._device = None

    def batch(self, rng, step, device):
        if self._device != device:  # keep the uint8 cache on the training device
            self.clean_u8, self.deg_u8 = self.clean_u8.to(device), self.deg_u8.to(device)
            self._device = device
            self.on_device(device)
        idx = torch.from_numpy(rng.integers(len(self.clean_u8), size=self.batch_size)).to(device)
        clean, deg = to_unit(self.clean_u8[idx]), to_unit(self.deg_u8[idx])
        return {"clean": clean, "x": model_input(self.task, deg)}

    def on_device(self, device):
        pass

    def restore(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, step, out_dir):
        from ..io.images import save_grid

        clean_u8, deg_u8 = paired_arrays(self.task, 8, "val", workers=1)
        dev = next(iter(self.trainable_modules().values())).device
        clean, deg = to_unit(clean_u8).to(dev), to_unit(deg_u8).to(dev)
        for m in self.trainable_modules().values():
            m.eval()
        out = self.restore(model_input(self.task, deg), torch.Generator(dev).manual_seed(0)).clamp(-1, 1)
        save_grid(torch.cat([deg, out, clean]).cpu(), Path(out_dir) / f"{self.name}-{step:06d}.png", nrow=8)


class Stage1Task(_PairsTask):
    """CPEN_S1 + DIRformer on L1 (CPEN_S1 sees the ground truth)."""

    name = "diffir-s1"

    def __init__(self, task, pairs, batch_size, dirformer: DIRformer, cpen_s1: CPENS1):
        super().__init__(task, pairs, batch_size)
        self.dirformer, self.cpen_s1 = dirformer, cpen_s1

    def trainable_modules(self):
        return {"dirformer": self.dirformer, "cpen_s1": self.cpen_s1}

    def loss(self, b, step):
        g, c = self.wrapped_modules["dirformer"], self.wrapped_modules["cpen_s1"]
        out = g(b["x"], c(b["x"], b["clean"]))
        l1 = (out.float() - b["clean"]).abs().mean()
        return l1, {"l1": float(l1.detach())}

    def restore(self, x, generator=None):
        raise RuntimeError("stage 1 needs the clean image; samples use it")

    @torch.no_grad()
    def sample(self, step, out_dir):
        from ..io.images import save_grid

        clean_u8, deg_u8 = paired_arrays(self.task, 8, "val", workers=1)
        dev = self.dirformer.device
        clean, deg = to_unit(clean_u8).to(dev), to_unit(deg_u8).to(dev)
        self.dirformer.eval(), self.cpen_s1.eval()
        x = model_input(self.task, deg)
        out = self.dirformer(x, self.cpen_s1(x, clean)).clamp(-1, 1)
        save_grid(torch.cat([deg, out, clean]).cpu(), Path(out_dir) / f"{self.name}-{step:06d}.png", nrow=8)

    def export(self, out_dir):
        self.dirformer.save_pretrained(Path(out_dir) / "dirformer")
        self.cpen_s1.save_pretrained(Path(out_dir) / "cpen_s1")


def prior_chain(denoiser, scheduler: DiffIRScheduler, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Run every step of the prior diffusion from ``z`` (differentiable): the last state is the prior Ẑ."""
    scheduler.set_timesteps(scheduler.config.num_train_timesteps, device=z.device)
    for t in scheduler.timesteps:
        z = scheduler.step(denoiser(z, t, cond), t, z).prev_sample
    return z


class Stage2Task(_PairsTask):
    """CPEN_S2 + prior denoiser on L_diff (phase A), then everything on L_rec + L_diff through the 4-step chain."""

    name = "diffir-s2"
    #: phase A trains CPEN_S2 + denoiser on L_diff only: the DIRformer gets no gradient
    ddp_find_unused_parameters = True

    def __init__(
        self,
        task,
        pairs,
        batch_size,
        dirformer: DIRformer,
        cpen_s1: CPENS1,
        cpen_s2: CPENS2,
        denoiser: PriorDenoiser,
        phase_a_steps: int,
        scheduler: DiffIRScheduler | None = None,
    ):
        super().__init__(task, pairs, batch_size)
        self.dirformer, self.cpen_s2, self.denoiser = dirformer, cpen_s2, denoiser
        self.cpen_s1 = cpen_s1.eval().requires_grad_(False)
        self.scheduler = scheduler or DiffIRScheduler(num_train_timesteps=denoiser.config.num_train_timesteps)
        self.phase_a_steps = phase_a_steps

    def trainable_modules(self):
        return {"dirformer": self.dirformer, "cpen_s2": self.cpen_s2, "denoiser": self.denoiser}

    def on_device(self, device):
        self.cpen_s1.to(device)

    def batch(self, rng, step, device):
        b = super().batch(rng, step, device)
        b["noise"] = torch.from_numpy(
            rng.standard_normal((self.batch_size, self.denoiser.config.prior_dim)).astype(np.float32)
        ).to(device)
        return b

    def loss(self, b, step):
        g, c2, den = (self.wrapped_modules[k] for k in ("dirformer", "cpen_s2", "denoiser"))
        with torch.no_grad():
            z1 = self.cpen_s1(b["x"], b["clean"]).float()
        T = self.scheduler.config.num_train_timesteps
        z = self.scheduler.add_noise(z1, b["noise"], T - 1)  # start from the noised TRUE prior
        zhat = prior_chain(den, self.scheduler, z, c2(b["x"]).float())
        l_diff = (zhat - z1).abs().mean()
        logs = {"l_diff": float(l_diff.detach())}
        if step < self.phase_a_steps:
            return l_diff, logs  # the DIRformer gets no gradient (AdamW skips parameters without one)
        out = g(b["x"], zhat)
        l_rec = (out.float() - b["clean"]).abs().mean()
        logs["l1"] = float(l_rec.detach())
        return l_rec + l_diff, logs

    def pipeline(self):
        from lsb_pipelines.diffir.pipeline import DiffIRPipeline

        return DiffIRPipeline(
            dirformer=self.dirformer,
            cpen=self.cpen_s2,
            denoiser=self.denoiser,
            scheduler=DiffIRScheduler.from_config(self.scheduler.config),
            task=self.task,
        )

    def restore(self, x, generator=None):
        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        return pipe.dirformer(x, pipe.generate_prior(x, 4, generator))

    def export(self, out_dir):
        self.pipeline().save_pretrained(out_dir, safe_serialization=True, max_shard_size="5MB")
        self.cpen_s1.save_pretrained(Path(out_dir).parent / "cpen_s1")  # not part of the pipeline


class PlainTask(_PairsTask):
    """The ablation: a DIRformer without prior (prior_dim=0) on L1."""

    name = "diffir-plain"

    def __init__(self, task, pairs, batch_size, dirformer: DIRformer):
        super().__init__(task, pairs, batch_size)
        if dirformer.config.prior_dim:
            raise ValueError("the plain ablation needs a DIRformer with prior_dim=0")
        self.dirformer = dirformer

    def trainable_modules(self):
        return {"dirformer": self.dirformer}

    def loss(self, b, step):
        out = self.wrapped_modules["dirformer"](b["x"])
        l1 = (out.float() - b["clean"]).abs().mean()
        return l1, {"l1": float(l1.detach())}

    def restore(self, x, generator=None):
        return self.dirformer(x)

    def pipeline(self):
        from lsb_pipelines.diffir.pipeline import DiffIRPipeline

        return DiffIRPipeline(dirformer=self.dirformer, task=self.task)

    def export(self, out_dir):
        self.pipeline().save_pretrained(out_dir, safe_serialization=True, max_shard_size="5MB")


# ----------------------------------------------------------------------------------------- stages
def _config(out: Path, r: DiffIRRecipe, steps: int, seed_offset: int, seconds_factor: float = 1.0, **kw) -> TrainConfig:
    return TrainConfig(
        str(out),
        max_steps=steps,
        learning_rate=r.learning_rate,
        weight_decay=0.0,
        max_seconds=r.max_seconds * seconds_factor,
        progress=r.progress,
        lr_warmup_steps=min(r.warmup, steps // 10),
        checkpoint_every=r.checkpoint_every,
        ema_decay=r.ema_decay,
        mixed_precision=r.mixed_precision,
        seed=r.seed + seed_offset,
        log_every=max(1, min(50, steps // 10)),
        **kw,
    )


@torch.no_grad()
def evaluate_pipeline(pipe, task: str, n: int = 256, split: str = "val", batch: int = 128, seed: int = 0) -> dict:
    """Mean PSNR (dB, images in [0, 1]) of a DiffIRPipeline on ``n`` pairs of ``split``."""
    clean_u8, deg_u8 = paired_arrays(task, n, split, workers=1 if n <= 64 else 0)
    psnrs = []
    g = torch.Generator().manual_seed(seed)
    for i in range(0, n, batch):
        out = pipe(deg_u8[i : i + batch].float() / 255.0, generator=g, output_type="pt").images.cpu()
        mse = ((out - clean_u8[i : i + batch].float() / 255.0) ** 2).flatten(1).mean(1).clamp_min(1e-10)
        psnrs.append(-10 * torch.log10(mse))
    return {"psnr": float(torch.cat(psnrs).mean()), "n": n, "split": split}


def run_stage(stage: str, task: str, out: str | Path, recipe: DiffIRRecipe | None = None, pairs=None) -> dict:
    """Run (or resume) one stage under ``out``; returns its summary (also written as ``<stage>_result.json``)."""
    from lsb_pipelines.diffir.pipeline import DiffIRPipeline

    if task not in TASKS:
        raise ValueError(f"unknown DiffIR task {task!r}; choose from {', '.join(TASKS)}")
    r = recipe or DiffIRRecipe()
    out = Path(out)
    if stage in ("diffir", "all"):
        pairs = pairs or paired_arrays(task, r.cache_size, workers=r.workers)
        res = {
            s: run_stage(s, task, out, r, pairs) for s in (("s1", "s2") if stage == "diffir" else ("s1", "s2", "plain"))
        }
        return res
    if stage not in ("s1", "s2", "plain"):
        raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    pairs = pairs or paired_arrays(task, r.cache_size, workers=r.workers)
    if stage == "s1":
        g, c1 = r.dirformer(task), r.cpen_s1(task)
        res = train(Stage1Task(task, pairs, r.batch_size, g, c1), _config(out / "s1", r, r.steps, 0))
        res["parameters"] = {"dirformer": count_parameters(g), "cpen_s1": count_parameters(c1)}
    elif stage == "s2":
        s1 = out / "s1" / "final"
        if not (s1 / "dirformer").is_dir():
            raise FileNotFoundError(f"stage 1 result {s1} is missing; run --stage s1 first")
        g = DIRformer.from_pretrained(s1 / "dirformer")
        c1 = CPENS1.from_pretrained(s1 / "cpen_s1")
        c2, den = r.cpen_s2(task), r.denoiser()
        t = Stage2Task(task, pairs, r.batch_size, g, c1, c2, den, phase_a_steps=int(r.phase_a * r.steps))
        res = train(t, _config(out / "s2", r, r.steps, 1))
        res["parameters"] = {
            "dirformer": count_parameters(g),
            "cpen_s2": count_parameters(c2),
            "denoiser": count_parameters(den),
        }
    else:
        g = r.dirformer(task, prior=False)
        steps = r.plain_steps if r.plain_steps is not None else 2 * r.steps
        res = train(PlainTask(task, pairs, r.batch_size, g), _config(out / "plain", r, steps, 2, seconds_factor=2.0))
        res["parameters"] = {"dirformer": count_parameters(g)}
    if stage in ("s2", "plain"):
        pipe = DiffIRPipeline.from_pretrained(out / stage / "final")
        pipe.set_progress_bar_config(disable=True)
        pipe.to(process_state().device)  # where accelerate puts this process
        res["val"] = evaluate_pipeline(pipe, task, n=256 if r.cache_size >= 1000 else 16)
        res["pipeline"] = str(out / stage / "final")
    res["task"], res["recipe"] = task, dataclasses.asdict(r)
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():  # once under `accelerate launch`
        write_json_atomic(out / f"{stage}_result.json", res)
    return res


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lsb.training.diffir", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=TASKS, required=True, help="the restoration task (degradation) to learn")
    p.add_argument(
        "--stage",
        choices=STAGES,
        default="diffir",
        help="s1, s2, plain (ablation), diffir (= s1 then s2) or all (s1, s2, plain)",
    )
    p.add_argument("--out", required=True, help="run folder; a rerun resumes from its newest checkpoints")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per stage (s1, s2); plain: 2x")
    p.add_argument(
        "--plain-steps", type=int, default=None, help="optimizer steps of the plain ablation (default: 2x --steps)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="batch size per process (default: the recipe's, 64)")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default: the recipe's, 5e-4)")
    p.add_argument("--cache-size", type=int, default=None, help="training pairs rendered once")
    p.add_argument(
        "--mixed-precision",
        choices=("no", "fp16", "bf16"),
        default=None,
        help="accelerate mixed precision (default no)",
    )
    p.add_argument(
        "--checkpoint-every", type=int, default=None, help="steps between resumable checkpoints (default 500)"
    )
    p.add_argument("--workers", type=int, default=None, help="processes for rendering the pair cache")
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation, pairs and noise (default 0)")
    p.add_argument("--max-seconds", type=float, default=None, help="wall-time cap per stage (plain: 2x)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs of background jobs)")
    p.add_argument("--tiny", action="store_true", help="toy model sizes (CPU smoke runs and tests)")
    return p


def main(argv=None) -> dict:
    a = build_parser().parse_args(argv)
    r = DiffIRRecipe()
    if a.tiny:
        r = dataclasses.replace(
            r,
            dim=8,
            num_blocks=(1, 1),
            heads=(1, 2),
            prior_dim=32,
            cpen_width=8,
            cache_size=64,
            batch_size=4,
            checkpoint_every=5,
            warmup=0,
        )
    over = {
        "steps": a.steps,
        "plain_steps": a.plain_steps,
        "batch_size": a.batch_size,
        "learning_rate": a.lr,
        "cache_size": a.cache_size,
        "mixed_precision": a.mixed_precision,
        "checkpoint_every": a.checkpoint_every,
        "workers": a.workers,
        "seed": a.seed,
        "max_seconds": a.max_seconds,
    }
    r = dataclasses.replace(r, **{k: v for k, v in over.items() if v is not None})
    if a.no_progress:
        r = dataclasses.replace(r, progress=False)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    res = run_stage(a.stage, a.task, a.out, r)
    print(json.dumps(res, indent=2, default=str)[:4000])
    return res


if __name__ == "__main__":
    main()
    exit_process(0)  # a worker of a multi-process launch leaves its group and ends without a teardown abort
