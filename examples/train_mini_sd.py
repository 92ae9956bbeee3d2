"""Train a mini Stable Diffusion on the shapes world with the project's accelerate recipe.

The defaults here are a short demonstration; the shipped model used `lsb train mini-sd --stage all`
(see docs/embedded-models.md). Rerunning the same command resumes from the newest checkpoint.

    python examples/train_mini_sd.py --out runs/demo [--vae-steps 20 --unet-steps 20]
"""

import argparse

from lsb.training.mini_sd import run_stage

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="runs/demo")
ap.add_argument("--vae-steps", type=int, default=20)
ap.add_argument("--unet-steps", type=int, default=20)
ap.add_argument("--cached-scenes", type=int, default=512)
args = ap.parse_args()

print(run_stage("vae", args.out, vae_steps=args.vae_steps))
print(run_stage("unet", args.out, unet_steps=args.unet_steps, unet_batch=16, cached_scenes=args.cached_scenes))
print(run_stage("export", args.out))  # -> <out>/pipeline, loadable with StableDiffusionPipeline.from_pretrained
