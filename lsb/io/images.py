"""Image I/O: load and validate user images, convert between PIL / numpy / tensors, write grids.

Every loader raises :class:`ImageInputError` naming the offending input, before any model compute.
Writes are atomic (temporary file + rename), so an interrupted run never leaves half a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .files import atomic_path
from .runs import shown

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class ImageInputError(ValueError):
    """A user-supplied image that cannot be used; the message names it and says why."""


def _describe(src) -> str:
    return (
        str(src)
        if isinstance(src, (str, os.PathLike))
        else f"input #{src}"
        if isinstance(src, int)
        else repr(type(src).__name__)
    )


#: what each non-RGB PIL mode is, for error messages
_MODE_WORDS = {
    "RGBA": "RGB with an alpha channel",
    "LA": "grayscale with an alpha channel",
    "L": "8-bit grayscale",
    "1": "1-bit black and white",
    "P": "palette colours",
    "PA": "palette colours with alpha",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "LAB": "Lab",
    "HSV": "HSV",
    "I": "32-bit integer grayscale",
    "I;16": "16-bit grayscale",
    "I;16B": "16-bit grayscale",
    "I;16L": "16-bit grayscale",
    "F": "32-bit float grayscale",
    "RGBX": "RGB with padding",
    "RGBa": "RGB with premultiplied alpha",
}
#: what ``to_rgb(..., allow_convert=True)`` does to other modes
CONVERSIONS = (
    "alpha composited on white, grayscale / palette / CMYK converted to RGB, 16-bit and float scaled to 8 bits"
)


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
            f"command line, lsb.io.images.to_rgb(image, allow_convert=True) in Python"
        )
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
    """Open an image file as RGB, as a person sees it; clear errors for missing, unreadable or non-image files, and
    for files that are not 8-bit RGB unless ``convert`` (then converted as :func:`to_rgb` does).

    * The EXIF orientation is applied (``PIL.ImageOps.exif_transpose``, as diffusers' ``load_image`` does): a phone
      photo stored sideways comes back upright.
    * A file of several frames (an animated GIF / WebP / PNG, a multi-page TIFF) is refused, naming it; with
      ``convert`` its first frame is used and ``info["first_frame_of"]`` holds the frame count (for a note).
    * More than 8 bits per channel is read from the file itself (:func:`bits_per_channel`: PIL opens a 16-bit RGB
      PNG as 8-bit RGB without a word) and refused unless ``convert`` (``info["converted_from"]`` then says so).
    """
    p = Path(path)
    name = name or shown(p)
    if not p.exists():
        raise ImageInputError(f"{name}: no such file")
    if p.is_dir():
        raise ImageInputError(f"{name}: is a folder, not an image file")
    try:
        with Image.open(p) as im:
            frames = getattr(im, "n_frames", 1) or 1
            if frames > 1 and not convert:
                raise ImageInputError(
                    f"{name}: holds {frames} frames (an animation or a multi-page file); lsb translates single "
                    f"pictures: save the frame you want as PNG, or pass --convert-mode to use the first frame"
                )
            bits = bits_per_channel(im, p)
            if frames > 1:
                im.seek(0)
            im.load()
            img = ImageOps.exif_transpose(im.copy()) or im.copy()
    except UnidentifiedImageError:
        raise ImageInputError(f"{name}: not an image file PIL can read") from None
    except (OSError, SyntaxError, EOFError) as e:
        raise ImageInputError(f"{name}: unreadable image ({e})") from None
    if bits > 8 and img.mode in ("RGB", "RGBA"):
        if not convert:
            raise ImageInputError(
                f"{name}: {bits} bits per channel ({img.mode}), expected 8-bit RGB; convert it first, or let lsb "
                f"scale it to 8 bits: `--convert-mode` on the command line, convert=True in Python"
            )
        img = to_rgb(img, name, allow_convert=True)
        img.info["converted_from"] = f"{bits}-bit {img.info.get('converted_from', 'RGB')}"
    else:
        img = to_rgb(img, name, allow_convert=convert)
    if frames > 1:
        img.info["first_frame_of"] = frames
    return img


def bits_per_channel(im: Image.Image, path=None) -> int:
    """Bits per colour channel as the FILE stores them (PIL may have reduced them already): a PNG's ``IHDR`` bit
    depth, a TIFF's ``BitsPerSample``, else what PIL's raw decoder mode says (``;16``: 16)."""
    if im.format == "PNG" and path is not None:
        try:
            with open(path, "rb") as f:
                head = f.read(26)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                return int(head[24])
        except OSError:
            pass
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        if bits:
            return int(max(bits if isinstance(bits, tuple) else (bits,)))
    raw = " ".join(str(getattr(t, "args", t[3] if len(t) > 3 else "")) for t in (getattr(im, "tile", None) or []))
    return 16 if ";16" in raw else 8


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
            f"{name}: size {w}x{h} is not a multiple of {multiple} (the VAE's factor); resize it or pass a target size"
        )
    return img


#: default upper bound on an input's pixels (and on the size a model computes at): a 12-megapixel photo passes,
#: 4096 x 4096 does not
DEFAULT_MAX_PIXELS = 12_000_000
#: how inputs of another size than the model's native one are handled (``lsb translate --size-policy``)
SIZE_POLICIES = ("resize", "exact", "keep")


def model_native_size(folder: str | os.PathLike) -> int | None:
    """The native resolution (pixels per side) of a diffusers model folder, from its configs alone (no torch):
    ``unet`` (or ``transformer``) ``sample_size`` times the VAE's factor ``2 ** (len(block_out_channels) - 1)``;
    None when the folder does not say (then sizes are not changed)."""
    import json

    root = Path(folder)
    try:
        vae = json.loads((root / "vae" / "config.json").read_text())
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
        for name in ("unet", "transformer"):
            cfg = root / name / "config.json"
            if cfg.is_file():
                size = json.loads(cfg.read_text()).get("sample_size")
                if isinstance(size, int):
                    return size * factor
                if isinstance(size, (list, tuple)) and len(set(size)) == 1:
                    return int(size[0]) * factor
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def image_size_of(img) -> tuple[int, int]:
    """(width, height) of a PIL image, an (H, W, C) / (B, H, W, C) array or a (C, H, W) / (B, C, H, W) tensor."""
    if isinstance(img, Image.Image):
        return img.size
    shape = tuple(img.shape)
    if type(img).__module__.startswith("torch"):
        return shape[-1], shape[-2]
    return (shape[-2], shape[-3]) if len(shape) >= 3 else (shape[1], shape[0])


def check_pixels(
    size: tuple[int, int], name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS, flag: str = "--max-pixels"
) -> None:
    """An :class:`ImageInputError` naming ``name`` when ``size`` has more than ``max_pixels`` pixels."""
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageInputError(
            f"{name}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} ({flag}); "
            f"downscale it first or raise {flag}"
        )


def fit_size(
    img: Image.Image,
    name: str,
    native: int | None,
    policy: str = "resize",
    multiple: int = 8,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    flag: str = "--size-policy",
) -> Image.Image:
    """The size policy of the commands for one image of a model whose native resolution is ``native``:

    * ``"resize"`` (default): an image of another size is resized to ``native x native`` (bicubic; the result
      records the input's size in ``info["resized_from"]``, for a note and for resizing the output back);
    * ``"exact"``: an image of another size is refused, naming it, its size and the native one;
    * ``"keep"``: the image runs at its own size, whose sides must be multiples of ``multiple``.

    ``native`` None (unknown) behaves as ``"keep"``. The size computed at must not exceed ``max_pixels``.
    """
    if policy not in SIZE_POLICIES:
        raise ValueError(f"{flag} must be one of {', '.join(SIZE_POLICIES)}, got {policy!r}")
    w, h = img.size
    if native is not None and policy == "resize":
        check_pixels((native, native), name, max_pixels)
        if (w, h) != (native, native):
            info = dict(img.info)
            img = img.resize((native, native), Image.BICUBIC)
            img.info.update(info, resized_from=(w, h))
        return img
    if native is not None and policy == "exact" and (w, h) != (native, native):
        raise ImageInputError(
            f"{name}: size {w}x{h}, but the model's native size is {native}x{native} and "
            f"{flag} exact asks for it; resize the image, or use {flag} resize (default) or keep"
        )
    check_pixels((w, h), name, max_pixels)
    return check_size(img, name, multiple)


def check_pipeline_images(
    images, native: int | None = None, max_pixels: int | None = None, multiple: int = 8, name: str = "image"
) -> None:
    """The pipelines' size policy, called by their ``check_inputs`` before any compute: images run at their own
    size, so every image of one call must share it (a mixed-size list is refused, naming the first differing
    entry, instead of being resized silently), its sides must be multiples of ``multiple`` (the VAE's factor), and
    it must not exceed ``max_pixels`` (None: no bound). ``native`` is only used in the message: resize to it
    first (``lsb.io.images.fit_size``) for the model's best results."""
    items = images if isinstance(images, (list, tuple)) else [images]
    sizes = [image_size_of(im) for im in items]
    if not sizes:
        return
    hint = f" (the model's native size is {native}x{native})" if native else ""
    for i, (w, h) in enumerate(sizes):
        if (w, h) != sizes[0]:
            raise ImageInputError(
                f"{name}[{i}] is {w}x{h} but {name}[0] is {sizes[0][0]}x{sizes[0][1]}: images of "
                f"one call must share a size; resize them first{hint}"
            )
    w, h = sizes[0]
    if w % multiple or h % multiple:
        raise ImageInputError(
            f"{name}: size {w}x{h} is not a multiple of {multiple} (the VAE's factor); resize it first{hint}"
        )
    check_pixels((w, h), name, max_pixels, flag="max_pixels")


def check_unit_range(x, name: str = "image") -> None:
    """An :class:`ImageInputError` (a ``ValueError``) naming ``name`` when a float picture (numpy or torch) holds
    values outside [0, 1], the documented range of float images (0..255 floats or [-1, 1] model pixels would
    otherwise come back as a wrong picture without a word)."""
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        hint = (
            " (0..255 values? divide by 255, or pass uint8)"
            if hi > 1.0
            else " ([-1, 1] values? map them with (x + 1) / 2)"
        )
        raise ImageInputError(
            f"{name}: float pixel values must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]{hint}"
        )


def uint8_to_pixels(x) -> torch.Tensor:
    """THE 8-bit -> model pixel conversion: values 0..255 -> float32 in [-1, 1] (``x / 127.5 - 1``).

    A numpy array or PIL image is channels-last, (H, W, 3) or (N, H, W, 3), and comes back channels-first,
    (3, H, W) or (N, 3, H, W); a torch tensor keeps its layout (already channels-first, e.g. (N, 3, H, W)).
    """
    import torch

    if isinstance(x, Image.Image):
        x = np.asarray(x)
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
        t = t.permute(2, 0, 1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    elif isinstance(x, torch.Tensor):
        t = x
    else:
        raise ImageInputError(f"expected uint8 pixels (numpy, PIL or torch), got {type(x).__name__}")
    return t.float() / 127.5 - 1.0


def pil_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL RGB images of one size -> float tensor in [-1, 1], (B, 3, H, W)."""
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise ImageInputError(f"images in one batch must share a size, got {sorted(sizes)}")
    return uint8_to_pixels(np.stack([np.asarray(im) for im in images]))


def tensor_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """Float tensor in [-1, 1], (B, 3, H, W) -> PIL RGB images."""
    import torch

    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, mode="RGB") for a in arr]


def make_grid(
    images: Sequence[Image.Image], nrow: int | None = None, pad: int = 2, fill=(255, 255, 255)
) -> Image.Image:
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
    """Write atomically (:func:`lsb.io.files.atomic_path`: a short temporary name in the same folder, then a rename;
    a failed write names the file)."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt)
    return path


def save_grid(x: torch.Tensor | Sequence[Image.Image], path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Save a tensor batch in [-1, 1] or a list of PIL images as one grid picture."""
    import torch

    images = tensor_to_pil(x) if isinstance(x, torch.Tensor) else list(x)
    return save_image(make_grid(images, nrow=nrow), path)
