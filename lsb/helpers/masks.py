"""Region translation: ONE user mask implementation for every family (SD, SDXL, SD3, FLUX) and method (LSB, FlowEdit,
SDEdit, DDIB).

The mask follows diffusers' inpainting convention (``mask_image``): a PIL "L" image, a numpy array or a tensor, white
(1) = may change, black (0) = keep; one mask for all images or one per image (parsed by THE project's mask parser,
:func:`lsb.helpers.restoration.preprocess_mask`). Soft values in (0, 1) are allowed: they mix the translation and the
input in that proportion, both inside the trajectory and in the final paste.

Two things happen to a masked translation:

1. **Inside the trajectory** the kept region follows the *source's own path*: after every step the state is blended,
   ``x <- m * x + (1 - m) * kept(level)``, with ``m`` the mask on the latent grid (:func:`latent_mask`: the maximum
   over each latent cell's pixels, so a cell any changeable pixel touches may change) and ``kept(level)`` the source
   at the level the next network call sees:

   * LSB (every family): the bridge marginal of the source bridged to *itself*. The LSB bridge is
     x_t = (1 - t) x_0 + t x_1 + sigma_t z with sigma_t^2 = tau t (1 - t) (METHODS.md section 2); with both endpoints
     the source, ``kept(t) = x_src + sigma_t z`` (:func:`bridge_kept_state`), the same z as the initial state, and
     x_src itself at t = 1. After SNR matching the network sees exactly the forward-noised source there
     (VP: sqrt(abar) x_src + sqrt(1 - abar) z; flow: (1 - s) x_src + s z).
   * FlowEdit: Z starts at X_src and moves by velocity differences only, so the kept region is X_src itself; in the
     optional ``n_min`` sampling tail, the source noised to the tail's level (1 - s) x_src + s n.
   * SDEdit: the source latent noised to the scheduler's next level (``scheduler.add_noise`` / ``scale_noise``),
     blended through the stock img2img pipeline's ``callback_on_step_end``.
   * DDIB: the source's own DDIM-inversion latent at the same timestep (the inversion passes through every level the
     generation visits).

2. **After decoding** the output is pasted onto the input: ``out = w * decoded + (1 - w) * input`` with the
   feathered weight ``w`` (:func:`feather_weights`). The feather band lies *inside* the mask (a box-filter ramp from
   0 at the kept pixels to the mask value ``feather`` px in), so every pixel with mask value 0 is the input's pixel,
   bit for bit, not a VAE round trip (diffusers' ``VaeImageProcessor.apply_overlay`` does the same paste with a
   blurred mask that spills outside it).

An all-black mask leaves nothing to change: the pipelines return the input without any network call and log one
line (:func:`is_empty`). An all-white mask gives exactly the unmasked result for the same seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..bridges.schedules import sb_marginal, sb_sigma
from ..io.images import ImageInputError
from ..io.latents import decode_latents, decode_pixels
from .restoration import paste_known, preprocess_mask

logger = logging.getLogger("lsb.masks")

#: methods that take a ``mask_image`` (the CLI and the translators refuse a mask for any other)
MASK_METHODS = ("lsb", "flowedit", "sdedit", "ddib")

#: ``blend(latents, i) -> latents``: the state before network call ``i`` (``i == len(timesteps)``: the final state)
#: with the kept region put back on the source's own path.
RegionBlend = Callable[[torch.Tensor, int], torch.Tensor]


def default_feather(height: int, width: int) -> int:
    """The default feather width in px: 1/64 of the shorter side, at least 1 (64 px: 1; 512: 8; 1024: 16)."""
    return max(1, round(min(height, width) / 64))


def check_feather(mask_feather, name: str = "mask_feather") -> float | None:
    """``mask_feather`` (px, a finite number >= 0, or None for :func:`default_feather`) or ValueError."""
    if mask_feather is None:
        return None
    try:
        value = float(mask_feather)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of pixels >= 0, got {mask_feather!r}") from None
    if not (value >= 0 and value != float("inf")) or isinstance(mask_feather, bool):
        raise ValueError(f"{name} must be a finite number of pixels >= 0, got {mask_feather!r}")
    return value


def feather_weights(mask: torch.Tensor, feather: float) -> torch.Tensor:
    """The paste weight of every pixel: ``mask`` times a ramp that rises from 0 at the kept pixels (mask value 0) to 1
    about ``feather`` px inside the mask (a box filter of side 2 * feather + 1 over the kept pixels). Pixels with mask
    value 0 get weight 0 exactly; a mask with no kept pixel is returned unchanged. mask: (B, 1, H, W) in [0, 1]."""
    r = int(round(feather))
    if r <= 0:
        return mask
    keep = (mask <= 0).to(mask.dtype)
    near = F.avg_pool2d(F.pad(keep, (r, r, r, r), mode="replicate"), 2 * r + 1, stride=1)
    return mask * (1 - 2 * near).clamp(0, 1)


@dataclass
class Region:
    """A ``mask_image`` prepared for one call: ``mask`` (B, 1, H, W) float32 in [0, 1] (1 = may change) on the
    device of ``pixels`` (the input images in [-1, 1]), and the feathered paste ``weights``."""

    mask: torch.Tensor
    weights: torch.Tensor
    pixels: torch.Tensor

    @property
    def empty(self) -> bool:
        """True when no pixel of any image may change (all-black masks)."""
        return not bool((self.mask > 0).any())

    def latent_mask(self, latent_height: int, latent_width: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """:func:`latent_mask` of this region, on ``like``'s device and dtype when given."""
        m = latent_mask(self.mask, latent_height, latent_width)
        return m if like is None else m.to(device=like.device, dtype=like.dtype)

    def paste(self, decoded: torch.Tensor) -> torch.Tensor:
        """Decoded images (B, 3, H, W, [-1, 1]) pasted onto the input outside the mask (feathered weights)."""
        return paste_known(decoded, self.pixels, self.weights)


def prepare_region(mask_image, pixels: torch.Tensor, mask_feather=None) -> Region | None:
    """Parse ``mask_image`` for the checked input ``pixels`` (B, 3, H, W) in [-1, 1]; None when no mask is given.

    A mask whose size differs from its image, that is not a picture / array / tensor, or has values outside [0, 1] is
    an :class:`lsb.io.images.ImageInputError` naming it (``lsb translate`` resizes a mismatched file with a note
    first). ``mask_feather``: px of the feather band inside the mask (None: :func:`default_feather`).
    """
    if mask_image is None:
        return None
    feather = check_feather(mask_feather)
    batch, height, width = pixels.shape[0], pixels.shape[-2], pixels.shape[-1]
    try:
        mask = preprocess_mask(mask_image, batch, height, width)
    except ImageInputError as e:  # the parser words its errors for inpainting (1 = missing pixel)
        raise ImageInputError(str(e).replace("1 = missing pixel", "white = may change, black = keep")) from None
    mask = mask.to(device=pixels.device, dtype=torch.float32).contiguous()
    feather = default_feather(height, width) if feather is None else feather
    return Region(mask=mask, weights=feather_weights(mask, feather), pixels=pixels.float())


def is_empty(region: Region | None) -> bool:
    """True for a region with nothing to change; logs the one line that says the input is returned."""
    if region is None or not region.empty:
        return False
    logger.warning("mask_image is all black (nothing may change): the input is returned unchanged, no model call made")
    return True


def latent_mask(mask: torch.Tensor, latent_height: int, latent_width: int) -> torch.Tensor:
    """A pixel mask (B, 1, H, W) on the latent grid (B, 1, h, w): the maximum over each cell's pixels, so that a latent
    cell any changeable pixel touches may change (soft values keep their maximum)."""
    return F.adaptive_max_pool2d(mask, (latent_height, latent_width))


def layout_mask(
    region: Region | None, latents: torch.Tensor, layout: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor | None:
    """``region``'s :func:`latent_mask` for the VAE latents ``latents`` (B, C, h, w), expanded to their channels and
    mapped by ``layout`` to the loop's layout (e.g. FLUX's ``pack_latents``); None without a region."""
    if region is None:
        return None
    mask = region.latent_mask(latents.shape[-2], latents.shape[-1], like=latents).expand_as(latents)
    return mask if layout is None else layout(mask)


def derived_noise(like: torch.Tensor, generator) -> torch.Tensor:
    """A standard normal draw shaped like ``like`` from fresh CPU generators seeded with ``generator``'s initial seed
    (one per image for a list of generators), so the caller's generator is not consumed; unseeded without one."""
    gens = generator if isinstance(generator, list) else [generator] * like.shape[0]
    if len(gens) != like.shape[0]:
        raise ValueError(f"{len(gens)} generators for {like.shape[0]} images")
    draws = [
        torch.randn(
            like.shape[1:], generator=None if g is None else torch.Generator().manual_seed(g.initial_seed() + 1)
        )
        for g in gens
    ]
    return torch.stack(draws).to(device=like.device, dtype=like.dtype)


def blend(latents: torch.Tensor, mask: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """``mask * latents + (1 - mask) * kept`` in float32 (or float64), cast back to ``latents``' dtype; a mask of
    ones returns ``latents`` exactly."""
    work = latents.dtype if latents.dtype == torch.float64 else torch.float32
    m = mask.to(device=latents.device, dtype=work)
    out = m * latents.to(work) + (1 - m) * kept.to(device=latents.device, dtype=work)
    return out.to(latents.dtype)


def bridge_kept_state(source: torch.Tensor, noise: torch.Tensor, t: float, tau: float) -> torch.Tensor:
    """The LSB bridge marginal from the source to itself at bridge time ``t``: x_src + sigma_t z (x_src at t = 1)."""
    return sb_marginal(source, source, t, tau, noise)


def bridge_region_blend(
    region: Region | None,
    scheduler,
    source_latents: torch.Tensor,
    initial_latents: torch.Tensor,
    layout: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RegionBlend | None:
    """The LSB loop's blend (:func:`lsb.helpers.bridge_loop.integrate_bridge`'s ``region_blend``) for ``region``.

    ``source_latents`` are the VAE latents (B, C, h, w), ``initial_latents`` the initial bridge state x_{t0} in the
    loop's layout (``layout`` maps (B, C, h, w) to it, e.g. FLUX's ``pack_latents``; None: the same). The z of the
    kept path is the one of x_{t0} = (1 - t0) x_src + sigma_{t0} z, recovered from it, so the kept region starts from
    the same draw. Before call ``i`` the kept region is :func:`bridge_kept_state` at that call's bridge time
    (``scheduler.bridge_times[i]``, the level the call's SNR matching assumes); the final state gets x_src.
    """
    if region is None:
        return None
    mask = layout_mask(region, source_latents, layout)
    layout = layout or (lambda x: x)
    work = torch.float64 if initial_latents.dtype == torch.float64 else torch.float32
    source = layout(source_latents).to(work)
    times, tau = scheduler.bridge_times, scheduler.schedule_tau
    t_start = float(times[0])
    noise = (initial_latents.to(work) - (1 - t_start) * source) / float(sb_sigma(t_start, tau))

    def region_blend(latents: torch.Tensor, i: int) -> torch.Tensor:
        t = float(times[i]) if i < len(times) else 1.0
        return blend(latents, mask, bridge_kept_state(source, noise, t, tau))

    return region_blend


def decode_region(vae, image_processor, latents: torch.Tensor, output_type: str, region: Region | None):
    """Decode model latents (B, C, h, w) to ``output_type`` as :func:`lsb.io.latents.decode_latents`, pasted onto the
    input outside the mask when ``region`` is given ("latent" returns the latents, whose kept cells are x_src)."""
    if region is None or output_type == "latent":
        return decode_latents(vae, image_processor, latents, output_type)
    decoded = decode_pixels(vae, latents)
    return image_processor.postprocess(region.paste(decoded.float()), output_type=output_type)


def passthrough(image_processor, region: Region, output_type: str, encode: Callable | None = None):
    """The input itself as ``output_type`` (an empty mask): pixels postprocessed, or ``encode(pixels)`` for
    "latent"."""
    if output_type == "latent":
        if encode is None:
            raise ValueError("output_type='latent' with an empty mask needs the pipeline's encoder")
        return encode(region.pixels)
    return image_processor.postprocess(region.pixels, output_type=output_type)


def check_mask_method(method: str, mask_image) -> None:
    """ValueError (one line) when a mask is given to a method that cannot take one."""
    if mask_image is not None and method not in MASK_METHODS:
        raise ValueError(f"method {method!r} cannot take a mask; masks work with {', '.join(MASK_METHODS)}")


__all__ = [
    "MASK_METHODS",
    "Region",
    "RegionBlend",
    "blend",
    "bridge_kept_state",
    "bridge_region_blend",
    "check_feather",
    "check_mask_method",
    "decode_region",
    "default_feather",
    "derived_noise",
    "feather_weights",
    "is_empty",
    "latent_mask",
    "layout_mask",
    "passthrough",
    "prepare_region",
]
