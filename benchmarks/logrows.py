"""Helpers for rebuilding benchmark results from saved logs (``--from-log``) and for their provenance header.

The benchmark scripts print every finished row as one JSON line on stdout, so a run that was cut short (a time
limit on a lent GPU) still leaves its rows in the log. :func:`json_rows` reads them back; each script then feeds
them to its own table / plot code. :func:`training_lines` summarises the ``result.json`` files of the trainings
that produced the benchmarked models (steps, seconds, batch) for the header of the results file.
"""

from __future__ import annotations

import json
from pathlib import Path


def json_rows(files, key: str = "method") -> list[dict]:
    """Every JSON object with ``key`` printed on a line of the given log files, in file then line order."""
    rows = []
    for f in files:
        text = Path(f).read_text(errors="replace")
        for line in text.replace("\r", "\n").splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and key in obj:
                rows.append(obj)
    if not rows:
        raise SystemExit(f"no JSON result rows (objects with {key!r}) in {', '.join(map(str, files))}")
    return rows


def training_lines(files) -> list[str]:
    """One markdown bullet per training result file: name, optimizer steps, seconds (and batch when recorded)."""
    out = []
    for f in files:
        r = json.loads(Path(f).read_text())
        what = " ".join(str(r[k]) for k in ("method", "kind", "task") if k in r) or Path(f).stem
        batch = r.get("batch_size") or (r.get("recipe") or {}).get("batch_size")
        extra = f", batch {batch}" if batch else ""
        out.append(f"- `{Path(f).name}` ({what}): {r['steps']} optimizer steps in {r['seconds']:.0f} s{extra}")
    return out


def training_summary(files) -> str:
    """'S1-S2 s / N1-N2 optimizer steps each' over the given training result files."""
    rs = [json.loads(Path(f).read_text()) for f in files]
    s = [r["seconds"] for r in rs]
    n = [r["steps"] for r in rs]
    return f"{min(s):.0f}-{max(s):.0f} s / {min(n)}-{max(n)} optimizer steps each"


def fmt_cmp(name: str, a: float, b: float, lower_better: bool, digits: int = 2) -> tuple[str, bool]:
    """('FID 1.69 vs 8.97', a is at least as good as b)."""
    ok = a <= b if lower_better else a >= b
    return f"{name} {a:.{digits}f} vs {b:.{digits}f}", ok


def pair_verdict(fid_ok: bool, other_ok: bool, other: str) -> str:
    """The verdict on one A-vs-B comparison: A beats B when it is better on FID and on the ``other`` figure."""
    return (
        "holds"
        if fid_ok and other_ok
        else ("FID only" if fid_ok else (f"{other} only" if other_ok else "does not hold"))
    )


def tally_word(oks) -> str:
    """'holds' / 'does not hold' / 'holds only in part' over the comparisons of one claim."""
    return "holds" if all(oks) else ("does not hold" if not any(oks) else "holds only in part")


def claims_section(claim_lines: list[str], rule: str) -> list[str]:
    """The results file's '## Claims, checked on these rows' section: ``rule`` (when A beats B), then the claim
    lines; nothing when there are no claim lines."""
    if not claim_lines:
        return []
    return ["", "## Claims, checked on these rows", "", rule, ""] + claim_lines


def add_log_args(ap) -> None:
    """The ``--from-log`` / ``--train-results`` / ``--note`` options every benchmark with saved logs takes."""
    ap.add_argument(
        "--from-log",
        nargs="+",
        default=None,
        metavar="LOG",
        help="rebuild table / JSON / plot from the JSON rows of saved stdout logs (no models needed)",
    )
    ap.add_argument(
        "--train-results",
        nargs="*",
        default=[],
        metavar="JSON",
        help="training result.json files of the benchmarked models, summarised in the header",
    )
    ap.add_argument("--note", default=None, help="a provenance sentence for the header")


def provenance_lines(res: dict, a, logs_tail: str = ".") -> list[str]:
    """The header lines after the command: the logs a result was rebuilt from (ending in ``logs_tail``), the
    ``--note``, the trainings of the benchmarked models and the planned rows no log holds."""
    lines = []
    if res.get("logs"):
        lines += [
            f"Rebuilt from the JSON rows of the saved run logs {', '.join(f'`{f}`' for f in res['logs'])}" + logs_tail
        ]
    if getattr(a, "note", None):
        lines += [a.note]
    if getattr(a, "train_results", None):
        lines += ["", "Trainings of the benchmarked models:", ""] + training_lines(a.train_results)
    if res.get("missing"):
        lines += [
            "",
            "Planned rows that are in no log (the run was stopped by its time limit before reaching them): "
            + "; ".join(res["missing"])
            + ".",
        ]
    return lines


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None (with a message) when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot written (pip install matplotlib)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def hardware() -> str:
    """The machine a benchmark ran on, for its results file: processor, torch threads, torch version."""
    import platform

    import torch

    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
