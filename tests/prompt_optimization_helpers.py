"""What the prompt-optimization tests of every model family share: the domain images, the short run's settings and
the check that only the new token's embedding rows train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

#: learn_domain's settings for a 3-step run on 64 px images (no validation images, no progress bar).
LEARN_KW = dict(
    steps=3,
    batch_size=2,
    checkpoint_every=2,
    num_validation_images=0,
    resolution=64,
    progress=False,
    learning_rate=0.05,
)


def write_noise_images(folder: Path, n: int = 3) -> Path:
    """``n`` 64 x 64 uniform-noise RGB images ``0.png`` ... (seeds 0 ... n-1) in ``folder``; returns it."""
    for i in range(n):
        arr = np.random.default_rng(i).uniform(0, 255, (64, 64, 3)).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i}.png")
    return folder


def assert_only_new_rows_train(task, output_dir: Path, weight_decay: float) -> None:
    """Train ``task`` (a PromptOptimizationTask) for 2 steps; in every text encoder's embedding matrix the new token's
    rows must change and every other row must stay bit-identical (weight decay included)."""
    from lsb.training.loop import TrainConfig, train

    orig = {k: e.weight.detach().clone() for k, e in task.embeddings.items()}
    train(
        task,
        TrainConfig(
            output_dir=str(output_dir),
            max_steps=2,
            learning_rate=5e-2,
            weight_decay=weight_decay,
            progress=False,
            checkpoint_every=100,
        ),
    )
    for key, emb in task.embeddings.items():
        w = emb.weight.detach()
        rows = torch.zeros(w.shape[0], dtype=torch.bool)
        rows[task.slot_token_ids[key]] = True
        assert torch.equal(w[~rows], orig[key][~rows]), key
        assert not torch.equal(w[rows], orig[key][rows]), key
