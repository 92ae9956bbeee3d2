"""A domain's image folder for prompt optimization: every image, validated, as squares of the model's resolution.

:class:`DomainImages` reads a user's unpaired image folder (or files) once, refuses what cannot be used with a
one-line :class:`~lsb.io.images.ImageInputError`, keeps the pixels as uint8 and encodes them into VAE latents once
(:func:`lsb.io.latents.vae_to_model_latents`). Used by :mod:`lsb.training.prompt_optimization`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..io.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageInputError,
    check_pixels,
    list_images,
    load_image,
    uint8_to_pixels,
)
from ..io.latents import vae_to_model_latents

logger = logging.getLogger(__name__)


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


__all__ = ["DomainImages"]
