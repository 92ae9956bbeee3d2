"""Benchmark of the embedded mini Stable Diffusion (issue: foundation).

Measures, on held-out scenes of the shapes world ("test" split, never used in training):
- VAE: mean reconstruction PSNR and the reader's attribute accuracy on reconstructions;
- text-to-image through the stock diffusers StableDiffusionPipeline (DDIM, 25 steps): the share of
  samples for random full captions that are clean and read back with the prompted shape, colour and
  background; and the shape accuracy for shape-only prompts ("a square");
- training wall time and hardware, from the run folder's stage results.

    python -m benchmarks.mini_sd [--model PATH] [--run runs/mini-sd] [--guidance 2 3 5] [--n 300]

Writes benchmarks/results/mini_sd.md and mini_sd.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


from benchmarks.logrows import hardware
from lsb.data import shapes
from lsb.io.assets import folder_bytes
from lsb.metrics import read_batch

ROOT = Path(__file__).resolve().parents[1]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@torch.no_grad()
def bench_vae(vae, n: int, batch: int = 100) -> dict:
    scenes = shapes.scenes("test", n)
    psnrs, recs = [], []
    for i in range(0, n, batch):
        chunk = scenes[i : i + batch]
        arr = np.stack([shapes.render_array(s) for s in chunk])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        rec = ((rec + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        psnrs += [psnr(a, r) for a, r in zip(arr, rec)]
        recs += list(rec)
    readings = read_batch(recs)
    ok = [
        r.shape == s.shape and r.colour == s.colour and r.background == s.background for r, s in zip(readings, scenes)
    ]
    return {
        "n": n,
        "psnr_mean": float(np.mean(psnrs)),
        "psnr_min": float(np.min(psnrs)),
        "attributes_read_back": float(np.mean(ok)),
        # what a translation's success needs: the reader also finds the round trip a clean scene
        "clean_and_read_back": float(np.mean([k and r.clean for k, r in zip(ok, readings)])),
        "misread_examples": [
            f"{s.caption} -> {r.colour} {r.shape} on {r.background}" for r, s, k in zip(readings, scenes, ok) if not k
        ][:8],
    }


@torch.no_grad()
def bench_t2i(pipe, n: int, guidance: float, steps: int = 25, batch: int = 50, seed: int = 0) -> dict:
    scenes = shapes.scenes("test", n, start=10_000)
    full_ok, clean, attr_ok = [], [], {"shape": [], "colour": [], "background": []}
    for i in range(0, n, batch):
        chunk = scenes[i : i + batch]
        imgs = pipe(
            [s.caption for s in chunk],
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="np",
            generator=torch.Generator().manual_seed(seed + i),
        ).images
        rs = read_batch([(im * 255).round().astype(np.uint8) for im in imgs])
        for r, s in zip(rs, chunk):
            clean.append(r.clean)
            full_ok.append(r.clean and r.shape == s.shape and r.colour == s.colour and r.background == s.background)
            for k, v in attr_ok.items():
                v.append(getattr(r, k) == getattr(s, k))
    shape_ok, shape_clean_ok = [], []
    per = max(1, n // 6)
    for k, shape in enumerate(shapes.SHAPES):
        imgs = pipe(
            [f"a {shape}"] * per,
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="np",
            generator=torch.Generator().manual_seed(seed + 100 + k),
        ).images
        rs = read_batch([(im * 255).round().astype(np.uint8) for im in imgs])
        shape_ok += [r.shape == shape for r in rs]  # the metric: the shape read back
        shape_clean_ok += [r.clean and r.shape == shape for r in rs]  # stricter: also a clean picture
    return {
        "guidance": guidance,
        "steps": steps,
        "n_full": n,
        "full_caption_all_right": float(np.mean(full_ok)),
        "clean": float(np.mean(clean)),
        **{f"full_caption_{k}_right": float(np.mean(v)) for k, v in attr_ok.items()},
        "n_shape_only": len(shape_ok),
        "shape_only_right": float(np.mean(shape_ok)),
        "shape_only_clean_and_right": float(np.mean(shape_clean_ok)),
    }


def parameter_counts(pipe, names) -> dict:
    """{component: its number of parameters} for the named components of ``pipe``."""
    return {k: sum(p.numel() for p in getattr(pipe, k).parameters()) for k in names}


def parameters_text(counts: dict) -> str:
    """The results file's parameter list: ``unet 7.01M, vae 1.23M, ...``."""
    return ", ".join(f"{k} {n / 1e6:.2f}M" for k, n in counts.items())


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="pipeline folder (default: the embedded lsb.MINI_SD)")
    ap.add_argument("--run", default=str(ROOT / "runs" / "mini-sd"), help="training run folder for wall times")
    ap.add_argument(
        "--finetune-run",
        nargs="*",
        default=[],
        help="run folders of stages continued from the model (--unet-init / --decoder-init), listed as extra rows",
    )
    ap.add_argument("--guidance", type=float, nargs="+", default=[2.0, 3.0, 5.0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--n-vae", type=int, default=500)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    import lsb
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(0)
    model = args.model or lsb.MINI_SD
    pipe = StableDiffusionPipeline.from_pretrained(
        model, dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    t = time.time()
    res = {"model": str(model), "vae": bench_vae(pipe.vae, args.n_vae)}
    res["t2i"] = [bench_t2i(pipe, args.n, g) for g in args.guidance]
    res["bench_seconds"] = time.time() - t
    size = folder_bytes(model)
    res["model_bytes"] = size
    res["parameters"] = parameter_counts(pipe, ("unet", "vae", "text_encoder"))
    run = Path(args.run)
    res["training"] = {
        st: json.loads((run / f"{st}_result.json").read_text())
        for st in ("vae", "decoder", "unet")
        if (run / f"{st}_result.json").is_file()
    }
    for ft in map(Path, args.finetune_run):
        for st in ("vae", "decoder", "unet"):
            if (ft / f"{st}_result.json").is_file():
                res["training"][f"{st}, continued ({ft.name})"] = json.loads((ft / f"{st}_result.json").read_text())
    res["hardware"] = hardware()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mini_sd.json").write_text(json.dumps(res, indent=2))
    v = res["vae"]
    lines = [
        "# Embedded mini SD benchmark",
        "",
        f"Model: `{Path(model).name}` ({size / 2**20:.1f} MiB on disk; parameters: "
        + parameters_text(res["parameters"])
        + ")",
        "",
        "## VAE (held-out test scenes)",
        "",
        "| scenes | PSNR mean (dB) | PSNR min | attributes read back | clean + read back | target |",
        "|---|---|---|---|---|---|",
        f"| {v['n']} | {v['psnr_mean']:.2f} | {v['psnr_min']:.2f} | {v['attributes_read_back']:.3f} | "
        f"{v['clean_and_read_back']:.3f} | >= 30 dB, >= 0.99 |",
        "",
        "## Text-to-image (stock StableDiffusionPipeline, DDIM 25 steps)",
        "",
        "| guidance | full captions: clean + shape + colour + background | clean | shape-only prompts: right shape "
        "| shape-only: clean + right shape | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["t2i"]:
        lines.append(
            f"| {r['guidance']:g} | {r['full_caption_all_right']:.3f} (n={r['n_full']}) | {r['clean']:.3f} | "
            f"{r['shape_only_right']:.3f} (n={r['n_shape_only']}) | {r['shape_only_clean_and_right']:.3f} | "
            ">= 0.90, >= 0.90 (right shape) |"
        )
    lines += ["", "## Training", "", "| stage | steps | wall time (min) |", "|---|---|---|"]
    for st, r in res["training"].items():
        lines.append(f"| {st} | {r.get('steps')} | {float(r.get('seconds', 0)) / 60:.1f} |")
    lines += [
        "",
        f"Hardware: {res['hardware']}.",
        "",
        "Reproduce: `python -m benchmarks.mini_sd --finetune-run runs/dec1` (model) after "
        "`lsb train mini-sd --stage all --out runs/mini-sd` and the decoder continuation "
        "`lsb train mini-sd --stage decoder --out runs/dec1 --decoder-init <that pipeline> --decoder-steps 2000 "
        "--decoder-lr 1e-4 --decoder-latent-noise 0.1` (then `--stage export --install`).",
    ]
    if v["misread_examples"]:
        lines += ["", "VAE misreads (first few): " + "; ".join(v["misread_examples"])]
    (out / "mini_sd.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
