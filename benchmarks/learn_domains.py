"""Learn one domain token per shape from unlabelled image folders (the LSB paper's prompt optimization).

For each shape it renders ``--images`` training scenes of that shape (any colour, background, size,
position: the folder carries no labels besides being "the domain") and runs ``lsb.training.prompt_optimization.learn_domain``.
The resulting folders feed ``benchmarks/translation.py --domains <out>``.

    python -m benchmarks.learn_domains --images 200 --steps 1000 --out runs/domains
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


from lsb.data import shapes
from lsb.io.images import save_image

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=str(ROOT / "runs" / "domains"))
    ap.add_argument("--shapes", nargs="+", default=list(shapes.SHAPES))
    args = ap.parse_args(argv)

    from lsb.training.prompt_optimization import learn_domain

    summary = {}
    for shape in args.shapes:
        folder = Path(args.out) / "images" / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i, scene in enumerate(shapes.scenes("train", args.images, start=200_000, shape=shape)):
            p = folder / f"{i:04d}.png"
            if not p.exists():
                save_image(shapes.render(scene), p)
        t = time.time()
        path = learn_domain(
            folder,
            f"<{shape}-domain>",
            args.model,
            output_dir=Path(args.out) / shape,
            steps=args.steps,
            learning_rate=args.lr,
            batch_size=args.batch_size,
        )
        summary[shape] = {"file": str(path), "seconds": time.time() - t, "images": args.images, "steps": args.steps}
        print(json.dumps({shape: summary[shape]}), flush=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
