"""Learn a domain token on an SD3-architecture model (in both CLIP encoders and T5), then edit with it.

    python examples/learn_domain_sd3.py [--model lsb.MINI_SD3 | <sd3 folder>] [--steps 200] [--out outputs/sd3-domain]
    python examples/learn_domain_sd3.py --tiny --steps 2    # a tiny random SD3: shows the API

The file ``<out>/learned_embeds.safetensors`` holds one embedding per text encoder (``clip_l``, ``clip_g``,
``t5xxl``), learned with the flow-matching loss; ``lsb translate --model <sd3> --source <out> ...`` and
``lsb.prompts.domains.load_domain(pipe, <out>)`` load it. FLUX.1 folders work the same way (``clip_l``, ``t5xxl``).
"""

import argparse
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

import lsb
from lsb.data import shapes
from lsb.prompts.domains import load_domain
from lsb.training.prompt_optimization import learn_domain

ap = argparse.ArgumentParser()
ap.add_argument("--model", default=lsb.MINI_SD3)
ap.add_argument("--tiny", action="store_true", help="a tiny random SD3 (no weights needed)")
ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--out", default="outputs/sd3-domain")
args = ap.parse_args()

if args.tiny or not (Path(args.model) / "model_index.json").is_file():
    from diffusers import StableDiffusion3Pipeline

    from lsb.models.random_flow import tiny_sd3_components

    print("using a tiny random SD3 (untrained: the token learns nothing useful)")
    model = StableDiffusion3Pipeline(**tiny_sd3_components())
else:
    model = args.model

images = Path(tempfile.mkdtemp()) / "circles"  # 20 unlabelled circles: the domain
images.mkdir()
for i, scene in enumerate(shapes.scenes("train", 20, shape="circle")):
    shapes.render(scene).save(images / f"{i:03d}.png")
path = learn_domain(
    images,
    "<circle>",
    model,
    output_dir=args.out,
    steps=args.steps,
    batch_size=4,
    num_validation_images=0,
    resolution=64,
    progress=False,
)
with safe_open(str(path), "pt") as f:
    print("learned:", {k: tuple(f.get_tensor(k).shape) for k in f.keys()}, "->", path)

if isinstance(model, str):
    pipe = lsb.FlowEditSD3Pipeline.from_pretrained(model)
else:
    pipe = lsb.FlowEditSD3Pipeline(**tiny_sd3_components())
source = load_domain(pipe, str(path))  # "a <circle>": the token now lives in all three encoders
scene = shapes.scenes("test", 1, shape="circle")[0]
out = pipe(
    shapes.render(scene),
    source,
    scene.replace(shape="square").caption,
    num_inference_steps=12,
    n_max=8,
    generator=torch.Generator().manual_seed(0),
)
print(f"edited with source prompt {source!r}: NFE {out.nfe}, {out.forward_passes} forward passes")
