"""Prompt optimization: learn a domain's prompt token from an unpaired image folder (textual inversion).

LSB (Kim, Kim & Ye 2024) conditions one Stable Diffusion on two *learned* prompts, one per domain.
Each is textual inversion (Gal et al. 2022) on the domain's images alone: a new placeholder token is
added to the tokenizer, and only its input-embedding row(s) are trained with SD's own denoising loss

    L = E_{x, t, eps} || eps_theta(sqrt(abar_t) z + sqrt(1 - abar_t) eps, t, c) - eps ||^2,
    x ~ domain images, t ~ U{0, ..., T-1}, eps ~ N(0, I),
    z = VAE posterior mode of x times scaling_factor,  c = text_encoder(template.format(token)),

with a random prompt template per sample (for v-prediction models the target is the velocity
``sqrt(abar_t) eps - sqrt(1 - abar_t) z``). Everything but the new rows stays bit-identical: the
other embedding rows get no gradient (a gradient mask, so clipping and Adam see only the new rows)
and are restored after every step (which also undoes AdamW's weight decay on them). This fixes the
official code's habit of training and saving the whole embedding matrix (METHODS.md pitfall 2).

The result is a plain diffusers textual-inversion file, ``learned_embeds.safetensors`` =
``{token: [num_vectors, dim]}`` with metadata ``format=pt``, plus lsb's ``lsb_prompt`` template
(:mod:`lsb.prompts.domains`), so that both of these work::

    pipe.load_textual_inversion(output_dir); pipe("a <circle>")     # stock diffusers
    prompt = lsb.prompts.domains.load_domain(pipe, output_dir)                # -> "a <circle>"

Timesteps follow diffusers' convention (``alphas_cumprod[t]`` for UNet input ``t``), not the official
code's table shifted by one (METHODS.md pitfall 3).
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..io.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageInputError,
    check_pixels,
    list_images,
    load_image,
    make_grid,
    save_image,
    uint8_to_pixels,
)
from ..io.latents import vae_to_model_latents
from ..prompts.domains import EMBEDS_NAME, write_domain
from ..prompts.encoder_slots import model_family, text_encoder_slots
from ..prompts.templates import (
    MINI_TEMPLATES,
    PAPER_TEMPLATES,
    TEMPLATE_PRESETS,
    is_mini_tokenizer,
    resolve_templates,
)
from ..prompts.tokens import (
    PromptOptimizationError,
    add_placeholder_tokens,
    placeholder_tokens,
)
from .loop import CHECKPOINT_PREFIX, TrainConfig, TrainingTask, latest_checkpoint, train

logger = logging.getLogger(__name__)

RUN_CONFIG_NAME = "domain_config.json"
TRAIN_RESULT_NAME = "train_result.json"  # the loop's summary of the last run (steps, processes, ...)


def model_resolution(pipe) -> int:
    """Image side the pipeline's denoiser was built for: ``sample_size * vae_scale_factor`` of the UNet or the SD3
    transformer; FLUX's transformer has no sample size: FluxPipeline's default 128 latents (1024 px)."""
    factor = getattr(pipe, "vae_scale_factor", None) or 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    net = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    size = getattr(net.config, "sample_size", None) or 128
    size = size[0] if isinstance(size, (list, tuple)) else size
    return int(size) * int(factor)


# ----------------------------------------------------------------------------------------------------
# Data


def _center_square(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    if (w, h) != (s, s):
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    return img if img.size == (size, size) else img.resize((size, size), Image.BICUBIC)


class DomainImages:
    """Every image of a domain folder, validated, as RGB squares of the model's resolution.

    ``source`` is a folder, an image file, or a list of them (``lsb.io.images.list_images``). Images are
    center-cropped to a square and resized to ``size`` (the model resolution: 64 for the mini model,
    512 for SD 1.x), one ``note`` per changed file (default: logged); ``size_policy="exact"`` refuses images of
    another size instead, and an image over ``max_pixels`` is refused. Pixels are cached as uint8 (a 1000-image folder at 512 px is 0.8 GB that way, 3 GB
    as floats); :meth:`tensor` gives them in [-1, 1]. :meth:`encode` turns them into VAE latents once.

    Files with an image suffix that do not load raise :class:`ImageInputError` naming the file; files
    with other suffixes (captions, ``metadata.jsonl``) are skipped with a log message.
    """

    def __init__(
        self,
        source: str | os.PathLike | Iterable[str | os.PathLike],
        size: int,
        max_images: int | None = None,
        convert_mode: bool = False,
        size_policy: str = "resize",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        note: Callable[[str], None] | None = None,
    ):
        if size_policy not in ("resize", "exact"):
            raise ImageInputError(
                f"size_policy must be 'resize' or 'exact' (training images share one size), got {size_policy!r}"
            )
        if size <= 0 or size % 8:
            raise ImageInputError(f"image size must be a positive multiple of 8, got {size}")
        sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        for s in sources:
            p = Path(s)
            if p.is_dir():
                skipped = sorted(
                    q.name
                    for q in p.iterdir()
                    if q.is_file() and not q.name.startswith(".") and q.suffix.lower() not in IMAGE_SUFFIXES
                )
                if skipped:
                    logger.warning(
                        "%s: skipping %d file(s) without an image suffix: %s%s",
                        p,
                        len(skipped),
                        ", ".join(skipped[:5]),
                        ", ..." if len(skipped) > 5 else "",
                    )
        files = list_images(sources)
        if max_images is not None:
            files = files[:max_images]
        self.size = size
        self.files: list[Path] = files
        note = note or logger.info
        squares = []
        for f in files:
            im = load_image(f, convert=convert_mode)
            check_pixels(im.size, str(f), max_pixels)
            if im.size != (size, size):
                if size_policy == "exact":
                    raise ImageInputError(
                        f"{f}: size {im.size[0]}x{im.size[1]}, but the model trains at "
                        f"{size}x{size} and size_policy 'exact' asks for it; resize the image or "
                        f"use size_policy 'resize' (centre crop to a square, then resize)"
                    )
                w, h = im.size
                crop = "centre-cropped to a square and " if w != h else ""
                note(f"{f}: {crop}resized from {w}x{h} to {size}x{size} (the model's resolution)")
            squares.append(np.asarray(_center_square(im, size), dtype=np.uint8))
        arr = np.stack(squares)
        self.uint8 = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # (N, 3, size, size)
        self.latents: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.files)

    def tensor(self, indices=None) -> torch.Tensor:
        """Images (all, or ``indices``) as float32 in [-1, 1], (N, 3, size, size)."""
        return uint8_to_pixels(self.uint8 if indices is None else self.uint8[indices])

    def pil(self, indices=None) -> list[Image.Image]:
        idx = range(len(self)) if indices is None else indices
        return [Image.fromarray(self.uint8[i].permute(1, 2, 0).numpy(), mode="RGB") for i in idx]

    @torch.no_grad()
    def encode(self, vae, batch_size: int = 8) -> torch.Tensor:
        """Scaled latents ``(posterior mode - shift) * scaling_factor`` (N, C, h, w), float32 on CPU; cached."""
        if self.latents is None:
            out = []
            for i in range(0, len(self), batch_size):
                x = self.tensor(slice(i, i + batch_size)).to(vae.device, vae.dtype)
                z = vae.encode(x).latent_dist.mode()
                out.append(vae_to_model_latents(vae, z.float()).cpu())  # THE latent scaling (lsb.io.latents)
            self.latents = torch.cat(out)
        return self.latents


# ----------------------------------------------------------------------------------------------------
# Training task


class PromptOptimizationTask(TrainingTask):
    """Textual inversion of one domain for :func:`lsb.training.loop.train`, for every model family.

    The pipeline's tokenizers and text encoders (all of them: :func:`lsb.prompts.encoder_slots.text_encoder_slots`,
    e.g. CLIP-L, CLIP-G and T5 for SD3) are copied (the given pipeline keeps its vocabularies); each copy gets the
    placeholder token(s) and is trainable only in the new embedding rows. The denoiser (UNet or transformer) and
    the VAE are shared and frozen (``requires_grad_(False)``).

    The loss follows the base: VP models (SD 1.x/2.x) regress noise or velocity at t ~ U{0..T-1} (module
    docstring); rectified-flow models (SD3 / FLUX) regress the flow velocity ``v = e - x`` at
    ``z_s = (1 - s) x + s e``, ``s = shift(u)``, ``u ~ logit-normal(0, 1)`` (SD3's training distribution; the
    shift is the scheduler's ``shift``, or FLUX's dynamic shift ``mu`` for the image's token count).

    Args:
        pipe: a StableDiffusionPipeline-like object (vae, text_encoder, tokenizer, unet, scheduler), or an SD3 /
            FLUX pipeline (transformer, FlowMatchEulerDiscreteScheduler, its text encoders).
        images: a :class:`DomainImages` or what its constructor takes (resized to the model resolution).
        token: the placeholder, e.g. ``"<circle>"``; must be new to every tokenizer.
        output_dir: run folder; receives ``learned_embeds.safetensors`` (export) and
            ``learned_embeds-steps-N.safetensors`` every ``checkpoint_every`` steps.
        num_vectors: embedding vectors per token (tokens ``token, token_1, ...`` as in diffusers).
        initializer_token: word whose embedding initialises the new rows (in every encoder); default "shape" for
            the mini models' word tokenizer, "a" otherwise (LSB's ``--init "a photo"`` uses its first token, "a").
        templates: see :func:`resolve_templates`; the first one is the translation-time prompt.
        batch_size: images per step (with replacement; batches are a pure function of (seed, step)).
        validation_prompt: prompt for the sample grid; default the first template with the token.
        num_validation_images, validation_steps, validation_guidance_scale: sample grid size, sampler steps and
            guidance (default 3.0 for the mini models, 7.5 otherwise).
        base_model: recorded in the file's metadata.
        max_sequence_length: T5 tokens for SD3 / FLUX prompts (default the pipelines' 256 / 512; translate with
            the same value).
        distilled_guidance_scale: FLUX.1-dev's guidance input during training (default 3.5, diffusers' FLUX
            training scripts; schnell has none).
    """

    name = "prompt"

    def __init__(
        self,
        pipe,
        images,
        token: str,
        output_dir: str | os.PathLike,
        *,
        num_vectors: int = 1,
        initializer_token: str | None = None,
        templates: str | Sequence[str] | None = None,
        batch_size: int = 4,
        checkpoint_every: int = 250,
        validation_prompt: str | None = None,
        num_validation_images: int = 4,
        validation_steps: int = 20,
        validation_guidance_scale: float | None = None,
        base_model: str | None = None,
        seed: int = 0,
        max_sequence_length: int | None = None,
        distilled_guidance_scale: float | None = None,
    ):
        if batch_size < 1:
            raise PromptOptimizationError(f"batch_size must be >= 1, got {batch_size}")
        self.output_dir = Path(output_dir)
        self.family = model_family(pipe)
        check_prompt_optimization_family(self.family)
        self.flow = self.family in ("sd3", "flux")
        self.network = pipe.transformer if self.flow else pipe.unet
        self.unet = None if self.flow else pipe.unet
        self.vae = pipe.vae
        self.network.requires_grad_(False)
        self.vae.requires_grad_(False)

        # one copied (tokenizer, text encoder) per encoder slot, each with the placeholder rows
        self.slots = text_encoder_slots(pipe, self.family)
        self.tokenizers, self.text_encoders, self.embeddings, self.slot_token_ids = {}, {}, {}, {}
        self._orig_weights, self._trained = {}, {}
        for slot in self.slots:
            self.tokenizers[slot.key] = copy.deepcopy(getattr(pipe, slot.tokenizer_attr))
            te = copy.deepcopy(getattr(pipe, slot.text_encoder_attr)).float()
            te.requires_grad_(False)
            self.text_encoders[slot.key] = te
        first = self.slots[0].key
        self.tokenizer, self.text_encoder = self.tokenizers[first], self.text_encoders[first]
        mini = is_mini_tokenizer(self.tokenizer)
        self.templates = resolve_templates(templates, self.tokenizer)
        self.prompt_template = self.templates[0]
        self.initializer_token = initializer_token or ("shape" if mini else "a")
        self.token = token
        self.tokens = placeholder_tokens(token, num_vectors)
        self.placeholder_text = " ".join(self.tokens)  # what "{}" becomes in a training prompt
        for k, slot in enumerate(self.slots):
            te = self.text_encoders[slot.key]
            # the first (CLIP) encoder needs a one-token initializer; others may split it (then: mean of its rows)
            ids = add_placeholder_tokens(
                self.tokenizers[slot.key], te, token, num_vectors, self.initializer_token, multi_token_initializer=k > 0
            )
            emb = te.get_input_embeddings()
            emb.weight.requires_grad_(True)
            self.slot_token_ids[slot.key] = ids
            self.embeddings[slot.key] = emb
            self._orig_weights[slot.key] = emb.weight.detach().clone()
            rows = torch.zeros(emb.weight.shape[0], dtype=torch.bool)
            rows[ids] = True
            self._trained[slot.key] = rows
            emb.weight.register_hook(functools.partial(self._mask_grad, slot.key))
        self.token_ids = self.slot_token_ids[first]
        self.embedding = self.embeddings[first]

        self.scheduler_config = dict(pipe.scheduler.config)
        if self.flow:
            self.noise_scheduler = None
            self.max_sequence_length = max_sequence_length or (256 if self.family == "sd3" else 512)
            guided = bool(getattr(self.network.config, "guidance_embeds", False))
            if distilled_guidance_scale is not None and not guided:
                raise PromptOptimizationError(
                    "distilled_guidance_scale given, but this FLUX transformer has no "
                    "guidance embedding (schnell): leave it None"
                )
            self.distilled_guidance = (
                (distilled_guidance_scale if distilled_guidance_scale is not None else 3.5) if guided else None
            )
        else:
            from diffusers import DDPMScheduler

            cls_keys = inspect.signature(DDPMScheduler.__init__).parameters
            self.noise_scheduler = DDPMScheduler.from_config(
                {k: v for k, v in pipe.scheduler.config.items() if k in cls_keys}
            )

        self.images = images if isinstance(images, DomainImages) else DomainImages(images, model_resolution(pipe))
        self.latents = self.images.encode(self.vae)
        if self.flow:
            self.level_shift = flow_level_shift(self.scheduler_config, self.family, self.latents.shape)

        self.batch_size = batch_size
        self.checkpoint_every = checkpoint_every
        self.validation_prompt = validation_prompt or self.prompt_template.format(token)
        self.num_validation_images = num_validation_images
        self.validation_steps = validation_steps
        self.validation_guidance_scale = (
            validation_guidance_scale if validation_guidance_scale is not None else 3.0 if mini else 7.5
        )
        self.base_model = base_model
        self.seed = seed

    # -- what the loop optimises ------------------------------------------------------------------
    def trainable_modules(self):
        """``{"text_encoder": ...}`` (SD), or one entry per encoder named like the pipeline attribute."""
        return {slot.text_encoder_attr: self.text_encoders[slot.key] for slot in self.slots}

    def parameters(self):
        return [self.embeddings[slot.key].weight for slot in self.slots]

    def _rows_on(self, key: str, device: torch.device) -> torch.Tensor:
        if self._trained[key].device != device:  # follows the text encoder once accelerate has moved it
            self._trained[key] = self._trained[key].to(device)
            self._orig_weights[key] = self._orig_weights[key].to(device)
        return self._trained[key]

    def _mask_grad(self, key: str, grad: torch.Tensor) -> torch.Tensor:
        """Zero the gradient of every row but the placeholder ones (so clipping/Adam see only those)."""
        zero = torch.zeros((), dtype=grad.dtype, device=grad.device)
        return torch.where(self._rows_on(key, grad.device)[:, None], grad, zero)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Restore all non-placeholder rows (undoes AdamW weight decay there); save intermediate embeddings."""
        for slot in self.slots:
            w = self.embeddings[slot.key].weight
            w.copy_(
                torch.where(self._rows_on(slot.key, w.device)[:, None], w, self._orig_weights[slot.key].to(w.dtype))
            )
        done = step + 1
        if self.checkpoint_every and done % self.checkpoint_every == 0 and _is_main_process():
            self.save_embeddings(self.output_dir / f"learned_embeds-steps-{done}.safetensors")

    # -- data and loss ----------------------------------------------------------------------------
    def batch(self, rng: np.random.Generator, step: int, device: torch.device) -> dict:
        if self.network.device != device:
            self.network.to(device)
            self.vae.to(device)
        n = self.batch_size
        idx = rng.integers(len(self.latents), size=n)
        if self.flow:  # s = shift(u), u ~ logit-normal(0, 1)
            u = 1.0 / (1.0 + np.exp(-rng.standard_normal(n)))
            t = self.level_shift(u).astype(np.float32)
        else:
            t = rng.integers(0, self.noise_scheduler.config.num_train_timesteps, size=n)
        noise = rng.standard_normal((n, *self.latents.shape[1:])).astype(np.float32)
        prompts = [self.templates[i].format(self.placeholder_text) for i in rng.integers(len(self.templates), size=n)]
        out = {
            "latents": self.latents[torch.from_numpy(idx)].to(device),
            "t": torch.from_numpy(t).to(device),
            "noise": torch.from_numpy(noise).to(device),
            "prompts": prompts,
        }
        if not self.flow:
            enc = self.tokenizer(
                prompts,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            out.update(ids=enc.input_ids.to(device), mask=enc.attention_mask.to(device))
        return out

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser is trained to output: flow velocity ``noise - latents`` (SD3 / FLUX), else per the
        scheduler config's ``prediction_type``."""
        if self.flow:
            return noise - latents
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, t)
        if kind == "sample":
            return latents
        raise PromptOptimizationError(f"unsupported prediction_type {kind!r}")

    def loss(self, b: dict, step: int):
        if self.flow:
            encoders = {slot.key: self.wrapped_modules[slot.text_encoder_attr] for slot in self.slots}
            pred = flow_prediction(self, encoders, b)
            return F.mse_loss(pred.float(), self.target(b["latents"], b["noise"], b["t"]).float()), {}
        if self.family == "sdxl":  # both CLIP encoders + pooled embedding + add_time_ids
            encoders = {slot.key: self.wrapped_modules[slot.text_encoder_attr] for slot in self.slots}
            noisy = self.noise_scheduler.add_noise(b["latents"], b["noise"], b["t"])
            pred = sdxl_prediction(self, encoders, noisy, b)
            return F.mse_loss(pred.float(), self.target(b["latents"], b["noise"], b["t"]).float()), {}
        te = self.wrapped_modules["text_encoder"]
        mask = b["mask"] if getattr(self.text_encoder.config, "use_attention_mask", False) else None
        cond = te(b["ids"], attention_mask=mask)[0]
        noisy = self.noise_scheduler.add_noise(b["latents"], b["noise"], b["t"])
        pred = self.unet(noisy.to(self.unet.dtype), b["t"], cond.to(self.unet.dtype)).sample
        loss = F.mse_loss(pred.float(), self.target(b["latents"], b["noise"], b["t"]).float())
        return loss, {}

    # -- outputs ----------------------------------------------------------------------------------
    def learned_embeddings(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """The placeholder rows, (num_vectors, dim), float32 on CPU; a dict ``{encoder key: rows}`` for models
        with several text encoders."""
        rows = {
            slot.key: self.embeddings[slot.key].weight[self.slot_token_ids[slot.key]].detach().float().cpu()
            for slot in self.slots
        }
        return rows[self.slots[0].key] if self.family == "sd" else rows

    def save_embeddings(self, path: str | os.PathLike) -> Path:
        if self.family == "sd":
            return write_domain(
                path,
                self.token,
                self.learned_embeddings(),
                prompt=self.prompt_template,
                text_encoder=self.text_encoder,
                base_model=self.base_model,
            )
        return write_domain(
            path,
            self.token,
            self.learned_embeddings(),
            prompt=self.prompt_template,
            text_encoder=self.text_encoders,
            base_model=self.base_model,
            family=self.family,
        )

    def export(self, out_dir: Path) -> None:
        """Write ``learned_embeds.safetensors`` into the run folder itself (what
        ``load_textual_inversion(output_dir)`` reads), not the loop's ``final/`` subfolder."""
        self.save_embeddings(self.output_dir / EMBEDS_NAME)

    def pipeline(self, scheduler=None):
        """A text-to-image pipeline of the model's family using the learned token (SD: DDIM scheduler by default)."""
        from diffusers import (
            DDIMScheduler,
            FlowMatchEulerDiscreteScheduler,
            FluxPipeline,
            StableDiffusion3Pipeline,
            StableDiffusionPipeline,
        )

        if self.family == "sd":
            pipe = StableDiffusionPipeline(
                vae=self.vae,
                text_encoder=self.text_encoder,
                tokenizer=self.tokenizer,
                unet=self.unet,
                scheduler=scheduler or DDIMScheduler.from_config(self.scheduler_config),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        else:
            comps = {slot.tokenizer_attr: self.tokenizers[slot.key] for slot in self.slots}
            comps.update({slot.text_encoder_attr: self.text_encoders[slot.key] for slot in self.slots})
            if self.family == "sdxl":
                from diffusers import StableDiffusionXLPipeline

                pipe = StableDiffusionXLPipeline(
                    unet=self.unet,
                    vae=self.vae,
                    add_watermarker=False,
                    scheduler=scheduler or DDIMScheduler.from_config(self.scheduler_config),
                    **comps,
                )
                pipe.set_progress_bar_config(disable=True)
                return pipe
            sched = scheduler or FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
            if self.family == "sd3":
                comps.setdefault("text_encoder_3", None)
                comps.setdefault("tokenizer_3", None)
                pipe = StableDiffusion3Pipeline(transformer=self.network, vae=self.vae, scheduler=sched, **comps)
            else:
                pipe = FluxPipeline(transformer=self.network, vae=self.vae, scheduler=sched, **comps)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def sample(self, step: int, out_dir: Path) -> Path | None:
        """Grid: top row training images, bottom row ``validation_prompt`` samples."""
        n = self.num_validation_images
        if n <= 0:
            return None
        was_training = {k: te.training for k, te in self.text_encoders.items()}
        for te in self.text_encoders.values():
            te.eval()
        try:
            pipe = self.pipeline()
            size = self.images.size
            gen = torch.Generator("cpu").manual_seed(self.seed)
            if self.family == "sd":
                device = self.unet.device
                cond, uncond = pipe.encode_prompt(self.validation_prompt, device, n, True, negative_prompt="")
                samples = pipe(
                    prompt_embeds=cond.to(self.unet.dtype),
                    negative_prompt_embeds=uncond.to(self.unet.dtype),
                    height=size,
                    width=size,
                    num_inference_steps=self.validation_steps,
                    guidance_scale=self.validation_guidance_scale,
                    generator=gen,
                ).images
            else:
                samples = pipe(
                    self.validation_prompt,
                    num_images_per_prompt=n,
                    height=size,
                    width=size,
                    num_inference_steps=self.validation_steps,
                    guidance_scale=self.validation_guidance_scale,
                    generator=gen,
                    **({} if self.family == "sdxl" else {"max_sequence_length": self.max_sequence_length}),
                ).images
        finally:
            for k, te in self.text_encoders.items():
                te.train(was_training[k])
        refs = self.images.pil(range(min(n, len(self.images))))
        refs += [Image.new("RGB", (size, size), (255, 255, 255))] * (n - len(refs))
        return save_image(make_grid(refs + list(samples), nrow=n), Path(out_dir) / f"validation-{step:06d}.png")


def sdxl_prediction(task: PromptOptimizationTask, encoders: dict, noisy: torch.Tensor, b: dict) -> torch.Tensor:
    """The SDXL UNet's output on ``noisy`` under the batch's prompts, encoded by ``encoders`` (the trainable
    ``clip_l`` / ``clip_g`` copies, autograd on): both penultimate hidden states concatenated, the pooled embedding of
    the second, and ``add_time_ids = (size, size, 0, 0, size, size)`` (training images are center squares at the
    model resolution; diffusers' SDXL training scripts condition on original size, crop and target size likewise)."""
    from ..prompts.encoding_sdxl import encode_prompt_sdxl

    device, dtype = noisy.device, task.unet.dtype
    embeds, pooled = encode_prompt_sdxl(
        encoders["clip_l"],
        encoders["clip_g"],
        task.tokenizers["clip_l"],
        task.tokenizers["clip_g"],
        b["prompts"],
        device=device,
    )
    size = task.images.size
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], device=device, dtype=dtype).repeat(noisy.shape[0], 1)
    return task.unet(
        noisy.to(dtype),
        b["t"],
        encoder_hidden_states=embeds.to(dtype),
        added_cond_kwargs={"text_embeds": pooled.to(dtype), "time_ids": time_ids},
    ).sample


def flow_level_shift(scheduler_config: dict, family: str, latent_shape) -> Callable[[np.ndarray], np.ndarray]:
    """The map u -> s that turns uniform training levels into the model's: SD3 ``shift * u / (1 + (shift - 1) u)``
    (static shift), FLUX (dynamic shifting) ``e^mu / (e^mu + 1/u - 1)`` with ``mu`` for the image's token count
    (``latent_shape`` [N, C, h, w]; FLUX packs 2x2 patches)."""
    if scheduler_config.get("use_dynamic_shifting", False):
        from ..helpers.flowedit import image_seq_len_shift

        h, w = latent_shape[-2:]
        mu = image_seq_len_shift(scheduler_config, (h // 2) * (w // 2))  # 2x2 patches (FLUX packing, SD3 patches)
        return lambda u: np.exp(mu) / (np.exp(mu) + (1.0 / u - 1.0))
    shift = float(scheduler_config.get("shift", 1.0))
    return lambda u: shift * u / (1.0 + (shift - 1.0) * u)


def flow_prediction(task: PromptOptimizationTask, encoders: dict, b: dict) -> torch.Tensor:
    """The SD3 / FLUX transformer's velocity at ``z_s = (1 - s) x + s e`` under the batch's prompts, encoded by
    ``encoders`` (the trainable copies); FLUX's output is unpacked back to [N, C, h, w]."""
    from ..helpers.flux import latent_image_ids, pack_latents, unpack_latents
    from ..prompts.encoding_flux import encode_prompt_flux
    from ..prompts.encoding_sd3 import encode_prompt_sd3

    net = task.network
    dtype = net.dtype
    x, e, s = b["latents"], b["noise"], b["t"]
    z = (1.0 - s)[:, None, None, None] * x + s[:, None, None, None] * e
    tok = task.tokenizers
    device = x.device
    if task.family == "sd3":
        embeds, pooled = encode_prompt_sd3(
            encoders["clip_l"],
            encoders["clip_g"],
            encoders.get("t5xxl"),
            tok["clip_l"],
            tok["clip_g"],
            tok.get("t5xxl"),
            b["prompts"],
            device=device,
            max_sequence_length=task.max_sequence_length,
            joint_attention_dim=net.config.joint_attention_dim,
        )
        return net(
            hidden_states=z.to(dtype),
            timestep=(s * 1000).to(dtype),
            encoder_hidden_states=embeds.to(dtype),
            pooled_projections=pooled.to(dtype),
            return_dict=False,
        )[0]
    embeds, pooled, text_ids = encode_prompt_flux(
        encoders["clip_l"],
        encoders["t5xxl"],
        tok["clip_l"],
        tok["t5xxl"],
        b["prompts"],
        device=device,
        max_sequence_length=task.max_sequence_length,
    )
    h, w = z.shape[-2:]
    guidance = None
    if task.distilled_guidance is not None:
        guidance = torch.full((z.shape[0],), float(task.distilled_guidance), device=device, dtype=torch.float32)
    out = net(
        hidden_states=pack_latents(z).to(dtype),
        timestep=s.to(dtype),
        guidance=guidance,
        pooled_projections=pooled.to(dtype),
        encoder_hidden_states=embeds.to(dtype),
        txt_ids=text_ids.to(dtype),
        img_ids=latent_image_ids(h, w, device, dtype),
        return_dict=False,
    )[0]
    return unpack_latents(out, h, w)


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


# ----------------------------------------------------------------------------------------------------
# One call


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


def _check_run_folder(out: Path, settings: dict, steps: int, resume_anyway: bool = False) -> None:
    """Refuse to resume a run folder whose recorded settings differ from ``settings`` (the token always; the others
    of :data:`RESUME_KEYS` that both sides know unless ``resume_anyway``), or that is already past ``steps``."""
    cfg_path = out / RUN_CONFIG_NAME
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


def _short(v) -> str:
    if isinstance(v, list) and len(v) > 3:
        return f"[{len(v)} items: {', '.join(map(repr, v[:2]))}, ...]"
    return repr(v)


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


def _load_pipeline(model, device, mixed_precision: str):
    """(pipeline, base-model name) from a pipeline object, None (embedded mini model), a folder or a Hub id.

    A local SD3 / FLUX folder (``model_index.json`` naming ``StableDiffusion3Pipeline`` / ``FluxPipeline``) loads
    with its own pipeline class (SD3 saved without T5: ``text_encoder_3=None``)."""
    if (hasattr(model, "unet") or hasattr(model, "transformer")) and hasattr(model, "text_encoder"):
        return model, str(getattr(model.config, "_name_or_path", "") or "") or None
    from diffusers import StableDiffusionPipeline

    from ..helpers.loading import load_pipeline
    from ..io.execution import default_device

    device = torch.device(device) if device is not None else default_device()
    # UNet and VAE run in half precision only when accelerate's autocast + grad scaler handle it.
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)
    if device.type == "cpu":
        dtype = torch.float32
    index = Path(str(model)) / "model_index.json" if model is not None else None
    if index is not None and index.is_file():
        entries = json.loads(index.read_text())
        name = str(entries.get("_class_name", ""))
        from ..helpers.loading import detect_model_family

        check_prompt_optimization_family(detect_model_family(str(model)))
        if detect_model_family(str(model)) == "sdxl":
            from diffusers import StableDiffusionXLPipeline

            pipe = load_pipeline(
                StableDiffusionXLPipeline, str(model), device=device, dtype=dtype, add_watermarker=False
            )
            return pipe, str(model)
        if name.startswith(("StableDiffusion3", "Flux")):
            from diffusers import FluxPipeline, StableDiffusion3Pipeline

            cls = StableDiffusion3Pipeline if name.startswith("StableDiffusion3") else FluxPipeline
            absent = {
                k: None
                for k in ("text_encoder_3", "tokenizer_3")
                if k in entries and (not isinstance(entries[k], list) or entries[k][0] is None)
            }
            pipe = load_pipeline(cls, str(model), device=device, dtype=dtype, **absent)
            return pipe, str(model)
    pipe = load_pipeline(
        StableDiffusionPipeline,
        None if model is None else str(model),
        device=device,
        dtype=dtype,
        safety_checker=None,
        requires_safety_checker=False,
    )
    return pipe, "mini-sd" if model is None else str(model)


def learn_domain(
    images,
    token: str,
    model=None,
    *,
    output_dir: str | os.PathLike,
    steps: int = 1000,
    learning_rate: float = 5e-3,
    batch_size: int = 4,
    num_vectors: int = 1,
    initializer_token: str | None = None,
    templates: str | Sequence[str] | None = None,
    seed: int = 0,
    checkpoint_every: int = 250,
    validation_prompt: str | None = None,
    validation_every: int = 0,
    num_validation_images: int = 4,
    validation_steps: int = 20,
    validation_guidance_scale: float | None = None,
    weight_decay: float = 1e-2,
    gradient_accumulation_steps: int = 1,
    mixed_precision: str = "no",
    max_images: int | None = None,
    convert_mode: bool = False,
    resolution: int | None = None,
    max_sequence_length: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    size_policy: str = "resize",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    resume_anyway: bool = False,
    note: Callable[[str], None] | None = None,
) -> Path:
    """Learn a domain token from an unpaired image folder; returns the ``learned_embeds.safetensors`` path.

    Rerunning the same call resumes from the newest ``checkpoint-N`` in ``output_dir``; a larger
    ``steps`` extends a finished run (the learning rate is constant, so the result equals one
    uninterrupted run of that length). Writes into ``output_dir``: ``learned_embeds.safetensors``
    (loadable with ``pipe.load_textual_inversion(output_dir)`` and :func:`lsb.prompts.domains.load_domain`),
    ``learned_embeds-steps-N.safetensors`` at every checkpoint, ``samples/validation-N.png``,
    ``checkpoint-N/`` (accelerate state, newest two kept), ``train_log.jsonl``, ``domain_config.json`` and
    ``train_result.json`` (the loop's summary: steps, processes, ``weights_sha1``).

    Runs under ``accelerate launch`` with several processes too (``lsb learn-domain`` as well): each
    process draws its own images, noise and timesteps and the gradients are averaged, so a step sees
    ``batch_size`` images per process; on CPU (gloo) launch with ``accelerate launch --multi_gpu
    --num_processes N ...`` (see :mod:`lsb.surfaces.translate_files`).

    Args:
        images: a folder of images (or a list of files/folders, or a :class:`DomainImages`).
        token: the new placeholder token, e.g. ``"<circle>"``.
        model: a loaded StableDiffusionPipeline (not modified apart from UNet/VAE ``requires_grad``),
            a diffusers folder or Hub id, or None for the embedded mini model (``lsb.MINI_SD``).
        steps: optimizer steps. The LSB paper runs 5 epochs at batch 1 (up to 5000 steps at lr 1e-4);
            1000 steps at batch 4 and lr 5e-3 sees about as many images.
        learning_rate: AdamW learning rate, constant. 5e-3 is the original textual-inversion rate
            (Gal et al. 2022). LSB uses 1e-4, but for up to 5000 steps. Adam moves a coordinate by
            about ``lr`` per step, and with the noisy gradients of the diffusion loss the net move
            grows more like ``lr * sqrt(steps)``: about 3e-3 after 1000 steps at 1e-4, below the
            ~1e-2 scale of CLIP's embedding entries, so a short run would barely leave the
            initializer word. Only the placeholder rows are optimised, so a high rate cannot harm the
            rest of the model.
        batch_size: images per step. num_vectors: vectors per token (``token_1``, ... like diffusers).
        initializer_token: word whose embedding starts the new rows ("shape" for the mini model, "a" otherwise).
        templates: "paper" (LSB's 27 "a photo of a {}" templates), "mini" (["a {}"]), a list, or None:
            "mini" for the mini model's tokenizer, else "paper". The first template is recorded as
            the translation-time prompt (``lsb_prompt``: "a photo of a {}" / "a {}").
        seed: fixes each step's images, noise, timesteps and templates (a pure function of (seed, step)).
        checkpoint_every: steps between accelerate checkpoints and ``learned_embeds-steps-N`` files.
        validation_prompt, validation_every (0 = only at the end), num_validation_images (0 = none),
        validation_steps (DDIM steps), validation_guidance_scale: the sample grid.
        weight_decay: AdamW decay of the placeholder rows (paper 1e-2); other rows are restored each step.
        gradient_accumulation_steps, mixed_precision: as in accelerate ("fp16"/"bf16" also run UNet and
            VAE in that precision on GPU; the trained embedding stays float32).
        max_images: use at most this many images (sorted by name); the paper uses up to 1000.
        convert_mode: accept images that are not 8-bit RGB, converted as ``lsb.io.images.to_rgb`` does
            (default: an :class:`~lsb.io.images.ImageInputError` naming the first such file).
        resolution: image side to train at (default :func:`model_resolution`: the denoiser's sample size; 1024
            for FLUX).
        max_sequence_length: T5 tokens of SD3 / FLUX training prompts (default 256 / 512, the pipelines').
        device: where to load the model when ``model`` is not a pipeline (default: best available).
        size_policy, max_pixels, note: images of another size than the model's are centre-cropped and resized
            (``"resize"``, one ``note`` per file) or refused (``"exact"``); larger than ``max_pixels``: refused.
        resume_anyway: resume a run folder although its recorded settings (images, learning rate, batch size,
            seed, model, initializer, templates, resolution) differ; without it such a rerun is refused, saying
            what differs. The token always has to match.

    The ``checkpoint-N`` folders hold accelerate's own state (``save_state``): the text encoder's weights as
    safetensors, and accelerate's optimizer / LR-scheduler / RNG state (``optimizer.bin``, ``scheduler.bin``,
    ``random_states_0.pkl``: torch pickles written by accelerate), plus lsb's ``trainer_state.json``. lsb itself
    writes no pickle; those files serve only to resume and are never part of an export.

    SD3 / FLUX: the token is learned in every text encoder (CLIP-L, CLIP-G, T5) with the flow-matching loss; the
    file holds one embedding per encoder (``clip_l`` / ``clip_g`` / ``t5xxl``), loaded by ``load_domain``.
    """
    out = Path(output_dir)
    settings = {
        "token": token,
        "num_vectors": int(num_vectors),
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "seed": seed,
        "initializer_token": initializer_token,
        "resolution": resolution,
    }
    if not isinstance(images, DomainImages):
        files = list_images([images] if isinstance(images, (str, os.PathLike)) else list(images))
        settings["image_files"] = [str(f.resolve()) for f in files[:max_images]]
    if not (hasattr(model, "unet") or hasattr(model, "transformer")):
        settings["base_model"] = "mini-sd" if model is None else str(model)
    _check_run_folder(out, settings, steps, resume_anyway)
    if device is None and not (hasattr(model, "unet") or hasattr(model, "transformer")):
        from ..io.execution import process_state

        state = process_state()  # under `accelerate launch`: this process's device (CPU: the gloo backend)
        device = state.device if state.num_processes > 1 else None
    pipe, base_model = _load_pipeline(model, device, mixed_precision)
    network = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    if network.dtype == torch.float16 and mixed_precision != "fp16":
        logger.warning(
            "the UNet is float16: pass mixed_precision='fp16' so that accelerate's gradient "
            "scaler keeps the embedding's gradients from underflowing"
        )
    domain = (
        images
        if isinstance(images, DomainImages)
        else DomainImages(
            images,
            resolution or model_resolution(pipe),
            max_images,
            convert_mode,
            size_policy=size_policy,
            max_pixels=max_pixels,
            note=note,
        )
    )
    task = PromptOptimizationTask(
        pipe,
        domain,
        token,
        out,
        num_vectors=num_vectors,
        initializer_token=initializer_token,
        templates=templates,
        batch_size=batch_size,
        checkpoint_every=checkpoint_every,
        validation_prompt=validation_prompt,
        num_validation_images=num_validation_images,
        validation_steps=validation_steps,
        validation_guidance_scale=validation_guidance_scale,
        base_model=base_model,
        seed=seed,
        max_sequence_length=max_sequence_length,
    )
    out.mkdir(parents=True, exist_ok=True)
    record = {
        **settings,
        "initializer_token": task.initializer_token,
        "templates": list(task.templates),
        "prompt": task.prompt_template,
        "base_model": base_model,
        "images": len(domain),
        "image_files": [str(Path(f).resolve()) for f in domain.files],
        "resolution": domain.size,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "steps": steps,
    }
    _write_json_atomic(out / RUN_CONFIG_NAME, record)  # every process writes the same record
    cfg = TrainConfig(
        output_dir=str(out),
        max_steps=steps,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        lr_schedule="constant",
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        seed=seed,
        checkpoint_every=checkpoint_every,
        sample_every=validation_every,
        progress=progress,
    )
    result = train(task, cfg)
    if _is_main_process():
        _write_json_atomic(out / TRAIN_RESULT_NAME, result)
    return out / EMBEDS_NAME


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


__all__ = [
    "MINI_TEMPLATES",
    "PAPER_TEMPLATES",
    "TEMPLATE_PRESETS",
    "DomainImages",
    "PromptOptimizationError",
    "PromptOptimizationTask",
    "add_placeholder_tokens",
    "is_mini_tokenizer",
    "learn_domain",
    "model_resolution",
    "placeholder_tokens",
    "resolve_templates",
]
