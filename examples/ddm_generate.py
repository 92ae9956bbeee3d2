"""Generate with a Decoupled Diffusion Model (DDM) in ~10 network calls, and read the pictures back.

With ``--model`` it loads a trained DDMPipeline folder (``python -m lsb.training.ddm ... --out runs/ddm-t2i``
writes ``runs/ddm-t2i/final``). Without it, it first trains a small DDM for ``--train-steps`` on this machine
(resumable, in ``--run``) so the script always runs end to end; expect shapes only after a few thousand
steps (a GPU run).

    python examples/ddm_generate.py --model runs/ddm-t2i/final --steps 9 --out ddm.png
    python examples/ddm_generate.py --train-steps 200 --out ddm.png            # CPU demo (minutes)
"""

import argparse
from pathlib import Path

import torch

import lsb
from lsb.io.images import save_grid
from lsb.metrics.reader import read_batch

ap = argparse.ArgumentParser()
ap.add_argument("--model", help="a DDMPipeline folder")
ap.add_argument("--run", default="runs/ddm-demo", help="run folder for the on-the-spot training without --model")
ap.add_argument("--train-steps", type=int, default=200)
ap.add_argument("--tiny", action="store_true", help="a 2-level UNet of 32 channels (tests)")
ap.add_argument("--steps", type=int, default=9, help="N; the sampler makes N + 1 UNet calls (NFE)")
ap.add_argument("--guidance", type=float, default=2.0)
ap.add_argument("--out", default="ddm.png")
args = ap.parse_args()

model = args.model
if model is None:
    from lsb.training.ddm import main as train_ddm

    extra = ["--unet-channels", "32", "32", "--cached-scenes", "64"] if args.tiny else ["--cached-scenes", "2000"]
    train_ddm(
        [
            "--kind",
            "ddm",
            "--task",
            "t2i",
            "--out",
            args.run,
            "--steps",
            str(args.train_steps),
            "--batch-size",
            "32",
            "--no-progress",
            *extra,
        ]
    )
    model = str(Path(args.run) / "final")

pipe = lsb.DDMPipeline.from_pretrained(model, dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
prompts = [
    "a red circle on a white background",
    "a blue square on a black background",
    "a yellow triangle on a gray background",
    "a green circle on a black background",
]
out = pipe(
    prompts,
    num_inference_steps=args.steps,
    guidance_scale=args.guidance,
    output_type="pt",
    generator=torch.Generator().manual_seed(0),
)
save_grid(out.images * 2 - 1, args.out, nrow=len(prompts))
print(f"{len(prompts)} images with num_inference_steps={args.steps}: NFE = {out.nfe} UNet calls -> {args.out}")
for p, r in zip(prompts, read_batch(out.images)):
    print(f"  {p!r}: read back {r.colour} {r.shape} on {r.background} (clean={r.clean})")
