"""Condense the val sweeps of job 5 (benchmarks/translation.py json, one file per setup and half-grid) into
one jsonl of cells and a markdown map: success per (t0, tau, guidance) for each setup, the best cells, and the
setting that is good across setups (the mean over setups), which is how the embedded model's defaults were chosen.

    python benchmarks/gpu/sweep_summary.py RUN_DIR [RUN_DIR ...] --raw benchmarks/results/raw/<folder>/job5-sweep.jsonl
    python benchmarks/gpu/sweep_summary.py --from-raw benchmarks/results/raw/<folder>/job5-sweep.jsonl    # table only
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cells_from_runs(dirs: list[str]) -> list[dict]:
    """Every (setup, solver, nfe, t0, tau, guidance) cell once: overlapping grids (and a run folder that still
    holds an earlier run's files) give the same cell twice; the first one read is kept."""
    cells, seen = [], set()
    for d in dirs:
        for f in sorted(Path(d).glob("translation-*.json")):
            setup = f.stem[len("translation-") :].rsplit("-t0", 1)[0]  # e.g. shipped-text-euler
            for r in json.loads(f.read_text()):
                key = (setup, r["solver"], r["nfe"], r["t0"], r["tau"], r["guidance"])
                if key in seen:
                    continue
                seen.add(key)
                cells.append(
                    {
                        "setup": setup,
                        "solver": r["solver"],
                        "nfe": r["nfe"],
                        "t0": r["t0"],
                        "tau": r["tau"],
                        "guidance": r["guidance"],
                        "n_per_direction": r["n_per_direction"],
                        "success": r["mean"]["success"],
                        "shape": r["mean"]["shape"],
                        "colour_kept": r["mean"]["colour_kept"],
                        "clean": r["mean"]["clean"],
                        "per_direction": {d["direction"]: d["success"] for d in r["directions"]},
                    }
                )
    return cells


def table(cells: list[dict]) -> str:
    setups = sorted({c["setup"] for c in cells})
    by = {(c["setup"], c["t0"], c["tau"], c["guidance"]): c["success"] for c in cells}
    settings = sorted({k[1:] for k in by})
    full = [s for s in settings if all((u,) + s in by for u in setups)]
    mean = {s: sum(by[(u,) + s] for u in setups) / len(setups) for s in full}
    n = cells[0]["n_per_direction"]
    lines = [
        f"# LSB at NFE 8 on the val split: a low-noise map ({n} scenes per direction, all six directions)",
        "",
        "Setups: `shipped` = the embedded mini SD; `focus500` = its UNet continued on an H100 (job 4, not shipped); "
        '`text` = prompts "a circle" / "a square" / "a triangle"; `tokens` = the domains learned from 200 images '
        "each. Pipelines ran on an H100 (benchmarks/gpu/job5-lsb-sweep.sh); success per cell.",
        "",
        "| t0 | tau | guidance | " + " | ".join(setups) + " | mean |",
        "|---|---|---|" + "---|" * (len(setups) + 1),
    ]
    for s in sorted(full, key=lambda s: -mean[s]):
        lines.append(
            f"| {s[0]:g} | {s[1]:g} | {s[2]:g} | "
            + " | ".join(f"{by[(u,) + s]:.3f}" for u in setups)
            + f" | **{mean[s]:.3f}** |"
        )
    lines += ["", "Best cell per setup:", ""]
    best = {}
    for c in cells:
        if c["setup"] not in best or c["success"] > best[c["setup"]]["success"]:
            best[c["setup"]] = c
    for u in setups:
        c = best[u]
        lines.append(f"- {u}: {c['success']:.3f} at t0 {c['t0']:g}, tau {c['tau']:g}, guidance {c['guidance']:g}")
    marg = collections.defaultdict(list)
    for s in full:
        marg[s[1]].append(mean[s])
    lines += [
        "",
        "Mean over setups and the other knobs, by tau: "
        + ", ".join(f"{t:g}: {sum(v) / len(v):.3f}" for t, v in sorted(marg.items()))
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*")
    ap.add_argument("--raw", default=None, help="write the condensed cells here (jsonl)")
    ap.add_argument("--from-raw", default=None, help="read the condensed cells from here instead of run folders")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "translation-sweep-lowtau-val.md"))
    args = ap.parse_args(argv)
    if args.from_raw:
        cells = [json.loads(line) for line in Path(args.from_raw).read_text().splitlines() if line.strip()]
    else:
        cells = cells_from_runs(args.runs)
    if args.raw:
        Path(args.raw).parent.mkdir(parents=True, exist_ok=True)
        Path(args.raw).write_text("".join(json.dumps(c) + "\n" for c in cells))
    text = table(cells)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
