"""``lsb generate``: text-to-image with the stock diffusers StableDiffusionPipeline."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("generate", help="text-to-image with the stock diffusers StableDiffusionPipeline")
    p.add_argument("prompts", nargs="+", help="one or more text prompts")
    p.add_argument("--model", default=None, help="diffusers SD folder or Hub id (default: the embedded mini SD)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps (the folder's scheduler)")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    p.add_argument("--num-images", type=int, default=4, help="images per prompt")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
    p.add_argument("--device", default=None, help="torch device (default: cuda, mps or cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("-o", "--output", required=True, help="output PNG (a grid: one row per prompt)")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args) -> int:
    from .. import checks
    from ..outputs import check_output_file

    checks.positive_int(args.steps, "--steps")
    checks.positive_int(args.num_images, "--num-images")
    checks.finite(args.guidance, "--guidance", low=0)
    checks.check_seed(args.seed)
    for text in args.prompts:
        if not text.strip():
            raise checks.ArgumentError("a prompt is empty; give the text of each picture")
    checks.check_model_arg(args.model)
    check_output_file(args.output, overwrite=args.overwrite)
    checks.check_device(args.device)
    checks.quiet_loading()

    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from ...helpers.loading import load_pipeline
    from ...io.images import make_grid, save_image

    try:
        pipe = load_pipeline(
            StableDiffusionPipeline, args.model, device=args.device, safety_checker=None, requires_safety_checker=False
        )
    except OSError as e:  # a Hub id that is not there (offline, no such repo): one line
        if args.model in checks.EMBEDDED_NAMES or Path(args.model).expanduser().exists():
            raise
        raise checks.hub_failure(args.model, e) from None
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    imgs = pipe(
        args.prompts,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        num_images_per_prompt=args.num_images,
        generator=torch.Generator().manual_seed(args.seed),
    ).images
    save_image(make_grid(imgs, nrow=args.num_images), args.output)
    print(f"wrote {args.output}")
    return 0
