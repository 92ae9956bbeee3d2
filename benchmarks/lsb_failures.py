"""Where LSB translations fail, and how much of it the model's parts cause before the bridge does anything.

Three measurements on the **val** split (this is a diagnostic for choosing what to improve, not a score):

1. **failure breakdown** of LSB translations (text prompts, all six shape directions): each output that is not
   a success is filed under the first reason the reader gives (unclean and why, wrong shape and what was read
   instead, colour changed and into what, centre off);
2. **VAE round trip**: source scenes encoded and decoded with nothing in between, read back clean or not:
   a ceiling on any latent translation's success;
3. **one-step denoise fidelity**: source scenes noised to the SD timesteps LSB queries (tau 1: about 50-170; tau 0.35: up to about 80)
   and denoised in one UNet call under the *right* shape prompt, read back: the error the UNet adds at
   LSB's noise levels even when nothing is to be changed.

    python -m benchmarks.lsb_failures                                # the embedded model
    python -m benchmarks.lsb_failures --model runs/ft1/pipeline --tag ft1
    python -m benchmarks.lsb_failures --method sdedit --t0 0.05 --tau 1     # the same account for SDEdit

It also accounts for the object's size: whether a translation keeps the source's side (what the world counts
right) or its area, and the success ceiling of a translator that keeps area.

Writes benchmarks/results/lsb-failures[-TAG].md/.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch


from benchmarks import translation as T
from benchmarks.translation import failure_reason, to_uint8
from lsb.io.settings import translation_defaults
from lsb.data import shapes
from lsb.metrics import read_batch
from lsb.metrics.reader import SIZE_TOL

ROOT = Path(__file__).resolve().parents[1]

#: object area / side^2 of each shape (side = the world's size: circle diameter, square side, triangle side)
FILL = {"square": 1.0, "circle": math.pi / 4, "triangle": math.sqrt(3) / 4}
#: the sizes the reader accepts as clean: the world's range widened by its tolerance
SIZE_OK = (shapes.MIN_SIZE * (1 - SIZE_TOL), shapes.MAX_SIZE * (1 + SIZE_TOL))


def area_kept_size(size: float, src: str, tgt: str) -> float:
    """The side of the ``tgt`` shape with the same area as a ``src`` shape of side ``size``."""
    return size * math.sqrt(FILL[src] / FILL[tgt])


@torch.no_grad()
def breakdown(runner: T.Runner, n: int, nfe: int, guidance: float, tau: float, t0: float, method: str = "lsb") -> dict:
    reasons, per_dir, sizes = collections.Counter(), {}, {}
    for src, tgt in T.DIRECTIONS:
        scenes = shapes.scenes("val", n, shape=src)
        outs, _ = runner(method, [shapes.render(s) for s in scenes], src, tgt, nfe, guidance, tau, t0, "euler", 0)
        rs = read_batch(outs)
        why = [failure_reason(r, s, tgt) for r, s in zip(rs, scenes)]
        ok = np.array([w is None for w in why])
        per_dir[f"{src}->{tgt}"] = float(ok.mean())
        reasons.update(w for w in why if w is not None)
        sizes[f"{src}->{tgt}"] = size_account(rs, scenes, src, tgt, ok)
    total = n * len(T.DIRECTIONS)
    return {
        "success": float(np.mean(list(per_dir.values()))),
        "per_direction": per_dir,
        "failures": {k: v / total for k, v in reasons.most_common()},
        "sizes": sizes,
    }


def fits_share_world(ratio: float) -> float:
    """The share of the world's sizes (uniform on [MIN_SIZE, MAX_SIZE]) whose size x ``ratio`` the reader accepts."""
    lo, hi = max(shapes.MIN_SIZE, SIZE_OK[0] / ratio), min(shapes.MAX_SIZE, SIZE_OK[1] / ratio)
    return max(0.0, hi - lo) / (shapes.MAX_SIZE - shapes.MIN_SIZE)


def size_account(readings, scenes, src: str, tgt: str, ok: np.ndarray) -> dict:
    """Does the translation keep the object's side (what the world counts right) or its area?

    Among outputs read clean as the target shape: the median ratio of the output's side to the source's
    (1 if the side is kept; ``area_kept_size / size`` if the area is) and of the areas (1 if the area is kept).
    Then the scenes whose area-keeping target size lies inside the reader's clean range: their share is the
    success a perfect area-keeping translator would reach, and success is split by it."""
    good = [(r, s) for r, s in zip(readings, scenes) if r.clean and r.shape == tgt]
    fits = np.array([SIZE_OK[0] <= area_kept_size(s.size, src, tgt) <= SIZE_OK[1] for s in scenes])
    return {
        "side_ratio": float(np.median([r.size / s.size for r, s in good])) if good else None,
        "area_ratio": float(np.median([FILL[tgt] * r.size**2 / (FILL[src] * s.size**2) for r, s in good]))
        if good
        else None,
        "area_keeping_side_ratio": math.sqrt(FILL[src] / FILL[tgt]),
        "area_keeping_fits": float(fits.mean()),
        "area_keeping_fits_world": fits_share_world(math.sqrt(FILL[src] / FILL[tgt])),
        "success_if_fits": float(ok[fits].mean()) if fits.any() else None,
        "success_if_not": float(ok[~fits].mean()) if (~fits).any() else None,
    }


@torch.no_grad()
def round_trip_and_denoise(pipe, n: int, timesteps: list[int]) -> dict:
    from lsb.bridges.matching import timestep_to_alpha_bar
    from lsb.helpers.translation import prompt_embeds_for_batch

    device = torch.device("cpu")
    ac = pipe.scheduler.alphas_cumprod
    vae_ok, den_ok = [], {k: [] for k in timesteps}
    for shape in shapes.SHAPES:
        scenes = shapes.scenes("val", n, shape=shape)
        x = pipe.encode_image(pipe.preprocess_images([shapes.render(s) for s in scenes]), device)
        rs = read_batch(to_uint8(pipe.decode_latents(x, "np")))
        vae_ok += [failure_reason(r, s, shape) is None for r, s in zip(rs, scenes)]
        emb = prompt_embeds_for_batch(pipe, f"a {shape}", None, n, device, pipe.unet.dtype, "target")
        for k in timesteps:
            a = float(timestep_to_alpha_bar(torch.tensor(float(k), dtype=torch.float64), ac))
            z = torch.randn(x.shape, generator=torch.Generator().manual_seed(k))
            y = a**0.5 * x + (1 - a) ** 0.5 * z
            eps = pipe.unet(y, torch.tensor(float(k)), encoder_hidden_states=emb).sample
            x0 = (y - (1 - a) ** 0.5 * eps) / a**0.5
            rs = read_batch(to_uint8(pipe.decode_latents(x0, "np")))
            den_ok[k] += [failure_reason(r, s, shape) is None for r, s in zip(rs, scenes)]
    return {
        "vae_round_trip_success": float(np.mean(vae_ok)),
        "one_step_denoise_success": {str(k): float(np.mean(v)) for k, v in den_ok.items()},
    }


def report_lines(res: dict, args, d: dict) -> list[str]:
    """The report's markdown lines (the tables this benchmark prints and writes)."""
    name = {"lsb": "LSB", "sdedit": "SDEdit"}[args.method]
    sampler = f"Euler NFE {args.nfe}" if args.method == "lsb" else f"DDIM NFE {args.nfe}"
    lines = [
        f"# Where {name} fails ({res['model']}; val split, {args.n} scenes per direction; {sampler}, "
        f"guidance {args.guidance:g}, tau {args.tau:g}, t0 {args.t0:g})",
        "",
        f"Success {res['success']:.3f}. Per direction: "
        + ", ".join(f"{k} {v:.2f}" for k, v in res["per_direction"].items())
        + ".",
        "",
        "| failure (first reason) | share of all translations |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.3f} |" for k, v in res["failures"].items()]
    sz = res["sizes"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines += [
        "",
        "Size: the world counts a translation right when it keeps the object's side (side ratio 1). Medians "
        "over outputs read clean as the target shape, and what keeping the *area* instead would give; "
        f"'fits' is the share of scenes whose area-keeping target size lies in the reader's clean range "
        f"[{SIZE_OK[0]:.1f}, {SIZE_OK[1]:.1f}] px, the success ceiling of a translator that keeps area:",
        "",
        "| direction | side ratio | area ratio | side ratio if area kept | fits | success | success if fits | "
        "success if not |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {fmt(v['side_ratio'])} | {fmt(v['area_ratio'])} | {v['area_keeping_side_ratio']:.2f} | "
        f"{v['area_keeping_fits']:.2f} | {res['per_direction'][k]:.2f} | {fmt(v['success_if_fits'])} | "
        f"{fmt(v['success_if_not'])} |"
        for k, v in sz.items()
    ]
    res["area_keeping_ceiling"] = float(np.mean([v["area_keeping_fits"] for v in sz.values()]))
    res["area_keeping_ceiling_world"] = float(np.mean([v["area_keeping_fits_world"] for v in sz.values()]))
    lines += [
        "",
        f"Mean 'fits' (the area-keeping ceiling): **{res['area_keeping_ceiling']:.3f}** on these scenes, "
        f"{res['area_keeping_ceiling_world']:.3f} over the world's size distribution; "
        f"{name} success {res['success']:.3f}.",
    ]
    if args.method == "lsb":
        dn = res["one_step_denoise_success"]
        lines += [
            "",
            "Before any translation: the VAE round trip reads back as the same clean scene for "
            f"**{res['vae_round_trip_success']:.3f}** of the source scenes; one UNet denoise under the right "
            "shape prompt from the SD timestep shown (the range LSB queries at tau <= 1) reads back for:",
            "",
            "| timestep | " + " | ".join(dn) + " |",
            "|---|" + "---|" * len(dn),
            "| same clean scene | " + " | ".join(f"{v:.3f}" for v in dn.values()) + " |",
        ]
    flags = [("method", args.method if args.method != "lsb" else None), ("model", args.model)]
    flags += [
        (k, f"{getattr(args, k):g}" if getattr(args, k) != d[k] else None) for k in ("nfe", "guidance", "tau", "t0")
    ]
    flags += [("tag", args.tag)]
    lines += [
        "",
        "Reproduce: `python -m benchmarks.lsb_failures" + "".join(f" --{k} {v}" for k, v in flags if v) + "`.",
    ]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="pipeline folder (default: the embedded mini SD)")
    ap.add_argument("--n", type=int, default=100, help="val scenes per direction (and per shape)")
    e = translation_defaults(None)  # what `lsb translate` uses on the embedded model (its lsb_defaults.json)
    d = dict(nfe=e.num_inference_steps, guidance=e.guidance_scale, tau=e.tau, t0=e.t0)
    ap.add_argument("--nfe", type=int, default=d["nfe"])
    ap.add_argument("--guidance", type=float, default=d["guidance"])
    ap.add_argument("--tau", type=float, default=d["tau"])
    ap.add_argument("--t0", type=float, default=d["t0"])
    ap.add_argument(
        "--method",
        default="lsb",
        choices=["lsb", "sdedit"],
        help="sdedit: the same failure and size account for the SDEdit baseline (no denoise section)",
    )
    ap.add_argument("--timesteps", type=int, nargs="+", default=[50, 100, 150, 250])
    ap.add_argument("--tag", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    runner = T.Runner(args.model)
    res = {
        "model": args.model or "embedded mini SD",
        "method": args.method,
        "split": "val",
        "n": args.n,
        "nfe": args.nfe,
        "guidance": args.guidance,
        "tau": args.tau,
        "t0": args.t0,
    }
    res |= breakdown(runner, args.n, args.nfe, args.guidance, args.tau, args.t0, args.method)
    if args.method == "lsb":
        res |= round_trip_and_denoise(runner.pipe("lsb"), args.n, args.timesteps)

    stem = ("lsb-failures" if args.method == "lsb" else f"{args.method}-failures") + (
        f"-{args.tag}" if args.tag else ""
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = report_lines(res, args, d)
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
