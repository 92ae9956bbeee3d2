"""Latent bridge training for the shapes world's restoration tasks (I2SB, DDBM VP / VE) and the Palette baseline.

The clean and degraded renders of a task (WORLD.md: inpaint, sr4, deblur, jpeg) are VAE-encoded once with the
base model's encoder (posterior mode, scaled latents; cached as safetensors). The network is the base model's
UNet with ``conv_in`` widened from 4 to 8 input channels (the degraded latent concatenated; the new weights are
zero, so training starts from the pretrained denoiser), conditioned through cross-attention on the fixed
empty-prompt embedding; it is fine-tuned fully or with LoRA (peft, through diffusers' adapter API; ``conv_in``
stays fully trainable). Every task runs on the shared accelerate loop (``lsb.training.loop``: checkpoints, exact
resume from the newest one in ``--out``, EMA, mixed precision, multi-GPU) and exports a pipeline folder (fp16
safetensors in shards under 8 MiB) to ``<out>/final``.

Losses (the network F, the scheduler saved with the model supplies the bridge and its preconditioning):

- bridges (``i2sb``, ``ddbm-vp``, ``ddbm-ve``): x_t = a_t x_T + b_t x_0 + c_t z (I2SB's OT-ODE: no noise),
  x0hat = c_skip x_t + c_out F(c_in x_t, c_noise; x_T), loss = |F - (x_0 - c_skip x_t) / c_out|^2, i.e.
  |x0hat - x_0|^2 / c_out^2. For I2SB (c_skip = 1, c_out = -sigma_n) this is exactly its label
  (x_n - x_0) / sigma_n with n uniform on 1..N-1; for DDBM the "bridge_karras" weighting with t uniform on
  [t_min, T] (the paper's "real-uniform").
- ``palette``: the standard DDPM epsilon loss on the base model's noise schedule, |F(x_t; x_T) - eps|^2 with
  x_t = sqrt(abar_k) x_0 + sqrt(1 - abar_k) eps, k uniform on 0..999 (sampled with DDIM).

Run ``python -m lsb.training.bridge --task inpaint --bridge i2sb --out runs/bridge-inpaint-i2sb --steps 4000
--batch-size 256`` (``--bridge palette`` for the baseline).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import shapes
from ..data.degradations import degrade
from ..helpers.bridge_schedulers import training_scheduler
from ..helpers.concat_unet import empty_prompt_embeds, expand_conv_in, unet_call
from ..helpers.restoration_tasks import BRIDGES, TASKS, check_task
from ..io.latents import encode_latents
from ..io.files import atomic_path, write_json_atomic
from ..io.images import uint8_to_pixels
from .loop import TrainConfig, TrainingTask, exit_process, is_main_process, train

METHODS = BRIDGES + ("palette",)
LORA_TARGETS = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
]


def render_pairs(task: str, split: str, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray, list[shapes.Scene]]:
    """Clean and degraded renders of scenes ``start .. start + n - 1`` of ``split``: uint8 (n, 64, 64, 3) each."""
    check_task(task)
    scenes = shapes.scenes(split, n, start=start)
    clean = [shapes.render(s) for s in scenes]
    degraded = [np.asarray(degrade(im, task)) for im in clean]
    return np.stack([np.asarray(im) for im in clean]), np.stack(degraded), scenes


def _to_pixels(arr: np.ndarray) -> torch.Tensor:
    return uint8_to_pixels(arr)


@torch.no_grad()
def encode(vae, arr: np.ndarray, batch: int = 256) -> torch.Tensor:
    """uint8 images (n, H, W, 3) -> scaled VAE latents (posterior mode), float32 on CPU."""
    out = []
    for i in range(0, len(arr), batch):
        x = _to_pixels(arr[i : i + batch]).to(device=vae.device, dtype=vae.dtype)
        out.append(encode_latents(vae, x).float().cpu())
    return torch.cat(out)


def _vae_fingerprint(vae) -> str:
    h = hashlib.sha1(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    for name, p in list(vae.state_dict().items())[:4]:
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def cache_pair_latents(
    vae, task: str, n: int, split: str = "train", cache_dir: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, degraded) latents of the first ``n`` scenes of ``split`` for ``task``, cached as safetensors in
    ``cache_dir`` (keyed by task, split, n and the VAE's weights; written atomically, so concurrent runs are safe)."""
    from safetensors.torch import load_file, save_file

    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{task}-{split}-{n}-{_vae_fingerprint(vae)}.safetensors"
        if path.is_file():
            d = load_file(str(path))
            return d["clean"], d["degraded"]
    clean, degraded, _ = render_pairs(task, split, n)
    vae.eval()
    z0, zT = encode(vae, clean), encode(vae, degraded)
    if path is not None:
        with atomic_path(path) as tmp:  # THE atomic write (lsb.io.files)
            save_file({"clean": z0.contiguous(), "degraded": zT.contiguous()}, str(tmp))
    return z0, zT


def load_base(base: str | Path):
    """vae, text_encoder, tokenizer, unet and scheduler config of a Stable Diffusion folder, in float32."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from ..helpers.loading import check_model_folder

    base = Path(base)
    check_model_folder(base)
    vae = AutoencoderKL.from_pretrained(base / "vae", dtype=torch.float32)
    te = CLIPTextModel.from_pretrained(base / "text_encoder", dtype=torch.float32)
    tok = CLIPTokenizer.from_pretrained(base / "tokenizer")
    unet = UNet2DConditionModel.from_pretrained(base / "unet", dtype=torch.float32)
    sched_cfg = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    return vae, te, tok, unet, sched_cfg


def palette_schedulers(base_scheduler_config: dict):
    """(DDPMScheduler for training, DDIMScheduler for sampling) on the base model's betas; DDIM with
    ``timestep_spacing="trailing"`` so that any NFE, even 1, starts at the last training timestep."""
    from diffusers import DDIMScheduler, DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")
    cfg = {k: base_scheduler_config[k] for k in keys if k in base_scheduler_config}
    cfg["prediction_type"] = "epsilon"
    ddim = DDIMScheduler(**cfg, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")
    return DDPMScheduler(**cfg, clip_sample=False), ddim


class RestorationTask(TrainingTask):
    """Train a latent restoration model: a bridge (``i2sb``, ``ddbm-vp``, ``ddbm-ve``) or the ``palette`` baseline.

    Args:
        method: one of :data:`METHODS`.
        task: restoration task (:data:`lsb.helpers.restoration_tasks.TASKS`).
        vae, text_encoder, tokenizer, unet: the base Stable Diffusion's components (``unet`` with 4 input
            channels; it is widened to 8 here).
        base_scheduler_config: the base model's scheduler config (Palette's noise schedule).
        clean, degraded: cached latents (n, 4, h, w) of the training pairs.
        batch_size: per-process batch.
        lora_rank: 0 for a full fine-tune, else the LoRA rank (``conv_in`` stays fully trainable).
        ot_ode: I2SB's OT-ODE variant (noise-free interpolant).
        sample_images: number of val images in the sample grid written at the end (and every ``sample_every``).
    """

    def __init__(
        self,
        method: str,
        task: str,
        vae,
        text_encoder,
        tokenizer,
        unet,
        base_scheduler_config: dict,
        clean: torch.Tensor,
        degraded: torch.Tensor,
        batch_size: int = 64,
        lora_rank: int = 0,
        ot_ode: bool = False,
        sample_images: int = 8,
    ):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        check_task(task)
        if clean.shape != degraded.shape or clean.ndim != 4:
            raise ValueError(
                f"clean and degraded latents must share a shape (n, c, h, w), got {tuple(clean.shape)} "
                f"and {tuple(degraded.shape)}"
            )
        self.method, self.task, self.name = method, task, f"{method}-{task}"
        self.vae, self.text_encoder, self.tokenizer = vae, text_encoder, tokenizer
        self.vae.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        self.unet = expand_conv_in(unet, clean.shape[1]) if unet.config.in_channels == clean.shape[1] else unet
        self.lora_rank = int(lora_rank)
        if self.lora_rank > 0:
            from peft import LoraConfig

            self.unet.requires_grad_(False)
            self.unet.add_adapter(
                LoraConfig(
                    r=self.lora_rank,
                    lora_alpha=self.lora_rank,
                    init_lora_weights="gaussian",
                    target_modules=LORA_TARGETS,
                )
            )
            self.unet.conv_in.requires_grad_(True)
        self.clean, self.degraded = clean, degraded
        self.batch_size = int(batch_size)
        self.sample_images = sample_images
        self.embeds = empty_prompt_embeds(text_encoder, tokenizer).detach().float().cpu()
        if method == "palette":
            self.noise_scheduler, self.scheduler = palette_schedulers(base_scheduler_config)
            self.alphas_cumprod = self.noise_scheduler.alphas_cumprod.float()
        else:
            self.scheduler = training_scheduler(method, task, ot_ode=ot_ode)

    def trainable_modules(self):
        return {"unet": self.unet}

    def batch(self, rng, step, device):
        B = self.batch_size
        idx = torch.from_numpy(rng.integers(len(self.clean), size=B))
        noise = torch.from_numpy(rng.standard_normal((B, *self.clean.shape[1:])).astype(np.float32))
        u = rng.random(B)
        if self.method == "palette":
            n_train = self.noise_scheduler.config.num_train_timesteps
            t = torch.from_numpy(np.minimum((u * n_train).astype(np.int64), n_train - 1))
        elif self.method == "i2sb":  # index n uniform on 1..N-1 (sigma_0 = 0 would divide by zero), t = n / (N - 1)
            n = self.scheduler.config.num_train_timesteps
            t = torch.from_numpy(1 + np.minimum((u * (n - 1)).astype(np.int64), n - 2)).double() / (n - 1)
        else:  # DDBM's "real-uniform" t on [t_min, T]
            bridge = self.scheduler.bridge
            t = torch.from_numpy(bridge.t_min + u * (bridge.t_max - bridge.t_min))
        return {
            "clean": self.clean[idx].to(device),
            "degraded": self.degraded[idx].to(device),
            "noise": noise.to(device),
            "t": t,
        }

    def _bridge_target(self, b):
        """(network input, time input, regression target) of a bridge batch."""
        t = b["t"]  # float64 on CPU
        bridge, pre = self.scheduler.bridge, self.scheduler.preconditioning
        x0, xT = b["clean"], b["degraded"]
        ot_ode = getattr(self.scheduler.config, "ot_ode", False)
        x_t = bridge.marginal(x0, xT, t, None if ot_ode else b["noise"])
        c_skip, c_in, c_out, c_noise = (
            v.reshape(-1, 1, 1, 1).to(device=x0.device, dtype=torch.float32)
            if i < 3
            else v.to(device=x0.device, dtype=torch.float32)
            for i, v in enumerate(pre.scalings(t))
        )
        target = (x0 - c_skip * x_t) / c_out
        return c_in * x_t, c_noise, target

    def loss(self, b, step):
        unet = self.wrapped_modules["unet"]
        embeds = self.embeds.to(b["clean"].device).expand(len(b["clean"]), -1, -1)
        if self.method == "palette":
            k = b["t"].to(b["clean"].device)
            abar = self.alphas_cumprod.to(b["clean"].device)[k].reshape(-1, 1, 1, 1)
            x_in = abar.sqrt() * b["clean"] + (1 - abar).sqrt() * b["noise"]
            time_in, target = k, b["noise"]
        else:
            x_in, time_in, target = self._bridge_target(b)
        pred = unet_call(unet, x_in, b["degraded"], time_in, embeds)
        mse = F.mse_loss(pred, target)
        return mse, {"mse": float(mse.detach())}

    # ------------------------------------------------------------------ export / samples
    def export_unet(self):
        """The UNet to save: a copy with the LoRA weights fused in (LoRA), else the trained one."""
        if self.lora_rank <= 0:
            return self.unet
        import copy

        unet = copy.deepcopy(self.unet)
        unet.fuse_lora()
        unet.unload_lora()
        return unet

    def pipeline(self, unet=None):
        import lsb

        cls = lsb.ConditionalDiffusionRestorationPipeline if self.method == "palette" else lsb.BridgeRestorationPipeline
        return cls(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=unet if unet is not None else self.unet,
            scheduler=self.scheduler,
            task=self.task,
        )

    @torch.no_grad()
    def sample(self, step, out_dir):
        from ..io.images import make_grid, save_image

        if self.sample_images <= 0:
            return
        was_training = self.unet.training
        self.unet.eval()
        device = self.unet.device
        self.vae.to(device)
        self.text_encoder.to(device)
        clean, degraded, _ = render_pairs(self.task, "val", self.sample_images)
        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        out = pipe(list(degraded), num_inference_steps=10, generator=torch.Generator(device).manual_seed(0)).images
        from PIL import Image

        tiles = [Image.fromarray(a) for a in degraded] + list(out) + [Image.fromarray(a) for a in clean]
        save_image(make_grid(tiles, nrow=self.sample_images), Path(out_dir) / f"{self.name}-{step:06d}.png")
        self.unet.train(was_training)

    def export(self, out_dir):
        pipe = self.pipeline(self.export_unet())
        pipe.to(torch.float16).save_pretrained(out_dir, max_shard_size="5MB")
        pipe.to(torch.float32)


def build_parser() -> argparse.ArgumentParser:
    import lsb

    p = argparse.ArgumentParser(prog="python -m lsb.training.bridge", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, choices=TASKS, help="the restoration task (degradation) to learn")
    p.add_argument(
        "--bridge",
        "--method",
        dest="bridge",
        default="i2sb",
        choices=METHODS,
        help="i2sb / ddbm-vp / ddbm-ve bridge, or palette (the conditional-diffusion baseline)",
    )
    p.add_argument("--out", required=True, help="run folder (checkpoints; resumes from the newest; export in final/)")
    p.add_argument("--steps", type=int, default=4000, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=64, help="batch size per process")
    p.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate")
    p.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up steps")
    p.add_argument("--lora-rank", type=int, default=0, help="0 = full fine-tune (default), else LoRA rank")
    p.add_argument("--ot-ode", action="store_true", help="I2SB OT-ODE variant (noise-free interpolant)")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay (0 = off)")
    p.add_argument("--pairs", type=int, default=20000, help="number of cached training pairs")
    p.add_argument("--cache-dir", default=None, help="latent cache folder (default: <out>/../latent-cache)")
    p.add_argument("--base", default=lsb.MINI_SD, help="base Stable Diffusion folder (default: the embedded mini SD)")
    p.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"], help="accelerate mixed precision")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between resumable checkpoints")
    p.add_argument("--sample-every", type=int, default=0, help="steps between sample grids (0 = none)")
    p.add_argument("--sample-images", type=int, default=8, help="images per sample grid")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, pairs and noise")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs of background jobs)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=0.0,
        help="stop (checkpoint + export) after this many seconds of training; 0 = no limit",
    )
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.pairs < 1:
        raise SystemExit("--steps, --batch-size and --pairs must be positive")
    from ..io.execution import default_device

    out = Path(args.out)
    vae, te, tok, unet, sched_cfg = load_base(args.base)
    device = default_device()
    vae.to(device)
    cache_dir = Path(args.cache_dir) if args.cache_dir else out.parent / "latent-cache"
    clean, degraded = cache_pair_latents(vae, args.task, args.pairs, "train", cache_dir)
    task = RestorationTask(
        args.bridge,
        args.task,
        vae,
        te,
        tok,
        unet,
        sched_cfg,
        clean,
        degraded,
        batch_size=args.batch_size,
        lora_rank=args.lora_rank,
        ot_ode=args.ot_ode,
        sample_images=args.sample_images,
    )
    cfg = TrainConfig(
        str(out),
        max_steps=args.steps,
        learning_rate=args.lr,
        weight_decay=0.0,
        lr_warmup_steps=args.warmup,
        mixed_precision=args.mixed_precision,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        sample_every=args.sample_every,
        ema_decay=args.ema,
        progress=not args.no_progress,
        max_seconds=args.max_seconds,
    )
    result = train(task, cfg)
    result.update(method=args.bridge, task=args.task, export=str(out / "final"))
    if is_main_process():
        write_json_atomic(out / "result.json", result)
    # under `accelerate launch` every process prints its own summary: one write each, so lines never interleave
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
    exit_process(0)  # a worker of a multi-process launch leaves its group and ends without a teardown abort
