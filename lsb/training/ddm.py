"""Training a decoupled diffusion model (DDM) and its same-size DDPM baseline in the mini SD latent space.

    python -m lsb.training.ddm --kind ddm  --task t2i --out runs/ddm-t2i  --steps 4000 --batch-size 256
    python -m lsb.training.ddm --kind ddpm --task t2i --out runs/ddpm-t2i --steps 4000 --batch-size 256
    python -m lsb.training.ddm --kind ddm  --task sr4 --out runs/ddm-sr4  --steps 4000 --batch-size 256

Both kinds use the same data (latents of shapes-world scenes from the frozen mini SD VAE, cached once), the
same FROZEN mini SD text encoder and tokenizer (caption augmentation incl. empty captions for classifier-free
guidance), the same UNet2DConditionModel architecture as the mini SD UNet (only conv_out differs: 8 instead
of 4 output channels for DDM's two heads, +2.3k of 7.0M parameters), the same optimiser, EMA and steps, and
both UNets start FROM SCRATCH: initialising from the mini SD UNet would hand the DDPM baseline a model
already trained for its own objective, and the comparison is of the two training objectives + samplers.

- ``ddm``: t ~ U(t_min, 1), x_t = x_0 + H_t + sqrt(t) eps (:class:`lsb.DDMScheduler.add_noise`); the UNet gets
  c_in x_t and timestep 1000 t and predicts [C, eps] (or [K, C, eps], ``--attenuation linear``; K drawn as
  clamp(N(0,1), -1, 1) per element); loss = MSE(C) + MSE(eps) + w_rec (1 - t)^2 L1(x0hat, x_0) (the official
  objective without LPIPS, which has no meaning on latents, and without the 1/t, 1/(1-t) weights, as the official
  latent configs).
- ``ddpm``: the mini SD objective: epsilon prediction on SD's scaled-linear 1000-step schedule, min-SNR-5 weights.
- ``--task sr4``: 4x super-resolution (WORLD.md): the latent of the degraded (box-down, bicubic-up) picture is
  concatenated to the UNet input (in_channels 8), captions are empty. Only for ``--kind ddm``.

Exports ``<out>/final``: a :class:`lsb.DDMPipeline` folder (ddm) or a ``StableDiffusionPipeline`` folder
(ddpm), fp16 safetensors in shards under 5 MB. Resumes from the newest checkpoint in ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ..bridges.ddm import T_MIN
from ..data import shapes
from ..data.degradations import degrade
from ..io.execution import process_map, process_state
from ..io.images import uint8_to_pixels
from ..io.latents import encode_latents
from ..models import mini_sd
from ..models.ddm import ddm_unet_channels, split_heads
from ..io.files import write_json_atomic
from .loop import TrainConfig, TrainingTask, is_main_process, exit_process, train
from .mini_sd import BASE_SAMPLE_PROMPTS, min_snr_epsilon_loss, sd_pipeline, training_noise_scheduler

KINDS = ("ddm", "ddpm")
TASKS = ("t2i", "sr4")
SAMPLE_PROMPTS = [*BASE_SAMPLE_PROMPTS, "a blue square on a gray background"]


def load_mini_sd(path: str | None = None):
    """(vae, text_encoder, tokenizer) of the mini SD, float32, frozen."""
    from diffusers import StableDiffusionPipeline

    import lsb

    pipe = StableDiffusionPipeline.from_pretrained(
        path or lsb.MINI_SD, safety_checker=None, requires_safety_checker=False
    )
    vae, te = pipe.vae.float().eval(), pipe.text_encoder.float().eval()
    vae.requires_grad_(False)
    te.requires_grad_(False)
    return vae, te, pipe.tokenizer


def _render_pair(args) -> tuple[np.ndarray, np.ndarray | None]:
    chunk, task = args
    clean = [shapes.render(s) for s in chunk]
    a = np.stack([np.asarray(im) for im in clean])
    b = np.stack([np.asarray(degrade(im, task)) for im in clean]) if task else None
    return a, b


@torch.no_grad()
def cache_task_latents(vae, n: int, task: str = "t2i", batch: int = 256, device=None):
    """Scaled VAE latents (posterior mode) of the first ``n`` train scenes, and of their degraded pictures
    for an image-conditioned task; returns (latents, cond_latents or None, scenes)."""
    from tqdm.auto import tqdm

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    device = device or process_state().device  # where accelerate puts this process
    vae = vae.to(device)
    scenes_all = shapes.scenes("train", n)
    jobs = [(scenes_all[i : i + batch], "sr4" if task == "sr4" else None) for i in range(0, n, batch)]

    def enc(arr):
        x = uint8_to_pixels(arr).to(device)
        return encode_latents(vae, x).cpu()

    lat, cond = [], []
    with process_map(_render_pair, jobs) as pairs:
        for a, b in tqdm(pairs, total=len(jobs), desc="cache latents"):
            lat.append(enc(a))
            if b is not None:
                cond.append(enc(b))
    return torch.cat(lat), (torch.cat(cond) if cond else None), scenes_all


class DDMTrainTask(TrainingTask):
    """A DDM (``kind="ddm"``) or its DDPM baseline (``kind="ddpm"``) on cached latents; see the module docstring."""

    def __init__(
        self,
        kind: str,
        task: str,
        vae,
        text_encoder,
        tokenizer,
        latents,
        scenes,
        cond_latents=None,
        batch_size: int = 64,
        attenuation: str = "constant",
        recon_weight: float = 1.0,
        snr_gamma: float = 5.0,
        unet=None,
        unet_overrides: dict | None = None,
    ):
        import lsb

        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
        if kind == "ddpm" and task != "t2i":
            raise ValueError("the DDPM baseline is defined for --task t2i only")
        if (task == "sr4") != (cond_latents is not None):
            raise ValueError("cond_latents are needed exactly for the image-conditioned task sr4")
        self.kind, self.task, self.name = kind, task, f"{kind}-{task}"
        self.vae, self.text_encoder, self.tokenizer = vae, text_encoder, tokenizer
        self.latents, self.scenes, self.cond = latents, scenes, cond_latents
        self.batch_size, self.recon_weight, self.snr_gamma = batch_size, recon_weight, snr_gamma
        c = latents.shape[1]
        if kind == "ddm":
            self.scheduler = lsb.DDMScheduler(attenuation=attenuation)
            chans = ddm_unet_channels(c, attenuation, image_conditioned=task == "sr4")
        else:
            self.scheduler = training_noise_scheduler()
            ac = self.scheduler.alphas_cumprod
            self.snr = ac / (1 - ac)
            chans = {"in_channels": c, "out_channels": c}
        self.unet = (
            unet
            if unet is not None
            else mini_sd.build_unet(
                **{**chans, "cross_attention_dim": text_encoder.config.hidden_size, **(unet_overrides or {})}
            )
        )
        self._emb_cache: dict[str, torch.Tensor] = {}

    def trainable_modules(self):
        return {"unet": self.unet}

    @torch.no_grad()
    def _embed(self, captions: list[str], device) -> torch.Tensor:
        self.text_encoder.to(device)
        missing = sorted({c for c in captions if c not in self._emb_cache})
        if missing:
            ids = self.tokenizer(
                missing,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(device)
            for cap, e in zip(missing, self.text_encoder(ids)[0]):
                self._emb_cache[cap] = e
        return torch.stack([self._emb_cache[c].to(device) for c in captions])

    def batch(self, rng, step, device):
        b = self.batch_size
        idx = rng.integers(len(self.latents), size=b)
        captions = [shapes.augmented_caption(self.scenes[i], rng) for i in idx] if self.task == "t2i" else [""] * b
        noise = torch.from_numpy(rng.standard_normal((b, *self.latents.shape[1:])).astype(np.float32))
        out = {"x0": self.latents[idx].to(device), "h": self._embed(captions, device), "noise": noise.to(device)}
        if self.cond is not None:
            out["cond"] = self.cond[idx].to(device)
        if self.kind == "ddm":
            out["t"] = torch.from_numpy(rng.uniform(T_MIN, 1.0, size=b).astype(np.float32)).to(device)
            if self.scheduler.attenuation == "linear":
                k = rng.standard_normal((b, *self.latents.shape[1:])).clip(-1, 1).astype(np.float32)
                out["K"] = torch.from_numpy(k).to(device)
        else:
            out["t"] = torch.from_numpy(rng.integers(0, self.scheduler.config.num_train_timesteps, size=b)).to(device)
        return out

    def loss(self, b, step):
        unet = self.wrapped_modules["unet"]
        x0, noise, t = b["x0"], b["noise"], b["t"]
        if self.kind == "ddpm":
            noisy = self.scheduler.add_noise(x0, noise, t)
            pred = unet(noisy, t, b["h"]).sample
            loss, mse = min_snr_epsilon_loss(pred, noise, self.snr, t, self.snr_gamma)
            return loss, {"mse": float(mse.detach().mean())}
        K = b.get("K")
        ts = t * self.scheduler.config.num_train_timesteps
        x_t = self.scheduler.add_noise(x0, noise, ts, K)
        inp = self.scheduler.scale_model_input(x_t, ts)
        if "cond" in b:
            inp = torch.cat([inp, b["cond"]], dim=1)
        out = unet(inp, ts, b["h"]).sample.float()
        target = self.scheduler.get_target(x0, noise, K)
        K_hat, C_hat, eps_hat = split_heads(out, self.scheduler.attenuation)
        _, C_true, _ = split_heads(target, self.scheduler.attenuation)
        mse_c = ((C_hat - C_true) ** 2).mean()
        mse_eps = ((eps_hat - noise) ** 2).mean()
        mse_k = ((K_hat - K) ** 2).mean() if K is not None else torch.zeros((), device=out.device)
        tb = t.view(-1, 1, 1, 1)
        H = C_hat * tb + (K_hat * tb * tb / 2 if K is not None else 0)
        x0_hat = x_t - H - tb.sqrt() * eps_hat
        rec = ((1 - tb) ** 2 * (x0_hat - x0).abs()).mean()
        loss = mse_c + mse_eps + mse_k + self.recon_weight * rec
        return loss, {"mse_c": float(mse_c.detach()), "mse_eps": float(mse_eps.detach()), "rec": float(rec.detach())}

    # ------------------------------------------------------------------ pipelines, samples, export
    def pipeline(self):
        if self.kind == "ddm":
            import lsb

            return lsb.DDMPipeline(
                vae=self.vae,
                text_encoder=self.text_encoder,
                tokenizer=self.tokenizer,
                unet=self.unet,
                scheduler=self.scheduler,
            )
        return sd_pipeline(self.vae, self.text_encoder, self.tokenizer, self.unet)

    @torch.no_grad()
    def sample(self, step, out_dir):
        from ..io.images import save_grid

        self.unet.eval()
        device = next(self.unet.parameters()).device
        self.vae.to(device)
        self.text_encoder.to(device)
        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        g = torch.Generator(device).manual_seed(0)
        if self.kind == "ddpm":
            from diffusers import DDIMScheduler

            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
            imgs = pipe(
                SAMPLE_PROMPTS, num_inference_steps=20, guidance_scale=2.0, output_type="pt", generator=g
            ).images
        elif self.task == "t2i":
            imgs = pipe(SAMPLE_PROMPTS, num_inference_steps=9, guidance_scale=2.0, output_type="pt", generator=g).images
        else:
            val = shapes.scenes("val", 10)
            lows = [degrade(shapes.render(s), "sr4") for s in val]
            imgs = pipe(image=lows, num_inference_steps=9, output_type="pt", generator=g).images
            from ..data.datasets import to_tensor

            imgs = torch.cat([torch.stack([(to_tensor(im) + 1) / 2 for im in lows]).to(imgs.device), imgs])
        save_grid(imgs.float().cpu() * 2 - 1, Path(out_dir) / f"{self.name}-{step:06d}.png", nrow=10)

    def export(self, out_dir):
        pipe = self.pipeline()
        pipe.to(torch.float16).save_pretrained(out_dir, max_shard_size="5MB")
        pipe.to(torch.float32)  # the VAE / text encoder are shared with the task


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lsb.training.ddm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=KINDS, default="ddm", help="ddm, or ddpm: the same-size DDPM baseline (t2i only)")
    ap.add_argument("--task", choices=TASKS, default="t2i", help="t2i: text-to-image; sr4: 4x super-resolution")
    ap.add_argument("--out", required=True, help="run folder (checkpoints, samples, final/)")
    ap.add_argument("--steps", type=int, default=4000, help="optimizer steps")
    ap.add_argument("--batch-size", type=int, default=256, help="batch size per process")
    ap.add_argument("--lr", type=float, default=4e-4, help="AdamW learning rate")
    ap.add_argument(
        "--attenuation",
        choices=("constant", "linear"),
        default="constant",
        help="DDM image-to-zero attenuation H_t (linear adds the K output channels)",
    )
    ap.add_argument("--recon-weight", type=float, default=1.0, help="weight of the x_0 reconstruction loss term")
    ap.add_argument("--cached-scenes", type=int, default=20000, help="training scenes encoded to latents once")
    ap.add_argument(
        "--mixed-precision", choices=("no", "fp16", "bf16"), default="no", help="accelerate mixed precision"
    )
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay of the exported weights (0 = off)")
    ap.add_argument("--checkpoint-every", type=int, default=500, help="steps between resumable checkpoints")
    ap.add_argument("--sample-every", type=int, default=0, help="steps between sample grids (0 = none)")
    ap.add_argument("--max-seconds", type=float, default=0.0, help="stop early after this many seconds (0 = off)")
    ap.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches and noise")
    ap.add_argument("--base", default=None, help="mini SD folder for the VAE / text encoder (default lsb.MINI_SD)")
    ap.add_argument(
        "--unet-channels",
        type=int,
        nargs="+",
        default=None,
        help="override block_out_channels (tests / smoke runs only; default: the mini SD UNet)",
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (logs of background jobs)")
    return ap


def main(argv=None) -> dict:
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.kind == "ddpm" and a.task != "t2i":
        ap.error("--kind ddpm is the text-to-image baseline: use --task t2i")
    vae, te, tok = load_mini_sd(a.base)
    latents, cond, scenes = cache_task_latents(vae, a.cached_scenes, a.task)
    overrides = None
    if a.unet_channels:
        overrides = {
            "block_out_channels": a.unet_channels,
            "norm_num_groups": min(32, min(a.unet_channels)),
            "down_block_types": ["CrossAttnDownBlock2D"] * len(a.unet_channels),
            "up_block_types": ["CrossAttnUpBlock2D"] * len(a.unet_channels),
        }
    task = DDMTrainTask(
        a.kind,
        a.task,
        vae,
        te,
        tok,
        latents,
        scenes,
        cond,
        batch_size=a.batch_size,
        attenuation=a.attenuation,
        recon_weight=a.recon_weight,
        unet_overrides=overrides,
    )
    cfg = TrainConfig(
        a.out,
        max_steps=a.steps,
        learning_rate=a.lr,
        weight_decay=1e-2,
        lr_warmup_steps=min(200, a.steps // 10),
        mixed_precision=a.mixed_precision,
        checkpoint_every=a.checkpoint_every,
        sample_every=a.sample_every,
        ema_decay=a.ema,
        seed=a.seed,
        max_seconds=a.max_seconds,
        progress=not a.no_progress,
    )
    res = train(task, cfg)
    res.update(
        kind=a.kind,
        task=a.task,
        attenuation=a.attenuation,
        batch_size=a.batch_size,
        unet_parameters=mini_sd.count_parameters(task.unet),
    )
    if is_main_process():  # once under `accelerate launch`
        write_json_atomic(Path(a.out, "result.json"), res)
    print(json.dumps(res, default=str))
    return res


if __name__ == "__main__":
    main()
    exit_process(0)  # a worker of a multi-process launch leaves its group and ends without a teardown abort
