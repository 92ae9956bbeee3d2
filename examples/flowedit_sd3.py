"""Edit circles into squares with FlowEdit (Kulikov et al. 2025) on an SD3-architecture model, next to LSB.

    python examples/flowedit_sd3.py [--model lsb.MINI_SD3 | <sd3 folder>] [--nfe N] [--out outputs/flowedit_sd3.png]
    python examples/flowedit_sd3.py --tiny     # a tiny random SD3 of the real classes: shows the API, draws noise

Without --nfe FlowEdit runs its paper setting (T=50 grid, n_max=33 steps, CFG 3.5 on the source branch and 13.5
on the target branch). Both pipelines report NFE two ways: batched transformer calls (``nfe``) and latents
evaluated per image (``forward_passes``: FlowEdit 4 per call, LSB 2). FLUX.1 folders: lsb.FlowEditFluxPipeline.
"""

import argparse
from pathlib import Path

import torch

import lsb
from lsb.data import shapes
from lsb.io.images import make_grid, save_image
from lsb.metrics import read_scene

ap = argparse.ArgumentParser()
ap.add_argument("--model", default=lsb.MINI_SD3)
ap.add_argument("--tiny", action="store_true", help="a tiny random SD3 (no weights needed)")
ap.add_argument("--nfe", type=int, default=None, help="FlowEdit steps n_max (grid T = 50/33 n_max); default: paper")
ap.add_argument("--out", default="outputs/flowedit_sd3.png")
args = ap.parse_args()

if args.tiny or not (Path(args.model) / "model_index.json").is_file():
    from lsb.models.random_flow import tiny_sd3_components

    print("using a tiny random SD3 (untrained: the output is noise)")
    components = tiny_sd3_components()
    flowedit = lsb.FlowEditSD3Pipeline(**components)
    bridge = lsb.LatentSchrodingerBridgeSD3Pipeline(**components)
else:
    flowedit = lsb.FlowEditSD3Pipeline.from_pretrained(args.model)
    bridge = lsb.LatentSchrodingerBridgeSD3Pipeline.from_pretrained(args.model)

scenes = shapes.scenes("test", 4, shape="circle")  # held-out scenes of the source domain
sources = [shapes.render(s) for s in scenes]
source_prompt = [s.caption for s in scenes]
target_prompt = [s.replace(shape="square").caption for s in scenes]
steps = {} if args.nfe is None else {"num_inference_steps": round(args.nfe * 50 / 33), "n_max": args.nfe}
edited = flowedit(sources, source_prompt, target_prompt, generator=torch.Generator().manual_seed(0), **steps)
translated = bridge(
    sources,
    source_prompt=source_prompt,
    target_prompt=target_prompt,
    num_inference_steps=8,
    generator=torch.Generator().manual_seed(0),
)
for scene, a, b in zip(scenes, edited.images, translated.images):
    ra, rb = read_scene(a), read_scene(b)
    print(f"{scene.caption:45s} -> read back: FlowEdit a {ra.colour} {ra.shape}, LSB a {rb.colour} {rb.shape}")
save_image(make_grid(sources + edited.images + translated.images, nrow=len(sources)), args.out)
print(f"FlowEdit: NFE {edited.nfe} batched calls, {edited.forward_passes} forward passes per image")
print(f"LSB@8:    NFE {translated.nfe} batched calls, {2 * translated.nfe} forward passes per image; wrote {args.out}")
