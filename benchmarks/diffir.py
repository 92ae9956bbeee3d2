"""DiffIR (issue 8) against its no-prior ablation and the paired-bridge restorers, on the shapes world.

For every given restoration pipeline folder (DiffIR, the plain DIRformer, and optionally the I2SB bridge and the
conditional-diffusion / Palette pipelines, run at NFE ``--nfe-baselines``, default 10) it measures on ``--n``
pairs of the ``test`` split: PSNR and SSIM against the clean scene (``lsb.metrics.pixel``), FID / KID against
the clean test scenes in the shapes feature space (``lsb.metrics.features``), parameters, FLOPs per image
(``torch.utils.flop_counter.FlopCounterMode`` over one whole pipeline call at batch 1: every network, the VAE of
latent pipelines included) and seconds per image (batched, after a warm-up; batch 1 too). The task of each
folder is read from its pipeline config. Writes ``<tag>.md``, ``<tag>.json`` and ``<tag>.png`` (PSNR against
GFLOPs per image) to ``--out`` and states per task whether the issue's target holds: DiffIR's PSNR at least the
bridge's at NFE 10, at no more than one fifth of its FLOPs per image.

    python -m benchmarks.diffir --diffir runs/diffir-inpaint/s2/final runs/diffir-sr4/s2/final \\
        --plain runs/diffir-inpaint/plain/final runs/diffir-sr4/plain/final \\
        --bridge runs/bridge-inpaint/final runs/bridge-sr4/final --palette runs/palette-inpaint/final

``--baseline-log TASK=LOG`` instead takes the I2SB and Palette rows at NFE ``--nfe-baselines`` from a saved stdout
log of ``benchmarks/restoration.py`` (its JSON rows; a different run and n, labelled so) when the bridge models are
not at hand; their parameters and FLOPs per image are then measured here on a same-architecture pipeline built from
the embedded mini SD (FLOPs do not depend on the weights) with the same FlopCounterMode call, and their timings are
left out. ``--train-results`` (the trainings' result.json files) and ``--note`` add provenance to the header.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from benchmarks.logrows import json_rows, pyplot, training_lines

ROOT = Path(__file__).resolve().parents[1]


def load(path: str, device: str):
    """Any lsb restoration pipeline folder (float32: quality numbers are not confounded by half precision)."""
    try:
        from lsb.surfaces.restorers import load_restoration_pipeline
    except ImportError:  # older checkouts: DiffIR folders only
        load_restoration_pipeline = None
    if load_restoration_pipeline is not None:
        return load_restoration_pipeline(path, device=device, dtype=torch.float32)
    import lsb

    pipe = lsb.DiffIRPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def call_kwargs(pipe, nfe: int) -> dict:
    """num_inference_steps for an NFE: DiffIR uses its own 4 prior steps; bridges convert NFE to steps."""
    if type(pipe).__name__ == "DiffIRPipeline":
        return {}
    if hasattr(pipe, "set_sampler"):
        from lsb.helpers.bridge_schedulers import steps_for_nfe

        return {"num_inference_steps": steps_for_nfe(pipe.scheduler, nfe)}
    return {"num_inference_steps": nfe}


def n_parameters(pipe) -> int:
    return sum(p.numel() for m in pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters())


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def measure(pipe, clean_u8: torch.Tensor, deg_u8: torch.Tensor, kw: dict, device: str, batch: int, seed: int):
    from PIL import Image

    from lsb.metrics.features import fid, kid
    from lsb.metrics.pixel import psnr, ssim

    def pil(x):
        return [Image.fromarray(a) for a in x.permute(0, 2, 3, 1).numpy()]

    def run(x_u8, g):
        return pipe(pil(x_u8), generator=g, output_type="pt", **kw)

    g = torch.Generator(device).manual_seed(seed)
    res = run(deg_u8[: min(batch, len(deg_u8))], g)  # warm-up (and NFE)
    nfe = getattr(res, "nfe", None)
    outs, seconds = [], 0.0
    g = torch.Generator(device).manual_seed(seed)
    for i in range(0, len(deg_u8), batch):
        _sync(device)
        t = time.perf_counter()
        out = run(deg_u8[i : i + batch], g).images
        _sync(device)
        seconds += time.perf_counter() - t
        outs.append(out.float().cpu().clamp(0, 1))
    restored = torch.cat(outs)
    clean = clean_u8.float() / 255.0
    t = time.perf_counter()
    for _ in range(3):
        run(deg_u8[:1], torch.Generator(device).manual_seed(seed))
    _sync(device)
    latency = (time.perf_counter() - t) / 3
    gflops = gflops_per_image(pipe, deg_u8[:1], kw, device, seed)
    restored_u8 = (restored * 255).round().to(torch.uint8)
    k_mean, k_std = kid(clean_u8, restored_u8)
    return {
        "psnr": float(psnr(restored, clean).mean()),
        "ssim": float(ssim(restored, clean).mean()),
        "fid": fid(clean_u8, restored_u8),
        "kid": k_mean,
        "kid_std": k_std,
        "nfe": nfe,
        "params": n_parameters(pipe),
        "gflops_per_image": gflops,
        "s_per_image": seconds / len(deg_u8),
        "s_batch1": latency,
    }, restored


@torch.no_grad()
def gflops_per_image(pipe, one_u8: torch.Tensor, kw: dict, device: str, seed: int) -> float:
    """GFLOPs of one whole pipeline call on one image (FlopCounterMode; a multiply-add counts 2)."""
    from PIL import Image
    from torch.utils.flop_counter import FlopCounterMode

    images = [Image.fromarray(a) for a in one_u8.permute(0, 2, 3, 1).numpy()]
    with FlopCounterMode(display=False) as fc:
        pipe(images, generator=torch.Generator(device).manual_seed(seed), output_type="pt", **kw)
    return fc.get_total_flops() / 1e9


def same_architecture_pipeline(method: str, task: str, device: str):
    """An untrained restoration pipeline of the architecture ``lsb.training.bridge`` exports for ``method``
    (``i2sb`` / ``palette``) from the embedded mini SD: for parameter and FLOP counts only."""
    import lsb
    from lsb.training.bridge import RestorationTask, load_base

    vae, te, tok, unet, sched = load_base(lsb.MINI_SD)
    z = torch.zeros(2, unet.config.in_channels, 8, 8)
    pipe = RestorationTask(method, task, vae, te, tok, unet, sched, z, z, batch_size=2).pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def log_baselines(
    specs: list[str], nfe: int, pairs_for, rows_so_far: list[dict], device: str, seed: int, notes: list[str]
) -> list[dict]:
    """I2SB / Palette rows at ``nfe`` from restoration.py logs (``TASK=LOG``), with FLOPs measured here; appends to
    ``notes`` whether each log's degraded-input row matches this run's (i.e. the same scenes)."""
    rows = []
    for spec in specs:
        task, _, log = spec.partition("=")
        if not log:
            raise SystemExit(f"--baseline-log expects TASK=LOG, got {spec!r}")
        logged = json_rows([log])
        ref = next((r for r in logged if r["method"] == "degraded input"), None)
        pairs_for(task)
        here = next(r for r in rows_so_far if r["task"] == task and r["method"] == "degraded input")
        if ref is not None:  # pixel metrics of the degraded inputs do not depend on the device
            same = all(abs(ref[k] - here[k]) < 1e-5 for k in ("psnr", "ssim"))
            notes.append(
                f"{task}: the degraded-input row of `{log}` {'equals' if same else 'DIFFERS from'} the one "
                f"here (PSNR {ref['psnr']:.2f} vs {here['psnr']:.2f} dB): "
                + ("the logged rows are on the same test scenes." if same else "other scenes.")
            )
        for name, method in (("I2SB", "i2sb"), ("Palette (DDIM)", "palette")):
            hit = [r for r in logged if r["method"] == name and r["nfe"] == nfe]
            if not hit:
                continue
            r = hit[0]
            pipe = same_architecture_pipeline(method, task, device)
            kw = call_kwargs(pipe, nfe)
            _, deg_u8 = pairs_for(task)
            rows.append(
                {
                    "task": task,
                    "method": f"{name.split(' ')[0]} (NFE {nfe}, from log)",
                    "path": log,
                    "psnr": r["psnr"],
                    "ssim": r["ssim"],
                    "fid": r["fid"],
                    "kid": r["kid_x1000"] / 1e3,
                    "nfe": r["nfe"],
                    "params": n_parameters(pipe),
                    "gflops_per_image": gflops_per_image(pipe, deg_u8[:1], kw, device, seed),
                    "s_per_image": None,
                    "s_batch1": None,
                }
            )
            print(
                f"{task:8s} {rows[-1]['method']:22s} PSNR {r['psnr']:.2f} (log) GFLOPs "
                f"{rows[-1]['gflops_per_image']:.3f} (measured here)",
                flush=True,
            )
            del pipe
    return rows


def step_caveats(files) -> list[str]:
    """Per task: optimizer steps of DiffIR (stage 1 + stage 2) vs the plain ablation, from training results."""
    steps: dict = {}
    for f in files:
        r = json.loads(Path(f).read_text())
        params = r.get("parameters", {})
        stage = "s1" if "cpen_s1" in params else ("s2" if "cpen_s2" in params else "plain")
        steps.setdefault(r.get("task", "?"), {})[stage] = (r["steps"], r["seconds"])
    out = []
    for task, st in sorted(steps.items()):
        if {"s1", "s2", "plain"} <= st.keys():
            d_steps, d_sec = st["s1"][0] + st["s2"][0], st["s1"][1] + st["s2"][1]
            out.append(
                f"- {task}: DiffIR got {st['s1'][0]} (stage 1) + {st['s2'][0]} (stage 2) = {d_steps} optimizer "
                f"steps in {d_sec:.0f} s, the plain ablation {st['plain'][0]} steps in {st['plain'][1]:.0f} s: "
                f"the ablation had {st['plain'][0] / d_steps:.1f}x the steps, so the prior's effect is "
                "confounded with training length."
            )
    return out


def degraded_row(clean_u8, deg_u8) -> dict:
    from lsb.metrics.features import fid, kid
    from lsb.metrics.pixel import psnr, ssim

    c, d = clean_u8.float() / 255, deg_u8.float() / 255
    return {
        "psnr": float(psnr(d, c).mean()),
        "ssim": float(ssim(d, c).mean()),
        "fid": fid(clean_u8, deg_u8),
        "kid": kid(clean_u8, deg_u8)[0],
        "nfe": 0,
        "params": 0,
        "gflops_per_image": 0.0,
        "s_per_image": 0.0,
        "s_batch1": 0.0,
    }


def table(rows: list[dict]) -> str:
    head = (
        "| task | method | NFE | PSNR (dB) | SSIM | FID | KID x1e3 | params (M) | GFLOPs / image | ms / image "
        "(batched) | ms (batch 1) |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []

    def ms(v, digits):
        return "-" if v is None else f"{1e3 * v:.{digits}f}"

    for r in rows:
        lines.append(
            f"| {r['task']} | {r['method']} | {r['nfe'] if r['nfe'] is not None else '-'} | {r['psnr']:.2f} | "
            f"{r['ssim']:.4f} | {r['fid']:.2f} | {1e3 * r['kid']:.2f} | {r['params'] / 1e6:.3f} | "
            f"{r['gflops_per_image']:.3f} | {ms(r['s_per_image'], 3)} | {ms(r['s_batch1'], 2)} |"
        )
    return head + "\n".join(lines) + "\n"


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for task in sorted({r["task"] for r in rows}):
        by = {r["method"]: r for r in rows if r["task"] == task}
        d = by.get("DiffIR")
        if d and "plain DIRformer" in by:
            p = by["plain DIRformer"]
            out.append(
                f"- {task}: the prior changes PSNR by {d['psnr'] - p['psnr']:+.2f} dB over the plain DIRformer "
                f"ablation (SSIM {d['ssim'] - p['ssim']:+.4f}, FID {d['fid'] - p['fid']:+.2f})."
            )
        b = next((by[m] for m in by if m.startswith("I2SB")), None)
        if d and b:
            ratio = d["gflops_per_image"] / max(b["gflops_per_image"], 1e-12)
            ok_q, ok_c = d["psnr"] >= b["psnr"], ratio <= 0.2
            out.append(
                f"- {task}: DiffIR PSNR {d['psnr']:.2f} vs {b['method']} {b['psnr']:.2f} dB "
                f"({'holds' if ok_q else 'does NOT hold'}); compute {ratio:.4f} x the bridge's FLOPs per image "
                f"({'within' if ok_c else 'NOT within'} the 1/5 target). Target "
                f"{'met' if ok_q and ok_c else 'not met'}."
            )
        elif d:
            out.append(f"- {task}: no I2SB bridge folder or log given, so the issue's target is not checked here.")
    return out


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in rows:
            if r["task"] != task or r["method"] == "degraded input":
                continue
            x = max(r["gflops_per_image"], 1e-4)
            ax.scatter(x, r["psnr"], s=40)
            ax.annotate(
                f"{r['method']}\n(NFE {r['nfe']})",
                (x, r["psnr"]),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
        deg = next((r for r in rows if r["task"] == task and r["method"] == "degraded input"), None)
        if deg:
            ax.axhline(deg["psnr"], color="gray", ls="--", lw=1, label="degraded input")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_xscale("log")
        ax.set_xlabel("GFLOPs per image (whole pipeline call)")
        ax.set_ylabel("PSNR (dB), test split")
        ax.set_title(f"{task}: quality vs compute")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--diffir", nargs="*", default=[], help="DiffIRPipeline folders (one per task)")
    p.add_argument("--plain", nargs="*", default=[], help="plain DIRformer (no-prior ablation) folders")
    p.add_argument("--bridge", nargs="*", default=[], help="I2SB BridgeRestorationPipeline folders")
    p.add_argument("--palette", nargs="*", default=[], help="conditional-diffusion (Palette) pipeline folders")
    p.add_argument("--nfe-baselines", type=int, default=10, help="NFE of the bridge / Palette baselines")
    p.add_argument("--n", type=int, default=500, help="test pairs per task")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default="diffir")
    p.add_argument(
        "--baseline-log",
        nargs="*",
        default=[],
        metavar="TASK=LOG",
        help="I2SB / Palette rows at --nfe-baselines from a restoration.py stdout log (other run)",
    )
    p.add_argument(
        "--train-results",
        nargs="*",
        default=[],
        metavar="JSON",
        help="training result.json files of the benchmarked models, summarised in the header",
    )
    p.add_argument("--note", default=None, help="a provenance sentence for the header")
    a = p.parse_args(argv)
    if not (a.diffir or a.plain or a.bridge or a.palette or a.baseline_log):
        p.error("give at least one pipeline folder (--diffir / --plain / --bridge / --palette) or --baseline-log")
    return a


def main(argv=None) -> dict:
    a = parse_args(argv)
    argv_text = shlex.join(argv if argv is not None else sys.argv[1:])
    from lsb.training.diffir import paired_arrays

    models = (
        [("DiffIR", x) for x in a.diffir]
        + [("plain DIRformer", x) for x in a.plain]
        + [(f"I2SB (NFE {a.nfe_baselines})", x) for x in a.bridge]
        + [(f"Palette (NFE {a.nfe_baselines})", x) for x in a.palette]
    )
    pairs, rows = {}, []
    for method, path in models:
        pipe = load(path, a.device)
        task = pipe.config.get("task") or "?"
        if task not in pairs:
            pairs[task] = paired_arrays(task, a.n, a.split)
            rows.append({"task": task, "method": "degraded input", "path": "", **degraded_row(*pairs[task])})
        kw = call_kwargs(pipe, a.nfe_baselines)
        m, _ = measure(pipe, *pairs[task], kw, a.device, a.batch, a.seed)
        rows.append({"task": task, "method": method, "path": str(path), **m})
        print(
            f"{task:8s} {method:22s} PSNR {m['psnr']:.2f} SSIM {m['ssim']:.4f} FID {m['fid']:.2f} "
            f"GFLOPs {m['gflops_per_image']:.3f} ms/img {1e3 * m['s_per_image']:.3f}",
            flush=True,
        )
        del pipe

    def pairs_for(task):
        if task not in pairs:
            pairs[task] = paired_arrays(task, a.n, a.split)
            rows.append({"task": task, "method": "degraded input", "path": "", **degraded_row(*pairs[task])})
        return pairs[task]

    log_notes: list[str] = []
    rows += log_baselines(a.baseline_log, a.nfe_baselines, pairs_for, rows, a.device, a.seed, log_notes)
    rows.sort(key=lambda r: (r["task"], r["method"] != "degraded input", r["method"]))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device_name = torch.cuda.get_device_name() if torch.device(a.device).type == "cuda" else "cpu"
    md = (
        f"# DiffIR vs the paired-bridge restorers ({a.split} split, {a.n} pairs per task, {device_name})\n\n"
        f"Generated by `python -m benchmarks.diffir {argv_text}` (issue 8). FLOPs: one whole pipeline call at "
        f"batch 1 (torch FlopCounterMode; a multiply-add counts 2). ms / image: batches of {a.batch}, float32.\n\n"
    )
    if a.baseline_log:
        md += (
            "Rows `... (from log)`: PSNR / SSIM / FID / KID copied from the JSON rows of "
            + ", ".join(f"`{x.partition('=')[2]}`" for x in a.baseline_log)
            + " (another run, on "
            "another device, with its own trainings); their parameters and GFLOPs are measured here on a same-architecture "
            "pipeline; their timings are not comparable and left out. "
            + " ".join(f"{n[0].upper()}{n[1:]}" for n in log_notes)
            + "\n\n"
        )
    if a.note:
        md += a.note + "\n\n"
    if a.train_results:
        md += "Trainings of the benchmarked models:\n\n" + "\n".join(training_lines(a.train_results)) + "\n\n"
    md += table(rows) + "\n" + "\n".join(verdicts(rows)) + "\n"
    caveats = step_caveats(a.train_results)
    if caveats:
        md += (
            "\nCaveat, training budget (optimizer steps and seconds from the training result files):\n\n"
            + "\n".join(caveats)
            + "\n"
        )
    (out / f"{a.tag}.md").write_text(md)
    (out / f"{a.tag}.json").write_text(json.dumps({"args": vars(a), "device": device_name, "rows": rows}, indent=2))
    plot(rows, out / f"{a.tag}.png")
    print(md)
    return {"rows": rows}


if __name__ == "__main__":
    main()
