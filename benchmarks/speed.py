"""Where the seconds of an LSB translation go: text encoding, VAE encode, UNet calls, VAE decode, the rest.

Each component's forward is wrapped with a wall-clock timer (``torch.cuda.synchronize`` on GPU); "rest"
is the pipeline total minus the components (scheduler math, Python, pre/post-processing).

    python -m benchmarks.speed [--model PATH] [--nfe 8] [--batch 1 16] [--repeats 5]

Writes benchmarks/results/speed.md and speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch


from lsb.data import shapes

ROOT = Path(__file__).resolve().parents[1]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def instrument(pipe, times: dict):
    """Wrap the forward of text_encoder / unet and the vae's encode / decode with timers."""
    device = pipe._execution_device

    def timed(name, fn):
        def wrapper(*a, **k):
            _sync(device)
            t = time.perf_counter()
            out = fn(*a, **k)
            _sync(device)
            times[name] += time.perf_counter() - t
            return out

        return wrapper

    pipe.text_encoder.forward = timed("text encoding", pipe.text_encoder.forward)
    pipe.unet.forward = timed("UNet calls", pipe.unet.forward)
    pipe.vae.encode = timed("VAE encode", pipe.vae.encode)
    pipe.vae.decode = timed("VAE decode", pipe.vae.decode)


def measure(pipe, batch: int, nfe: int, repeats: int, size: int = 64) -> dict:
    scenes = shapes.scenes("test", batch, shape="circle")
    images = [shapes.render(s).resize((size, size)) for s in scenes]
    kw = dict(
        source_prompt="a circle",
        target_prompt="a square",
        num_inference_steps=nfe,
        guidance_scale=3.0,
        output_type="pil",
    )
    pipe(images, generator=torch.Generator().manual_seed(0), **kw)  # warm-up
    times = defaultdict(float)
    instrument(pipe, times)
    device = pipe._execution_device
    totals = []
    for r in range(repeats):
        _sync(device)
        t = time.perf_counter()
        pipe(images, generator=torch.Generator().manual_seed(r), **kw)
        _sync(device)
        totals.append(time.perf_counter() - t)
    total = sum(totals)
    parts = {k: v for k, v in times.items()}
    parts["rest (scheduler, Python, pre/post-processing)"] = total - sum(times.values())
    return {
        "batch": batch,
        "nfe": nfe,
        "seconds_per_call": total / repeats,
        "images_per_second": batch * repeats / total,
        "share": {k: v / total for k, v in parts.items()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--nfe", type=int, default=8)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--tag", default="speed")
    ap.add_argument(
        "--real",
        choices=["sd15", "sd21"],
        help="time a real SD architecture with random weights "
        "(needs --configs; fp16 on a GPU) instead of the embedded model",
    )
    ap.add_argument("--configs", default=str(ROOT.parent / "shared" / "configs"))
    args = ap.parse_args(argv)

    import lsb
    from lsb.helpers.loading import load_pipeline

    def fresh():
        if args.real:
            from lsb.models.random_sd import build_components

            dtype = torch.float16 if torch.cuda.is_available() else torch.float32
            p = lsb.LatentSchrodingerBridgePipeline(**build_components(args.configs, args.real, dtype=dtype))
            return p.to("cuda") if torch.cuda.is_available() else p
        p = load_pipeline(lsb.LatentSchrodingerBridgePipeline, args.model)
        return p.to("cuda") if torch.cuda.is_available() else p

    rows = []
    for b in args.batch:
        pipe = fresh()  # fresh, un-instrumented
        pipe.set_progress_bar_config(disable=True)
        rows.append(measure(pipe, b, args.nfe, args.repeats, args.size))
        print(json.dumps(rows[-1]), flush=True)
    device = str(pipe._execution_device)
    hw = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, device {device}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.tag}.json").write_text(json.dumps({"hardware": hw, "rows": rows}, indent=2))
    keys = list(rows[0]["share"])
    what = (
        f"real {args.real} architecture, random weights, {next(pipe.unet.parameters()).dtype}"
        if args.real
        else "embedded mini SD"
    )
    lines = [
        f"# Speed account of an LSB translation ({what}; NFE {args.nfe}, {args.size} px)",
        "",
        f"Hardware: {hw}.",
        "",
        "| batch | s / call | images / s | " + " | ".join(keys) + " |",
        "|---|---|---|" + "---|" * len(keys),
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['seconds_per_call']:.3f} | {r['images_per_second']:.1f} | "
            + " | ".join(f"{100 * r['share'][k]:.1f}%" for k in keys)
            + " |"
        )
    lines += [
        "",
        "Target: the rest <= 5% of the total at NFE 8 for batch 1 and 16.",
        f"Reproduce: `python -m benchmarks.speed --nfe {args.nfe} --batch {' '.join(map(str, args.batch))}"
        + (f" --real {args.real} --size {args.size}" if args.real else "")
        + f" --tag {args.tag}`.",
    ]
    (out / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
