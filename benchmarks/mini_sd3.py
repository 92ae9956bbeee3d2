"""Benchmark of the embedded mini Stable Diffusion 3 (issue 17 item 5): does the flow model draw what it is told?

The checks of ``benchmarks/mini_sd.py`` (its ``bench_t2i``), run through the stock diffusers
``StableDiffusion3Pipeline`` loaded without arguments: on held-out "test" scenes, the share of samples for
full captions that are clean and read back with the prompted shape, colour and background (and each
attribute alone), and the shape read back for shape-only prompts ("a square"). Sampler: the shipped
``FlowMatchEulerDiscreteScheduler`` (Euler), ``--steps`` steps, classifier-free guidance ``--guidance``.

    python -m benchmarks.mini_sd3 [--model PATH | --checkpoint runs/mini-sd3/checkpoint-N] [--run runs/mini-sd3]
                                  [--guidance 2 3 5] [--steps 25] [--n 300]

Writes benchmarks/results/mini_sd3.md and mini_sd3.json (``--tag`` adds a suffix, for checkpoint checks).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


from benchmarks.logrows import hardware
from benchmarks.mini_sd import bench_t2i, parameter_counts, parameters_text
from lsb.io.assets import folder_bytes

ROOT = Path(__file__).resolve().parents[1]


def load_pipeline(model: str | None, checkpoint: str | None):
    """The stock pipeline of ``model`` (default ``lsb.MINI_SD3``), or one assembled around a training
    checkpoint's EMA transformer (for checks while a run goes on)."""
    import lsb
    from diffusers import StableDiffusion3Pipeline

    if checkpoint is None:
        return StableDiffusion3Pipeline.from_pretrained(model or lsb.MINI_SD3)
    from lsb.models import mini_sd3
    from lsb.training.mini_sd3 import transformer_from_checkpoint

    return mini_sd3.build_pipeline(
        transformer_from_checkpoint(checkpoint), mini_sd3.components_from_mini_sd(lsb.MINI_SD)
    )


def training_rows(run: Path) -> list[dict]:
    path = run / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="pipeline folder (default: the embedded lsb.MINI_SD3)")
    ap.add_argument("--checkpoint", default=None, help="a training checkpoint folder instead of --model (EMA weights)")
    ap.add_argument(
        "--run", default=str(ROOT / "runs" / "mini-sd3"), help="training run folder (runs.jsonl: steps, time)"
    )
    ap.add_argument("--guidance", type=float, nargs="+", default=[2.0, 3.0, 5.0])
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--tag", default="", help="suffix of the result files (e.g. a checkpoint check)")
    return ap.parse_args(argv)


def report_lines(res: dict, args) -> list[str]:
    """The report's markdown lines (the tables this benchmark prints and writes)."""
    size = (
        f"{res['model_bytes'] / 1e6:.1f} MB ({res['model_bytes'] / 2**20:.1f} MiB) on disk; "
        if "model_bytes" in res
        else ""
    )
    lines = [
        "# Embedded mini SD3 (rectified flow) benchmark",
        "",
        f"Model: `{res['model']}` ({size}parameters: " + parameters_text(res["parameters"]) + ")",
        "",
        f"## Text-to-image (stock StableDiffusion3Pipeline, {res['sampler']} shift {res['scheduler_shift']:g}, "
        f"{args.steps} steps, held-out test scenes)",
        "",
        "| guidance | full captions: clean + shape + colour + background | clean | shape | colour | background "
        "| shape-only prompts: right shape | shape-only: clean + right shape | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["t2i"]:
        lines.append(
            f"| {r['guidance']:g} | {r['full_caption_all_right']:.3f} (n={r['n_full']}) | {r['clean']:.3f} | "
            f"{r['full_caption_shape_right']:.3f} | {r['full_caption_colour_right']:.3f} | "
            f"{r['full_caption_background_right']:.3f} | {r['shape_only_right']:.3f} (n={r['n_shape_only']}) | "
            f"{r['shape_only_clean_and_right']:.3f} | >= 0.90 full captions |"
        )
    tr = res["training"]
    if tr["steps"] is not None:
        lines += [
            "",
            "## Training",
            "",
            f"{tr['steps']} steps (batch {tr['recipe']['batch']}) in {tr['seconds'] / 60:.1f} min over {tr['runs']} "
            "run(s), transformer only (VAE, text encoders, tokenizers: the mini SD's, frozen).",
        ]
    lines += [
        "",
        f"Hardware: {res['hardware']}.",
        "",
        f"Reproduce: `lsb train mini-sd3 --out runs/mini-sd3 --install` then `python -m benchmarks.mini_sd3 "
        f"--guidance {' '.join(f'{g:g}' for g in args.guidance)} --steps {args.steps} --n {args.n}`.",
    ]
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.model and args.checkpoint:
        raise SystemExit("--model and --checkpoint exclude each other")
    if args.n < 6 or args.steps < 1:
        raise SystemExit(f"--n must be >= 6 and --steps >= 1, got {args.n} and {args.steps}")

    import lsb

    torch.manual_seed(0)
    pipe = load_pipeline(args.model, args.checkpoint)
    pipe.set_progress_bar_config(disable=True)
    t = time.time()
    res = {
        "model": args.checkpoint or str(args.model or lsb.MINI_SD3),
        "sampler": type(pipe.scheduler).__name__,
        "scheduler_shift": pipe.scheduler.config.shift,
    }
    res["t2i"] = [bench_t2i(pipe, args.n, g, steps=args.steps) for g in args.guidance]
    res["bench_seconds"] = time.time() - t
    if not args.checkpoint:
        folder = Path(args.model or lsb.MINI_SD3)
        res["model_bytes"] = folder_bytes(folder)
    res["parameters"] = parameter_counts(
        pipe, ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
    )
    rows = training_rows(Path(args.run))
    res["training"] = {
        "runs": len(rows),
        "steps": rows[-1]["steps"] if rows else None,
        "seconds": sum(float(r["seconds"]) for r in rows),
        "recipe": rows[-1]["recipe"] if rows else None,
    }
    res["hardware"] = hardware()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "mini_sd3" + (f"-{args.tag}" if args.tag else "")
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    lines = report_lines(res, args)
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
