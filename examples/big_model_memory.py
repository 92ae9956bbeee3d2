"""Run a model in less memory: the estimate from the folder's weight files, int8 quantization (torchao) of the
transformer and the text encoders, and (on a GPU) CPU offload.

    python examples/big_model_memory.py [--model lsb.MINI_SD3 | <SD3 / FLUX.1 folder>] [--offload model] [--nfe 4]

On a GPU, ``--offload model`` keeps one component on it at a time; on the CPU offload is refused (one line).
"""

import argparse

import torch

import lsb
from lsb.data import shapes
from lsb.families import detect_family
from lsb.helpers.memory import MemoryEstimate, component_bytes
from lsb.io.images import save_image

ap = argparse.ArgumentParser()
ap.add_argument("--model", default=lsb.MINI_SD3)
ap.add_argument("--offload", default="none", choices=("none", "model", "sequential"))
ap.add_argument("--nfe", type=int, default=4)
ap.add_argument("--out", default="outputs/big_model_memory.png")
args = ap.parse_args()

family = detect_family(args.model)
for quantize in (None, "int8"):  # what the weights take, read from the safetensors headers only
    sizes = component_bytes(args.model, torch.bfloat16, quantize, family)
    print(f"bfloat16{' + int8' if quantize else ''}: {MemoryEstimate(sizes, 'none').weights / 1e6:.1f} MB of weights")

pipe = lsb.AutoPipelineForTranslation.from_pretrained(args.model, method="lsb", quantize="int8", offload=args.offload)
scene = shapes.scenes("test", 1, shape="circle")[0]
out = pipe(
    [shapes.render(scene)],
    source_prompt=scene.caption,
    target_prompt=scene.replace(shape="square").caption,
    num_inference_steps=args.nfe,
    generator=torch.Generator().manual_seed(0),
)
save_image(out.images[0], args.out)
print(f"translated with an int8 transformer ({out.nfe} network calls): {args.out}")
