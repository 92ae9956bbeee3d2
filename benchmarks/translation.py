"""Unpaired shape translation on the shapes world, scored against exact ground truth.

For each direction (e.g. circle -> square) it takes held-out scenes of the source shape, translates
them with a method at a given NFE, and reads the outputs back with the project's reader (no learned
parts). Success = clean picture, right target shape, same colour and background as the source, centre
within 6 px. Also reported: attribute preservation, centre error, size ratio, PSNR against the ideal
translation (the source scene re-rendered with the target shape) and seconds per image.

    python -m benchmarks.translation --methods lsb --nfe 4 8 16 --n 100               # test split
    python -m benchmarks.translation --split val --sweep guidance=2,3,5 t0=0.2,0.3    # tuning (val only)
    python -m benchmarks.translation --domains runs/domains                            # learned tokens

``--domains DIR`` uses learned-domain files DIR/<shape>/learned_embeds.safetensors instead of text.
Writes benchmarks/results/translation[-TAG].md/.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


from lsb.data import shapes
from lsb.metrics import read_batch

ROOT = Path(__file__).resolve().parents[1]

DIRECTIONS = [(a, b) for a in shapes.SHAPES for b in shapes.SHAPES if a != b]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def to_uint8(images) -> list[np.ndarray]:
    """Pipeline outputs (float arrays in [0, 1]) as uint8 pictures."""
    return [(np.asarray(im) * 255).round().astype(np.uint8) for im in images]


#: the reader's reasons for an unclean picture (by how they start) as short failure categories
_UNCLEAN_LABELS = (
    ("object colour", "colour between palette colours"),
    ("size", "size out of range"),
    ("no clear shape", "no clear shape"),
    ("bounding box", "wrong aspect ratio"),
    ("coverage", "coverage inconsistent with the region"),
    ("background", "background off-palette"),
    ("object touches", "object touches the border"),
)


def failure_reason(reading, scene: shapes.Scene, target: str, centre_tol: float = 6.0) -> str | None:
    """None for a success (clean, ``target`` shape, the source's colour and background, centre within
    ``centre_tol`` px), else a short category for the first thing that is wrong."""
    if not reading.clean:
        why = reading.reason.split(";")[0]
        if "regions" in why:  # "<n> significant object regions (expected 1)"
            return "unclean: several object regions"
        for start, label in _UNCLEAN_LABELS:
            if why.startswith(start):
                return "unclean: " + label
        return "unclean: " + why
    if reading.shape != target:
        return f"shape: {target} read as {reading.shape}"
    if reading.colour != scene.colour:
        return f"colour: {scene.colour} -> {reading.colour}"
    if reading.background != scene.background:
        return "background changed"
    if np.hypot(reading.cx - scene.cx, reading.cy - scene.cy) > centre_tol:
        return "centre off by > 6 px"
    return None


def score(outputs: list[np.ndarray], sources: list[shapes.Scene], target_shape: str, centre_tol: float = 6.0) -> dict:
    rs = read_batch(outputs)
    ok, colour, bg, shape_ok, cerr, sratio, ps = [], [], [], [], [], [], []
    for r, s, out in zip(rs, sources, outputs):
        c = r.clean
        shape_ok.append(c and r.shape == target_shape)
        colour.append(c and r.colour == s.colour)
        bg.append(r.background == s.background)
        cerr.append(float(np.hypot(r.cx - s.cx, r.cy - s.cy)) if c else float("nan"))
        sratio.append(r.size / s.size if c else float("nan"))
        ok.append(failure_reason(r, s, target_shape, centre_tol) is None)
        ps.append(psnr(out, shapes.render_array(s.replace(shape=target_shape))))
    return {
        "success": float(np.mean(ok)),
        "clean": float(np.mean([r.clean for r in rs])),
        "shape": float(np.mean(shape_ok)),
        "colour_kept": float(np.mean(colour)),
        "background_kept": float(np.mean(bg)),
        "centre_error": float(np.nanmean(cerr)) if not np.all(np.isnan(cerr)) else None,
        "size_ratio": float(np.nanmean(sratio)) if not np.all(np.isnan(sratio)) else None,
        "psnr_ideal": float(np.mean(ps)),
        "n": len(outputs),
    }


class Runner:
    """Loads each method's pipeline once and translates batches of PIL images to uint8 arrays."""

    def __init__(self, model=None, domains: str | None = None, device: str = "cpu"):
        self.model, self.domains, self.device, self.pipes = model, domains, device, {}

    def pipe(self, method):
        if method not in self.pipes:
            from lsb.surfaces.translators import load_translator

            p = load_translator(method, self.model, device=self.device)
            p.set_progress_bar_config(disable=True)
            self.pipes[method] = p
        return self.pipes[method]

    def prompt(self, pipe, shape):
        if self.domains:
            from lsb.prompts.domains import load_domain

            return load_domain(pipe, str(Path(self.domains) / shape))
        return f"a {shape}"

    def __call__(self, method, images, src, tgt, nfe, guidance, tau, t0, solver, seed):
        from lsb.surfaces.translators import translate

        pipe = self.pipe(method)
        if method == "lsb":
            pipe.scheduler.register_to_config(solver=solver)
        gens = [torch.Generator().manual_seed(seed + i) for i in range(len(images))]
        imgs, nfe_spent = translate(
            method,
            pipe,
            images,
            self.prompt(pipe, src),
            self.prompt(pipe, tgt),
            nfe=nfe,
            guidance_scale=guidance,
            tau=tau,
            t0=t0,
            generator=gens,
            output_type="np",
        )
        return to_uint8(imgs), nfe_spent


def translate_directions(translate_chunk, split, n, directions, batch, collect: list | None = None):
    """Translate ``n`` scenes of ``split`` per direction in chunks of ``batch`` and score each direction (:func:`score`).

    ``translate_chunk(images, src, tgt, i)`` translates the chunk that starts at scene ``i`` and returns
    ``(outputs, *counts)``; ``collect`` (a list) receives (output, ideal) pairs. Returns the rows, the seconds per
    image and the counts of the last chunk (None when there was none)."""
    rows, t_total, n_total, counts = [], 0.0, 0, None
    for src, tgt in directions:
        scenes = shapes.scenes(split, n, shape=src)
        outs = []
        for i in range(0, n, batch):
            chunk = scenes[i : i + batch]
            t = time.time()
            o, *counts = translate_chunk([shapes.render(s) for s in chunk], src, tgt, i)
            t_total += time.time() - t
            n_total += len(chunk)
            outs += o
        if collect is not None:
            collect += [(o, shapes.render_array(s.replace(shape=tgt))) for o, s in zip(outs, scenes)]
        rows.append({"direction": f"{src}->{tgt}", **score(outs, scenes, tgt)})
    return rows, t_total / max(1, n_total), counts


def run(
    runner, method, nfe, split, n, directions, guidance, tau, t0, solver, batch=50, seed=0, collect: list | None = None
) -> dict:
    """Translate ``n`` scenes per direction and score them; ``collect`` (a list) receives (output, ideal) pairs."""
    rows, seconds, counts = translate_directions(
        lambda images, src, tgt, i: runner(method, images, src, tgt, nfe, guidance, tau, t0, solver, seed + i),
        split,
        n,
        directions,
        batch,
        collect,
    )
    spent = counts[0] if counts else None
    mean = {k: float(np.mean([r[k] for r in rows if r[k] is not None])) for k in rows[0] if k not in ("direction", "n")}
    return {
        "method": method,
        "nfe": nfe,
        "nfe_spent": spent,
        "solver": solver if method == "lsb" else None,
        "guidance": guidance,
        "tau": tau,
        "t0": t0,
        "split": split,
        "n_per_direction": n,
        "seconds_per_image": seconds,
        "mean": mean,
        "directions": rows,
    }


def _fmt(v):
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def write_tables(results: list[dict], path_md: Path, title: str) -> str:
    lines = [
        f"# {title}",
        "",
        "| method | solver | NFE | guidance | t0 | tau | success | shape | colour kept | "
        "background kept | centre err (px) | size ratio | PSNR vs ideal | s/image |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["mean"]
        lines.append(
            f"| {r['method']} | {r['solver'] or '-'} | {r['nfe']} | {r['guidance']:g} | {r['t0']:g} | {r['tau']:g} | "
            f"**{m['success']:.3f}** | {m['shape']:.3f} | {m['colour_kept']:.3f} | {m['background_kept']:.3f} | "
            f"{_fmt(m['centre_error'])} | {_fmt(m['size_ratio'])} | {m['psnr_ideal']:.2f} | {r['seconds_per_image']:.3f} |"
        )
    lines += [
        "",
        "Per direction (success):",
        "",
        "| method | solver | NFE | " + " | ".join(f"{a}->{b}" for a, b in DIRECTIONS) + " |",
        "|---|---|---|" + "---|" * len(DIRECTIONS),
    ]
    for r in results:
        d = {x["direction"]: x["success"] for x in r["directions"]}
        lines.append(
            f"| {r['method']} | {r['solver'] or '-'} | {r['nfe']} | "
            + " | ".join(_fmt(d.get(f"{a}->{b}")) for a, b in DIRECTIONS)
            + " |"
        )
    text = "\n".join(lines) + "\n"
    path_md.write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["lsb"], choices=["lsb", "sdedit", "ddib"])
    ap.add_argument("--nfe", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--solver", nargs="+", default=["euler"], choices=["euler", "ddim", "multistep"])
    ap.add_argument("--n", type=int, default=100, help="scenes per direction")
    ap.add_argument("--split", default="test", choices=["test", "val"])
    ap.add_argument("--directions", nargs="+", default=None, help="e.g. circle-square (default: all six)")
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--tau", type=float, default=5.29)
    ap.add_argument("--t0", type=float, default=0.2)
    ap.add_argument("--sweep", nargs="*", default=None, help="name=v1,v2 over guidance/tau/t0 (use --split val)")
    ap.add_argument("--domains", default=None, help="folder of learned domains <shape>/learned_embeds.safetensors")
    ap.add_argument("--model", default=None)
    ap.add_argument(
        "--device", default="cpu", help="torch device for the pipelines (the committed tables are measured on cpu)"
    )
    ap.add_argument("--tag", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    if args.sweep is not None and args.split == "test":
        ap.error("sweeps tune hyperparameters: run them on --split val, never on the test scenes")
    directions = DIRECTIONS if not args.directions else [tuple(d.split("-")) for d in args.directions]
    runner = Runner(args.model, args.domains, args.device)
    grid = [dict(guidance=args.guidance, tau=args.tau, t0=args.t0)]
    if args.sweep:
        axes = {k: [float(v) for v in vals.split(",")] for k, vals in (s.split("=") for s in args.sweep)}
        grid = [dict(grid[0], **dict(zip(axes, combo))) for combo in itertools.product(*axes.values())]
    results = []
    for method in args.methods:
        for nfe in args.nfe:
            for solver in args.solver if method == "lsb" else ["-"]:
                for hp in grid:
                    r = run(
                        runner, method, nfe, args.split, args.n, directions, hp["guidance"], hp["tau"], hp["t0"], solver
                    )
                    results.append(r)
                    print(
                        json.dumps({k: r[k] for k in ("method", "solver", "nfe", "guidance", "t0", "tau")} | r["mean"]),
                        flush=True,
                    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or ("sweep-val" if args.sweep else "tokens" if args.domains else "text")
    (out / f"translation-{tag}.json").write_text(json.dumps(results, indent=2))
    title = f"Shape translation ({args.split} split, {args.n} scenes per direction, {'learned tokens' if args.domains else 'text prompts'})"
    print(write_tables(results, out / f"translation-{tag}.md", title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
