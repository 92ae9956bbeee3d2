"""Training the embedded mini Stable Diffusion from scratch on the shapes world.

Stages (each resumable, each its own run folder under ``<out>/``):

``vae``      AutoencoderKL on rendered scenes: L1 + MSE, edge-weighted, tiny KL.
``decoder``  the decoder alone (encoder frozen, so latents stay valid), longer, edge-weighted.
``unet``     UNet2DConditionModel + CLIP text encoder jointly, on latents cached once from the
             frozen encoder; epsilon loss with min-SNR weighting, caption augmentation with
             empty captions for classifier-free guidance, EMA.
``export``   assembles a diffusers ``StableDiffusionPipeline`` folder (fp16 safetensors).

``lsb train mini-sd --stage all`` runs them in order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import shapes
from ..io.assets import folder_bytes
from ..io.execution import process_map, process_state
from ..io.images import uint8_to_pixels
from ..io.latents import encode_latents
from ..models import mini_sd
from ..io.files import write_json_atomic
from .loop import TrainConfig, TrainingTask, is_main_process, train


def render_batch(rng: np.random.Generator, n: int, split: str = "train") -> tuple[list[shapes.Scene], torch.Tensor]:
    """``n`` random scenes and their renders as a float tensor in [-1, 1], (n, 3, 64, 64)."""
    scenes = [shapes.sample_scene(rng) for _ in range(n)]
    arr = np.stack([shapes.render_array(s) for s in scenes])
    return scenes, uint8_to_pixels(arr)


def edge_weight(x: torch.Tensor, strength: float = 4.0) -> torch.Tensor:
    """Per-pixel loss weight, larger on edges of the target (where a blurry decoder fails)."""
    gx = (x[..., :, 1:] - x[..., :, :-1]).abs().amax(1, keepdim=True)
    gy = (x[..., 1:, :] - x[..., :-1, :]).abs().amax(1, keepdim=True)
    g = torch.zeros_like(x[:, :1])
    g[..., :, 1:] += gx
    g[..., :, :-1] += gx
    g[..., 1:, :] += gy
    g[..., :-1, :] += gy
    g = F.max_pool2d(g, 3, stride=1, padding=1)
    return 1.0 + strength * (g > 0.05).float()


class VAETask(TrainingTask):
    name = "vae"

    def __init__(
        self,
        batch_size: int = 16,
        kl_weight: float = 1e-6,
        decoder_only: bool = False,
        vae=None,
        latent_noise: float = 0.0,
        seed: int = 0,
    ):
        self.vae = vae if vae is not None else mini_sd.build_vae()
        self.batch_size = batch_size
        self.kl_weight = kl_weight
        self.decoder_only = decoder_only
        if latent_noise and not decoder_only:
            raise ValueError("latent_noise trains a decoder robust to off-manifold latents: decoder-only stage only")
        if latent_noise < 0:
            raise ValueError(f"latent_noise must be >= 0, got {latent_noise}")
        # per-sample Gaussian noise on the latent before decoding, std uniform in [0, latent_noise] latent stds:
        # samplers hand the decoder latents slightly off the encoder's manifold, which it should decode cleanly
        self.latent_noise, self.seed = float(latent_noise), int(seed)
        if decoder_only:
            self.name = "decoder"
            self.vae.encoder.requires_grad_(False)
            self.vae.quant_conv.requires_grad_(False)

    def trainable_modules(self):
        return {"vae": self.vae}

    def batch(self, rng, step, device):
        return render_batch(rng, self.batch_size)[1].to(device)

    def loss(self, x, step):
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        # The forward of the wrapped module (DDP under several processes, whose forward arms the gradient
        # all-reduce): encode, posterior sample (mode for the decoder-only stage, whose frozen encoder
        # builds no graph), decode. The posterior's moments are caught on the way for the KL term.
        vae = self.wrapped_modules["vae"]
        vae_m = getattr(vae, "module", vae)
        moments = []
        at = vae_m.quant_conv if vae_m.quant_conv is not None else vae_m.encoder
        hooks = [at.register_forward_hook(lambda mod, inp, outp: moments.append(outp))]
        if self.latent_noise:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            std = 1.0 / float(vae_m.config.scaling_factor)

            def perturb(mod, args):
                z = args[0]
                level = torch.rand(z.shape[0], 1, 1, 1, generator=gen) * self.latent_noise * std
                return (z + (level * torch.randn(z.shape, generator=gen)).to(z),) + tuple(args[1:])

            first = vae_m.post_quant_conv if vae_m.post_quant_conv is not None else vae_m.decoder
            hooks.append(first.register_forward_pre_hook(perturb))
        try:
            rec = vae(x, sample_posterior=not self.decoder_only).sample
        finally:
            for h in hooks:
                h.remove()
        if self.decoder_only:
            kl = torch.zeros((), device=x.device)
        else:
            kl = DiagonalGaussianDistribution(moments[0]).kl().mean() / x[0].numel()
        w = edge_weight(x)
        l1 = ((rec - x).abs() * w).mean()
        mse = (((rec - x) ** 2) * w).mean()
        loss = l1 + mse + self.kl_weight * kl
        psnr = -10 * torch.log10(((rec.detach() - x) ** 2).mean() / 4.0)
        return loss, {"l1": float(l1.detach()), "psnr": float(psnr)}

    @torch.no_grad()
    def sample(self, step, out_dir):
        from ..io.images import save_grid

        self.vae.eval()
        rng = np.random.default_rng([12345])
        _, x = render_batch(rng, 16, "val")
        rec = self.vae(x.to(self.vae.device)).sample.clamp(-1, 1).cpu()
        save_grid(torch.cat([x, rec]), Path(out_dir) / f"{self.name}-{step:06d}.png", nrow=16)

    def export(self, out_dir):
        self.vae.save_pretrained(out_dir)


@torch.no_grad()
def latent_std(vae, n: int = 1024, seed: int = 7) -> float:
    rng = np.random.default_rng([seed])
    zs = []
    for _ in range(n // 64):
        _, x = render_batch(rng, 64)
        zs.append(vae.encode(x.to(vae.device)).latent_dist.mode())
    return float(torch.cat(zs).std())


@torch.no_grad()
def cache_latents(vae, n: int, seed: int = 0, batch: int = 128) -> tuple[torch.Tensor, list[shapes.Scene]]:
    """Encode ``n`` training scenes once (scaled latents, (n, 4, 8, 8)) with their scenes."""
    from tqdm.auto import tqdm

    vae.eval()
    scenes_all = shapes.scenes("train", n)
    chunks = [scenes_all[i : i + batch] for i in range(0, n, batch)]
    out = []
    with process_map(_render_chunk, chunks) as arrays:  # rendering is the slow part on many cores
        for arr in tqdm(arrays, total=len(chunks), desc="cache latents"):
            x = uint8_to_pixels(arr)
            out.append(encode_latents(vae, x.to(vae.device)).cpu())
    return torch.cat(out), scenes_all


def _render_chunk(chunk: list[shapes.Scene]) -> np.ndarray:
    return np.stack([shapes.render_array(s) for s in chunk])


#: the prompts the sample grids of the shapes-world trainings (mini SD, mini SD3, DDM) start with: six full
#: captions, then the three shape-only prompts; each grid appends its own
BASE_SAMPLE_PROMPTS = [
    "a red circle on a white background",
    "a green square on a black background",
    "a blue triangle on a gray background",
    "a yellow circle on a black background",
    "a purple square on a white background",
    "an orange triangle on a white background",
    "a circle",
    "a square",
    "a triangle",
]
SAMPLE_PROMPTS = [
    *BASE_SAMPLE_PROMPTS[:6],
    "a orange triangle on a white background",
    *BASE_SAMPLE_PROMPTS[6:],
    "a purple circle on a gray background",
    "a blue square on a gray background",
]


def training_noise_scheduler():
    """The ``DDPMScheduler`` that noises latents for training the mini SD's UNet (its schedule's betas)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        **{
            k: v
            for k, v in mini_sd.SCHEDULER_CONFIG.items()
            if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")
        }
    )


def min_snr_epsilon_loss(pred, noise, snr, t, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The min-SNR-gamma weighted epsilon loss: the batch mean of ``min(SNR_t, gamma) / SNR_t`` times each sample's
    MSE (``snr``: the SNR per training timestep, ``t``: the batch's timesteps); returns (loss, per-sample MSE)."""
    mse = ((pred.float() - noise) ** 2).mean(dim=(1, 2, 3))
    snr_t = snr.to(mse.device)[t]
    return (torch.clamp(snr_t, max=gamma) / snr_t * mse).mean(), mse


def sd_pipeline(vae, text_encoder, tokenizer, unet):
    """A ``StableDiffusionPipeline`` of these components with the mini SD's sampling scheduler, no safety checker."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=mini_sd.build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


class UNetTask(TrainingTask):
    name = "unet"

    def __init__(
        self,
        vae,
        latents: torch.Tensor,
        scenes: list[shapes.Scene],
        batch_size: int = 64,
        snr_gamma: float = 5.0,
        unet=None,
        text_encoder=None,
        tokenizer=None,
        focus_max_timestep: int = 0,
        focus_fraction: float = 0.0,
    ):
        self.vae = vae
        self.tokenizer = tokenizer or mini_sd.build_tokenizer()
        self.unet = unet if unet is not None else mini_sd.build_unet()
        self.text_encoder = text_encoder if text_encoder is not None else mini_sd.build_text_encoder(self.tokenizer)
        self.noise_scheduler = training_noise_scheduler()
        self.latents = latents
        self.scenes = scenes
        self.batch_size = batch_size
        self.snr_gamma = snr_gamma
        T = self.noise_scheduler.config.num_train_timesteps
        if focus_fraction and not (0 < focus_max_timestep <= T and 0.0 <= focus_fraction <= 1.0):
            raise ValueError(
                f"timestep focus needs 0 < max timestep <= {T} and a fraction in [0, 1], "
                f"got {focus_max_timestep} and {focus_fraction}"
            )
        self.focus_max_timestep, self.focus_fraction = int(focus_max_timestep), float(focus_fraction)
        ac = self.noise_scheduler.alphas_cumprod
        self.snr = ac / (1 - ac)

    def trainable_modules(self):
        return {"unet": self.unet, "text_encoder": self.text_encoder}

    def batch(self, rng, step, device):
        idx = rng.integers(len(self.latents), size=self.batch_size)
        captions = [shapes.augmented_caption(self.scenes[i], rng) for i in idx]
        ids = self.tokenizer(
            captions,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        t = rng.integers(0, self.noise_scheduler.config.num_train_timesteps, size=self.batch_size)
        if self.focus_fraction:
            # a share of the batch drawn from the low-noise end only: LSB's bridge (tau ~ 1) queries the model at
            # alphabar >= 0.8, i.e. SD timesteps below ~200, where uniform sampling spends a fifth of the steps
            low = rng.random(self.batch_size) < self.focus_fraction
            t = np.where(low, rng.integers(0, self.focus_max_timestep, size=self.batch_size), t)
        t = torch.from_numpy(t)
        noise = torch.from_numpy(rng.standard_normal((self.batch_size, 4, 8, 8)).astype(np.float32))
        return {
            "latents": self.latents[idx].to(device),
            "ids": ids.to(device),
            "t": t.to(device),
            "noise": noise.to(device),
        }

    def loss(self, b, step):
        unet, te = self.wrapped_modules["unet"], self.wrapped_modules["text_encoder"]
        noisy = self.noise_scheduler.add_noise(b["latents"], b["noise"], b["t"])
        h = te(b["ids"])[0]
        pred = unet(noisy, b["t"], h).sample
        loss, mse = min_snr_epsilon_loss(pred, b["noise"], self.snr, b["t"], self.snr_gamma)
        return loss, {"mse": float(mse.detach().mean())}

    def pipeline(self):
        return sd_pipeline(self.vae, self.text_encoder, self.tokenizer, self.unet)

    @torch.no_grad()
    def sample(self, step, out_dir):
        from diffusers import DDIMScheduler
        from ..io.images import save_grid

        self.unet.eval()
        self.text_encoder.eval()
        self.vae.to(self.unet.device)
        pipe = self.pipeline()
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        imgs = pipe(
            SAMPLE_PROMPTS,
            num_inference_steps=25,
            guidance_scale=3.0,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
        ).images
        save_grid(imgs * 2 - 1, Path(out_dir) / f"unet-{step:06d}.png", nrow=len(SAMPLE_PROMPTS))

    def export(self, out_dir):
        self.pipeline().save_pretrained(out_dir)


@dataclasses.dataclass
class MiniSDRecipe:
    """Defaults of the shipped model's training (docs/embedded-models.md: the measured run)."""

    vae_steps: int = 2500
    vae_batch: int = 16
    vae_lr: float = 1e-3
    decoder_steps: int = 1500
    decoder_lr: float = 3e-4
    unet_steps: int = 6000
    unet_batch: int = 64
    unet_lr: float = 4e-4
    cached_scenes: int = 20000
    seed: int = 0
    #: continue the UNet stage from a pipeline folder (its VAE, tokenizer, text encoder and UNet) instead
    #: of from scratch; used to train the shipped model further (e.g. on a GPU) without the VAE run.
    unet_init: str | None = None
    unet_warmup: int = 200
    mixed_precision: str = "no"
    unet_max_seconds: float = 0.0
    #: draw this share of each UNet batch's timesteps from [0, unet_focus_max_timestep) instead of [0, T)
    unet_focus_fraction: float = 0.0
    unet_focus_max_timestep: int = 300
    #: continue the decoder stage from this pipeline folder's VAE (encoder stays frozen) instead of vae/final
    decoder_init: str | None = None
    decoder_latent_noise: float = 0.0
    decoder_max_seconds: float = 0.0


def _init_folder(option: str, path: str, components: tuple[str, ...]) -> Path:
    """The pipeline folder a stage continues from, checked like any model folder, errors naming ``option``."""
    from ..helpers.loading import ModelFolderError, check_model_folder

    try:
        check_model_folder(path, components)
    except ModelFolderError as e:
        raise ModelFolderError(f"{option} {path}: {e}") from None
    return Path(path)


def _vae_stage(r: MiniSDRecipe, out: Path) -> dict:
    """Stage vae: the autoencoder, then its latent scaling factor (1 / latent std) written into ``vae/final``."""
    from diffusers import AutoencoderKL

    cfg = TrainConfig(
        str(out / "vae"),
        max_steps=r.vae_steps,
        learning_rate=r.vae_lr,
        weight_decay=0.0,
        lr_warmup_steps=100,
        checkpoint_every=250,
        sample_every=500,
        seed=r.seed,
    )
    res = train(VAETask(batch_size=r.vae_batch), cfg)
    vae = AutoencoderKL.from_pretrained(out / "vae" / "final")
    std = latent_std(vae)
    vae.register_to_config(scaling_factor=1.0 / std)
    from accelerate import PartialState

    PartialState().wait_for_everyone()  # every process has read final/ and computes the same std
    if is_main_process():
        vae.save_pretrained(out / "vae" / "final")
    PartialState().wait_for_everyone()
    res["latent_std"] = std
    return res


def _decoder_stage(r: MiniSDRecipe, out: Path) -> dict:
    """Stage decoder: fine-tune only the VAE's decoder (on latents with ``decoder_latent_noise`` added), from the vae
    stage or ``decoder_init``."""
    from diffusers import AutoencoderKL

    if r.decoder_init:
        src = _init_folder("--decoder-init", r.decoder_init, ("vae",))
        vae = AutoencoderKL.from_pretrained(src / "vae", torch_dtype=torch.float32)
    else:
        vae = AutoencoderKL.from_pretrained(out / "vae" / "final")
    cfg = TrainConfig(
        str(out / "decoder"),
        max_steps=r.decoder_steps,
        learning_rate=r.decoder_lr,
        weight_decay=0.0,
        checkpoint_every=250,
        sample_every=500,
        seed=r.seed + 1,
        max_seconds=r.decoder_max_seconds,
    )
    res = train(
        VAETask(
            batch_size=r.vae_batch, decoder_only=True, vae=vae, latent_noise=r.decoder_latent_noise, seed=r.seed + 1
        ),
        cfg,
    )
    return res


def _unet_stage(r: MiniSDRecipe, out: Path) -> dict:
    """Stage unet: the text-conditioned UNet on cached latents of the shapes world (EMA, optional init)."""
    from diffusers import AutoencoderKL

    init = {}
    if r.unet_init:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        src = _init_folder("--unet-init", r.unet_init, ("vae", "unet", "text_encoder", "tokenizer"))
        vae = AutoencoderKL.from_pretrained(src / "vae", torch_dtype=torch.float32)
        init = dict(
            unet=UNet2DConditionModel.from_pretrained(src / "unet", torch_dtype=torch.float32),
            text_encoder=CLIPTextModel.from_pretrained(src / "text_encoder", dtype=torch.float32),
            tokenizer=CLIPTokenizer.from_pretrained(src / "tokenizer"),
        )
    else:
        vae = AutoencoderKL.from_pretrained(out / "vae" / "final")
    vae.to(process_state().device)  # where accelerate puts this process (latents are cached on it)
    latents, scenes = cache_latents(vae, r.cached_scenes)
    vae.to("cpu")
    cfg = TrainConfig(
        str(out / "unet"),
        max_steps=r.unet_steps,
        learning_rate=r.unet_lr,
        weight_decay=1e-2,
        lr_warmup_steps=r.unet_warmup,
        checkpoint_every=max(200, r.unet_steps // 20),
        sample_every=max(500, r.unet_steps // 10),
        ema_decay=0.999,
        seed=r.seed + 2,
        mixed_precision=r.mixed_precision,
        max_seconds=r.unet_max_seconds,
    )
    res = train(
        UNetTask(
            vae,
            latents,
            scenes,
            batch_size=r.unet_batch,
            focus_fraction=r.unet_focus_fraction,
            focus_max_timestep=r.unet_focus_max_timestep,
            **init,
        ),
        cfg,
    )
    return res


def run_stage(stage: str, out: str | Path, recipe: MiniSDRecipe | None = None, **overrides) -> dict:
    """Run one stage of the mini-SD recipe under ``out`` (resuming if checkpoints exist)."""
    r = dataclasses.replace(recipe or MiniSDRecipe(), **{k: v for k, v in overrides.items() if v is not None})
    out = Path(out)
    stages = {"vae": _vae_stage, "decoder": _decoder_stage, "unet": _unet_stage}
    if stage in stages:
        res = stages[stage](r, out)
    elif stage == "export":
        res = export_pipeline(out, out / "pipeline", base=r.unet_init or r.decoder_init)
    else:
        raise ValueError(f"unknown stage {stage!r}; choose vae, decoder, unet, export or all")
    if is_main_process():
        write_json_atomic(out / f"{stage}_result.json", res)
    return res


def export_pipeline(
    run_dir: str | Path, dest: str | Path, dtype: torch.dtype = torch.float16, base: str | Path | None = None
) -> dict:
    """Assemble the StableDiffusionPipeline folder: UNet + text encoder from ``unet``, VAE decoder from
    ``decoder`` when present (else ``vae``). A run that continued only some stages from a pipeline folder
    (``--unet-init`` / ``--decoder-init``) takes the stages it did not train from ``base``."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    from ..io.assets import default_to_float32

    run_dir = Path(run_dir)
    src = run_dir / "unet" / "final"
    if not src.is_dir():
        if base is None:
            raise FileNotFoundError(
                f"{src} does not exist: run the unet stage first, or pass the pipeline folder "
                "the run continued from (--unet-init / --decoder-init)"
            )
        src = Path(base)
    pipe = StableDiffusionPipeline.from_pretrained(
        src, safety_checker=None, requires_safety_checker=False, dtype=torch.float32
    )
    dec = run_dir / "decoder" / "final"
    if dec.is_dir():
        pipe.vae = AutoencoderKL.from_pretrained(dec)
    pipe.scheduler = mini_sd.build_scheduler()
    pipe.to(dtype).save_pretrained(dest, max_shard_size="5MB")  # files under 8 MiB (repository rule)
    default_to_float32(Path(dest) / "text_encoder")  # loads float32 without a dtype, like diffusers' UNet/VAE
    return {"dest": str(dest), "bytes": folder_bytes(dest)}
