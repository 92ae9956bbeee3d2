"""DDM vs a same-size DDPM baseline: quality vs NFE on the shapes world (issue 7).

    python -m benchmarks.ddm --ddm runs/ddm-t2i/final --ddpm runs/ddpm-t2i/final [--sr runs/ddm-sr4/final] \
        --nfe 2 5 10 20 50 --n 1000

Text-to-image on ``--n`` held-out (test split) captions "a {colour} {shape} on a {background} background":
- FID and KID (x1000) in the project's feature space (:mod:`lsb.metrics.features`) against the exact renders of
  the same scenes, and the reader's accuracy (:mod:`lsb.metrics.reader`): shape, colour and background all right.
- ``ddm``: :class:`lsb.DDMPipeline`, the official sampler (posterior step, eta = 1, correct C, ``denoise``), with
  ``num_inference_steps = NFE - 1`` so that it makes exactly NFE UNet calls (the official "N steps" = N + 1 calls);
  ``ddm-eta0``: the same with the deterministic step.
- ``ddpm+ddim`` / ``ddpm+dpm++``: the DDPM baseline in diffusers' ``StableDiffusionPipeline`` with ``DDIMScheduler``
  and ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)``; NFE = num_inference_steps.
Classifier-free guidance (``--guidance``) batches both branches in one call, so it does not change the NFE.
``--sr``: the image-conditioned DDM (4x super-resolution) vs NFE: PSNR to the clean picture and reader accuracy.
Writes ``<out>/<tag>.md``, ``.json`` and ``.png``.

Every finished row is printed as one JSON line, so ``--from-log LOG...`` rebuilds the table, JSON and plot from a
saved stdout log (e.g. of a run cut short by a time limit) without the models: give the run's ``--n --nfe --split
--guidance`` again, plus ``--train-results`` (the trainings' result.json files) and ``--note`` for the provenance
header. The model-free "real (other scenes)" floor row is recomputed when the log lacks it; planned method x NFE
rows that are in no log are listed as missing. The markdown ends with the claim computed from the rows: the DDM at
NFE 10 vs the DDPM baseline (DDIM, DPM-Solver++) at NFE >= 20.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import numpy as np
import torch

import lsb
from lsb.data import shapes
from lsb.data.degradations import degrade
from lsb.metrics import features, reader

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


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _generate(pipe, prompts, batch, guidance, nfe_fn, seed, **kw) -> tuple[torch.Tensor, int, float]:
    """All images for ``prompts`` as a float tensor in [0, 1] (N, 3, 64, 64), the NFE per image batch, seconds."""
    outs, nfe, t0 = [], None, time.time()
    for i in range(0, len(prompts), batch):
        g = torch.Generator(pipe.device).manual_seed(seed + i)
        res = nfe_fn(pipe, prompts[i : i + batch], g, guidance, **kw)
        outs.append(res[0].float().cpu())
        nfe = res[1]
    return torch.cat(outs).clamp(0, 1), nfe, time.time() - t0


def _ddm_call(pipe, prompts, g, guidance, nfe, eta):
    out = pipe(prompts, num_inference_steps=nfe - 1, guidance_scale=guidance, eta=eta, generator=g, output_type="pt")
    return out.images, out.nfe


def _sd_call(pipe, prompts, g, guidance, nfe):
    calls = []
    h = pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        imgs = pipe(prompts, num_inference_steps=nfe, guidance_scale=guidance, generator=g, output_type="pt").images
    finally:
        h.remove()
    return imgs, len(calls)


def _score(imgs: torch.Tensor, real: torch.Tensor, scenes) -> dict:
    acc = reader.attribute_accuracy(reader.read_batch(imgs), scenes)
    kid_m, kid_s = features.kid(real, imgs)
    return {
        "fid": features.fid(real, imgs),
        "kid_x1000": 1000 * kid_m,
        "kid_std_x1000": 1000 * kid_s,
        "all_right": acc["all"],
        "shape": acc["shape"],
        "colour": acc["colour"],
        "background": acc["background"],
        "clean": acc["clean"],
    }


def _renders(scenes) -> torch.Tensor:
    return torch.from_numpy(np.stack([shapes.render_array(s) for s in scenes])).permute(0, 3, 1, 2).float() / 255


def run(a) -> dict:
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline

    device, dtype = _device(a.device), torch.float32
    scenes = shapes.scenes(a.split, a.n)
    prompts = [s.caption for s in scenes]
    real = _renders(scenes)
    rows = [_floor_row(a.split, a.n)]  # other real scenes: the floor
    print(json.dumps(rows[-1]), flush=True)

    methods = []
    if a.ddm:
        ddm = lsb.DDMPipeline.from_pretrained(a.ddm, dtype=dtype).to(device)
        methods += [("ddm", ddm, _ddm_call, {"eta": 1.0}), ("ddm-eta0", ddm, _ddm_call, {"eta": 0.0})]
    if a.ddpm:
        sd = StableDiffusionPipeline.from_pretrained(
            a.ddpm, dtype=dtype, safety_checker=None, requires_safety_checker=False
        ).to(device)
        ddim = DDIMScheduler.from_config(sd.scheduler.config)
        dpm = DPMSolverMultistepScheduler.from_config(sd.scheduler.config, algorithm_type="dpmsolver++", solver_order=2)
        for name, sch in (("ddpm+ddim", ddim), ("ddpm+dpm++", dpm)):
            p = StableDiffusionPipeline(**{**sd.components, "scheduler": sch})
            methods.append((name, p, _sd_call, {}))
    for name, pipe, fn, kw in methods:
        pipe.set_progress_bar_config(disable=True)
        for nfe in a.nfe:
            imgs, used, sec = _generate(pipe, prompts, a.batch, a.guidance, fn, a.seed, nfe=nfe, **kw)
            if used != nfe:
                raise RuntimeError(f"{name}: asked for NFE {nfe}, the sampler made {used} UNet calls")
            row = {"method": name, "nfe": nfe, **_score(imgs, real, scenes), "s_per_image": sec / len(prompts)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if a.grids:
                from lsb.io.images import save_grid

                save_grid(imgs[:16] * 2 - 1, Path(a.out) / f"{a.tag}-{name}-nfe{nfe}.png", nrow=16)

    sr_rows = []
    if a.sr:
        sr = lsb.DDMPipeline.from_pretrained(a.sr, dtype=dtype).to(device)
        sr.set_progress_bar_config(disable=True)
        sr_scenes = scenes[: min(a.n, 500)]
        lows = [degrade(shapes.render(s), "sr4") for s in sr_scenes]
        clean = _renders(sr_scenes)
        low_t = torch.from_numpy(np.stack([np.asarray(im) for im in lows])).permute(0, 3, 1, 2).float() / 255
        acc_low = reader.attribute_accuracy(reader.read_batch(low_t), sr_scenes)
        sr_rows.append(
            {
                "method": "bicubic input",
                "nfe": 0,
                "psnr": _psnr(low_t, clean),
                "all_right": acc_low["all"],
                "shape": acc_low["shape"],
            }
        )
        for nfe in a.nfe:
            outs = []
            for i in range(0, len(lows), a.batch):
                g = torch.Generator(device).manual_seed(a.seed + i)
                o = sr(image=lows[i : i + a.batch], num_inference_steps=nfe - 1, generator=g, output_type="pt")
                outs.append(o.images.float().cpu())
            imgs = torch.cat(outs).clamp(0, 1)
            acc = reader.attribute_accuracy(reader.read_batch(imgs), sr_scenes)
            row = {
                "method": "ddm-sr4",
                "nfe": nfe,
                "psnr": _psnr(imgs, clean),
                "all_right": acc["all"],
                "shape": acc["shape"],
            }
            sr_rows.append(row)
            print(json.dumps(row), flush=True)
    return {"rows": rows, "sr_rows": sr_rows}


def _floor_row(split: str, n: int) -> dict:
    """The model-free reference row: ``n`` other real scenes scored against the renders of the first ``n``."""
    scenes = shapes.scenes(split, n)
    floor = _score(_renders(shapes.scenes(split, n, start=n)), _renders(scenes), scenes)
    floor.update(all_right=float("nan"), shape=float("nan"), colour=float("nan"), background=float("nan"))
    return {"method": "real (other scenes)", "nfe": 0, **floor, "s_per_image": 0.0}


PLAN = {"ddm": ("ddm", "ddm-eta0"), "ddpm": ("ddpm+ddim", "ddpm+dpm++"), "sr": ("ddm-sr4",)}


def from_log(a) -> dict:
    """The result dict of :func:`run`, rebuilt from the JSON rows of saved stdout logs."""
    rows, sr_rows, seen = [], [], set()
    for r in json_rows(a.from_log):
        key = (r["method"], r["nfe"])
        if key in seen:
            continue
        seen.add(key)
        (rows if "fid" in r else sr_rows).append(r)
    recomputed = not any(r["nfe"] == 0 for r in rows)
    if recomputed and rows:
        rows.insert(0, _floor_row(a.split, a.n))
    order = list(dict.fromkeys(r["method"] for r in rows + sr_rows))
    rows.sort(key=lambda r: (order.index(r["method"]), r["nfe"]))
    sr_rows.sort(key=lambda r: (order.index(r["method"]), r["nfe"]))
    missing = []
    for group in PLAN.values():
        if any(m in order for m in group):
            for m in group:
                lost = [n for n in a.nfe if (m, n) not in seen]
                if lost:
                    missing.append(f"{m}: NFE {', '.join(map(str, lost))}")
    return {
        "rows": rows,
        "sr_rows": sr_rows,
        "logs": [str(f) for f in a.from_log],
        "missing": missing,
        "floor_recomputed": recomputed and bool(rows),
    }


def claims(rows: list[dict]) -> list[str]:
    """Markdown lines: the DDM at NFE 10 against the DDPM baseline at NFE >= 20, and a note on KID's spread."""
    ddm = [r for r in rows if r["method"] in ("ddm", "ddm-eta0") and r["nfe"] == 10]
    base = [r for r in rows if r["method"].startswith("ddpm+") and r["nfe"] >= 20]
    out = []
    if ddm and base:
        out += [
            "| DDM (A) | DDPM baseline (B) | FID (A vs B) | reader all right (A vs B) | verdict |",
            "|---|---|---|---|---|",
        ]
        verdicts = {}
        for x in ddm:
            for y in base:
                f, fok = fmt_cmp("", x["fid"], y["fid"], lower_better=True)
                c, cok = fmt_cmp("", x["all_right"], y["all_right"], lower_better=False, digits=3)
                v = pair_verdict(fok, cok, "accuracy")
                verdicts.setdefault(x["method"], []).append(v == "holds")
                out.append(
                    f"| {x['method']} @ {x['nfe']} | {y['method']} @ {y['nfe']} | {f.strip()} | {c.strip()} | {v} |"
                )
        out.append("")
        for m, oks in verdicts.items():
            word = tally_word(oks)
            out.append(
                f"- (c) {m} at NFE 10 beats the DDPM baseline at NFE >= 20: {word} ({sum(oks)} of {len(oks)} "
                "comparisons better on both FID and reader accuracy)."
            )
    ks = [r for r in rows if r["nfe"] > 0 and "kid_std_x1000" in r and r["fid"] < 50]
    if ks:
        med = lambda v: float(np.median(v))  # noqa: E731
        size = med([abs(r["kid_x1000"]) for r in ks])
        out.append(
            f"- KID: over the rows with FID < 50, the median |KID x1000| is {size:.0f} "
            f"and the median std over subsets {med([r['kid_std_x1000'] for r in ks]):.0f}: at this n KID cannot "
            "rank these models, so FID (and the reader) are the figures to read."
        )
    return out


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return float((-10 * torch.log10(mse)).mean())


def write(res: dict, a) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.tag}.json").write_text(json.dumps({"args": vars(a), **res}, indent=2))
    lines = [
        f"# DDM vs DDPM baseline on the shapes world ({a.split} split, n = {a.n}, guidance {a.guidance})",
        "",
        f"Command: `python -m benchmarks.ddm {shlex.join(a.argv)}`",
        "",
    ]
    lines += provenance_lines(
        res,
        a,
        " (the model-free `real (other scenes)` row recomputed here, the run did not print it)."
        if res.get("floor_recomputed")
        else ".",
    )
    lines += [
        "",
        "NFE = batched UNet calls per image (CFG in the same call). FID/KID in the shapes feature space "
        "against exact renders of the same scenes; `all right` = reader reads shape, colour and background "
        "of the caption. `real (other scenes)`: n other real test scenes (other captions) against the renders: "
        "what FID two real sets of this n reach; not a floor for generations of the same captions, which "
        "also match the renders' attribute mix.",
        "",
        "| method | NFE | FID | KID x1000 | all right | shape | colour | background | clean | s/image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['method']} | {r['nfe']} | {r['fid']:.2f} | {r['kid_x1000']:.2f} | {r['all_right']:.3f} | "
            f"{r['shape']:.3f} | {r['colour']:.3f} | {r['background']:.3f} | {r['clean']:.3f} | "
            f"{r['s_per_image']:.4f} |"
        )
    if res["sr_rows"]:
        lines += [
            "",
            "## Image-conditioned DDM: 4x super-resolution",
            "",
            "| method | NFE | PSNR (dB) | all right | shape |",
            "|---|---|---|---|---|",
        ]
        for r in res["sr_rows"]:
            lines.append(f"| {r['method']} | {r['nfe']} | {r['psnr']:.2f} | {r['all_right']:.3f} | {r['shape']:.3f} |")
    lines += claims_section(
        claims(res["rows"]), "A beats B when its FID is lower and its reader accuracy higher (same caption set)."
    )
    (out / f"{a.tag}.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    if plt is None:
        return
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["method"] for r in res["rows"] if r["nfe"] > 0):
        rs = sorted((r for r in res["rows"] if r["method"] == name), key=lambda r: r["nfe"])
        axes[0].plot([r["nfe"] for r in rs], [r["fid"] for r in rs], "o-", label=name)
        axes[1].plot([r["nfe"] for r in rs], [r["all_right"] for r in rs], "o-", label=name)
    nfes = sorted({r["nfe"] for r in res["rows"] if r["nfe"] > 0})
    for ax, lab in zip(axes, ("FID (shapes features)", "reader: all attributes right")):
        ax.set_xscale("log")
        ax.set_xticks(nfes, [str(v) for v in nfes])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("NFE")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    floor = [r for r in res["rows"] if r["nfe"] == 0]
    if floor:
        axes[0].axhline(floor[0]["fid"], color="gray", ls="--", label="real (other scenes)")
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / f"{a.tag}.png", dpi=120)


def main(argv=None):
    import sys

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ddm", help="DDMPipeline folder of the text-to-image DDM (runs/<...>/final)")
    ap.add_argument("--ddpm", help="StableDiffusionPipeline folder of the same-size DDPM baseline")
    ap.add_argument("--sr", help="DDMPipeline folder of the image-conditioned (sr4) DDM")
    ap.add_argument("--nfe", type=int, nargs="+", default=[2, 5, 10, 20, 50])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--split", default="test", choices=("val", "test"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--tag", default="ddm")
    ap.add_argument("--grids", action="store_true", help="also save a 16-image grid per method and NFE")
    add_log_args(ap)
    a = ap.parse_args(argv)
    a.argv = list(argv if argv is not None else sys.argv[1:])
    if a.from_log:
        res = from_log(a)
        write(res, a)
        print((Path(a.out) / f"{a.tag}.md").read_text())
        return res
    if not (a.ddm or a.ddpm or a.sr):
        ap.error("give at least one of --ddm, --ddpm, --sr (or --from-log)")
    if min(a.nfe) < 2:
        ap.error("--nfe values must be >= 2 (the DDM sampler's last call is its own step)")
    res = run(a)
    write(res, a)
    print((Path(a.out) / f"{a.tag}.md").read_text())


if __name__ == "__main__":
    main()
