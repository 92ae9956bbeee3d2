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

This module is the one call, :func:`learn_domain`; its parts live by concept: the domain's images
(:mod:`lsb.data.domain_images`), the training task (:mod:`lsb.training.prompt_task`), the denoiser call of each model
family (:mod:`lsb.training.prompt_networks`), the run folder's record and resume checks
(:mod:`lsb.training.prompt_runs`), the base pipeline's loader (:mod:`lsb.helpers.base_pipeline`) and the shared
accelerate loop (:mod:`lsb.training.loop`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..data.domain_images import DomainImages
from ..helpers.base_pipeline import load_base_pipeline, model_resolution
from ..io.files import write_json_atomic
from ..io.images import DEFAULT_MAX_PIXELS
from ..prompts.domains import EMBEDS_NAME
from ..prompts.templates import MINI_TEMPLATES, PAPER_TEMPLATES, TEMPLATE_PRESETS, is_mini_tokenizer, resolve_templates
from ..prompts.tokens import PromptOptimizationError, add_placeholder_tokens, placeholder_tokens
from .loop import TrainConfig, is_main_process, train
from .prompt_networks import flow_level_shift
from .prompt_runs import (
    RUN_CONFIG_NAME,
    TRAIN_RESULT_NAME,
    check_prompt_optimization_family,
    check_run_folder,
    claimed_run_folder,
    run_record,
    run_settings,
)
from .prompt_task import PromptOptimizationTask

logger = logging.getLogger(__name__)


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
    settings = run_settings(
        images,
        model,
        max_images,
        token=token,
        num_vectors=int(num_vectors),
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
        initializer_token=initializer_token,
        resolution=resolution,
    )
    with claimed_run_folder(out):
        check_run_folder(out, settings, steps, resume_anyway)
        pipe, base_model = _load_pipeline(model, _process_device(model, device), mixed_precision)
        domain = images
        if not isinstance(images, DomainImages):
            size = resolution or model_resolution(pipe)
            domain = DomainImages(images, size, max_images, convert_mode, size_policy, max_pixels, note)
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
        record = run_record(settings, task, base_model, steps)
        write_json_atomic(out / RUN_CONFIG_NAME, record)  # the same from every process
        cfg = TrainConfig(str(out), steps, learning_rate, weight_decay, lr_schedule="constant", seed=seed)
        cfg.gradient_accumulation_steps, cfg.mixed_precision = gradient_accumulation_steps, mixed_precision
        cfg.checkpoint_every, cfg.sample_every, cfg.progress = checkpoint_every, validation_every, progress
        result = train(task, cfg)
        if is_main_process():
            write_json_atomic(out / TRAIN_RESULT_NAME, result)
    return out / EMBEDS_NAME


def _is_pipeline(model) -> bool:
    return hasattr(model, "unet") or hasattr(model, "transformer")


def _process_device(model, device):
    """``device``; when None and ``model`` is still to be loaded, under ``accelerate launch`` this process's device
    (CPU: the gloo backend), else None (the best available)."""
    if device is None and not _is_pipeline(model):
        from ..io.execution import process_state

        state = process_state()
        device = state.device if state.num_processes > 1 else None
    return device


def _load_pipeline(model, device, mixed_precision: str):
    """(pipeline, base-model name) from a pipeline object, None (embedded mini model), a folder or a Hub id
    (:func:`lsb.helpers.base_pipeline.load_base_pipeline`, in the precision ``mixed_precision`` asks for)."""
    if _is_pipeline(model) and hasattr(model, "text_encoder"):
        pipe, name = model, str(getattr(model.config, "_name_or_path", "") or "") or None
    else:
        from ..io.execution import default_device

        device = torch.device(device) if device is not None else default_device()
        # UNet and VAE run in half precision only when accelerate's autocast + grad scaler handle it.
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)
        if device.type == "cpu":
            dtype = torch.float32
        from ..helpers.loading import detect_model_family

        check_prompt_optimization_family(detect_model_family(None if model is None else str(model)))
        pipe, name = load_base_pipeline(model, device, dtype), "mini-sd" if model is None else str(model)
    network = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    if network.dtype == torch.float16 and mixed_precision != "fp16":
        logger.warning(
            "the UNet is float16: pass mixed_precision='fp16' so that accelerate's gradient "
            "scaler keeps the embedding's gradients from underflowing"
        )
    return pipe, name


__all__ = [
    "MINI_TEMPLATES",
    "PAPER_TEMPLATES",
    "RUN_CONFIG_NAME",
    "TEMPLATE_PRESETS",
    "TRAIN_RESULT_NAME",
    "DomainImages",
    "PromptOptimizationError",
    "PromptOptimizationTask",
    "add_placeholder_tokens",
    "flow_level_shift",
    "is_mini_tokenizer",
    "learn_domain",
    "model_resolution",
    "placeholder_tokens",
    "resolve_templates",
]
