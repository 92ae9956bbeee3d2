"""The translation baselines of the LSB paper (SDEdit, DDIB) next to LSB itself, behind one entry point.

Kim, Kim & Ye 2024 (arXiv 2411.14863) compare LSB with two baselines run on the same Stable Diffusion and
prompts (METHODS.md section 2 (b)):

* **SDEdit** (Meng et al. 2022): noise the source latent to the SD timestep whose signal level matches LSB's
  start, alphabar = 1 / (1 + tau t0 (1 - t0)), and denoise with DDIM under the target prompt, the source prompt
  being the CFG negative. Here it runs through diffusers' stock ``StableDiffusionImg2ImgPipeline`` with a
  ``DDIMScheduler`` (as in the paper); :func:`sdedit_translate` chooses img2img's ``num_inference_steps`` and
  ``strength`` so that it runs exactly ``nfe`` denoising steps (one UNet call each) from the grid timestep
  nearest the SNR-matched one.
* **DDIB** (Su et al. 2023): :class:`lsb_pipelines.ddib.pipeline.DDIBPipeline`.

:func:`load_translator` and :func:`translate` are what the CLI, the demo and the benchmarks call for all three
methods; ``translate`` returns ``(images, nfe_spent)`` where NFE counts UNet forward calls (a CFG step on
[negative; positive] is one batched call).
"""

from __future__ import annotations

import torch

from .bridges.matching import sb_time_to_timestep
from .execution import execution_device, model_dtype
from .translation_utils import check_nfe, preprocess_images, prompt_embeds_for_batch

METHODS = ("lsb", "sdedit", "ddib")

#: Paper defaults (METHODS.md section 2 (c)): tau is the paper's tau (official ``--tau 2.3`` = sqrt(tau)),
#: t0 the bridge start, w the CFG weight every method is run with.
DEFAULT_TAU = 5.29
DEFAULT_T0 = 0.2
DEFAULT_GUIDANCE = 11.0


def _check_bridge(t0: float, tau: float) -> None:
    if not 0.0 < t0 < 1.0:
        raise ValueError(f"t0 must lie strictly between 0 and 1, got {t0!r}")
    if not tau > 0.0:
        raise ValueError(f"tau must be a positive number (the paper's tau), got {tau!r}")


def sdedit_start_timestep(t0: float, tau: float, alphas_cumprod: torch.Tensor) -> float:
    """The (continuous) SD timestep s* with alphas_cumprod(s*) = 1 / (1 + tau t0 (1 - t0)): LSB's start SNR."""
    _check_bridge(t0, tau)
    return float(sb_time_to_timestep(t0, tau, alphas_cumprod))


def sdedit_strength(t0: float, tau: float, alphas_cumprod: torch.Tensor) -> float:
    """The img2img ``strength`` at which SDEdit starts from LSB's initial signal-to-noise ratio.

    LSB starts at bridge time t0 with x = (1 - t0) x_src + sqrt(tau t0 (1 - t0)) z, whose SNR-matched VP signal
    level is alphabar = 1 / (1 + tau t0 (1 - t0)). The SD timestep s* with ``alphas_cumprod(s*) = alphabar``
    (linear interpolation, :func:`lsb.bridges.matching.alpha_bar_to_timestep`) is the start; img2img's strength is
    the fraction of the T training timesteps it re-runs, ``s* / T``. (img2img then starts at a timestep of its own
    grid near ``strength * T``; :func:`sdedit_schedule` picks the grid whose start is nearest s*.)

    Args:
        t0: the paper's t_0, LSB's start time in (0, 1).
        tau: the paper's tau (the official code's ``--tau`` is sqrt(tau)).
        alphas_cumprod: the SD scheduler's ``alphas_cumprod`` (diffusers convention: index k = timestep k).
    """
    return sdedit_start_timestep(t0, tau, alphas_cumprod) / len(alphas_cumprod)


def sdedit_schedule(nfe: int, start_timestep: float, scheduler) -> tuple[int, float, int]:
    """img2img settings that run exactly ``nfe`` DDIM steps starting as close as possible to ``start_timestep``.

    img2img with ``num_inference_steps=N`` and ``strength`` runs the last ``int(N * strength)`` timesteps of the
    scheduler's N-step grid, starting at ``timesteps[N - int(N * strength)]``. This searches N in [nfe, T] for the
    grid whose ``nfe``-th smallest timestep is nearest ``start_timestep`` and sets
    ``strength = (nfe + 0.5) / N`` (capped at 1), so that ``int(N * strength) == nfe`` exactly.

    Returns:
        (num_inference_steps, strength, start timestep actually used).
    """
    nfe = check_nfe(nfe, minimum=1, name="nfe")
    probe = type(scheduler).from_config(scheduler.config)
    num_train = probe.config.num_train_timesteps
    if nfe > num_train:
        raise ValueError(f"nfe={nfe} exceeds the {num_train} training timesteps")
    best = None
    for n in range(nfe, num_train + 1):
        probe.set_timesteps(n)
        start = int(probe.timesteps[n - nfe])
        if best is None or abs(start - start_timestep) < abs(best[2] - start_timestep):
            best = (n, min(1.0, (nfe + 0.5) / n), start)
    return best


def _as_ddim(pipe) -> None:
    """Give ``pipe`` a DDIMScheduler (the paper's SDEdit sampler) built from its scheduler's config."""
    from diffusers import DDIMScheduler

    if not isinstance(pipe.scheduler, DDIMScheduler):
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)


def _prompt_and_embeds(prompt):
    """A prompt argument that may be text or a precomputed embedding tensor -> (text, embeds)."""
    return (None, prompt) if isinstance(prompt, torch.Tensor) else (prompt, None)


def _check_prompt(name: str, prompt) -> None:
    if isinstance(prompt, torch.Tensor):
        return
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return
    if not isinstance(prompt, str):
        raise TypeError(f"{name} must be a string, a non-empty list of strings or an embedding tensor, "
                        f"got {type(prompt).__name__}")


@torch.no_grad()
def sdedit_translate(pipe_img2img, images, source_prompt, target_prompt, nfe: int = 8, t0: float = DEFAULT_T0,
                     tau: float = DEFAULT_TAU, guidance_scale: float = DEFAULT_GUIDANCE, generator=None,
                     output_type: str = "pil", clip_skip: int | None = None, **img2img_kwargs):
    """SDEdit as the LSB paper runs it, through a stock ``StableDiffusionImg2ImgPipeline``.

    The source latent is noised to the DDIM grid timestep nearest the SD timestep SNR-matched to LSB's start
    (:func:`sdedit_strength`), then denoised with ``nfe`` DDIM steps under the target prompt with CFG whose
    negative is the source prompt. A non-DDIM scheduler on ``pipe_img2img`` is replaced by a ``DDIMScheduler``
    built from its config (clip_sample off). The VAE encoding is img2img's own (a posterior sample drawn with
    ``generator``).

    Args:
        pipe_img2img: a ``StableDiffusionImg2ImgPipeline`` (e.g. from ``load_translator("sdedit")``).
        images: PIL image(s), numpy (H, W, 3) or tensor (3, H, W) images; sides multiples of 8.
        source_prompt / target_prompt: text (learned ``<token>``s must be loaded), a list of texts, or an
            embedding tensor (batch, tokens, dim).
        nfe: denoising UNet calls (>= 2 here, like the other methods); each CFG step is one batched call.
        t0, tau: LSB's start time and the paper's tau, which fix the start noise level.
        guidance_scale: CFG weight (img2img applies CFG only for guidance_scale > 1).
        generator: torch generator(s) for the VAE sample and the start noise (a list needs one per image).
        output_type: "pil", "np", "pt" or "latent".
        img2img_kwargs: passed on to the img2img call (e.g. ``eta``).

    Returns:
        (images, nfe_spent): nfe_spent is the number of denoising steps img2img actually ran, one UNet call each.
    """
    nfe = check_nfe(nfe, name="nfe")
    _check_bridge(t0, tau)
    _check_prompt("source_prompt", source_prompt)
    _check_prompt("target_prompt", target_prompt)
    _as_ddim(pipe_img2img)

    pixels = preprocess_images(images, pipe_img2img.image_processor, pipe_img2img.vae_scale_factor)
    batch = pixels.shape[0]
    device, dtype = execution_device(pipe_img2img), model_dtype(pipe_img2img.unet)
    src_text, src_embeds = _prompt_and_embeds(source_prompt)
    tgt_text, tgt_embeds = _prompt_and_embeds(target_prompt)
    negative = prompt_embeds_for_batch(pipe_img2img, src_text, src_embeds, batch, device, dtype, "source", clip_skip)
    positive = prompt_embeds_for_batch(pipe_img2img, tgt_text, tgt_embeds, batch, device, dtype, "target", clip_skip)

    start = sdedit_start_timestep(t0, tau, pipe_img2img.scheduler.alphas_cumprod)
    num_steps, strength, _ = sdedit_schedule(nfe, start, pipe_img2img.scheduler)

    steps_run = []

    def count_steps(pipe, i, t, tensors):
        steps_run.append(int(t))
        return {}

    out = pipe_img2img(prompt_embeds=positive.contiguous(), negative_prompt_embeds=negative.contiguous(),
                       image=(pixels + 1) / 2, strength=strength, num_inference_steps=num_steps,
                       guidance_scale=guidance_scale, generator=generator, output_type=output_type,
                       callback_on_step_end=count_steps, callback_on_step_end_tensor_inputs=[], **img2img_kwargs)
    return out.images, len(steps_run)


def load_translator(method: str, model: str | None = None, device=None, **kwargs):
    """The pipeline object that :func:`translate` needs for ``method``, loaded with :func:`lsb.loading.load_pipeline`.

    * ``"lsb"``: :class:`lsb.LatentSchrodingerBridgePipeline`
    * ``"ddib"``: :class:`lsb_pipelines.ddib.pipeline.DDIBPipeline`
    * ``"sdedit"``: diffusers' ``StableDiffusionImg2ImgPipeline`` with a ``DDIMScheduler`` (no safety checker)

    ``model`` is the embedded mini SD (None), a local diffusers SD folder or a Hub id; ``kwargs`` go to
    ``from_pretrained`` (e.g. ``dtype``).
    """
    from .loading import load_pipeline

    if method == "lsb":
        from lsb_pipelines.lsb.pipeline import LatentSchrodingerBridgePipeline

        return load_pipeline(LatentSchrodingerBridgePipeline, model, device=device, **kwargs)
    if method == "ddib":
        from lsb_pipelines.ddib.pipeline import DDIBPipeline

        return load_pipeline(DDIBPipeline, model, device=device, **kwargs)
    if method == "sdedit":
        from diffusers import StableDiffusionImg2ImgPipeline

        kwargs.setdefault("safety_checker", None)
        kwargs.setdefault("requires_safety_checker", False)
        pipe = load_pipeline(StableDiffusionImg2ImgPipeline, model, device=device, **kwargs)
        _as_ddim(pipe)
        return pipe
    raise ValueError(f"unknown translation method {method!r}; expected one of {METHODS}")


def translate(method: str, pipe, images, source_prompt, target_prompt, nfe: int = 8,
              guidance_scale: float | None = None, tau: float | None = None, t0: float | None = None,
              generator=None, output_type: str = "pil"):
    """Translate ``images`` from the source to the target domain with ``method`` at a budget of ``nfe`` UNet calls.

    Args:
        method: "lsb", "sdedit" or "ddib"; ``pipe`` the matching object from :func:`load_translator`.
        images: PIL image(s) (or numpy / tensor images, see the pipelines); sides multiples of 8.
        source_prompt / target_prompt: text, a list of texts, or embedding tensors (batch, tokens, dim).
        nfe: UNet forward calls per image batch (>= 2). LSB: NFE - 1 solver steps + final denoise (its scheduler);
            SDEdit: nfe DDIM denoising steps; DDIB: nfe // 2 inversion + nfe - nfe // 2 sampling steps.
        guidance_scale: CFG weight w (None: the paper's 11). LSB: w on the predictor difference with the source as
            negative; SDEdit: CFG with the source prompt as negative; DDIB: CFG with the null prompt as negative.
        tau, t0: the paper's tau and t_0 (None: LSB's scheduler config for "lsb", the paper's 5.29 / 0.2 for
            "sdedit"); SDEdit uses them only for its start noise level; DDIB ignores them.
        generator: torch generator(s); DDIB is deterministic and ignores it.
        output_type: "pil", "np", "pt" or "latent".

    Returns:
        (images, nfe_spent): the translations and the UNet calls actually made.
    """
    if method not in METHODS:
        raise ValueError(f"unknown translation method {method!r}; expected one of {METHODS}")
    nfe = check_nfe(nfe, name="nfe")
    _check_prompt("source_prompt", source_prompt)
    _check_prompt("target_prompt", target_prompt)
    w = DEFAULT_GUIDANCE if guidance_scale is None else float(guidance_scale)
    src_text, src_embeds = _prompt_and_embeds(source_prompt)
    tgt_text, tgt_embeds = _prompt_and_embeds(target_prompt)
    prompts = dict(source_prompt=src_text, target_prompt=tgt_text, source_prompt_embeds=src_embeds,
                   target_prompt_embeds=tgt_embeds)

    if method == "sdedit":
        return sdedit_translate(pipe, images, source_prompt, target_prompt, nfe=nfe,
                                t0=DEFAULT_T0 if t0 is None else t0, tau=DEFAULT_TAU if tau is None else tau,
                                guidance_scale=w, generator=generator, output_type=output_type)
    if method == "lsb":
        out = pipe(images, num_inference_steps=nfe, guidance_scale=w, tau=tau, t0=t0, generator=generator,
                   output_type=output_type, **prompts)
    else:
        out = pipe(images, num_inference_steps=nfe, guidance_scale=w, generator=generator, output_type=output_type,
                   **prompts)
    return out.images, out.nfe


__all__ = ["METHODS", "DEFAULT_TAU", "DEFAULT_T0", "DEFAULT_GUIDANCE", "sdedit_start_timestep", "sdedit_strength",
           "sdedit_schedule", "sdedit_translate", "load_translator", "translate"]
