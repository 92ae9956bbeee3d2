"""One network call per image: translate with a shipped one-step student, or distil your own from source images.

python examples/distill.py [--student circle-square] [--out outputs/distill.png]
python examples/distill.py --distill-steps 50 --images 64 --run outputs/my-student   # distil, then use it
"""

import argparse
from pathlib import Path

import torch

import lsb
from lsb.data import shapes
from lsb.io.assets import STUDENTS
from lsb.io.images import make_grid, save_image
from lsb.metrics import read_scene

ap = argparse.ArgumentParser()
ap.add_argument("--student", default="circle-square", help="a shipped student (circle-square, square-circle)")
ap.add_argument(
    "--distill-steps", type=int, default=0, help="distil a student of your own first (0: use the shipped one)"
)
ap.add_argument("--images", type=int, default=64, help="source images to distil from (with --distill-steps)")
ap.add_argument("--run", default="outputs/my-student", help="run folder of the distillation (resumes)")
ap.add_argument("--out", default="outputs/distill.png")
args = ap.parse_args()

source, target = args.student.split("-")
student = STUDENTS / args.student
if args.distill_steps:  # the same as `lsb distill --images DIR --source "a circle" --target "a square" -o RUN`
    from lsb.training.distill import distill

    folder = Path(args.run) / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(shapes.scenes("train", args.images, shape=source)):  # source images only
        shapes.render(scene).save(folder / f"{i:04d}.png")
    student = distill(folder, f"a {source}", f"a {target}", output_dir=args.run, steps=args.distill_steps, batch_size=8)

pipe = lsb.LatentSchrodingerBridgeStudentPipeline.from_student(student)  # base model + LoRA + the student's settings
scenes = shapes.scenes("test", 4, shape=source)  # held-out scenes of the source domain
sources = [shapes.render(s) for s in scenes]
out = pipe(sources, generator=torch.Generator().manual_seed(0))  # ONE UNet call for the whole batch
for scene, image in zip(scenes, out.images):
    r = read_scene(image)
    print(f"{scene.caption:45s} -> read back: a {r.colour} {r.shape} on a {r.background} background")
save_image(make_grid(sources + out.images, nrow=len(sources)), args.out)
print(f"NFE {out.nfe} (student {student}); wrote {args.out}")
