"""Paired restoration benchmark: latent bridges (I2SB, DDBM Heun, DBIM orders 1-3) vs the Palette baseline vs NFE.

For one task (inpaint, sr4, deblur, jpeg) and ``--n`` scenes of a split, every model folder given is run at each
NFE of ``--nfes`` with each sampler that applies to it:

- an I2SB-trained bridge (``--i2sb DIR``): I2SB's posterior sampler, and DBIM (eta 0) on the I2SB bridge;
- a DDBM-trained bridge (``--ddbm DIR``, VP or VE): DDBM's hybrid Heun sampler (NFE = 3N - 1: the nearest
  reachable NFE is used and reported) and DBIM with solver order 1, 2, 3 (NFE >= 2);
- the Palette baseline (``--palette DIR``): DDIM (trailing spacing, eta 0);
- any other restoration pipeline folder (``--extra NAME=DIR``, e.g. DiffIR) at its own fixed setting, one row.

Metrics against the exact clean renders of the same scenes: PSNR and SSIM (images in [0, 1]); FID and KID x1000 in
the shapes feature space (``lsb.metrics.features``); the reader's attribute accuracy (``all`` = shape, colour and
background read back right; ``shape``). The degraded inputs are scored as an NFE-0 reference row. Known pixels of
the inpainting input are pasted back for every method alike (the mask is passed to every pipeline).

Tune on ``--split val``; report ``--split test``. Writes ``<tag>.md``, ``<tag>.json`` and ``<tag>.png`` (if
matplotlib is installed) to ``--out`` (default benchmarks/results). NFE = batched UNet calls per image.

Every finished row is also printed as one JSON line, so ``--from-log LOG...`` rebuilds the table, JSON and plot from
saved stdout logs of one or more runs on the same task / split / n (e.g. one run per model family, some cut short by
a time limit) without any model: give the run's ``--task --split --n --nfes`` again, plus ``--train-results`` (the
trainings' result.json files) and ``--note`` for the provenance header. Rows of the planned sampler x NFE grid that
are in no log are listed as missing. The markdown ends with claims computed from the rows (DBIM at NFE 10 vs DDBM
Heun at NFE >= 50; I2SB vs Palette at NFE 10).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch


from benchmarks.logrows import (
    add_log_args,
    claims_section,
    fmt_cmp,
    json_rows,
    pair_verdict,
    provenance_lines,
    pyplot,
    tally_word,
)

ROOT = Path(__file__).resolve().parents[1]

NFES = (1, 2, 5, 10, 20, 50, 100)


def score(restored: torch.Tensor, clean: torch.Tensor, scenes) -> dict:
    """Metrics of restored images (B, 3, H, W) in [0, 1] against the clean renders."""
    from lsb.metrics import features
    from lsb.metrics.pixel import psnr, ssim
    from lsb.metrics.reader import attribute_accuracy, read_batch

    restored = restored.float().clamp(0, 1).cpu()
    acc = attribute_accuracy(read_batch(restored), scenes)
    kid_mean, _ = features.kid(clean, restored)
    return {
        "psnr": float(psnr(restored, clean).mean()),
        "ssim": float(ssim(restored, clean).mean()),
        "fid": features.fid(clean, restored),
        "kid_x1000": 1000 * kid_mean,
        "all_right": acc["all"],
        "shape": acc["shape"],
    }


def run_pipe(pipe, degraded: torch.Tensor, mask, batch: int, seed: int, **call) -> tuple[torch.Tensor, int, float]:
    """Restore all images; returns (images in [0, 1], NFE per image, seconds per image)."""
    outs, nfe = [], None
    start = time.time()
    gen = torch.Generator(pipe._execution_device).manual_seed(seed)
    for i in range(0, len(degraded), batch):
        res = pipe(degraded[i : i + batch], mask=mask, generator=gen, output_type="pt", **call)
        outs.append(res.images.float().cpu())
        nfe = getattr(res, "nfe", call.get("num_inference_steps"))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return torch.cat(outs), nfe, (time.time() - start) / len(degraded)


def sampler_rows(kind: str, nfes) -> list[tuple[str, str, dict, int]]:
    """(label, sampler, scheduler settings, target NFE) for a model trained on bridge ``kind``."""
    rows = []
    for nfe in nfes:
        if kind == "i2sb":
            rows.append(("I2SB", "i2sb", {}, nfe))
            if nfe >= 2:
                rows.append(("DBIM (I2SB bridge, eta 0)", "dbim", {}, nfe))
        elif kind in ("vp", "ve"):
            rows.append((f"DDBM Heun ({kind.upper()})", "ddbm", {}, nfe))
            if nfe >= 2:
                for order in (1, 2, 3):
                    if order <= nfe - 1:
                        rows.append((f"DBIM order {order} ({kind.upper()})", "dbim", {"solver_order": order}, nfe))
    return rows


def run(a) -> dict:
    from lsb.data.degradations import inpaint_mask
    from lsb.surfaces.restorers import load_restoration_pipeline
    from lsb.io.execution import default_device
    from lsb.helpers.bridge_schedulers import steps_for_nfe
    from lsb.training.bridge import render_pairs

    device = torch.device(a.device) if a.device else default_device()
    clean_u8, degraded_u8, scenes = render_pairs(a.task, a.split, a.n)
    clean = torch.from_numpy(clean_u8).permute(0, 3, 1, 2).float() / 255.0
    degraded = torch.from_numpy(degraded_u8).permute(0, 3, 1, 2).float() / 255.0
    mask = torch.from_numpy(inpaint_mask(clean.shape[-1])).float() if a.task == "inpaint" else None
    rows = [{"method": "degraded input", "model": "-", "nfe": 0, "s_per_image": 0.0, **score(degraded, clean, scenes)}]
    print(json.dumps(rows[-1]))

    models = [("i2sb", p) for p in a.i2sb] + [("ddbm", p) for p in a.ddbm] + [("palette", p) for p in a.palette]
    for role, path in models:
        pipe = load_restoration_pipeline(path, device=device, dtype=torch.float32)
        if pipe.config.task != a.task:
            raise SystemExit(f"{path} restores {pipe.config.task!r}, not {a.task!r}")
        kind = pipe.config.trained_bridge["bridge"]
        if role == "palette":
            if kind != "noise":
                raise SystemExit(f"--palette {path}: not a conditional-diffusion model (trained on {kind!r})")
            plan = [("Palette (DDIM)", None, {}, nfe) for nfe in a.nfes]
        else:
            expected = ("i2sb",) if role == "i2sb" else ("vp", "ve")
            if kind not in expected:
                raise SystemExit(f"--{role} {path}: trained on the {kind!r} bridge, expected {expected}")
            plan = sampler_rows(kind, a.nfes)
        seen = set()
        for label, sampler, settings, nfe in plan:
            if sampler is not None:
                pipe.set_sampler(sampler, **settings)
            steps = steps_for_nfe(pipe.scheduler, nfe)
            key = (label, steps)
            if key in seen:  # DDBM: several target NFEs round to one N
                continue
            seen.add(key)
            images, used, sec = run_pipe(pipe, degraded, mask, a.batch, a.seed, num_inference_steps=steps)
            row = {
                "method": label,
                "model": str(path),
                "nfe": used,
                "target_nfe": nfe,
                "s_per_image": sec,
                **score(images, clean, scenes),
            }
            rows.append(row)
            print(json.dumps(row))
        del pipe
    for spec in a.extra:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--extra expects NAME=DIR, got {spec!r}")
        pipe = load_restoration_pipeline(path, device=device, dtype=torch.float32)
        images, used, sec = run_pipe(pipe, degraded, mask, a.batch, a.seed)
        rows.append(
            {
                "method": name,
                "model": path,
                "nfe": used if used is not None else -1,
                "s_per_image": sec,
                **score(images, clean, scenes),
            }
        )
        print(json.dumps(rows[-1]))
        del pipe
    return {"task": a.task, "split": a.split, "n": a.n, "device": str(device), "rows": rows}


def from_log(a) -> dict:
    """The result dict of :func:`run`, rebuilt from the JSON rows of saved stdout logs."""
    rows = json_rows(a.from_log)
    ref = [r for r in rows if r["method"] == "degraded input"]
    if not ref:
        raise SystemExit("no 'degraded input' row in the logs: are they restoration.py logs?")
    for r in ref[1:]:
        if any(abs(r[k] - ref[0][k]) > 1e-6 for k in ("psnr", "ssim", "fid")):
            raise SystemExit("the logs' 'degraded input' rows differ: they are runs on different tasks / splits / n")
    order = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "degraded input"))
    seen, body = set(), []
    for r in rows:
        key = (r["method"], r.get("model"), r["nfe"])
        if r["method"] == "degraded input" or key in seen:
            continue
        seen.add(key)
        body.append(r)
    body.sort(key=lambda r: (order.index(r["method"]), r["nfe"]))
    # the planned sampler x NFE grid of each model family seen in the logs, vs the rows that are there
    kinds = {"I2SB": "i2sb", "DDBM Heun (VP)": "vp", "DDBM Heun (VE)": "ve"}
    plan = [
        lab_nfe
        for m, k in kinds.items()
        if m in order
        for lab_nfe in dict.fromkeys((label, nfe) for label, _, _, nfe in sampler_rows(k, a.nfes))
    ]
    if "Palette (DDIM)" in order:
        plan += [("Palette (DDIM)", nfe) for nfe in a.nfes]
    have = {(r["method"], r.get("target_nfe", r["nfe"])) for r in body}
    missing: dict[str, list[int]] = {}
    for label, nfe in plan:
        if (label, nfe) not in have:
            missing.setdefault(label, []).append(nfe)
    return {
        "task": a.task,
        "split": a.split,
        "n": a.n,
        "device": a.device or "not recorded in the logs",
        "rows": [ref[0]] + body,
        "logs": [str(f) for f in a.from_log],
        "missing": [f"{m}: NFE {', '.join(map(str, v))}" for m, v in missing.items()],
    }


def claims(rows: list[dict]) -> list[str]:
    """Markdown lines: the methods' headline claims checked against these rows (where the rows exist)."""
    out = []

    def find(pred):
        return [r for r in rows if pred(r)]

    dbim = find(lambda r: r["method"].startswith("DBIM order") and r["nfe"] == 10)
    heun = find(lambda r: r["method"].startswith("DDBM Heun") and r["nfe"] >= 50)
    i2sb = find(lambda r: r["method"] == "I2SB" and r["nfe"] == 10)
    pal = find(lambda r: r["method"].startswith("Palette") and r["nfe"] == 10)
    if not ((dbim and heun) or (i2sb and pal)):
        return out
    out += [
        "| claim | A | B | FID (A vs B) | PSNR dB (A vs B) | reader all right (A vs B) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    tally = {}
    for tag, pairs in (
        ("(a) DBIM NFE 10 beats DDBM Heun NFE >= 50", [(d, h) for d in dbim for h in heun]),
        ("(b) I2SB NFE 10 beats Palette NFE 10", [(i, p) for i in i2sb for p in pal]),
    ):
        for x, y in pairs:
            f, fok = fmt_cmp("", x["fid"], y["fid"], lower_better=True)
            q, qok = fmt_cmp("", x["psnr"], y["psnr"], lower_better=False)
            c, _ = fmt_cmp("", x["all_right"], y["all_right"], lower_better=False, digits=3)
            verdict = pair_verdict(fok, qok, "PSNR")
            tally.setdefault(tag, []).append(verdict == "holds")
            out.append(
                f"| {tag} | {x['method']} @ {x['nfe']} | {y['method']} @ {y['nfe']} | {f.strip()} | "
                f"{q.strip()} | {c.strip()} | {verdict} |"
            )
    out.append("")
    for tag, oks in tally.items():
        word = tally_word(oks)
        out.append(f"- {tag}: {word} ({sum(oks)} of {len(oks)} comparisons better on both FID and PSNR).")
    ref = find(lambda r: r["method"] == "degraded input")
    if ref:
        out.append(
            f"- For reference, the degraded input itself scores FID {ref[0]['fid']:.2f}, PSNR "
            f"{ref[0]['psnr']:.2f} dB, SSIM {ref[0]['ssim']:.4f}, reader all right {ref[0]['all_right']:.3f}."
        )
    return out


def write(res: dict, a) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = a.tag or f"restoration-{a.task}-{a.split}"
    (out / f"{tag}.json").write_text(json.dumps({"args": {k: v for k, v in vars(a).items()}, **res}, indent=2))
    lines = [
        f"# Paired restoration: {res['task']} ({res['split']} split, n = {res['n']})",
        "",
        f"Command: `python -m benchmarks.restoration {shlex.join(a.argv)}`",
        "",
    ]
    lines += provenance_lines(res, a)
    lines += [
        "",
        "NFE = batched UNet calls per image (DDBM Heun: 3N - 1, the nearest reachable NFE). PSNR / SSIM on "
        "[0, 1] images, FID / KID in the shapes feature space, all against the exact clean renders of the same "
        "scenes; `all right` / `shape`: the reader's attribute accuracy. Device: " + res["device"] + ". KID "
        "x1000 is printed for completeness only: at these n its spread over subsets is of the order of its "
        "value (it goes negative), so FID is the distribution figure to read.",
        "",
        "| method | NFE | PSNR (dB) | SSIM | FID | KID x1000 | all right | shape | s/image | model |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['method']} | {r['nfe']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['fid']:.2f} | "
            f"{r['kid_x1000']:.2f} | {r['all_right']:.3f} | {r['shape']:.3f} | {r['s_per_image']:.4f} | "
            f"{Path(r['model']).parent.name if r['model'] != '-' else '-'} |"
        )
    lines += claims_section(
        claims(res["rows"]), "A beats B when its FID is lower and its PSNR higher (both on the same test scenes)."
    )
    (out / f"{tag}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / (tag + '.md')}")
    plt = pyplot()
    if plt is None:
        return

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name in dict.fromkeys(r["method"] for r in res["rows"] if r["nfe"] and r["nfe"] > 0):
        rs = sorted((r for r in res["rows"] if r["method"] == name), key=lambda r: r["nfe"])
        for ax, key in zip(axes, ("fid", "psnr", "all_right")):
            ax.plot([r["nfe"] for r in rs], [r[key] for r in rs], "o-", label=name)
    ref = res["rows"][0]
    for ax, key, lab in zip(
        axes, ("fid", "psnr", "all_right"), ("FID (shapes features)", "PSNR (dB)", "reader: all attributes right")
    ):
        ax.axhline(ref[key], color="gray", ls="--", label="degraded input")
        ax.set_xscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{res['task']} ({res['split']}, n = {res['n']})")
    fig.tight_layout()
    fig.savefig(out / f"{tag}.png", dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", required=True, choices=["inpaint", "sr4", "deblur", "jpeg"])
    ap.add_argument("--i2sb", nargs="*", default=[], help="I2SB-trained BridgeRestorationPipeline folder(s)")
    ap.add_argument("--ddbm", nargs="*", default=[], help="DDBM-trained (VP/VE) BridgeRestorationPipeline folder(s)")
    ap.add_argument("--palette", nargs="*", default=[], help="ConditionalDiffusionRestorationPipeline folder(s)")
    ap.add_argument(
        "--extra",
        nargs="*",
        default=[],
        metavar="NAME=DIR",
        help="any other restoration pipeline folder, run once at its default setting (e.g. DiffIR)",
    )
    ap.add_argument("--nfes", type=int, nargs="+", default=list(NFES))
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="torch device; with --from-log: the device to name in the header")
    add_log_args(ap)
    ap.add_argument("--tag", default=None, help="output file stem (default restoration-<task>-<split>)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args(argv)
    a.argv = list(argv if argv is not None else sys.argv[1:])
    if a.from_log:
        res = from_log(a)
        write(res, a)
        return res
    if not (a.i2sb or a.ddbm or a.palette or a.extra):
        ap.error("give at least one model folder (--i2sb / --ddbm / --palette / --extra), or --from-log")
    res = run(a)
    write(res, a)
    return res


if __name__ == "__main__":
    main()
