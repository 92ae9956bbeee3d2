"""Students (``lsb distill``) in use: ``lsb translate --student``, loading, translating, and the Hub export.

A student folder (:mod:`lsb.helpers.student`) holds the LoRA, the base model it belongs to, its domains and its
settings, so ``lsb translate IMAGES --student FOLDER -o OUT`` needs nothing else. Everything the student fixes
(model family, domains, NFE, tau, t0, guidance, solver, method) is refused on the command line in one line, before
the model loads; a ``--model`` that is another network is refused once it is loaded, before any compute.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..io.assets import STUDENTS
from ..helpers.student import LORA_FILE, STUDENT_FILE, StudentError, read_student, resolve_student

#: translate options a student fixes (flag, attribute)
FIXED_BY_STUDENT = (
    ("--source", "source"),
    ("--target", "target"),
    ("--nfe", "nfe"),
    ("--tau", "tau"),
    ("--t0", "t0"),
    ("--guidance", "guidance"),
    ("--solver", "solver"),
    ("--method", "method"),
)


def student_cli_settings(args) -> dict | None:
    """For ``lsb translate``: None without ``--student``; with it, the student's settings after the refusals (an
    option the student fixes, a folder that is not a student or lacks its adapter, a --model of another family)."""
    from .checks import ArgumentError

    if getattr(args, "student", None) is None:
        missing = [f for f, a in (("--source", "source"), ("--target", "target")) if getattr(args, a) is None]
        if missing:
            raise ArgumentError(f"the following arguments are required: {', '.join(missing)} (or --student FOLDER)")
        return None
    given = [flag for flag, attr in FIXED_BY_STUDENT if getattr(args, attr, None) is not None]
    if given:
        nfe = f" (a student translates in 1 network call; got --nfe {args.nfe})" if args.nfe is not None else ""
        raise ArgumentError(f"--student fixes {', '.join(given)}: leave {'it' if len(given) == 1 else 'them'} out{nfe}")
    if not Path(args.student).expanduser().exists() and not (STUDENTS / str(args.student)).is_dir():
        from .checks import check_model_arg

        try:
            check_model_arg(args.student, "--student")  # a local path that does not exist: an error, not a Hub look-up
        except ArgumentError:
            shipped = ", ".join(shipped_students()) or "none"
            raise ArgumentError(
                f"--student {args.student}: no such student folder (shipped students: {shipped})"
            ) from None
    try:
        folder = resolve_student(args.student)
        info = read_student(folder)
    except StudentError as e:
        raise ArgumentError(str(e)) from None
    if args.model is not None:
        from ..helpers.loading import detect_model_family

        family = detect_model_family(args.model)
        if family != info.get("family", "sd"):
            raise ArgumentError(
                f"--student {args.student} was distilled on an {info.get('family', 'sd')} model ({info['base_model']}); "
                f"--model {args.model} is an {family} model"
            )
    args.student = str(folder)
    args.method = "student"
    from ..helpers.student import student_domain_spec

    args.source = student_domain_spec(folder, info, "source")
    args.target = student_domain_spec(folder, info, "target")
    return info


def load_student(student, model=None, device=None, **kwargs):
    """:class:`LatentSchrodingerBridgeStudentPipeline` with ``student`` loaded (its base model, or ``model``: the same
    network elsewhere; another one is refused)."""
    from lsb_pipelines.lsb_student.pipeline import LatentSchrodingerBridgeStudentPipeline

    return LatentSchrodingerBridgeStudentPipeline.from_student(resolve_student(student), model, device=device, **kwargs)


def student_translate(pipe, images, generator=None, output_type="pil"):
    """``(images, nfe, forward_passes)`` of one student call on ``images`` (one latent per image: 1 forward pass)."""
    out = pipe(images, generator=generator, output_type=output_type)
    return out.images, out.nfe, 1


# ---------------------------------------------------------------------------------------------- Hub export
STUDENT_TAGS = ["lsb", "image-to-image", "lora", "distillation", "schrodinger-bridge"]


def student_card(info: dict, repo_id: str | None = None) -> str:
    """A model card for a student folder: what it does, how to run it (CLI and Python), how it was made."""
    src = info["source"].get("text") or info["source"].get("file")
    tgt = info["target"].get("text") or info["target"].get("file")
    where = repo_id or "path/to/this/folder"
    t, tr = info["teacher"], info.get("training", {})
    base = info["base_model"]
    lines = [
        "---",
        "library_name: diffusers",
        f"base_model: {base}" if "/" in base and not Path(base).exists() else None,
        "tags:",
        *[f"- {x}" for x in STUDENT_TAGS],
        "---",
        "",
        f"# One-step student: {src} -> {tgt}",
        "",
        f"A LoRA ({info['student']['lora_rank']}-rank, {info.get('adapter_bytes', 0) / 1e6:.1f} MB) on the UNet of "
        f"`{base}` that translates an image from *{src}* to *{tgt}* in **one network call**. It was distilled with "
        f"[lsb](https://pypi.org/project/lsb/) (`lsb distill`) from a Latent Schrödinger Bridge teacher at NFE "
        f"{t['num_inference_steps']} (guidance {t['guidance_scale']}, tau {t['tau']}, t0 {t['t0']}, "
        f"{t['solver']} solver), trained on source images only.",
        "",
        "## Use",
        "",
        "```bash",
        "pip install lsb",
        f"lsb translate photos/ --student {where} -o out/",
        "```",
        "",
        "```python",
        "from lsb import LatentSchrodingerBridgeStudentPipeline",
        "",
        f'pipe = LatentSchrodingerBridgeStudentPipeline.from_student("{where}")',
        "image = pipe(source_image).images[0]  # one UNet call",
        "```",
        "",
        f"The adapter is a diffusers LoRA file ({LORA_FILE}): `pipe.load_lora_weights(folder)` loads it into any "
        f"pipeline of `{base}`; `{STUDENT_FILE}` holds the student's call (timestep {info['student']['timestep']}, "
        f"start t0 {info['student']['t0']}, tau {info['student']['tau']}) and its domains.",
        "",
        "## Training",
        "",
        f"- source images: {tr.get('images', '?')} ({tr.get('noise_draws', 1)} teacher output each, cached once: "
        f"{tr.get('teacher_cache_seconds', '?')} s)",
        f"- steps: {tr.get('steps', '?')} at batch {tr.get('batch_size', '?')} (learning rate "
        f"{tr.get('learning_rate', '?')}), {tr.get('train_seconds', '?')} s on {tr.get('processes', 1)} process(es)",
        "- objective: mean squared error between the student's latent and the teacher's, from the same start x_t0",
        "",
    ]
    return "\n".join(x for x in lines if x is not None) + "\n"


def export_student(student, output, repo_id: str | None = None) -> Path:
    """Copy a student folder to ``output`` with a model card (``README.md``), ready for ``push_folder``."""
    from .export import _publish, _staging_dir, check_empty_target

    folder = resolve_student(student)
    info = read_student(folder)
    out = Path(output)
    check_empty_target(out)
    tmp = _staging_dir(out)
    try:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        (tmp / "README.md").write_text(student_card(info, repo_id))
        return _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def shipped_students() -> dict[str, Path]:
    """The students shipped inside the package (``lsb/assets/students/<source>-<target>``)."""

    if not STUDENTS.is_dir():
        return {}
    return {p.name: p for p in sorted(STUDENTS.iterdir()) if (p / STUDENT_FILE).is_file()}


def export_student_command(args) -> int:
    """``lsb export --student FOLDER -o OUT [--push-to-hub REPO]``: refusals first, then the copy and the upload."""
    from .export import ExportError, check_empty_target, check_hub_credentials, push_folder

    fixed = [f"--{k}" for k in ("source", "target", "concept", "nfe", "tau", "t0", "guidance", "solver", "results")]
    given = [f for f in fixed if getattr(args, f[2:], None) is not None]
    if given or args.model is not None:
        raise ExportError(f"--student exports the student as distilled; leave out {', '.join(given or ['--model'])}")
    read_student(resolve_student(args.student))
    check_empty_target(Path(args.output))
    token = check_hub_credentials() if args.push_to_hub else None
    out = export_student(args.student, args.output, repo_id=args.push_to_hub)
    print(f"wrote {out}")
    if args.push_to_hub:
        print(f"uploaded to {push_folder(out, args.push_to_hub, private=args.private, token=token)}")
    return 0
