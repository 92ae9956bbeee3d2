"""Restore shapes-world images with DiffIR (lsb.DiffIRPipeline): inpainting or 4x super-resolution.

Uses the model folder given with --model, else the shipped lsb/assets/restoration/diffir-<task> when present,
else trains a small one first (two stages, --train-steps each; --tiny for a toy model that trains in seconds).

    python examples/restore_diffir.py --task inpaint --out restored.png
"""

import argparse
import tempfile
from pathlib import Path

import torch

import lsb
from lsb.io.images import make_grid, save_image, tensor_to_pil
from lsb.training import diffir as training

p = argparse.ArgumentParser()
p.add_argument("--task", choices=["inpaint", "sr4"], default="inpaint")
p.add_argument("--model", default=None, help="a DiffIRPipeline folder")
p.add_argument("--train-steps", type=int, default=300, help="steps per stage when no model folder exists")
p.add_argument("--tiny", action="store_true", help="train a toy model (for a quick check)")
p.add_argument("--n", type=int, default=8, help="test scenes to restore")
p.add_argument("--out", default="restored_diffir.png")
args = p.parse_args()

model = args.model or str(Path(lsb.__file__).parent / "assets" / "restoration" / f"diffir-{args.task}")
if not (Path(model) / "model_index.json").is_file():
    run = Path(tempfile.mkdtemp()) / "run"
    print(f"no model at {model}: training one in {run} ({args.train_steps} steps per stage)")
    flags = ["--tiny", "--cache-size", "16", "--workers", "1"] if args.tiny else []
    training.main(
        ["--task", args.task, "--stage", "diffir", "--out", str(run), "--steps", str(args.train_steps), *flags]
    )
    model = str(run / "s2" / "final")

pipe = lsb.DiffIRPipeline.from_pretrained(model)
pipe.set_progress_bar_config(disable=True)
clean, degraded = training.paired_arrays(args.task, args.n, "test", workers=1)
degraded_pil = tensor_to_pil(degraded.float() / 127.5 - 1)
out = pipe(degraded_pil, generator=torch.Generator().manual_seed(0), output_type="pt")
restored = out.images


def psnr(a, b):
    return float((-10 * torch.log10(((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10))).mean())


c = clean.float() / 255
print(
    f"task {pipe.config.task}: PSNR degraded {psnr(degraded.float() / 255, c):.2f} dB -> restored "
    f"{psnr(restored, c):.2f} dB (NFE {out.nfe}: prior diffusion steps; the DIRformer runs once)"
)
grid = make_grid(degraded_pil + tensor_to_pil(restored * 2 - 1) + tensor_to_pil(c * 2 - 1), nrow=args.n)
print("wrote", save_image(grid, args.out), "(rows: degraded, restored, clean)")
