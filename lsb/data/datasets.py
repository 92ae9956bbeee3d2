"""Torch datasets over the shapes world and over users' image folders.

All of them are deterministic: item ``i`` of a shapes dataset is scene ``i`` of its split (see
:func:`lsb.data.shapes.scene_rng`), and any per-item randomness (caption augmentation) is drawn from a
generator seeded by ``(seed, i)``, so two workers or two runs see identical data.
"""

from __future__ import annotations


import numpy as np
import torch
from torch.utils.data import Dataset

from . import shapes
from .degradations import DEGRADATIONS, degrade, inpaint_mask
from ..io.images import uint8_to_pixels


def to_tensor(img) -> torch.Tensor:
    """PIL RGB -> float tensor (3, H, W) in [-1, 1] (the range SD's VAE expects)."""
    return uint8_to_pixels(img)


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

    def __init__(
        self, split: str = "train", size: int = 1000, captions: str = "full", seed: int = 0, start: int = 0, **fixed
    ):
        if captions not in ("full", "augment", "none"):
            raise ValueError(f"captions must be 'full', 'augment' or 'none', got {captions!r}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        shapes.scene_rng(split, 0)  # validates the split name
        self.split, self.size, self.captions, self.seed, self.start, self.fixed = (
            split,
            size,
            captions,
            seed,
            start,
            fixed,
        )
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


def collate(items: list[dict]) -> dict:
    """Stack tensors, keep everything else as lists (for DataLoader(collate_fn=collate))."""
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


__all__ = ["ShapesDataset", "PairedShapesDataset", "collate", "to_tensor"]
