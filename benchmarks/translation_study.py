"""The LSB paper's quality-vs-NFE study on the shapes world: LSB, SDEdit and DDIB at NFE 4..50.

For every method and NFE, a small grid of the method's own hyperparameters is scored on the validation
split (never the test scenes) and the best setting by success rate is then run on the test split. The
test rows report the reader's success and attribute preservation (see ``translation.py``), FID and KID
in the feature space of the shipped shapes network (against the ideal translations of the same scenes)
and seconds per image. Each finished cell is saved at once, so an interrupted study resumes.

    python -m benchmarks.translation_study                      # full study (about 30 CPU-minutes)
    python -m benchmarks.translation_study --nfe 4 8 --n-val 10 --n-test 20 --tag quick

Writes benchmarks/results/translation-study[-TAG].md/.json/.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch


from benchmarks.logrows import pyplot
from benchmarks.translation import DIRECTIONS, Runner, run

ROOT = Path(__file__).resolve().parents[1]

#: Per-method validation grids (the method's own knobs; tau / t0 set SDEdit's start noise level).
GRIDS = {
    "lsb": {"guidance": [2.0, 3.0, 5.0], "t0": [0.02, 0.05], "tau": [0.35, 1.0]},
    "sdedit": {"guidance": [2.0, 3.0, 5.0], "t0": [0.05, 0.2], "tau": [1.0]},
    "ddib": {"guidance": [1.0, 2.0, 3.0], "t0": [0.2], "tau": [1.0]},
}


def grid_settings(axes: dict) -> list[dict]:
    """Every combination of the values of ``axes`` ({knob: values}), as {knob: value} dicts."""
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def grid(method: str) -> list[dict]:
    return grid_settings(GRIDS[method])


def load_cells(path: Path) -> dict:
    """The study state saved at ``path`` (its finished cells), or a new one."""
    return json.loads(path.read_text()) if path.is_file() else {"cells": {}}


def save_cells(state: dict, path: Path) -> None:
    """Write the study state to ``path`` through a temporary file (a cut-off write leaves the previous state)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def sweep_lines(tuning: list[dict], key: str) -> list[str]:
    """The results file's validation sweep: a table of the success per setting, rows named by ``key``."""
    lines = [
        "",
        "Validation sweep (success per setting):",
        "",
        "| method | NFE | setting | val success |",
        "|---|---|---|---|",
    ]
    for t in tuning:
        lines.append(
            f"| {t[key]} | {t['nfe']} | "
            + ", ".join(f"{k} {v:g}" for k, v in t["hp"].items())
            + f" | {t['success']:.3f} |"
        )
    return lines


def cell_key(method, nfe, split, hp) -> str:
    return f"{method}|{nfe}|{split}|" + ",".join(f"{k}={hp[k]:g}" for k in sorted(hp))


def feature_scores(pairs) -> dict:
    from lsb.metrics.features import fid, kid

    outs = np.stack([o for o, _ in pairs])
    ideal = np.stack([i for _, i in pairs])
    k, k_std = kid(ideal, outs)
    return {"fid": fid(ideal, outs), "kid": k, "kid_std": k_std}


def plot(rows: list[dict], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method in sorted({r["method"] for r in rows}):
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["nfe"])
        nfes = [r["nfe"] for r in rs]
        axes[0].plot(nfes, [r["fid"] for r in rs], marker="o", label=method.upper())
        axes[1].plot(nfes, [r["mean"]["success"] for r in rs], marker="o", label=method.upper())
    for ax, name in zip(axes, ["FID (shapes feature space, lower is better)", "success rate (reader)"]):
        ax.set_xscale("log")
        ax.set_xticks(sorted({r["nfe"] for r in rows}))
        ax.get_xaxis().set_major_formatter(ScalarFormatter())
        ax.get_xaxis().set_minor_formatter(NullFormatter())
        ax.set_xlabel("NFE")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def write(rows: list[dict], tuning: list[dict], path_md: Path, args, device_name: str = "cpu") -> str:
    lines = [
        "# Quality vs NFE: LSB, SDEdit and DDIB on the shapes world (embedded mini SD, text prompts)",
        "",
        f"Test split, {args.n_test} scenes per direction (x6 directions); each method's hyperparameters chosen per NFE "
        f"on the validation split ({args.n_val} scenes per direction; NFE above {args.tune_max_nfe} reuses the setting "
        f"chosen at the largest tuned NFE) from its grid: "
        + "; ".join(f"{m}: " + ", ".join(f"{k} in {v}" for k, v in GRIDS[m].items()) for m in args.methods)
        + ".",
        "FID / KID: shapes feature network, outputs vs the ideal translations of the same scenes "
        "(KID's std over subsets is of the order of its mean at this n; read FID).",
        "",
        "| method | NFE | chosen on val | val success | success | shape | colour kept | background kept | "
        "centre err (px) | PSNR vs ideal | FID | KID x1e3 | s/image |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (args.methods.index(r["method"]), r["nfe"])):
        m = r["mean"]
        hp = ", ".join(f"{k} {r['hp'][k]:g}" for k in GRIDS[r["method"]] if len(GRIDS[r["method"]][k]) > 1) or "-"
        lines.append(
            f"| {r['method']} | {r['nfe']} | {hp} | {r['val_success']:.3f} | **{m['success']:.3f}** | "
            f"{m['shape']:.3f} | {m['colour_kept']:.3f} | {m['background_kept']:.3f} | "
            f"{m['centre_error'] if m['centre_error'] is None else round(m['centre_error'], 2)} | "
            f"{m['psnr_ideal']:.2f} | {r['fid']:.2f} | {1e3 * r['kid']:.1f} | {r['seconds_per_image']:.3f} |"
        )
    lines += ["", "## The paper's claim on this ground truth", ""] + claims(rows) + sweep_lines(tuning, "method")
    lines += [
        "",
        f"Reproduce: `python -m benchmarks.translation_study --nfe {' '.join(map(str, args.nfe))} "
        f"--n-val {args.n_val} --n-test {args.n_test} --tune-max-nfe {args.tune_max_nfe}"
        + (f" --tag {args.tag}" if args.tag else "")
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + "`"
        + (f" (pipelines on {device_name}; s/image is that device's)." if args.device != "cpu" else "."),
    ]
    text = "\n".join(lines) + "\n"
    path_md.write_text(text)
    return text


def claims(rows: list[dict]) -> list[str]:
    by = {(r["method"], r["nfe"]): r for r in rows}
    out = []
    for nfe in (4, 8):
        here = [r for r in rows if r["nfe"] == nfe]
        if len({r["method"] for r in here}) < 2:
            continue
        top = max(r["mean"]["success"] for r in here)
        leaders = [r["method"] for r in here if r["mean"]["success"] >= top - 1e-9]  # equal counts tie exactly
        best_f = min(here, key=lambda r: r["fid"])
        who = leaders[0] if len(leaders) == 1 else "tie between " + " and ".join(leaders)
        if best_f["method"] == "lsb" and leaders == ["lsb"]:
            verdict = "LSB holds both."
        elif best_f["method"] == "lsb" and "lsb" in leaders:
            verdict = "LSB ties on success and holds FID."
        else:
            verdict = "LSB does not hold both."
        out.append(
            f"- NFE {nfe}: highest success {who} ({top:.3f}); lowest FID {best_f['method']} "
            f"({best_f['fid']:.2f}). {verdict}"
        )
    ref = by.get(("lsb", 8))
    if ref:
        for m in ("sdedit", "ddib"):
            match = [r["nfe"] for r in rows if r["method"] == m and r["mean"]["success"] >= ref["mean"]["success"]]
            if not any(r["method"] == m for r in rows):
                continue
            if not match:
                out.append(
                    f"- {m} never reaches LSB@8's success ({ref['mean']['success']:.3f}) up to NFE "
                    f"{max(r['nfe'] for r in rows if r['method'] == m)}: claim holds."
                )
            else:
                n = min(match)
                out.append(
                    f"- {m} first matches LSB@8's success ({ref['mean']['success']:.3f}) at NFE {n}: claim "
                    f"{'holds' if n >= 16 else 'does not hold'} (needs >= 2x LSB's NFE)."
                )
    return out


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["lsb", "sdedit", "ddib"], choices=list(GRIDS))
    ap.add_argument("--nfe", type=int, nargs="+", default=[4, 8, 16, 32, 50])
    ap.add_argument("--n-val", type=int, default=15)
    ap.add_argument("--n-test", type=int, default=50)
    ap.add_argument(
        "--tune-max-nfe",
        type=int,
        default=16,
        help="tune on val up to this NFE; larger NFEs reuse the setting chosen at the largest tuned one",
    )
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cpu", help="torch device for the pipelines")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "translation-study" + (f"-{args.tag}" if args.tag else "")
    state_path = out / f"{stem}.json"
    state = load_cells(state_path)
    runner = Runner(args.model, device=args.device)
    if args.device.startswith("cuda") and torch.cuda.is_available():
        state["device_name"] = torch.cuda.get_device_name()
    rows, tuning = [], []
    for method in args.methods:
        tuned = {}
        for nfe in args.nfe:
            best = None
            tune_at = nfe if nfe <= args.tune_max_nfe else max(n for n in args.nfe if n <= args.tune_max_nfe)
            # above --tune-max-nfe: the setting chosen at the largest tuned NFE, no val cells
            for hp in grid(method) if tune_at == nfe else []:
                key = cell_key(method, nfe, "val", hp)
                if key not in state["cells"]:
                    r = run(
                        runner,
                        method,
                        nfe,
                        "val",
                        args.n_val,
                        DIRECTIONS,
                        hp["guidance"],
                        hp["tau"],
                        hp["t0"],
                        "euler",
                        seed=1000,
                    )
                    state["cells"][key] = {"success": r["mean"]["success"], "hp": hp}
                    save_cells(state, state_path)
                cell = state["cells"][key]
                tuning.append({"method": method, "nfe": nfe, "hp": hp, "success": cell["success"]})
                if best is None or cell["success"] > best["success"]:
                    best = cell
            best = tuned[nfe] = best if tune_at == nfe else tuned[tune_at]
            key = cell_key(method, nfe, f"test{args.n_test}", best["hp"])
            if key not in state["cells"]:
                hp, pairs = best["hp"], []
                r = run(
                    runner,
                    method,
                    nfe,
                    "test",
                    args.n_test,
                    DIRECTIONS,
                    hp["guidance"],
                    hp["tau"],
                    hp["t0"],
                    "euler",
                    collect=pairs,
                )
                r.update(feature_scores(pairs), hp=hp, val_success=best["success"])
                state["cells"][key] = r
                save_cells(state, state_path)
            rows.append(state["cells"][key])
            r = rows[-1]
            print(
                json.dumps(
                    {"method": method, "nfe": nfe, "hp": r["hp"], "success": r["mean"]["success"], "fid": r["fid"]}
                ),
                flush=True,
            )
    print(write(rows, tuning, out / f"{stem}.md", args, state.get("device_name", args.device)))
    plot(rows, out / f"{stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
