"""Draw with the embedded mini SD3 (a rectified-flow model) through the stock diffusers StableDiffusion3Pipeline,
and read the pictures back.

    python examples/generate_mini_sd3.py --steps 25 --guidance 3 --out mini_sd3.png
"""

import argparse

import torch
from diffusers import StableDiffusion3Pipeline

import lsb
from lsb.io.images import save_grid
from lsb.metrics.reader import read_batch

ap = argparse.ArgumentParser()
ap.add_argument("--model", default=lsb.MINI_SD3, help="an SD3 pipeline folder (default: the embedded lsb.MINI_SD3)")
ap.add_argument("--steps", type=int, default=25, help="Euler steps of the flow-matching scheduler")
ap.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance (the documented setting: 3)")
ap.add_argument("--out", default="mini_sd3.png")
args = ap.parse_args()

pipe = StableDiffusion3Pipeline.from_pretrained(args.model)  # float32 as stored: no dtype needed on the CPU
pipe.set_progress_bar_config(disable=True)
prompts = [
    "a red circle on a white background",
    "a blue square on a black background",
    "a yellow triangle on a gray background",
    "a green circle on a black background",
    "a triangle",
]
images = pipe(
    prompts,
    num_inference_steps=args.steps,
    guidance_scale=args.guidance,
    output_type="pt",
    generator=torch.Generator().manual_seed(0),
).images
save_grid(images * 2 - 1, args.out, nrow=len(prompts))
print(f"{len(prompts)} images, {args.steps} Euler steps, guidance {args.guidance:g} -> {args.out}")
for p, r in zip(prompts, read_batch(images)):
    print(f"  {p!r}: read back {r.colour} {r.shape} on {r.background} (clean={r.clean})")
