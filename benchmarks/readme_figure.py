"""The README's picture: held-out inputs, the LSB trajectory x_t and the output, on the embedded mini SD.

One row per direction (circle -> square, square -> triangle, triangle -> circle; one test scene each). Columns:
the input, the bridge state x_t after each Euler step (decoded with the VAE), and the translated output (after the
final denoise). The
settings are the embedded model's defaults (``lsb_defaults.json``), so the output is what
``lsb translate --source "a circle" --target "a square"`` gives for the same picture and seed.

    python -m benchmarks.readme_figure            # writes docs/assets/lsb-trajectory.png

Each row is also read back by the shapes-world reader and printed, so the picture is not chosen by eye.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

import lsb
from lsb.data import shapes
from lsb.io.images import make_grid, save_image
from lsb.metrics import read_scene

ROOT = Path(__file__).resolve().parents[1]
DIRECTIONS = [("circle", "square"), ("square", "triangle"), ("triangle", "circle")]


def figure(pipe, nfe: int, seed: int, scale: int) -> tuple[Image.Image, list[str]]:
    tiles, lines, nsteps = [], [], 0
    for k, (src, tgt) in enumerate(DIRECTIONS):
        scene = shapes.scenes("test", 1, start=k, shape=src)[0]  # a different held-out scene per row
        image = shapes.render(scene)
        out = pipe(
            image,
            source_prompt=f"a {src}",
            target_prompt=f"a {tgt}",
            num_inference_steps=nfe,
            generator=torch.Generator().manual_seed(seed),
            return_trajectory=True,
        )
        steps = out.trajectory[:-1]  # the last entry is the final denoise, whose state is the output's latent
        states = pipe.decode_latents(torch.cat([s["x_t"] for s in steps]), output_type="pil")
        nsteps = len(steps)
        tiles += [image, *states, out.images[0]]
        r = read_scene(out.images[0])
        lines.append(f"{scene.caption} -> {tgt}: read back a {r.colour} {r.shape} on a {r.background} background")
    ncol = len(tiles) // len(DIRECTIONS)
    tiles = [t.resize((t.width * scale, t.height * scale), Image.NEAREST) for t in tiles]
    grid = make_grid(tiles, nrow=ncol)
    header = ["input", *[f"x_t, step {i + 1}" for i in range(nsteps)], "output"]
    head_h = 18
    canvas = Image.new("RGB", (grid.width, grid.height + head_h), (255, 255, 255))
    canvas.paste(grid, (0, head_h))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    w = tiles[0].width
    for c, text in enumerate(header):
        draw.text((2 + c * (w + 2) + w / 2, head_h / 2), text, fill=(0, 0, 0), font=font, anchor="mm")
    return canvas, lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=lsb.MINI_SD, help="SD folder (default: the embedded mini SD)")
    ap.add_argument("--nfe", type=int, default=8, help="UNet evaluations per image")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bridge noise")
    ap.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling of the 64 px tiles")
    ap.add_argument("--out", default=str(ROOT / "docs" / "assets" / "lsb-trajectory.png"), help="output PNG")
    args = ap.parse_args(argv)
    pipe = lsb.LatentSchrodingerBridgePipeline.from_pretrained(args.model)
    canvas, lines = figure(pipe, args.nfe, args.seed, args.scale)
    print("\n".join(lines))
    print(f"wrote {save_image(canvas, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
