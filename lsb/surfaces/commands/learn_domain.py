"""``lsb learn-domain``: learn a domain token from a folder of unpaired images (prompt optimization)."""

from __future__ import annotations

import os

from ..inputs import MAX_PIXELS_HELP
from . import CONVERT_MODE_HELP


def register(sub) -> None:
    p = sub.add_parser(
        "learn-domain",
        help="learn a domain token from a folder of unpaired images",
        description="Prompt optimization (textual inversion of a domain). Rerun to resume.",
    )
    p.add_argument("--images", required=True, nargs="+", help="folder(s) or files of the domain's images")
    p.add_argument("--token", required=True, help='new placeholder token, e.g. "<circle>"')
    p.add_argument("--model", default=None, help="diffusers SD folder or Hub id (default: the embedded mini SD)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    p.add_argument("--lr", type=float, default=5e-3, help="learning rate of the token's embedding")
    p.add_argument("--batch-size", type=int, default=4, help="images per step (per process)")
    p.add_argument("--num-vectors", type=int, default=1, help="embedding vectors behind the token")
    p.add_argument("--init", default=None, help="initializer word (default: 'shape' on the mini SD, else 'a')")
    p.add_argument("--templates", default=None, help="template preset: 'paper' or 'mini' (default: by model)")
    p.add_argument("--checkpoint-every", type=int, default=250, help="steps between resumable checkpoints")
    p.add_argument("--max-images", type=int, default=None, help="use at most this many of the images (default: all)")
    p.add_argument("--convert-mode", action="store_true", help=CONVERT_MODE_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of batches, timesteps and noise")
    p.add_argument("--device", default=None, help="torch device (default: cuda, mps or cpu)")
    p.add_argument(
        "--size-policy",
        default="resize",
        choices=["resize", "exact"],
        help="images of another size than the model's: resize (default; centre crop to a square, then "
        "resize, one note per file) or exact (refuse them)",
    )
    p.add_argument("--max-pixels", type=int, default=None, help=MAX_PIXELS_HELP)
    p.add_argument(
        "--resume-anyway",
        action="store_true",
        help="resume a run folder although its recorded settings (images, --lr, --batch-size, --seed, "
        "--model, ...) differ (default: refused, saying what differs)",
    )
    p.add_argument("-o", "--output", required=True, help="output folder: learned_embeds.safetensors + checkpoints")
    p.set_defaults(func=cmd_learn_domain)


def cmd_learn_domain(args) -> int:

    from .. import checks
    from ..outputs import check_not_inside_inputs, check_output_folder_writable

    checks.positive_int(args.steps, "--steps")
    checks.finite(args.lr, "--lr", low=0, low_open=True)
    checks.positive_int(args.batch_size, "--batch-size")
    checks.positive_int(args.num_vectors, "--num-vectors")
    checks.positive_int(args.checkpoint_every, "--checkpoint-every")
    checks.positive_int(args.max_images, "--max-images")
    checks.check_seed(args.seed)
    max_pixels = checks.check_max_pixels(args.max_pixels)
    if not args.token.strip() or any(c.isspace() for c in args.token):
        raise checks.ArgumentError(f'--token {args.token!r} must be one word without spaces, e.g. "<circle>"')
    if args.init is not None and (not args.init.strip() or any(c.isspace() for c in args.init)):
        raise checks.ArgumentError(f"--init {args.init!r} must be one word")
    if args.templates is not None and args.templates not in ("paper", "mini"):
        raise checks.ArgumentError(f"--templates must be 'paper' or 'mini', got {args.templates!r}")
    checks.check_model_arg(args.model)
    if args.model in checks.EMBEDDED_NAMES or os.path.isdir(os.path.expanduser(str(args.model))):
        checks.check_model_folder_before_load(args.model)  # kind, completeness, weight files: one line
    from ..outputs import expand_inputs

    files = expand_inputs(args.images)
    check_not_inside_inputs(args.output, args.images, files)
    check_output_folder_writable(args.output)
    from ...io.images import check_pixels, load_image
    from ...io.runs import shown
    from ..inputs import header_size

    for f in files[: args.max_images]:  # pixel counts from the headers, then each picture read, before the model loads
        check_pixels(header_size(f, shown(f)), shown(f), max_pixels)
        load_image(f, convert=args.convert_mode)  # modes, frames, bit depth: one line naming the file
    checks.check_device(args.device)
    checks.quiet_loading()
    from ...io.runs import RunInterrupted, Terminated, interrupt_code, shown
    from ...training.prompt_optimization import learn_domain

    try:
        path = _learn(args, learn_domain, max_pixels)
    except (KeyboardInterrupt, Terminated) as e:  # training stopped: its checkpoints stay, a rerun resumes
        from ...training.loop import latest_checkpoint

        ckpt = latest_checkpoint(args.output)
        kept = (
            f"{shown(ckpt)} is kept"
            if ckpt
            else f"no checkpoint was reached yet (--checkpoint-every {args.checkpoint_every})"
        )
        raise RunInterrupted(
            f"training stopped; {kept}; rerun the same command to resume from it", interrupt_code(e)
        ) from None
    from accelerate import PartialState

    state = PartialState()  # set up by the training loop; several under `accelerate launch`
    if state.is_main_process:
        print(f"wrote {shown(path)}" + (f" ({state.num_processes} processes)" if state.num_processes > 1 else ""))
    return 0


def _learn(args, learn_domain, max_pixels):
    import sys

    return learn_domain(
        args.images,
        args.token,
        args.model,
        output_dir=args.output,
        steps=args.steps,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        num_vectors=args.num_vectors,
        initializer_token=args.init,
        templates=args.templates,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        max_images=args.max_images,
        device=args.device,
        convert_mode=args.convert_mode,
        size_policy=args.size_policy,
        max_pixels=max_pixels,
        resume_anyway=args.resume_anyway,
        note=lambda m: print(m, file=sys.stderr),
    )
