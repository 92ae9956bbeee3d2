"""The paired-restoration registry: the tasks, bridges and samplers lsb knows, and the restoration pipelines' output.

The restoration pipelines (``BridgeRestorationPipeline``: I2SB / DDBM / DBIM bridges; the Palette-style
``ConditionalDiffusionRestorationPipeline`` baseline), their training (:mod:`lsb.training.bridge`) and ``lsb restore``
name their choices from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput

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
#: ``output_type`` values of the restoration pipelines.
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


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
