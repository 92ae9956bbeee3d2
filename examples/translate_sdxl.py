"""Translate an image with the Latent Schrödinger Bridge on Stable Diffusion XL, and compare with SDEdit and DDIB.

    python examples/translate_sdxl.py --model stabilityai/stable-diffusion-xl-base-1.0 --image cat.png \\
        --source "a photo of a cat" --target "a photo of a dog" --size 1024 --nfe 8
    python examples/translate_sdxl.py          # no weights: builds a tiny SDXL-shaped folder (random UNet / text
                                               # encoders, lsb's embedded VAE) and runs every method on it

Any SDXL base folder or Hub repo works (epsilon or v-prediction; the fp16-fix VAE or a force_upcast VAE). With
the real model on a GPU pass ``--dtype float16``. ``lsb translate --model <sdxl> --method {lsb,sdedit,ddib}`` does
the same from the command line.
"""

import argparse
import tempfile
from pathlib import Path

import torch
from PIL import Image

import lsb
from lsb.data import shapes
from lsb.io.images import make_grid, save_image
from lsb.models.sdxl import save_tiny_sdxl
from lsb.surfaces.translators import load_translator, translate

ap = argparse.ArgumentParser()
ap.add_argument("--model", default=None, help="an SDXL folder or Hub id (default: a tiny SDXL built here)")
ap.add_argument("--image", default=None, help="input image (default: a circle of the shapes world)")
ap.add_argument("--source", default="a circle")
ap.add_argument("--target", default="a square")
ap.add_argument("--size", type=int, default=None, help="resize the image to this side (a multiple of 8)")
ap.add_argument("--nfe", type=int, default=8)
ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
ap.add_argument("--out", default="outputs/translate_sdxl.png")
args = ap.parse_args()

model = args.model
if model is None:
    model = str(save_tiny_sdxl(Path(tempfile.mkdtemp()) / "tiny-sdxl"))
    print(f"no --model: a tiny SDXL-shaped model (untrained UNet: the outputs are not translations) at {model}")

image = (
    Image.open(args.image).convert("RGB") if args.image else shapes.render(shapes.scenes("test", 1, shape="circle")[0])
)
if args.size:
    image = image.resize((args.size, args.size))

# 1. the pipeline itself: LSB on SDXL, called like the SD one (plus SDXL's prompt_2 / micro-conditioning options)
pipe = lsb.LatentSchrodingerBridgeXLPipeline.from_pretrained(model, dtype=getattr(torch, args.dtype))
pipe.to("cuda" if torch.cuda.is_available() else "cpu")
out = pipe(
    image,
    source_prompt=args.source,
    target_prompt=args.target,
    num_inference_steps=args.nfe,
    guidance_scale=3.0,
    generator=torch.Generator().manual_seed(0),
)
print(f"lsb    : NFE {out.nfe} (batched UNet calls on [source; target]) -> {out.images[0].size}")
results = [image, out.images[0]]

# 2. the baselines on the same model through the one entry point the CLI uses
for method in ("sdedit", "ddib"):
    base = load_translator(method, model, dtype=getattr(torch, args.dtype))
    images, nfe = translate(
        method,
        base,
        [image],
        args.source,
        args.target,
        nfe=args.nfe,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(0),
    )
    print(f"{method:7s}: NFE {nfe} ({type(base).__name__})")
    results.append(images[0])

save_image(make_grid(results, nrow=len(results)), args.out)
print(f"wrote {args.out}: input | lsb | sdedit | ddib")
