"""Image I/O: load and validate user images, convert between PIL / numpy / tensors, write grids.

Every loader raises :class:`ImageInputError` naming the offending input, before any model compute.
Writes are atomic (temporary file + rename), so an interrupted run never leaves half a PNG.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class ImageInputError(ValueError):
    """A user-supplied image that cannot be used; the message names it and says why."""


def _describe(src) -> str:
    return str(src) if isinstance(src, (str, os.PathLike)) else f"input #{src}" if isinstance(src, int) else repr(type(src).__name__)


#: what each non-RGB PIL mode is, for error messages
_MODE_WORDS = {"RGBA": "RGB with an alpha channel", "LA": "grayscale with an alpha channel", "L": "8-bit grayscale",
               "1": "1-bit black and white", "P": "palette colours", "PA": "palette colours with alpha",
               "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV", "I": "32-bit integer grayscale",
               "I;16": "16-bit grayscale", "I;16B": "16-bit grayscale", "I;16L": "16-bit grayscale",
               "F": "32-bit float grayscale", "RGBX": "RGB with padding", "RGBa": "RGB with premultiplied alpha"}
#: what ``to_rgb(..., allow_convert=True)`` does to other modes
CONVERSIONS = "alpha composited on white, grayscale / palette / CMYK converted to RGB, 16-bit and float scaled to 8 bits"


def to_rgb(img: Image.Image, name: str = "image", allow_convert: bool = False) -> Image.Image:
    """An 8-bit RGB PIL image, or an :class:`ImageInputError` naming ``name`` and its mode.

    With ``allow_convert=True`` other modes are converted instead (RGBA composited on white, L / P / CMYK
    converted, 16-bit and float scaled to 8 bits) and the result records the original mode in
    ``info["converted_from"]``.
    """
    if img.mode == "RGB":
        return img
    if not allow_convert:
        raise ImageInputError(
            f"{name}: mode {img.mode} ({_MODE_WORDS.get(img.mode, 'not RGB')}), expected 8-bit RGB; convert it "
            f"first (e.g. image.convert('RGB')), or let lsb convert it ({CONVERSIONS}): `--convert-mode` on the "
            f"command line, lsb.io.images.to_rgb(image, allow_convert=True) in Python")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        out = Image.fromarray(arr, mode="L").convert("RGB")
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(bg, rgba).convert("RGB")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        out = Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), mode="L").convert("RGB")
    else:
        out = img.convert("RGB")
    out.info["converted_from"] = img.mode
    return out


def load_image(path: str | os.PathLike, name: str | None = None, convert: bool = False) -> Image.Image:
    """Open an image file as RGB; clear errors for missing, unreadable or non-image files, and for files
    that are not 8-bit RGB unless ``convert`` (then converted as :func:`to_rgb` does)."""
    p = Path(path)
    name = name or str(p)
    if not p.exists():
        raise ImageInputError(f"{name}: no such file")
    if p.is_dir():
        raise ImageInputError(f"{name}: is a folder, not an image file")
    try:
        with Image.open(p) as im:
            im.load()
            return to_rgb(im.copy(), name, allow_convert=convert)
    except UnidentifiedImageError:
        raise ImageInputError(f"{name}: not an image file PIL can read") from None
    except (OSError, SyntaxError) as e:
        raise ImageInputError(f"{name}: unreadable image ({e})") from None


def list_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a sorted list of image files; errors for missing or empty inputs."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageInputError(f"{p}: folder contains no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise ImageInputError(f"{p}: no such file or folder")
    if not files:
        raise ImageInputError("no input images given")
    return files


def check_size(img: Image.Image, name: str, multiple: int = 8, resize_to: int | None = None) -> Image.Image:
    """Resize to ``resize_to`` (square) if given, else require both sides to be multiples of ``multiple``."""
    if resize_to is not None:
        if img.size != (resize_to, resize_to):
            img = img.resize((resize_to, resize_to), Image.BICUBIC)
        return img
    w, h = img.size
    if w % multiple or h % multiple:
        raise ImageInputError(
            f"{name}: size {w}x{h} is not a multiple of {multiple} (the VAE's factor); "
            f"resize it or pass a target size")
    return img


def pil_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL RGB images of one size -> float tensor in [-1, 1], (B, 3, H, W)."""
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise ImageInputError(f"images in one batch must share a size, got {sorted(sizes)}")
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def tensor_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """Float tensor in [-1, 1], (B, 3, H, W) -> PIL RGB images."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, mode="RGB") for a in arr]


def make_grid(images: Sequence[Image.Image], nrow: int | None = None, pad: int = 2, fill=(255, 255, 255)) -> Image.Image:
    """Tile equal-size PIL images into one picture, ``nrow`` per row."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    w, h = images[0].size
    nrow = nrow or len(images)
    rows = (len(images) + nrow - 1) // nrow
    grid = Image.new("RGB", (nrow * w + (nrow + 1) * pad, rows * h + (rows + 1) * pad), fill)
    for i, im in enumerate(images):
        r, c = divmod(i, nrow)
        grid.paste(im.convert("RGB").resize((w, h)), (pad + c * (w + pad), pad + r * (h + pad)))
    return grid


def save_image(img: Image.Image, path: str | os.PathLike) -> Path:
    """Write atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format=fmt)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_grid(x: torch.Tensor | Sequence[Image.Image], path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Save a tensor batch in [-1, 1] or a list of PIL images as one grid picture."""
    images = tensor_to_pil(x) if isinstance(x, torch.Tensor) else list(x)
    return save_image(make_grid(images, nrow=nrow), path)
