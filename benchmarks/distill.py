"""One-step students against their LSB teacher on the shapes world (test scenes, scored against exact ground truth).

For each direction with a student (``lsb distill``; default: the students shipped in ``lsb/assets/students``) the
same held-out test scenes are translated by

* the student at NFE 1 (one UNet call on the target prompt, one latent per image),
* the same single call with the adapter disabled (what the distillation adds),
* its teacher: LSB at the student's teacher settings (the embedded model's: NFE 8, w 3, tau 0.35, t0 0.02),
* LSB at NFE 2 without a student (its minimum: one Euler step + the final denoise; LSB is not defined at NFE 1),
* SDEdit at NFE 1 (one DDIM step from LSB's start noise level, CFG with the source as negative),

and scored with benchmarks/translation.py's reader (success, attributes kept, PSNR against the ideal rendering),
FID in the shipped shapes feature space (against the ideal renderings of the same scenes) and seconds per image,
all measured in this one run on this machine. The training cost is read from each student's ``lsb_student.json``.

    python -m benchmarks.distill --n 100
    python -m benchmarks.distill --students runs/students --directions circle-square triangle-circle

Writes benchmarks/results/distill[-TAG].md/.json/.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from benchmarks.logrows import hardware, pyplot
from benchmarks.translation import DIRECTIONS, Runner, to_uint8, translate_directions
from benchmarks.translation_study import feature_scores

ROOT = Path(__file__).resolve().parents[1]


def student_folders(root: Path, directions) -> dict:
    """``{(source, target): student folder}`` for the directions that have one under ``root/<source>-<target>``."""
    from lsb.helpers.student import STUDENT_FILE, resolve_student

    found = {}
    for a, b in directions:
        folder = resolve_student(root / f"{a}-{b}")
        if (folder / STUDENT_FILE).is_file():
            found[(a, b)] = folder
    return found


def sdedit_one_call(runner: Runner, images, src, tgt, settings, seed):
    """SDEdit at NFE 1 through lsb.helpers.sdedit (the CLI's ``translate`` asks NFE >= 2 of every method)."""
    from lsb.helpers.sdedit import sdedit_translate

    pipe = runner.pipe("sdedit")
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(images))]
    out, spent = sdedit_translate(
        pipe,
        images,
        runner.prompt(pipe, src),
        runner.prompt(pipe, tgt),
        nfe=1,
        t0=settings["t0"],
        tau=settings["tau"],
        guidance_scale=settings["guidance_scale"],
        generator=gens,
        output_type="np",
    )
    return to_uint8(out), spent


def time_breakdown(call, pipe, shape: str, n: int = 50, repeats: int = 2) -> dict:
    """Milliseconds per image spent in VAE encode, text encoding, UNet calls and VAE decode (benchmarks.speed's
    timers, installed on ``pipe`` for this measurement only), the best of ``repeats`` batches of ``n`` test scenes."""
    import time
    from collections import defaultdict

    from benchmarks.speed import instrument
    from lsb.data import shapes

    images = [shapes.render(s) for s in shapes.scenes("test", n, shape=shape)]
    saved = {k: getattr(pipe, k).forward for k in ("text_encoder", "unet")}
    saved_vae = (pipe.vae.encode, pipe.vae.decode)
    times: dict = defaultdict(float)
    instrument(pipe, times)
    best = None
    try:
        for _ in range(repeats):
            times.clear()
            t = time.perf_counter()
            call(images)
            total = time.perf_counter() - t
            row = {k: 1e3 * v / n for k, v in times.items()} | {"total": 1e3 * total / n}
            best = row if best is None or row["total"] < best["total"] else best
    finally:
        for k, fn in saved.items():
            getattr(pipe, k).forward = fn
        pipe.vae.encode, pipe.vae.decode = saved_vae
    return best


def evaluate(name, translate_chunk, direction, n, batch) -> dict:
    from lsb.data import shapes

    warm = [shapes.render(s) for s in shapes.scenes("val", 2, shape=direction[0])]
    translate_chunk(warm, *direction, 0)  # one-time costs (allocation, first calls) stay out of the timing
    pairs: list = []
    rows, seconds, counts = translate_directions(translate_chunk, "test", n, [direction], batch, pairs)
    return {
        "method": name,
        "nfe": counts[0] if counts else None,
        "seconds_per_image": seconds,
        **rows[0],
        **feature_scores(pairs),
    }


def run_direction(direction, folder: Path, n: int, batch: int, seed: int = 0) -> list[dict]:
    from lsb.surfaces.students import load_student

    info = json.loads((folder / "lsb_student.json").read_text())
    teacher = info["teacher"]
    src, tgt = direction
    runner = Runner()
    student = load_student(folder)
    results = []

    def student_chunk(images, s, t, i):
        gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(images))]
        return to_uint8(student(images, generator=gens, output_type="np").images), 1

    def lsb_chunk(nfe):
        def chunk(images, s, t, i):
            runner.pipe("lsb").scheduler.register_to_config(solver=teacher["solver"])
            return runner(
                "lsb",
                images,
                s,
                t,
                nfe,
                teacher["guidance_scale"],
                teacher["tau"],
                teacher["t0"],
                teacher["solver"],
                seed + i,
            )

        return chunk

    results.append(evaluate("student", student_chunk, direction, n, batch))
    student = load_student(folder, fuse=False)
    student.unet.disable_adapters()  # the same single call without the LoRA: what the distillation adds
    results.append(evaluate("one call, no adapter", student_chunk, direction, n, batch))
    results.append(
        evaluate(
            f"lsb (teacher, NFE {teacher['num_inference_steps']})",
            lsb_chunk(teacher["num_inference_steps"]),
            direction,
            n,
            batch,
        )
    )
    results.append(evaluate("lsb", lsb_chunk(2), direction, n, batch))
    results.append(
        evaluate(
            "sdedit",
            lambda images, s, t, i: sdedit_one_call(runner, images, s, t, teacher, seed + i),
            direction,
            n,
            batch,
        )
    )
    results[0]["breakdown_ms"] = time_breakdown(
        lambda ims: student(ims, generator=torch.Generator().manual_seed(0)), student, src
    )
    teacher_pipe = runner.pipe("lsb")
    results[2]["breakdown_ms"] = time_breakdown(
        lambda ims: teacher_pipe(
            ims,
            source_prompt=f"a {src}",
            target_prompt=f"a {tgt}",
            num_inference_steps=teacher["num_inference_steps"],
            guidance_scale=teacher["guidance_scale"],
            tau=teacher["tau"],
            t0=teacher["t0"],
            generator=torch.Generator().manual_seed(0),
        ),
        teacher_pipe,
        src,
    )
    tr = info.get("training", {})
    for r in results:
        r["direction"] = f"{src}->{tgt}"
    results[0]["training"] = tr
    results[0]["adapter_bytes"] = info.get("adapter_bytes")
    return results


def write(results: list[dict], path_md: Path, n: int) -> str:
    lines = [
        f"# One-step students against their LSB teacher (test split, {n} scenes per direction, CPU: {hardware()})",
        "",
        "| direction | method | NFE | success | shape | colour kept | background kept | PSNR vs ideal | FID | s/image | "
        "time vs teacher |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in dict.fromkeys(r["direction"] for r in results):
        rs = [r for r in results if r["direction"] == d]
        teacher = next(r for r in rs if r["method"].startswith("lsb (teacher"))
        for r in rs:
            ratio = r["seconds_per_image"] / teacher["seconds_per_image"]
            lines.append(
                f"| {d} | {r['method']} | {r['nfe']} | **{r['success']:.3f}** | {r['shape']:.3f} | {r['colour_kept']:.3f} | "
                f"{r['background_kept']:.3f} | {r['psnr_ideal']:.2f} | {r['fid']:.2f} | {r['seconds_per_image']:.4f} | "
                f"{ratio:.3f} |"
            )
    lines += ["", "Training cost (from each student's lsb_student.json, this CPU, shared with other jobs):", ""]
    lines += [
        "| direction | images | steps x batch | teacher cache (s) | training (s) | adapter |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        tr = r.get("training")
        if tr is not None:
            lines.append(
                f"| {r['direction']} | {tr.get('images')} | {tr.get('steps')} x {tr.get('batch_size')} | "
                f"{tr.get('teacher_cache_seconds')} | {tr.get('train_seconds')} | {(r.get('adapter_bytes') or 0) / 1e6:.1f} MB |"
            )
    lines += ["", "Where a batch of 50 spends its time (ms per image, best of 2, same run):", ""]
    lines += [
        "| direction | method | VAE encode | text encoding | UNet calls | VAE decode | total |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b = r.get("breakdown_ms")
        if b:
            lines.append(
                f"| {r['direction']} | {r['method']} | {b.get('VAE encode', 0):.1f} | {b.get('text encoding', 0):.1f} | "
                f"{b.get('UNet calls', 0):.1f} | {b.get('VAE decode', 0):.1f} | {b['total']:.1f} |"
            )
    lines += [
        "",
        "LSB at NFE 1 is not defined (its Euler sampler is NFE - 1 steps plus a final denoise); NFE 2 is its minimum.",
    ]
    text = "\n".join(lines) + "\n"
    path_md.write_text(text)
    return text


def plot(results: list[dict], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in results):
        rs = [r for r in results if r["method"] == method]
        ax.scatter([r["seconds_per_image"] for r in rs], [r["success"] for r in rs], label=method, s=40)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (CPU, this run)")
    ax.set_ylabel("success rate (reader)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv=None) -> int:
    from lsb.io.assets import STUDENTS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", default=str(STUDENTS), help="folder of students <source>-<target>/")
    ap.add_argument("--directions", nargs="+", default=None, help="e.g. circle-square (default: all with a student)")
    ap.add_argument("--n", type=int, default=100, help="test scenes per direction")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--tag", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    directions = DIRECTIONS if not args.directions else [tuple(d.split("-")) for d in args.directions]
    folders = student_folders(Path(args.students), directions)
    if not folders:
        ap.error(f"no student for {', '.join('-'.join(d) for d in directions)} under {args.students}")
    torch.manual_seed(0)
    results = []
    for direction, folder in folders.items():
        for r in run_direction(direction, folder, args.n, args.batch):
            results.append(r)
            print(
                json.dumps({k: r[k] for k in ("direction", "method", "nfe", "success", "fid", "seconds_per_image")}),
                flush=True,
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "distill" + (f"-{args.tag}" if args.tag else "")
    (out / f"{name}.json").write_text(json.dumps(results, indent=2, default=float))
    print(write(results, out / f"{name}.md", args.n))
    plot(results, out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
