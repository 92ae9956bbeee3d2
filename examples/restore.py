"""Restore degraded shapes-world images with a latent diffusion bridge (I2SB / DDBM / DBIM) in a few lines.

With ``--model DIR`` it loads a trained BridgeRestorationPipeline folder (e.g. runs/bridge-sr4-ddbm-vp/final);
without it, it fine-tunes a DDBM-VP bridge from the embedded mini SD for ``--steps`` steps first (a toy model;
a real one is shipped for inpainting, ``--task inpaint --model lsb/assets/restoration/bridge-inpaint``, and
``python -m lsb.training.bridge`` trains others: about 40 min on 2 CPU cores). It then restores a few validation images with
DBIM (orders 1 and 2) and with DDBM's Heun sampler (or I2SB's), all at NFE 5, and prints PSNR against the
clean renders.

    python examples/restore.py --task sr4 --steps 30 --out restored.png
"""

import argparse

import numpy as np
import torch
from PIL import Image

from lsb.io.images import make_grid, save_image
from lsb.surfaces.restorers import load_restoration_pipeline
from lsb.metrics.pixel import psnr
from lsb.training.bridge import main as train_bridge, render_pairs

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--task", default="sr4", choices=["inpaint", "sr4", "deblur", "jpeg"])
ap.add_argument("--model", default=None, help="trained BridgeRestorationPipeline folder (DDBM-VP or I2SB)")
ap.add_argument("--steps", type=int, default=30, help="training steps when no --model is given")
ap.add_argument("--pairs", type=int, default=256)
ap.add_argument("--batch-size", type=int, default=16)
ap.add_argument("--run", default="runs/example-bridge", help="training run folder (without --model)")
ap.add_argument("--images", type=int, default=4)
ap.add_argument("--out", default="restored.png")
a = ap.parse_args()

model = a.model
if model is None:
    train_bridge(
        [
            "--task",
            a.task,
            "--bridge",
            "ddbm-vp",
            "--out",
            a.run,
            "--steps",
            str(a.steps),
            "--batch-size",
            str(a.batch_size),
            "--pairs",
            str(a.pairs),
            "--ema",
            "0",
            "--sample-images",
            "0",
            "--no-progress",
        ]
    )
    model = f"{a.run}/final"
pipe = load_restoration_pipeline(model)  # any restoration pipeline folder, by its model_index.json
print(pipe.describe())

clean, degraded, _ = render_pairs(a.task, "val", a.images)
inputs = [Image.fromarray(x) for x in degraded]
target = torch.from_numpy(clean).permute(0, 3, 1, 2).float() / 255
rows = [inputs]
samplers = [("dbim", {}, 5), ("dbim", {"solver_order": 2}, 5)]
samplers += [("ddbm", {}, 2)] if pipe.config.trained_bridge["bridge"] in ("vp", "ve") else [("i2sb", {}, 5)]
for sampler, settings, steps in samplers:
    pipe.set_sampler(sampler, **settings)
    out = pipe(
        inputs, num_inference_steps=steps, generator=torch.Generator(pipe.device).manual_seed(0), output_type="pil"
    )
    restored = torch.from_numpy(np.stack([np.asarray(im) for im in out.images])).permute(0, 3, 1, 2).float() / 255
    print(f"{sampler} {settings}: NFE {out.nfe}, PSNR {float(psnr(restored, target).mean()):.2f} dB")
    rows.append(out.images)
rows.append([Image.fromarray(x) for x in clean])
save_image(make_grid([im for row in rows for im in row], nrow=a.images), a.out)
print(f"rows: degraded, {', '.join(s for s, _, _ in samplers)}, clean -> {a.out}")
