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

    python benchmarks/lsb_failures.py                                # the embedded model
    python benchmarks/lsb_failures.py --model runs/ft1/pipeline --tag ft1

Writes benchmarks/results/lsb-failures[-TAG].md/.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import translation as T  # noqa: E402
from translation import failure_reason, to_uint8  # noqa: E402
from lsb.cli import MINI_SD_TRANSLATE_DEFAULTS  # noqa: E402
from lsb.data import shapes  # noqa: E402
from lsb.metrics import read_batch  # noqa: E402


@torch.no_grad()
def breakdown(runner: T.Runner, n: int, nfe: int, guidance: float, tau: float, t0: float) -> dict:
    reasons, per_dir = collections.Counter(), {}
    for src, tgt in T.DIRECTIONS:
        scenes = shapes.scenes("val", n, shape=src)
        outs, _ = runner("lsb", [shapes.render(s) for s in scenes], src, tgt, nfe, guidance, tau, t0, "euler", 0)
        rs = read_batch(outs)
        why = [failure_reason(r, s, tgt) for r, s in zip(rs, scenes)]
        per_dir[f"{src}->{tgt}"] = float(np.mean([w is None for w in why]))
        reasons.update(w for w in why if w is not None)
    total = n * len(T.DIRECTIONS)
    return {"success": float(np.mean(list(per_dir.values()))), "per_direction": per_dir,
            "failures": {k: v / total for k, v in reasons.most_common()}}


@torch.no_grad()
def round_trip_and_denoise(pipe, n: int, timesteps: list[int]) -> dict:
    from lsb.bridges.matching import timestep_to_alpha_bar
    from lsb.translation_utils import prompt_embeds_for_batch

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
    return {"vae_round_trip_success": float(np.mean(vae_ok)),
            "one_step_denoise_success": {str(k): float(np.mean(v)) for k, v in den_ok.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="pipeline folder (default: the embedded mini SD)")
    ap.add_argument("--n", type=int, default=100, help="val scenes per direction (and per shape)")
    d = MINI_SD_TRANSLATE_DEFAULTS  # what `lsb translate` uses on the embedded model
    ap.add_argument("--nfe", type=int, default=d["nfe"])
    ap.add_argument("--guidance", type=float, default=d["guidance"])
    ap.add_argument("--tau", type=float, default=d["tau"])
    ap.add_argument("--t0", type=float, default=d["t0"])
    ap.add_argument("--timesteps", type=int, nargs="+", default=[50, 100, 150, 250])
    ap.add_argument("--tag", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    runner = T.Runner(args.model)
    res = {"model": args.model or "embedded mini SD", "split": "val", "n": args.n, "nfe": args.nfe,
           "guidance": args.guidance, "tau": args.tau, "t0": args.t0}
    res |= breakdown(runner, args.n, args.nfe, args.guidance, args.tau, args.t0)
    res |= round_trip_and_denoise(runner.pipe("lsb"), args.n, args.timesteps)

    stem = "lsb-failures" + (f"-{args.tag}" if args.tag else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    lines = [f"# Where LSB fails ({res['model']}; val split, {args.n} scenes per direction; Euler NFE {args.nfe}, "
             f"guidance {args.guidance:g}, tau {args.tau:g}, t0 {args.t0:g})", "",
             f"Success {res['success']:.3f}. Per direction: "
             + ", ".join(f"{k} {v:.2f}" for k, v in res["per_direction"].items()) + ".", "",
             "| failure (first reason) | share of all translations |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in res["failures"].items()]
    lines += ["", "Before any translation: the VAE round trip reads back as the same clean scene for "
              f"**{res['vae_round_trip_success']:.3f}** of the source scenes; one UNet denoise under the right "
              "shape prompt from the SD timestep shown (the range LSB queries at tau <= 1) reads back for:", "",
              "| timestep | " + " | ".join(res["one_step_denoise_success"]) + " |",
              "|---|" + "---|" * len(res["one_step_denoise_success"]),
              "| same clean scene | " + " | ".join(f"{v:.3f}" for v in res["one_step_denoise_success"].values()) + " |",
              "", f"Reproduce: `python benchmarks/lsb_failures.py{' --model ' + args.model if args.model else ''}"
              f"{' --tag ' + args.tag if args.tag else ''}`."]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
