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

:func:`lsb.surfaces.translators.load_translator` and :func:`lsb.surfaces.translators.translate` are what the CLI,
the demo and the benchmarks call for all three methods; ``translate`` returns ``(images, nfe_spent)`` where NFE counts UNet forward calls (a CFG step on
[negative; positive] is one batched call).
"""

from __future__ import annotations

import torch

from ..families import family_of, pixel_multiple
from ..bridges.matching import sb_time_to_timestep
from ..io.execution import execution_device, model_dtype
from ..io.settings import PAPER_TRANSLATION, check_nfe, check_t0, check_tau
from .masks import is_empty, passthrough, prepare_region
from .translation import preprocess_images, prompt_embeds_for_batch


def _encoder(pipe):
    """``pixels -> model latents`` of a stock pipeline's VAE (what an empty mask returns for output_type="latent")."""
    from ..io.latents import encode_latents

    return lambda pixels: encode_latents(pipe.vae, pixels, execution_device(pipe))


def _check_bridge(t0: float, tau: float) -> None:
    check_t0(t0)
    check_tau(tau)


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


def as_ddim(pipe) -> None:
    """Give ``pipe`` a DDIMScheduler (the paper's SDEdit sampler) built from its scheduler's config."""
    from diffusers import DDIMScheduler

    if not isinstance(pipe.scheduler, DDIMScheduler):
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)


def split_prompt(prompt):
    """A prompt argument that may be text or a precomputed embedding tensor -> (text, embeds)."""
    return (None, prompt) if isinstance(prompt, torch.Tensor) else (prompt, None)


def check_prompt_arg(name: str, prompt) -> None:
    if isinstance(prompt, torch.Tensor):
        return
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return
    if not isinstance(prompt, str):
        raise TypeError(
            f"{name} must be a string, a non-empty list of strings or an embedding tensor, got {type(prompt).__name__}"
        )


def step_counter(region_step=None):
    """``(callback, steps)``: a ``callback_on_step_end`` for a stock pipeline that records every step it runs in
    ``steps`` (so the NFE a baseline spent is counted, not assumed); ``region_step(pipe, t, latents) -> latents`` (a user
    mask, :func:`sdedit_region_step`) also blends the latents after every step."""
    steps: list[float] = []

    def count_steps(pipe, i, t, tensors):
        steps.append(float(t))
        return {} if region_step is None else {"latents": region_step(pipe, t, tensors["latents"])}

    return count_steps, steps


def sdedit_region_step(region, x_src: torch.Tensor, generator):
    """``region_step(pipe, t, latents) -> latents`` (after the step at timestep ``t``) for a stock img2img pipeline's ``callback_on_step_end``: the kept
    region of the latents after a step is the source noised to the level the next step sees (DDIM:
    ``scheduler.add_noise`` at the next timestep of the grid; flow: ``(1 - s) x_src + s n`` at the scheduler's next
    sigma), the source itself after the last step. ``x_src``: the VAE latents (B, C, h, w) in the pipeline's
    convention; packed FLUX latents (B, N, 4C) are matched by packing. The noise n is one draw from a generator
    seeded like ``generator`` (the user's generator itself is not consumed, so img2img's own draws are unchanged)."""
    from .flux import pack_latents
    from .masks import blend, derived_noise, layout_mask

    state = {}

    def region_step(pipe, t, latents):
        if not state:
            layout = pack_latents if latents.ndim == 3 else None
            state["mask"] = layout_mask(region, x_src, layout)
            state["source"] = x_src if layout is None else layout(x_src)
            state["noise"] = derived_noise(state["source"], generator)
        scheduler, source, noise = pipe.scheduler, state["source"], state["noise"]
        if hasattr(scheduler, "scale_noise"):  # FlowMatchEulerDiscreteScheduler: the level of the next step
            sigma = float(scheduler.sigmas[scheduler.step_index])
            kept = (1.0 - sigma) * source.float() + sigma * noise.float()
        else:  # DDIM: the timestep after t on the grid img2img runs on (none after the last step: the source)
            steps = scheduler.timesteps
            index = int((steps == t).nonzero()[0]) + 1
            kept = scheduler.add_noise(source, noise, steps[index : index + 1]) if index < len(steps) else source
        return blend(latents, state["mask"], kept)

    return region_step


def run_img2img(
    pipe_img2img,
    pixels: torch.Tensor,
    strength: float,
    num_inference_steps: int,
    guidance_scale: float,
    generator,
    output_type: str,
    region=None,
    **kwargs,
):
    """Run a stock img2img pipeline on checked ``pixels`` in [-1, 1] (passed as images in [0, 1]) with a step-counting
    callback (:func:`step_counter`); ``kwargs`` (prompts, sizes, the user's extra img2img arguments) go to the call.
    ``region`` (a user mask, :func:`lsb.helpers.masks.prepare_region`): the callback also keeps the masked-out region
    on the source's path (:func:`sdedit_region_step`) and the output is pasted onto the input outside the mask.

    Returns:
        (images, steps run): the denoising steps img2img actually ran.
    """
    region_step = None
    if region is not None:
        from ..io.latents import encode_latents

        x_src = encode_latents(pipe_img2img.vae, pixels, execution_device(pipe_img2img))
        region_step = sdedit_region_step(region, x_src, generator)
    count_steps, steps_run = step_counter(region_step)
    paste = region is not None and output_type != "latent"
    out = pipe_img2img(
        image=(pixels + 1) / 2,
        strength=strength,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        generator=generator,
        output_type="pt" if paste else output_type,
        callback_on_step_end=count_steps,
        callback_on_step_end_tensor_inputs=[] if region is None else ["latents"],
        **kwargs,
    )
    images = out.images
    if paste:  # img2img's "pt" output is in [0, 1]
        images = pipe_img2img.image_processor.postprocess(region.paste(images.float() * 2 - 1), output_type=output_type)
    return images, len(steps_run)


@torch.no_grad()
def sdedit_translate(
    pipe_img2img,
    images,
    source_prompt,
    target_prompt,
    nfe: int = 8,
    t0: float = PAPER_TRANSLATION.t0,
    tau: float = PAPER_TRANSLATION.tau,
    guidance_scale: float = PAPER_TRANSLATION.guidance_scale,
    generator=None,
    output_type: str = "pil",
    clip_skip: int | None = None,
    mask_image=None,
    mask_feather: float | None = None,
    **img2img_kwargs,
):
    """SDEdit as the LSB paper runs it, through a stock ``StableDiffusionImg2ImgPipeline`` (or, for SDXL, a stock
    ``StableDiffusionXLImg2ImgPipeline``: both text encoders and the pooled embeddings; its micro-conditioning
    defaults to the image size, as LSB-XL's does).

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
        nfe: denoising UNet calls (>= 1; lsb translate asks >= 2 of every method); each CFG step is one batched call.
        t0, tau: LSB's start time and the paper's tau, which fix the start noise level.
        guidance_scale: CFG weight (img2img applies CFG only for guidance_scale > 1).
        generator: torch generator(s) for the VAE sample and the start noise (a list needs one per image).
        output_type: "pil", "np", "pt" or "latent".
        img2img_kwargs: passed on to the img2img call (e.g. ``eta``).
        mask_image / mask_feather: translate a region only (white = may change, black = keep; :mod:`lsb.helpers.masks`):
            after every DDIM step the kept region is the source latent noised to the next step's level, and the
            output is pasted onto the input outside the mask; an all-black mask returns the input (nfe 0).

    Returns:
        (images, nfe_spent): nfe_spent is the number of denoising steps img2img actually ran, one UNet call each.
    """
    nfe = check_nfe(nfe, minimum=1, name="nfe")  # one DDIM step is defined (the one-step baseline)
    _check_bridge(t0, tau)
    check_prompt_arg("source_prompt", source_prompt)
    check_prompt_arg("target_prompt", target_prompt)
    as_ddim(pipe_img2img)

    pixels = preprocess_images(images, pipe_img2img.image_processor, pipe_img2img.vae_scale_factor)
    region = prepare_region(mask_image, pixels, mask_feather)
    if is_empty(region):  # nothing may change: the input, no model call
        return passthrough(pipe_img2img.image_processor, region, output_type, _encoder(pipe_img2img)), 0
    batch = pixels.shape[0]
    device, dtype = execution_device(pipe_img2img), model_dtype(pipe_img2img.unet)
    src_text, src_embeds = split_prompt(source_prompt)
    tgt_text, tgt_embeds = split_prompt(target_prompt)
    pooled = {}
    if getattr(pipe_img2img, "text_encoder_2", None) is not None:  # SDXL img2img: both encoders + pooled embeddings
        from .sdxl import sdxl_prompt_embeds

        negative, neg_pooled = sdxl_prompt_embeds(
            pipe_img2img, src_text, None, src_embeds, None, batch, device, dtype, "source", clip_skip
        )
        positive, pos_pooled = sdxl_prompt_embeds(
            pipe_img2img, tgt_text, None, tgt_embeds, None, batch, device, dtype, "target", clip_skip
        )
        pooled = {
            "pooled_prompt_embeds": pos_pooled.contiguous(),
            "negative_pooled_prompt_embeds": neg_pooled.contiguous(),
        }
    else:
        negative = prompt_embeds_for_batch(
            pipe_img2img, src_text, src_embeds, batch, device, dtype, "source", clip_skip
        )
        positive = prompt_embeds_for_batch(
            pipe_img2img, tgt_text, tgt_embeds, batch, device, dtype, "target", clip_skip
        )

    start = sdedit_start_timestep(t0, tau, pipe_img2img.scheduler.alphas_cumprod)
    num_steps, strength, _ = sdedit_schedule(nfe, start, pipe_img2img.scheduler)

    return run_img2img(
        pipe_img2img,
        pixels,
        strength,
        num_steps,
        guidance_scale,
        generator,
        output_type,
        region=region,
        prompt_embeds=positive.contiguous(),
        negative_prompt_embeds=negative.contiguous(),
        **pooled,
        **img2img_kwargs,
    )


# ------------------------------------------------------------------------------------------------------------------
# SDEdit on rectified-flow models (SD3 / SD3.5, FLUX.1) through diffusers' stock img2img pipelines

#: SDEdit's guidance per flow family when none is given: SD3 true CFG (StableDiffusion3Pipeline's default 7.0,
#: negative = the source prompt); FLUX.1-dev distilled guidance (FluxPipeline's 3.5; schnell ignores it).
#: Z-Image: ZImagePipeline's CFG scale s (pos + s (pos - neg), negative = the source prompt); 0 = Turbo's setting.
#: Qwen-Image: QwenImagePipeline's true_cfg_scale 4.0 (negative = the source prompt, norm-rescaled).
FLOW_SDEDIT_GUIDANCE = {"sd3": 7.0, "flux": 3.5, "zimage": 0.0, "qwenimage": 4.0}


def flow_family(pipe) -> str:
    """The rectified-flow family name ("sd3", "flux") of a diffusers SD3 / FLUX (img2img) pipeline
    (:func:`lsb.families.family_of`); a ValueError for any other pipeline."""
    family = family_of(pipe)
    if family.base != "flow":
        raise ValueError(
            f"{type(pipe).__name__} is a {family.label} pipeline: SDEdit on a flow model needs an SD3 or FLUX "
            "img2img pipeline (StableDiffusion3Img2ImgPipeline / FluxImg2ImgPipeline)"
        )
    return family.name


def flow_image_seq_len(pipe, height: int, width: int) -> int:
    """The transformer's image token count for an image of ``height`` x ``width`` px (what dynamic shifting uses)."""
    side = pixel_multiple(pipe)
    return (height // side) * (width // side)


def sdedit_flow_schedule(
    nfe: int, start_sigma: float, scheduler, family: str, image_seq_len: int, max_steps: int = 1000
) -> tuple[int, float, float]:
    """img2img settings that run exactly ``nfe`` flow-Euler steps from the grid level nearest ``start_sigma``.

    The stock SD3 / FLUX img2img pipelines build the N-step grid of their family (SD3: the scheduler's shift;
    FLUX: ``linspace(1, 1/N, N)`` dynamically shifted by the token count), then run the last
    ``N - int(N - N * strength)`` steps, starting at ``sigmas[N - nfe]`` with the image noised to that level. This
    searches N in [nfe, max_steps] for the grid whose ``sigmas[N - nfe]`` is nearest ``start_sigma`` and sets
    ``strength = (nfe - 0.5) / N``, so that exactly ``nfe`` steps run.

    Returns:
        (num_inference_steps, strength, start level actually used).
    """
    from .flowedit import flow_timesteps

    nfe = check_nfe(nfe, minimum=1, name="nfe")
    if not 0.0 < start_sigma <= 1.0:
        raise ValueError(f"the SDEdit start level must lie in (0, 1], got {start_sigma!r}")
    probe = type(scheduler).from_config(scheduler.config)
    best = None
    for n in range(nfe, max_steps + 1):
        _, sigmas = flow_timesteps(probe, n, "cpu", image_seq_len, family)
        level = float(sigmas[n - nfe])
        if best is None or abs(level - start_sigma) < abs(best[2] - start_sigma):
            best = (n, (nfe - 0.5) / n, level)
        if level < start_sigma:  # the start level only falls as N grows: nothing nearer beyond
            break
    return best


@torch.no_grad()
def sdedit_flow_translate(
    pipe_img2img,
    images,
    source_prompt,
    target_prompt,
    nfe: int = 8,
    t0: float = PAPER_TRANSLATION.t0,
    tau: float = PAPER_TRANSLATION.tau,
    guidance_scale: float | None = None,
    generator=None,
    output_type: str = "pil",
    max_sequence_length: int | None = None,
    mask_image=None,
    mask_feather: float | None = None,
    **img2img_kwargs,
):
    """SDEdit on an SD3 / FLUX model through a stock ``StableDiffusion3Img2ImgPipeline`` / ``FluxImg2ImgPipeline``.

    The source latent is noised along the straight flow path to the grid level nearest LSB's start level
    ``s(t0) = sigma_t0 / (1 + sigma_t0)``, ``sigma_t0 = sqrt(tau t0 (1 - t0))`` (:func:`lsb.bridges.flow.flow_level`),
    then integrated with ``nfe`` Euler steps (``FlowMatchEulerDiscreteScheduler``) under the target prompt.
    SD3: true CFG with the source prompt as negative (``guidance_scale``, default 7.0); FLUX.1-dev: the distilled
    guidance ``guidance_scale`` (default 3.5), no negative (schnell ignores it). ``mask_image`` / ``mask_feather``:
    a region only, as for :func:`sdedit_translate` (the kept region at the scheduler's next level ``(1 - s) x_src + s n``).

    Returns:
        (images, nfe_spent, forward_passes): transformer calls img2img actually ran, and latents evaluated per
        image (2 per step with SD3's CFG, 1 otherwise).
    """
    from ..bridges.flow import flow_level

    nfe = check_nfe(nfe, name="nfe")
    _check_bridge(t0, tau)
    family = flow_family(pipe_img2img)
    for name, p in (("source_prompt", source_prompt), ("target_prompt", target_prompt)):
        if not (isinstance(p, str) or (isinstance(p, list) and p and all(isinstance(q, str) for q in p))):
            raise ValueError(
                f"{name} must be text (a string or a list of strings) for SDEdit on {family}; got {type(p).__name__}"
            )
    multiple = pixel_multiple(pipe_img2img)
    pixels = preprocess_images(images, pipe_img2img.image_processor, multiple)
    region = prepare_region(mask_image, pixels, mask_feather)
    if is_empty(region):  # nothing may change: the input, no model call
        return passthrough(pipe_img2img.image_processor, region, output_type, _encoder(pipe_img2img)), 0, 0
    batch, height, width = pixels.shape[0], pixels.shape[-2], pixels.shape[-1]
    if family == "flux" and guidance_scale is not None and not pipe_img2img.transformer.config.guidance_embeds:
        raise ValueError(
            f"guidance_scale={guidance_scale!r} given for a FLUX transformer without guidance embedding "
            "(FLUX.1-schnell): leave it None"
        )
    w = FLOW_SDEDIT_GUIDANCE[family] if guidance_scale is None else float(guidance_scale)

    start = float(flow_level(t0, tau))
    num_steps, strength, _ = sdedit_flow_schedule(
        nfe, start, pipe_img2img.scheduler, family, flow_image_seq_len(pipe_img2img, height, width)
    )
    targets = [target_prompt] * batch if isinstance(target_prompt, str) else target_prompt
    kwargs = dict(prompt=targets, **img2img_kwargs)
    if max_sequence_length is not None:
        kwargs["max_sequence_length"] = max_sequence_length
    if family == "sd3":
        negatives = [source_prompt] * batch if isinstance(source_prompt, str) else source_prompt
        kwargs = dict(negative_prompt=negatives, **kwargs)
        per_step = 2 if w > 1 else 1  # StableDiffusion3Img2ImgPipeline applies CFG for guidance_scale > 1
    elif family == "zimage":  # ZImageImg2ImgPipeline: CFG against the negative (the source prompt) when s > 0
        negatives = [source_prompt] * batch if isinstance(source_prompt, str) else source_prompt
        kwargs = dict(negative_prompt=negatives, height=height, width=width, **kwargs)
        per_step = 2 if w > 0 else 1
    elif family == "qwenimage":  # QwenImageImg2ImgPipeline: true CFG against the source prompt when s > 1
        negatives = [source_prompt] * batch if isinstance(source_prompt, str) else source_prompt
        kwargs = dict(negative_prompt=negatives, true_cfg_scale=w, height=height, width=width, **kwargs)
        per_step, w = (2 if w > 1 else 1), None  # its guidance_scale is a distilled value it does not have
    else:
        kwargs = dict(height=height, width=width, **kwargs)
        per_step = 1
    images, steps_run = run_img2img(
        pipe_img2img, pixels, strength, num_steps, w, generator, output_type, region=region, **kwargs
    )
    return images, steps_run, per_step * steps_run


__all__ = [
    "split_prompt",
    "check_prompt_arg",
    "sdedit_start_timestep",
    "sdedit_strength",
    "sdedit_schedule",
    "sdedit_translate",
    "sdedit_region_step",
    "run_img2img",
    "step_counter",
    "FLOW_SDEDIT_GUIDANCE",
    "flow_family",
    "flow_image_seq_len",
    "sdedit_flow_schedule",
    "sdedit_flow_translate",
]
