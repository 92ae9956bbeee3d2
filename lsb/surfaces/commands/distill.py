"""``lsb distill``: distil an LSB translator into a one-step student (a LoRA on the same UNet) from source images."""

from __future__ import annotations

from ..inputs import MAX_PIXELS_HELP


def register(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="distil an LSB translator into a one-step student (LoRA) from a folder of source images",
        description="Train a student that translates in ONE network call: a LoRA on the model's UNet regressed on the "
        "LSB teacher's outputs (computed once for every source image and cached). Only source images are needed. "
        "The student is written to OUTPUT/final (use it with lsb translate --student). Rerun to resume.",
    )
    p.add_argument("--images", required=True, nargs="+", help="folder(s) or files of SOURCE-domain images only")
    p.add_argument("--source", required=True, help="source domain: text, or a learned_embeds.safetensors file/folder")
    p.add_argument("--target", required=True, help="target domain: text, or a learned_embeds.safetensors file/folder")
    p.add_argument(
        "--model", default=None, help="diffusers SD 1.x/2.x folder or Hub id (default: the embedded mini SD)"
    )
    p.add_argument(
        "--teacher-nfe", type=int, default=None, help="the teacher's NFE (default: the model's, as translate)"
    )
    p.add_argument("--tau", type=float, default=None, help="the teacher's τ > 0 (default: the model's)")
    p.add_argument(
        "--t0", type=float, default=None, help="the teacher's bridge start time in (0, 1) (default: the model's)"
    )
    p.add_argument("--guidance", type=float, default=None, help="the teacher's guidance weight (default: the model's)")
    p.add_argument("--solver", default=None, choices=["euler", "ddim", "multistep"], help="the teacher's ODE solver")
    p.add_argument("--steps", type=int, default=800, help="optimizer steps of the student (default 800)")
    p.add_argument("--batch-size", type=int, default=32, help="(source image, teacher output) pairs per step")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the LoRA weights (AdamW)")
    p.add_argument("--lora-rank", type=int, default=8, help="rank of the LoRA adapters on the UNet")
    p.add_argument(
        "--student-timestep",
        type=int,
        default=None,
        help="UNet timestep of the student's call (default: where the noise-to-signal ratio is 1)",
    )
    p.add_argument(
        "--noise-draws", type=int, default=1, help="teacher outputs per source image (different start noise)"
    )
    p.add_argument("--max-images", type=int, default=None, help="use at most this many source images")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between resumable checkpoints")
    p.add_argument(
        "--allow-mixed",
        action="store_true",
        help="train although the model reads more than a quarter of the images as the target domain",
    )
    p.add_argument("--max-pixels", type=int, default=None, help=MAX_PIXELS_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the teacher noise and the training batches")
    p.add_argument("--device", default=None, help="torch device (default: cuda, mps or cpu)")
    p.add_argument(
        "-o", "--output", required=True, help="run folder: teacher cache, checkpoints, the student in final/"
    )
    p.set_defaults(func=cmd_distill)


def cmd_distill(args) -> int:
    import sys
    from pathlib import Path

    from .. import checks
    from ..outputs import check_not_inside_inputs, check_output_folder_writable, expand_inputs

    for flag, v in (
        ("--steps", args.steps),
        ("--batch-size", args.batch_size),
        ("--lora-rank", args.lora_rank),
        ("--noise-draws", args.noise_draws),
        ("--checkpoint-every", args.checkpoint_every),
        ("--max-images", args.max_images),
    ):
        checks.positive_int(v, flag)
    checks.finite(args.lr, "--lr", low=0, low_open=True)
    checks.check_seed(args.seed)
    max_pixels = checks.check_max_pixels(args.max_pixels)
    if args.student_timestep is not None:
        checks.finite(args.student_timestep, "--student-timestep", low=0, high=999, integer=True)
    checks.check_model_arg(args.model)
    checks.check_domain_arg(args.source, "--source")
    checks.check_domain_arg(args.target, "--target")
    if args.source == args.target:
        raise checks.ArgumentError("--source and --target are the same domain: nothing to translate")
    from ...training.distill import teacher_settings

    teacher_settings(args.model, args.teacher_nfe, args.tau, args.t0, args.guidance, args.solver)
    for item in args.images:  # one domain, one folder: sub-folders (trainA/ trainB/) mean a mixed dataset
        p = Path(item)
        if p.is_dir():
            subs = sorted(q.name for q in p.iterdir() if q.is_dir() and not q.name.startswith("."))
            if subs:
                raise checks.ArgumentError(
                    f"--images {p} holds sub-folders ({', '.join(subs[:3])}): give the folder of the SOURCE domain "
                    "only (lsb distill needs no target images)"
                )
    files = expand_inputs(args.images)
    check_not_inside_inputs(args.output, args.images, files)
    check_output_folder_writable(args.output)
    from ...io.images import check_pixels
    from ..inputs import header_size

    for f in files[: args.max_images]:
        check_pixels(header_size(f, str(f)), str(f), max_pixels)
    checks.check_device(args.device)
    checks.quiet_loading()
    from ...training.distill import distill

    path = distill(
        [str(f) for f in files],
        args.source,
        args.target,
        args.model,
        output_dir=args.output,
        teacher_nfe=args.teacher_nfe,
        tau=args.tau,
        t0=args.t0,
        guidance=args.guidance,
        solver=args.solver,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        lora_rank=args.lora_rank,
        student_timestep=args.student_timestep,
        noise_draws=args.noise_draws,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        max_images=args.max_images,
        allow_mixed=args.allow_mixed,
        device=args.device,
        note=lambda m: print(m, file=sys.stderr),
    )
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"wrote {path} (use it with: lsb translate IMAGES --student {path} -o OUT)")
    return 0
