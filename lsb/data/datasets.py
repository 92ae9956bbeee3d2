"""Torch datasets over the shapes world and over users' image folders.

All of them are deterministic: item ``i`` of a shapes dataset is scene ``i`` of its split (see
:func:`lsb.data.shapes.scene_rng`), and any per-item randomness (caption augmentation) is drawn from a
generator seeded by ``(seed, i)``, so two workers or two runs see identical data.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..io.images import ImageInputError, list_images, load_image
from . import shapes
from .degradations import DEGRADATIONS, degrade, inpaint_mask


def to_tensor(img) -> torch.Tensor:
    """PIL RGB -> float tensor (3, H, W) in [-1, 1] (the range SD's VAE expects)."""
    arr = np.asarray(img, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


class ShapesDataset(Dataset):
    """Rendered scenes of a split with captions.

    Args:
        split: "train", "val" or "test".
        size: number of items.
        captions: "full" (always the full caption), "augment" (random variant incl. empty, seeded per item)
            or "none".
        seed: seed of the caption augmentation.
        start: index of the first scene in the split.
        **fixed: pin scene attributes, e.g. ``shape="circle"`` for a domain.
    """

    def __init__(self, split: str = "train", size: int = 1000, captions: str = "full", seed: int = 0, start: int = 0,
                 **fixed):
        if captions not in ("full", "augment", "none"):
            raise ValueError(f"captions must be 'full', 'augment' or 'none', got {captions!r}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        shapes.scene_rng(split, 0)  # validates the split name
        self.split, self.size, self.captions, self.seed, self.start, self.fixed = split, size, captions, seed, start, fixed
        shapes.sample_scene(shapes.scene_rng(split, start), **fixed)  # validates pinned attributes early

    def __len__(self) -> int:
        return self.size

    def scene(self, i: int) -> shapes.Scene:
        if not 0 <= i < self.size:
            raise IndexError(i)
        return shapes.sample_scene(shapes.scene_rng(self.split, self.start + i), **self.fixed)

    def __getitem__(self, i: int) -> dict:
        s = self.scene(i)
        item = {"pixel_values": to_tensor(shapes.render(s)), "scene": s.to_dict()}
        if self.captions == "full":
            item["caption"] = s.caption
        elif self.captions == "augment":
            item["caption"] = shapes.augmented_caption(s, np.random.default_rng([self.seed, self.start + i]))
        return item


class PairedShapesDataset(ShapesDataset):
    """(clean, degraded) pairs for a restoration task of WORLD.md: inpaint, sr4, deblur or jpeg."""

    def __init__(self, task: str, split: str = "train", size: int = 1000, start: int = 0, **fixed):
        if task not in DEGRADATIONS:
            raise ValueError(f"unknown restoration task {task!r}; choose from {sorted(DEGRADATIONS)}")
        super().__init__(split, size, captions="none", start=start, **fixed)
        self.task = task

    def __getitem__(self, i: int) -> dict:
        s = self.scene(i)
        clean = shapes.render(s)
        item = {"clean": to_tensor(clean), "degraded": to_tensor(degrade(clean, self.task)), "scene": s.to_dict()}
        if self.task == "inpaint":
            item["mask"] = torch.from_numpy(inpaint_mask(shapes.IMAGE_SIZE))[None].float()
        return item


class ImageFolderDataset(Dataset):
    """A user's folder (or list of files/folders) of images, as RGB tensors in [-1, 1] of one size.

    Every file is opened once up front so that a bad file is reported by name before any training
    starts. Images are centre-cropped to a square and resized to ``resolution``. Files that are not
    8-bit RGB are refused by name unless ``convert_mode`` (then converted as ``lsb.io.images.to_rgb`` does).
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], resolution: int = 64,
                 transform: Callable | None = None, convert_mode: bool = False):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.files = list_images(paths)
        self.resolution = resolution
        self.transform = transform
        self.convert_mode = convert_mode
        for f in self.files:
            load_image(f, convert=convert_mode)  # raises ImageInputError naming the file

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int):
        from PIL import Image

        img = load_image(self.files[i], convert=self.convert_mode)
        w, h = img.size
        side = min(w, h)
        if side < 8:
            raise ImageInputError(f"{self.files[i]}: image of {w}x{h} px is too small")
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
        if img.size != (self.resolution, self.resolution):
            img = img.resize((self.resolution, self.resolution), Image.BICUBIC)
        return img

    def __getitem__(self, i: int) -> dict:
        img = self.load(i)
        x = to_tensor(img)
        if self.transform is not None:
            x = self.transform(x)
        return {"pixel_values": x, "path": str(self.files[i])}


def collate(items: list[dict]) -> dict:
    """Stack tensors, keep everything else as lists (for DataLoader(collate_fn=collate))."""
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


__all__ = ["ShapesDataset", "PairedShapesDataset", "ImageFolderDataset", "collate", "to_tensor"]
