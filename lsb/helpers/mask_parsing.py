"""Inpainting masks given by users: THE mask parser of the project (:func:`preprocess_mask`) and the paste-back of
the known pixels (:func:`paste_known`)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from ..io.images import ImageInputError


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


__all__ = ["paste_known", "preprocess_mask"]
