"""LSB and FlowEdit on the LLM-encoder families (Z-Image, Qwen-Image, FLUX.2 klein) through one entry point.

    python examples/translate_llm_families.py --model ./Z-Image-Turbo [--nfe 8] [--out outputs/llm_families.png]
    python examples/translate_llm_families.py --tiny zimage|qwenimage|flux2   # tiny random models: shows the API

``lsb.AutoPipelineForTranslation`` reads the family from the folder and loads its pipeline in the family's dtype;
``offload=`` / ``quantize=`` fit the big ones on smaller GPUs (docs/guides/big-models.md).
"""

import argparse
import tempfile
from pathlib import Path

import torch

import lsb
from lsb.data import shapes
from lsb.io.images import make_grid, save_image

ap = argparse.ArgumentParser()
ap.add_argument("--model", default=None, help="a Z-Image, Qwen-Image or FLUX.2 klein diffusers folder")
ap.add_argument("--tiny", choices=("zimage", "qwenimage", "flux2"), default=None)
ap.add_argument("--nfe", type=int, default=8)
ap.add_argument("--size", type=int, default=None, help="image side (default: 64 for --tiny, else 1024)")
ap.add_argument("--out", default="outputs/llm_families.png")
args = ap.parse_args()

model = args.model
if model is None:
    import diffusers

    from lsb.models import random_zimage

    kind = args.tiny or "zimage"
    print(f"using a tiny random {kind} (untrained: the output is noise)")
    cls, components, extra = {
        "zimage": (diffusers.ZImagePipeline, random_zimage.tiny_zimage_components, {}),
        "qwenimage": (diffusers.QwenImagePipeline, random_zimage.tiny_qwenimage_components, {}),
        "flux2": (diffusers.Flux2KleinPipeline, random_zimage.tiny_flux2_klein_components, {"is_distilled": False}),
    }[kind]
    model = str(Path(tempfile.mkdtemp()) / kind)
    cls(**components(), **extra).save_pretrained(model)
size = args.size or (64 if args.model is None else 1024)

scene = shapes.scenes("test", 1, shape="circle")[0]
source = shapes.render(scene).resize((size, size))
outputs = [source]
for method in ("lsb", "flowedit"):
    pipe = lsb.AutoPipelineForTranslation.from_pretrained(model, method=method)
    kw = {"num_inference_steps": args.nfe} if method == "lsb" else {}
    out = pipe(source, "a photo of a circle", "a photo of a square", generator=torch.Generator().manual_seed(0), **kw)
    print(f"{method}: {type(pipe).__name__}, {out.nfe} network calls")
    outputs.append(out.images[0])
save_image(make_grid(outputs, nrow=3), args.out)
print(f"source | LSB | FlowEdit: {args.out}")
