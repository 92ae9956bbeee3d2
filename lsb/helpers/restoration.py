"""Plain functions shared by the paired-restoration pipelines, their training and the ``lsb restore`` command.

The restoration pipelines (``BridgeRestorationPipeline``: I2SB / DDBM / DBIM bridges; the Palette-style
``ConditionalDiffusionRestorationPipeline`` baseline) work in the latent space of a Stable-Diffusion VAE: the
degraded image is VAE-encoded to x_T (= I2SB's X_1), and a UNet whose input is ``concat([x_t, x_T])`` (the
pretrained UNet's ``conv_in`` widened from 4 to 8 channels, :func:`expand_conv_in`) is conditioned on a fixed
text embedding (the empty prompt) through its cross-attention.

What a bridge model was trained for is recorded in its pipeline config as ``trained_bridge``, the
:func:`bridge_spec` of the scheduler it was trained with: the bridge schedule and every constant the loss and the
preconditioning depend on. :func:`check_scheduler_for_bridge` compares a sampling scheduler against it, so that a
scheduler for another bridge fails with a clear error before any compute. :func:`make_bridge_scheduler` builds
the I2SB, DDBM or DBIM sampler for a trained bridge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput

from ..io.execution import execution_device, model_dtype
from ..io.latents import decode_pixels
from ..io.images import ImageInputError

#: The paired restoration tasks of the shapes world (WORLD.md), named as in ``lsb.data.degradations``.
TASKS = ("inpaint", "sr4", "deblur", "jpeg")
#: Bridges a restoration model can be trained on (``lsb.training.bridge``).
BRIDGES = ("i2sb", "ddbm-vp", "ddbm-ve")
#: Samplers of ``BridgeRestorationPipeline`` (``lsb restore --scheduler``).
SAMPLERS = ("i2sb", "ddbm", "dbim")
#: Default I2SB beta_max per task (I2SB's choices: 0.3 for JPEG / SR, 1.0 for deblurring / inpainting).
I2SB_BETA_MAX = {"inpaint": 1.0, "sr4": 0.3, "deblur": 1.0, "jpeg": 0.3}
#: The data std assumed by DDBM's preconditioning: the mini SD's VAE latents are scaled to unit variance.
LATENT_SIGMA_DATA = 1.0


@dataclass
class RestorationPipelineOutput(BaseOutput):
    """Output of the restoration pipelines.

    Args:
        images: restored images (PIL list, numpy array (B, H, W, 3) in [0, 1] or tensor (B, 3, H, W) in [0, 1]).
        nfe: number of batched UNet forward calls spent.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nfe: int


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown restoration task {task!r}; choose from {', '.join(TASKS)}")
    return task


# ---------------------------------------------------------------------------------------------
# bridge specs: what a model was trained for, what a scheduler samples
# ---------------------------------------------------------------------------------------------


def bridge_spec(scheduler) -> dict:
    """The bridge a scheduler samples, as a JSON-able dict of the constants training and sampling must share.

    ``{"bridge": "i2sb", num_train_timesteps, beta_min, beta_max, official_cumsum}`` for I2SBScheduler and
    DBIMScheduler(schedule="i2sb"); ``{"bridge": "vp", beta_d, beta_min, sigma_data, cov_xy}`` and
    ``{"bridge": "ve", sigma_max, sigma_data, cov_xy}`` for DDBM / DBIM on DDBM's bridges (their EDM-style
    preconditioning depends on sigma_data and cov_xy); ``{"bridge": "noise", ...betas}`` for a noise-to-image
    diffusers scheduler (DDIM, DDPM, ...).
    """
    from ..schedulers import DBIMScheduler, DDBMScheduler, I2SBScheduler

    c = scheduler.config
    if isinstance(scheduler, I2SBScheduler) or (isinstance(scheduler, DBIMScheduler) and c.schedule == "i2sb"):
        return {
            "bridge": "i2sb",
            "num_train_timesteps": int(c.num_train_timesteps),
            "beta_min": float(c.beta_min),
            "beta_max": float(c.beta_max),
            "official_cumsum": bool(c.official_cumsum),
        }
    if isinstance(scheduler, (DBIMScheduler, DDBMScheduler)):
        spec = {"bridge": c.schedule, "sigma_data": float(c.sigma_data), "cov_xy": float(c.cov_xy)}
        if c.schedule == "vp":
            spec.update(beta_d=float(c.beta_d), beta_min=float(c.beta_min))
        else:
            spec.update(sigma_max=float(c.sigma_max))
        return spec
    if hasattr(scheduler, "alphas_cumprod"):
        return {
            "bridge": "noise",
            "num_train_timesteps": int(c.num_train_timesteps),
            "beta_start": float(c.get("beta_start", 0.0)),
            "beta_end": float(c.get("beta_end", 0.0)),
            "beta_schedule": str(c.get("beta_schedule", "")),
            "prediction_type": str(c.get("prediction_type")),
        }
    return {"bridge": type(scheduler).__name__}


def _describe(spec: dict) -> str:
    return spec["bridge"] + "(" + ", ".join(f"{k}={v}" for k, v in spec.items() if k != "bridge") + ")"


def check_scheduler_for_bridge(scheduler, trained: dict) -> None:
    """ValueError unless ``scheduler`` samples the bridge ``trained`` (a :func:`bridge_spec`) was trained on."""
    got = bridge_spec(scheduler)
    same = got.keys() == trained.keys() and all(
        (abs(float(got[k]) - float(trained[k])) <= 1e-9 * max(1.0, abs(float(trained[k]))))
        if isinstance(trained[k], float)
        else got[k] == trained[k]
        for k in trained
    )
    if not same:
        hint = {
            "i2sb": "use --scheduler i2sb or dbim",
            "vp": "use --scheduler ddbm or dbim",
            "ve": "use --scheduler ddbm or dbim",
            "noise": "use a DDIM/DDPM scheduler",
        }.get(trained.get("bridge"), "")
        raise ValueError(
            f"scheduler {type(scheduler).__name__} samples the bridge {_describe(got)}, but the model was trained "
            f"on {_describe(trained)}; {hint} (`make_bridge_scheduler` builds a matching one)"
        )


def make_bridge_scheduler(sampler: str, trained: dict, **overrides):
    """The ``sampler`` ("i2sb", "ddbm", "dbim") scheduler for a model trained on the bridge ``trained``.

    ``overrides`` are sampler settings (eta, solver_order, s_churn, ot_ode, clip_sample, ...). I2SB's sampler needs
    an I2SB-trained model and DDBM's Heun sampler a VP / VE one; DBIM samples all three.
    """
    from ..schedulers import DBIMScheduler, DDBMScheduler, I2SBScheduler

    kind = trained.get("bridge")
    consts = {k: v for k, v in trained.items() if k != "bridge"}
    if sampler == "i2sb":
        if kind != "i2sb":
            raise ValueError(
                f"the I2SB sampler needs a model trained on the I2SB bridge; this one was trained on "
                f"{kind!r} (use --scheduler ddbm or dbim)"
            )
        return I2SBScheduler(**consts, **overrides)
    if sampler == "ddbm":
        if kind not in ("vp", "ve"):
            raise ValueError(
                f"DDBM's Heun sampler needs a model trained on a DDBM VP/VE bridge; this one was trained "
                f"on {kind!r} (use --scheduler i2sb or dbim)"
            )
        return DDBMScheduler(schedule=kind, **consts, **overrides)
    if sampler == "dbim":
        if kind not in ("i2sb", "vp", "ve"):
            raise ValueError(f"DBIM needs a bridge-trained model; this one was trained on {kind!r}")
        return DBIMScheduler(schedule=kind, **consts, **overrides)
    raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")


def training_scheduler(bridge: str, task: str, ot_ode: bool = False, sigma_data: float = LATENT_SIGMA_DATA):
    """The scheduler a bridge model of kind ``bridge`` ("i2sb", "ddbm-vp", "ddbm-ve") is trained with and saved with.

    i2sb: ``I2SBScheduler`` with I2SB's per-task beta_max (:data:`I2SB_BETA_MAX`); ddbm-vp / ddbm-ve:
    ``DBIMScheduler`` (the fast default sampler) on DDBM's VP / VE bridge with ``sigma_data`` for latents.
    """
    from ..schedulers import DBIMScheduler, I2SBScheduler

    check_task(task)
    if bridge == "i2sb":
        return I2SBScheduler(beta_max=I2SB_BETA_MAX[task], ot_ode=ot_ode)
    if bridge in ("ddbm-vp", "ddbm-ve"):
        return DBIMScheduler(schedule=bridge.split("-")[1], sigma_data=sigma_data)
    raise ValueError(f"unknown bridge {bridge!r}; choose from {', '.join(BRIDGES)}")


def steps_for_nfe(scheduler, nfe: int) -> int:
    """The ``num_inference_steps`` that spends ``nfe`` network calls (DDBM: N intervals, NFE = 3N - 1 with churn)."""
    from ..schedulers import DDBMScheduler

    if isinstance(scheduler, DDBMScheduler):
        return DDBMScheduler.num_steps_for_nfe(nfe, scheduler.config.s_churn)
    return int(nfe)


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------


def expand_conv_in(unet, extra_channels: int = 4):
    """A copy of ``unet`` whose ``conv_in`` takes ``extra_channels`` more input channels, their weights zero.

    With zero weights the widened UNet computes exactly what the pretrained one computes on the first channels,
    so fine-tuning starts from the pretrained denoiser (as InstructPix2Pix / Palette-style concatenation does).
    """
    from diffusers import UNet2DConditionModel

    cfg = dict(unet.config)
    cfg["in_channels"] = unet.config.in_channels + extra_channels
    new = UNet2DConditionModel.from_config(cfg)
    state = {k: v.float() for k, v in unet.state_dict().items()}
    w = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([w, torch.zeros(w.shape[0], extra_channels, *w.shape[2:])], dim=1)
    new.load_state_dict(state)
    return new.to(unet.dtype)


def check_concat_unet(unet, latent_channels: int = 4) -> None:
    if unet.config.in_channels != 2 * latent_channels:
        raise ValueError(
            f"the restoration UNet must take {2 * latent_channels} input channels (x_t and the degraded "
            f"latent, concatenated); this one takes {unet.config.in_channels}"
        )


def unet_call(unet, x: torch.Tensor, cond: torch.Tensor, timestep, prompt_embeds: torch.Tensor) -> torch.Tensor:
    """One UNet call on ``concat([x, cond])`` at ``timestep`` (scalar or per sample) with the fixed embedding."""
    t = torch.as_tensor(timestep, device=x.device, dtype=torch.float32)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    dtype = model_dtype(getattr(unet, "module", unet))  # DDP-wrapped during multi-process training
    inp = torch.cat([x, cond], dim=1).to(dtype)
    return unet(inp, t, encoder_hidden_states=prompt_embeds.to(dtype), return_dict=False)[0].float()


def bridge_denoise(
    unet, scheduler, x: torch.Tensor, timestep, x_T: torch.Tensor, prompt_embeds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0hat, F): the preconditioned denoiser x0hat = c_skip x + c_out F(c_in x, c_noise; x_T) at ``timestep``.

    Works for every bridge scheduler (I2SB: an index; DDBM / DBIM: a time t), through their
    ``precondition_inputs`` / ``precondition_noise`` / ``precondition_outputs``.
    """
    x_in = scheduler.precondition_inputs(x, timestep)
    out = unet_call(unet, x_in, x_T, scheduler.precondition_noise(timestep), prompt_embeds)
    return scheduler.precondition_outputs(x, out.to(x.dtype), timestep), out


@torch.no_grad()
def empty_prompt_embeds(text_encoder, tokenizer, device=None) -> torch.Tensor:
    """The text encoder's embedding of the empty prompt, (1, tokens, dim): the fixed cross-attention input."""
    ids = tokenizer(
        [""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    device = device if device is not None else text_encoder.device
    return text_encoder(ids.to(device))[0]


# ---------------------------------------------------------------------------------------------
# the pipelines' shared parts
# ---------------------------------------------------------------------------------------------

#: ``output_type`` values of the restoration pipelines.
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class LatentRestorationMixin:
    """What ``BridgeRestorationPipeline`` and ``ConditionalDiffusionRestorationPipeline`` share (mixed into a
    ``DiffusionPipeline``; deliberately not one itself, as diffusers' custom-pipeline loader wants exactly one
    ``DiffusionPipeline`` subclass in a pipeline file): component checks and registration, ``check_inputs``, the
    encoding of the degraded images before the sampling loop and the decoding after it.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def _trained_bridge(self, scheduler, trained_bridge: dict | None) -> dict:
        """The ``trained_bridge`` config: the given one, else :func:`bridge_spec` of ``scheduler``. A pipeline
        overrides it to reject schedulers of another kind first (before the bridge comparison)."""
        return dict(trained_bridge) if trained_bridge else bridge_spec(scheduler)

    def _register_restoration(
        self, vae, text_encoder, tokenizer, unet, scheduler, task: str, trained_bridge: dict | None
    ) -> None:
        """Check the components, then register them and the config (``task``, ``trained_bridge``)."""
        from diffusers.image_processor import VaeImageProcessor

        check_task(task)
        check_concat_unet(unet, vae.config.latent_channels)
        trained_bridge = self._trained_bridge(scheduler, trained_bridge)
        check_scheduler_for_bridge(scheduler, trained_bridge)
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.register_to_config(task=task, trained_bridge=trained_bridge)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    def check_inputs(self, image, num_inference_steps, output_type):
        if image is None:
            raise ValueError("`image` is required: the degraded picture(s) to restore")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        check_scheduler_for_bridge(self.scheduler, self.config.trained_bridge)

    def _prepare_restoration(self, image, mask, num_inference_steps, output_type):
        """Check the inputs, encode the degraded images and set the scheduler's timesteps.

        Returns ``(pixels, masks, x_T, embeds, device)``: the images in [-1, 1], the inpainting masks (or None),
        their latents, the batched empty-prompt embedding and the execution device.
        """
        from .translation import encode_images, preprocess_images

        self.check_inputs(image, num_inference_steps, output_type)
        pixels = preprocess_images(image, self.image_processor, self.vae_scale_factor)
        batch, _, height, width = pixels.shape
        masks = preprocess_mask(mask, batch, height, width) if mask is not None else None
        device = execution_device(self)

        x_T = encode_images(self.vae, pixels, device).float()
        embeds = empty_prompt_embeds(self.text_encoder, self.tokenizer, device).expand(batch, -1, -1)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        return pixels, masks, x_T, embeds, device

    def _restoration_output(self, x, pixels, masks, output_type, nfe: int, return_dict: bool):
        """Decode the final latents (keeping the known pixels of an inpainting input) into the pipeline output."""
        if output_type == "latent":
            images = x
        else:
            decoded = decode_pixels(self.vae, x).float()  # THE VAE decode (lsb.io.latents)
            decoded = paste_known(decoded.clamp(-1, 1), pixels.to(decoded.device), masks)
            images = self.image_processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, nfe
        return RestorationPipelineOutput(images=images, nfe=nfe)


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------


def preprocess_mask(mask, batch: int, height: int, width: int) -> torch.Tensor:
    """An inpainting mask (1 = missing pixel) as a float tensor (batch, 1, H, W) in [0, 1].

    THE mask parser of the project (the restoration pipelines and DiffIR use it). Accepts a PIL image (mode L / 1 /
    RGB; white = missing), a numpy array or tensor of shape (H, W), (B, H, W) or (B, 1, H, W) with values in [0, 1]
    (bool allowed; uint8 in 0..255), or a list of per-image masks. The spatial
    size must equal the image's; otherwise :class:`ImageInputError` names the mask.
    """
    if isinstance(mask, list):
        if len(mask) not in (1, batch):
            raise ImageInputError(f"mask: {len(mask)} masks for {batch} images")
        parts = [preprocess_mask(m, 1, height, width) for m in mask]
        return torch.cat(parts).expand(batch, -1, -1, -1) if len(parts) == 1 else torch.cat(parts)
    if isinstance(mask, PIL.Image.Image):
        mask = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    if isinstance(mask, np.ndarray):
        if mask.dtype == np.uint8:
            mask = mask.astype(np.float32) / 255.0
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, torch.Tensor):
        raise ImageInputError(f"mask: unsupported type {type(mask).__name__}; use PIL, numpy or torch")
    m = mask.detach().float()
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]  # (1, H, W) or (B, H, W)
    elif not (m.ndim == 4 and m.shape[1] == 1):
        raise ImageInputError(f"mask: expected shape (H, W), (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
    if tuple(m.shape[-2:]) != (height, width):
        raise ImageInputError(f"mask: size {m.shape[-1]}x{m.shape[-2]} does not match the image size {width}x{height}")
    if m.shape[0] not in (1, batch):
        raise ImageInputError(f"mask: batch {m.shape[0]} for {batch} images")
    if not torch.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise ImageInputError("mask: values must lie in [0, 1] (1 = missing pixel)")
    return m.expand(batch, -1, -1, -1)


def paste_known(restored: torch.Tensor, degraded: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Keep the known pixels of the degraded image: mask * restored + (1 - mask) * degraded (images in [-1, 1])."""
    if mask is None:
        return restored
    mask = mask.to(device=restored.device, dtype=restored.dtype)
    return mask * restored + (1 - mask) * degraded.to(restored)
