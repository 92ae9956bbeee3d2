"""The prompt-optimization training task: textual inversion of one domain for :func:`lsb.training.loop.train`.

See :mod:`lsb.training.prompt_optimization` for the loss and the files it writes; the denoiser call of each model
family is in :mod:`lsb.training.prompt_networks`, the domain's images in :mod:`lsb.data.domain_images`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.domain_images import DomainImages
from ..helpers.base_pipeline import model_resolution
from ..io.images import make_grid, save_image
from ..prompts.domains import EMBEDS_NAME, write_domain
from ..families import family_of
from ..prompts.templates import is_mini_tokenizer, resolve_templates
from ..prompts.tokens import PromptOptimizationError, add_placeholder_tokens, placeholder_tokens
from .loop import TrainingTask, is_main_process
from .prompt_runs import check_prompt_optimization_family
from .prompt_networks import PREDICTIONS, flow_level_shift


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
        self.record = family_of(pipe)
        check_prompt_optimization_family(self.record.name)
        self.family = self.record.name
        self.flow = self.record.base == "flow"
        self.network = getattr(pipe, self.record.network)
        self.unet = None if self.flow else pipe.unet
        self.vae = pipe.vae
        self.network.requires_grad_(False)
        self.vae.requires_grad_(False)

        self._copy_text_encoders(pipe)
        mini = is_mini_tokenizer(self.tokenizer)
        self.templates = resolve_templates(templates, self.tokenizer)
        self.prompt_template = self.templates[0]
        self.initializer_token = initializer_token or ("shape" if mini else "a")
        self.token = token
        self.tokens = placeholder_tokens(token, num_vectors)
        self.placeholder_text = " ".join(self.tokens)  # what "{}" becomes in a training prompt
        self._add_placeholder_rows(token, num_vectors)
        self._noise_setup(pipe, max_sequence_length, distilled_guidance_scale)

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

    def _copy_text_encoders(self, pipe) -> None:
        """One copied (tokenizer, float32 text encoder) per encoder slot; the pipeline keeps its own."""
        self.slots = self.record.slots_of(pipe)
        self.tokenizers, self.text_encoders, self.embeddings, self.slot_token_ids = {}, {}, {}, {}
        self._orig_weights, self._trained = {}, {}
        for slot in self.slots:
            self.tokenizers[slot.key] = copy.deepcopy(getattr(pipe, slot.tokenizer_attr))
            te = copy.deepcopy(getattr(pipe, slot.text_encoder_attr)).float()
            te.requires_grad_(False)
            self.text_encoders[slot.key] = te
        first = self.slots[0].key
        self.tokenizer, self.text_encoder = self.tokenizers[first], self.text_encoders[first]

    def _add_placeholder_rows(self, token: str, num_vectors: int) -> None:
        """Add the placeholder token(s) to every copied encoder; only their embedding rows will train (a gradient
        mask; :meth:`after_step` restores the others)."""
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
        first = self.slots[0].key
        self.token_ids = self.slot_token_ids[first]
        self.embedding = self.embeddings[first]

    def _noise_setup(self, pipe, max_sequence_length: int | None, distilled_guidance_scale: float | None) -> None:
        """The noise side of the loss: a DDPM scheduler of the model's betas (VP), or the flow families' T5 length
        and FLUX.1-dev's distilled guidance."""
        self.scheduler_config = dict(pipe.scheduler.config)
        if not self.flow:
            from diffusers import DDPMScheduler

            cls_keys = inspect.signature(DDPMScheduler.__init__).parameters
            self.noise_scheduler = DDPMScheduler.from_config(
                {k: v for k, v in pipe.scheduler.config.items() if k in cls_keys}
            )
            return
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
        if self.checkpoint_every and done % self.checkpoint_every == 0 and is_main_process():
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
        """MSE between the family's denoiser prediction (:data:`lsb.training.prompt_networks.PREDICTIONS`, through
        the loop's wrapped text encoders) and :meth:`target`."""
        encoders = {slot.key: self.wrapped_modules[slot.text_encoder_attr] for slot in self.slots}
        pred = PREDICTIONS[self.family](self, encoders, b)
        return F.mse_loss(pred.float(), self.target(b["latents"], b["noise"], b["t"]).float()), {}

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
        """Write the learned rows (:func:`lsb.prompts.domains.write_domain`: SD's one-tensor textual-inversion file,
        else one tensor per encoder key with the family recorded)."""
        one = self.family == "sd"
        return write_domain(
            path,
            self.token,
            self.learned_embeddings(),
            prompt=self.prompt_template,
            text_encoder=self.text_encoder if one else self.text_encoders,
            base_model=self.base_model,
            family=None if one else self.family,
        )

    def export(self, out_dir: Path) -> None:
        """Write ``learned_embeds.safetensors`` into the run folder itself (what
        ``load_textual_inversion(output_dir)`` reads), not the loop's ``final/`` subfolder."""
        self.save_embeddings(self.output_dir / EMBEDS_NAME)

    def pipeline(self, scheduler=None):
        """diffusers' text-to-image pipeline of the model's family (``ModelFamily.text_to_image``) on the task's
        components, using the learned token (VP: a DDIM scheduler by default; flow: flow-matching Euler)."""
        import inspect

        from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

        from ..families.record import resolve

        cls = resolve(self.record.text_to_image)
        if scheduler is None:
            base = DDIMScheduler if self.record.base == "vp" else FlowMatchEulerDiscreteScheduler
            scheduler = base.from_config(self.scheduler_config)
        comps = {slot.tokenizer_attr: self.tokenizers[slot.key] for slot in self.slots}
        comps.update({slot.text_encoder_attr: self.text_encoders[slot.key] for slot in self.slots})
        accepted = inspect.signature(cls.__init__).parameters
        for name in self.record.optional_components:  # absent encoders (SD3 without T5), no safety checker
            if name in accepted:
                comps.setdefault(name, None)
        comps[self.record.network] = self.network
        pipe = cls(vae=self.vae, scheduler=scheduler, **{**comps, **self.record.text_to_image_kwargs})
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
            call = dict(height=size, width=size, num_inference_steps=self.validation_steps, generator=gen)
            call["guidance_scale"] = self.validation_guidance_scale
            if self.family == "sd":
                device = self.unet.device
                cond, uncond = pipe.encode_prompt(self.validation_prompt, device, n, True, negative_prompt="")
                call.update(prompt_embeds=cond.to(self.unet.dtype), negative_prompt_embeds=uncond.to(self.unet.dtype))
            else:
                call.update(prompt=self.validation_prompt, num_images_per_prompt=n)
                if self.family != "sdxl":
                    call["max_sequence_length"] = self.max_sequence_length
            samples = pipe(**call).images
        finally:
            for k, te in self.text_encoders.items():
                te.train(was_training[k])
        refs = self.images.pil(range(min(n, len(self.images))))
        refs += [Image.new("RGB", (size, size), (255, 255, 255))] * (n - len(refs))
        return save_image(make_grid(refs + list(samples), nrow=n), Path(out_dir) / f"validation-{step:06d}.png")


__all__ = ["PromptOptimizationTask"]
