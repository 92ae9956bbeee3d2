"""The paired degradations of the shapes world (WORLD.md, "Tasks defined on the world").

Each degradation is a pure function ``PIL RGB image -> PIL RGB image`` of the same size; the clean
scene is the restoration target and the degraded picture the condition:

- ``inpaint``: a centred 24 x 24 box set to mid-gray (128, 128, 128) (:func:`inpaint_box`);
- ``sr4``: box-downsample by 4 (64 -> 16), then bicubic-upsample back (:func:`sr4`);
- ``deblur``: Gaussian blur with standard deviation 2 px (:func:`blur`);
- ``jpeg``: JPEG encode/decode at quality 10 with PIL (:func:`jpeg`).

The functions accept any image size (``sr4`` needs sides divisible by the factor) and never modify
their input. :func:`degrade` looks a task up by name in :data:`DEGRADATIONS`.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

INPAINT_BOX = 24
INPAINT_FILL = (128, 128, 128)
SR_FACTOR = 4
BLUR_SIGMA = 2.0
JPEG_QUALITY = 10


def _check_rgb(img, fn: str) -> Image.Image:
    """``img`` if it is a PIL RGB image, else a clear TypeError/ValueError naming ``fn``."""
    if not isinstance(img, Image.Image):
        raise TypeError(f"{fn}: expected a PIL.Image.Image in mode 'RGB', got {type(img).__name__}")
    if img.mode != "RGB":
        raise ValueError(f"{fn}: expected an RGB image, got mode {img.mode!r} (use img.convert('RGB'))")
    return img


def _box_bounds(height: int, width: int, box: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a centred ``box`` x ``box`` square in a height x width image."""
    if not isinstance(box, (int, np.integer)) or isinstance(box, bool):
        raise TypeError(f"box must be an int, got {type(box).__name__}")
    if not 0 < box <= min(height, width):
        raise ValueError(f"box={box} must be in [1, {min(height, width)}] for a {width}x{height} image")
    top, left = (height - box) // 2, (width - box) // 2
    return top, left, top + box, left + box


def inpaint_mask(size: int | tuple[int, int] = 64, box: int = INPAINT_BOX) -> np.ndarray:
    """Boolean (H, W) mask of the inpainting hole: True where :func:`inpaint_box` removes pixels.

    ``size`` is the side of a square image or an (H, W) pair.
    """
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    h, w = int(h), int(w)
    if h <= 0 or w <= 0:
        raise ValueError(f"inpaint_mask: size must be positive, got {size!r}")
    top, left, bottom, right = _box_bounds(h, w, box)
    mask = np.zeros((h, w), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def inpaint_box(img: Image.Image, box: int = INPAINT_BOX, fill: tuple[int, int, int] = INPAINT_FILL) -> Image.Image:
    """Inpainting input: a centred ``box`` x ``box`` square set to ``fill`` (mid-gray by default)."""
    img = _check_rgb(img, "inpaint_box")
    if len(fill) != 3 or not all(0 <= int(v) <= 255 for v in fill):
        raise ValueError(f"inpaint_box: fill must be three values in 0..255, got {fill!r}")
    arr = np.array(img, dtype=np.uint8)  # a copy: the input is left untouched
    arr[inpaint_mask((img.height, img.width), box)] = np.asarray(fill, dtype=np.uint8)
    return Image.fromarray(arr, mode="RGB")


def sr4(img: Image.Image, factor: int = SR_FACTOR) -> Image.Image:
    """Super-resolution input: box-downsample by ``factor`` (64 -> 16), then bicubic-upsample back."""
    img = _check_rgb(img, "sr4")
    if img.width % factor or img.height % factor:
        raise ValueError(f"sr4: image size {img.width}x{img.height} is not divisible by the factor {factor}")
    small = img.reduce(factor)  # exact box filter over factor x factor blocks
    return small.resize(img.size, Image.Resampling.BICUBIC)


def blur(img: Image.Image, sigma: float = BLUR_SIGMA) -> Image.Image:
    """Deblurring input: Gaussian blur with standard deviation ``sigma`` px (PIL's radius is sigma)."""
    img = _check_rgb(img, "blur")
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"blur: sigma must be a finite number >= 0, got {sigma}")
    if sigma == 0:
        return img.copy()
    return img.filter(ImageFilter.GaussianBlur(radius=sigma))


def jpeg(img: Image.Image, quality: int = JPEG_QUALITY) -> Image.Image:
    """JPEG-restoration input: encode at ``quality`` with PIL in memory and decode again."""
    img = _check_rgb(img, "jpeg")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"jpeg: quality must be in [1, 100], got {quality}")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return decoded.convert("RGB")


DEGRADATIONS: dict[str, Callable[..., Image.Image]] = {
    "inpaint": inpaint_box,
    "sr4": sr4,
    "deblur": blur,
    "jpeg": jpeg,
}


def degrade(img: Image.Image, task: str, **kwargs) -> Image.Image:
    """Apply the degradation of restoration ``task`` (a key of :data:`DEGRADATIONS`) to ``img``.

    Keyword arguments are passed on (e.g. ``degrade(img, "jpeg", quality=30)``).
    """
    try:
        fn = DEGRADATIONS[task]
    except (KeyError, TypeError):
        raise ValueError(f"unknown degradation task {task!r}; valid tasks: {', '.join(DEGRADATIONS)}") from None
    return fn(img, **kwargs)
