"""Learn a domain token from a folder of unlabelled images, then translate into that domain.

The folder here is rendered from the shapes world (squares of any colour and background); with your
own data, point ``--images`` at a folder of pictures.

    python examples/learn_domain.py [--steps 300] [--out outputs/learned-square]
"""

import argparse
from pathlib import Path

import torch

import lsb
from lsb.data import shapes
from lsb.prompts.domains import load_domain
from lsb.io.images import make_grid, save_image
from lsb.training.prompt_optimization import learn_domain

ap = argparse.ArgumentParser()
ap.add_argument("--model", default=lsb.MINI_SD)
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--images", type=int, default=200)
ap.add_argument("--out", default="outputs/learned-square")
args = ap.parse_args()

folder = Path(args.out) / "images"
folder.mkdir(parents=True, exist_ok=True)
for i, scene in enumerate(shapes.scenes("train", args.images, start=50_000, shape="square")):
    save_image(shapes.render(scene), folder / f"{i:04d}.png")

embeds = learn_domain(folder, "<my-square>", args.model, output_dir=args.out, steps=args.steps)
print(f"learned {embeds}")

pipe = lsb.LatentSchrodingerBridgePipeline.from_pretrained(args.model)
target = load_domain(pipe, str(embeds))  # -> "a <my-square>"
sources = [shapes.render(s) for s in shapes.scenes("test", 4, shape="circle")]
out = pipe(
    sources,
    source_prompt="a circle",
    target_prompt=target,  # the model's own defaults (lsb_defaults.json)
    generator=torch.Generator().manual_seed(0),
)
save_image(make_grid(sources + out.images, nrow=4), Path(args.out) / "translated.png")
print(f"translated with {target!r}; wrote {Path(args.out) / 'translated.png'}")
