"""Shape translation on a rectified-flow model (SD3 architecture): LSB (Euler, multistep), FlowEdit and SDEdit.

Issue 17's study. For every method and NFE (batched transformer calls) a small grid of the method's own
settings is scored on the validation split, the best setting by success is run on the test split, and the
test rows are scored exactly as ``benchmarks.translation`` / ``benchmarks.translation_study`` score the VP
model (imported, not copied): the reader's success and attribute preservation, PSNR against the ideal
rendering, FID in the shipped shapes feature space (``lsb.metrics.features``) against the ideal translations,
seconds per image, and -- since the methods evaluate different numbers of latents per call -- forward passes
per image (LSB 2 per call, FlowEdit on SD3 4 = CFG on both branches, SDEdit 2 = CFG). FlowEdit also runs at
its paper setting (T = 50, n_max = 33, CFG 3.5 / 13.5 on SD3). ``--vp-model`` adds the same LSB settings on a
VP model (default the embedded mini SD) for a side-by-side of the two bases.

    python -m benchmarks.translation_flow --model lsb/assets/mini-sd3                 # the study
    python -m benchmarks.translation_flow --model <tiny sd3 folder> --n 2 --tag smoke  # smoke run

Writes benchmarks/results/translation-flow[-TAG].md/.json/.png; finished cells are cached in the json, so an
interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.translation import DIRECTIONS, Runner, to_uint8, translate_directions
from benchmarks.logrows import pyplot
from benchmarks.translation_study import feature_scores, grid_settings, load_cells, save_cells, sweep_lines

ROOT = Path(__file__).resolve().parents[1]

#: Per-method validation grids. LSB: w, t0, tau; SDEdit: CFG w (source prompt as negative) and its start level
#: (tau, t0 -> s(t0)); FlowEdit: target and source CFG and its start level n_max / T (the paper's is 33 / 50 = 0.66).
GRIDS = {
    "lsb": {"guidance": [2.0, 3.0, 5.0], "t0": [0.02, 0.05], "tau": [0.35, 1.0]},
    "sdedit": {"guidance": [2.0, 3.0, 5.0], "t0": [0.05, 0.2], "tau": [1.0]},
    "flowedit": {"guidance": [5.0, 9.0, 13.5], "source_guidance": [1.5, 3.5], "n_max_fraction": [0.33, 0.66]},
}
#: rows: (label, method, solver)
VARIANTS = {
    "lsb-euler": ("lsb", "euler"),
    "lsb-multistep": ("lsb", "multistep"),
    "flowedit": ("flowedit", None),
    "sdedit": ("sdedit", None),
}


def grid(method: str) -> list[dict]:
    return grid_settings(GRIDS[method])


class FlowRunner(Runner):
    """``benchmarks.translation.Runner`` that also records forward passes per image and passes FlowEdit's source
    guidance (through :func:`lsb.surfaces.flow_translators.translate_flow` for flow models)."""

    def __call__(self, method, images, src, tgt, nfe, hp, solver, seed):
        from lsb.surfaces.flow_translators import translate_flow
        from lsb.surfaces.translators import translate

        pipe = self.pipe(method)
        if method == "lsb":
            pipe.scheduler.register_to_config(solver=solver)
        gens = [torch.Generator().manual_seed(seed + i) for i in range(len(images))]
        kw = dict(
            nfe=nfe,
            guidance_scale=hp.get("guidance"),
            tau=hp.get("tau"),
            t0=hp.get("t0"),
            generator=gens,
            output_type="np",
        )
        s, t = self.prompt(pipe, src), self.prompt(pipe, tgt)
        if getattr(pipe, "transformer", None) is not None:
            imgs, spent, passes = translate_flow(
                method,
                pipe,
                images,
                s,
                t,
                source_guidance_scale=hp.get("source_guidance"),
                n_max_fraction=hp.get("n_max_fraction"),
                **kw,
            )
        else:
            imgs, spent, passes = translate(method, pipe, images, s, t, return_forward_passes=True, **kw)
        return to_uint8(imgs), spent, passes


def run_cell(runner, method, solver, nfe, split, n, hp, seed=0, batch=25, collect=None) -> dict:
    """Translate ``n`` scenes per direction, score them (``benchmarks.translation.translate_directions``)."""
    rows, seconds, counts = translate_directions(
        lambda images, src, tgt, i: runner(method, images, src, tgt, nfe, hp, solver, seed + i),
        split,
        n,
        DIRECTIONS,
        batch,
        collect,
    )
    spent, passes = counts or (None, None)
    mean = {
        k: float(np.mean([r[k] for r in rows if r[k] is not None]))
        for k in rows[0]
        if k not in ("direction", "n")
        if any(r[k] is not None for r in rows)
    }
    return {
        "nfe_spent": spent,
        "forward_passes": passes,
        "seconds_per_image": seconds,
        "mean": mean,
        "directions": rows,
    }


def cell_key(model, label, nfe, split, hp) -> str:
    return f"{model}|{label}|{nfe}|{split}|" + ",".join(f"{k}={hp[k]:g}" for k in sorted(hp))


def _fmt(v, nd=3):
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def plot(rows: list[dict], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label in dict.fromkeys(r["label"] for r in rows):
        rs = sorted((r for r in rows if r["label"] == label), key=lambda r: r["forward_passes"])
        x = [r["forward_passes"] for r in rs]
        axes[0].plot(x, [r["fid"] for r in rs], marker="o", label=label)
        axes[1].plot(x, [r["mean"]["success"] for r in rs], marker="o", label=label)
    for ax, name in zip(axes, ["FID (shapes feature space, lower is better)", "success rate (reader)"]):
        ax.set_xscale("log")
        ax.set_xlabel("forward passes per image")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def write(rows, tuning, path_md: Path, args) -> str:
    lines = [
        f"# Shape translation on a rectified-flow model ({args.model})",
        "",
        f"Test split, {args.n} scenes per direction (x6 directions); settings chosen per method and NFE on the "
        f"validation split ({args.n_val} scenes per direction) from: "
        + "; ".join(f"{m}: " + ", ".join(f"{k} in {v}" for k, v in GRIDS[m].items()) for m in GRIDS)
        + ".",
        "NFE = batched transformer calls; passes = latents the transformer evaluates per image. FID: shapes "
        "feature network, outputs vs the ideal translations of the same scenes.",
        "",
        "| model | method | NFE | passes/image | chosen on val | val success | success | shape | colour kept | "
        "background kept | PSNR vs ideal | FID | s/image |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["mean"]
        hp = ", ".join(f"{k} {v:g}" for k, v in r["hp"].items()) or "paper"
        lines.append(
            f"| {r['model_label']} | {r['label']} | {r['nfe_spent']} | {r['forward_passes']} | {hp} | "
            f"{_fmt(r.get('val_success'))} | **{m['success']:.3f}** | {m['shape']:.3f} | {m['colour_kept']:.3f} | "
            f"{m['background_kept']:.3f} | {m['psnr_ideal']:.2f} | {r['fid']:.2f} | "
            f"{r['seconds_per_image']:.3f} |"
        )
    lines += sweep_lines(tuning, "label")
    lines += ["", "Reproduce: `python -m benchmarks.translation_flow " + " ".join(args.argv) + "`"]
    text = "\n".join(lines) + "\n"
    path_md.write_text(text)
    return text


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="an SD3 (or FLUX) diffusers folder, e.g. lsb/assets/mini-sd3")
    ap.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--nfe", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--no-flowedit-paper", action="store_true", help="skip FlowEdit at its paper setting")
    ap.add_argument("--n", type=int, default=100, help="test scenes per direction")
    ap.add_argument("--n-val", type=int, default=None, help="validation scenes per direction (default min(n, 15))")
    ap.add_argument(
        "--tune-max-nfe",
        type=int,
        default=16,
        help="tune on val up to this NFE; larger NFEs reuse the setting chosen at the largest tuned one",
    )
    ap.add_argument(
        "--vp-model",
        default=None,
        help="also run the chosen LSB settings on this VP model ('mini-sd': the embedded mini SD)",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.n_val = args.n_val or min(args.n, 15)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "translation-flow" + (f"-{args.tag}" if args.tag else "")
    state_path = out / f"{stem}.json"
    state = load_cells(state_path)

    def cell(runner, model_label, label, method, solver, nfe, split, n, hp, collect_fid):
        key = cell_key(model_label, label, nfe, f"{split}{n}", hp)
        if key not in state["cells"]:
            pairs = [] if collect_fid else None
            r = run_cell(runner, method, solver, nfe, split, n, hp, seed=1000 if split == "val" else 0, collect=pairs)
            if collect_fid:
                r.update(feature_scores(pairs))
            state["cells"][key] = r
            save_cells(state, state_path)
        return state["cells"][key]

    flow = FlowRunner(args.model, device=args.device)
    rows, tuning, chosen = [], [], {}
    for label in args.methods:
        method, solver = VARIANTS[label]
        picked = {}
        for nfe in args.nfe:
            tune_at = nfe if nfe <= args.tune_max_nfe else max([n for n in args.nfe if n <= args.tune_max_nfe] or [nfe])
            if tune_at == nfe:
                best = None
                for hp in grid(method):
                    c = cell(flow, args.model, label, method, solver, nfe, "val", args.n_val, hp, False)
                    tuning.append({"label": label, "nfe": nfe, "hp": hp, "success": c["mean"]["success"]})
                    if best is None or c["mean"]["success"] > best[1]:
                        best = (hp, c["mean"]["success"])
                picked[nfe] = best
            hp, val = picked[tune_at]
            r = cell(flow, args.model, label, method, solver, nfe, "test", args.n, hp, True)
            rows.append({**r, "label": label, "model_label": "flow", "nfe": nfe, "hp": hp, "val_success": val})
            print(
                json.dumps(
                    {
                        "label": label,
                        "nfe": nfe,
                        "hp": hp,
                        "success": r["mean"]["success"],
                        "fid": r["fid"],
                        "passes": r["forward_passes"],
                    }
                ),
                flush=True,
            )
        chosen[label] = picked
    if "flowedit" in args.methods and not args.no_flowedit_paper:
        r = cell(flow, args.model, "flowedit-paper", "flowedit", None, None, "test", args.n, {}, True)
        rows.append({**r, "label": "flowedit-paper", "model_label": "flow", "nfe": None, "hp": {}, "val_success": None})
    if args.vp_model:
        vp = FlowRunner(None if args.vp_model == "mini-sd" else args.vp_model, device=args.device)
        for label in [m for m in args.methods if VARIANTS[m][0] == "lsb"]:
            for nfe in args.nfe:
                tune_at = nfe if nfe in chosen[label] else max(chosen[label])
                hp, _ = chosen[label][tune_at]
                r = cell(vp, args.vp_model, label, "lsb", VARIANTS[label][1], nfe, "test", args.n, hp, True)
                rows.append(
                    {
                        **r,
                        "label": label + " (VP)",
                        "model_label": args.vp_model,
                        "nfe": nfe,
                        "hp": hp,
                        "val_success": None,
                    }
                )
    print(write(rows, tuning, out / f"{stem}.md", args))
    plot(rows, out / f"{stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
