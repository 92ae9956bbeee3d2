"""``lsb generate``: text-to-image with the stock diffusers StableDiffusionPipeline."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("generate", help="text-to-image with the stock diffusers StableDiffusionPipeline")
    p.add_argument("prompts", nargs="+")
    p.add_argument("--model", default=None)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--num-images", type=int, default=4, help="images per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, help="output PNG (a grid: one row per prompt)")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args) -> int:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from ...helpers.loading import load_pipeline
    from ...io.images import make_grid, save_image

    pipe = load_pipeline(StableDiffusionPipeline, args.model, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    imgs = pipe(args.prompts, num_inference_steps=args.steps, guidance_scale=args.guidance,
                num_images_per_prompt=args.num_images, generator=torch.Generator().manual_seed(args.seed)).images
    save_image(make_grid(imgs, nrow=args.num_images), args.output)
    print(f"wrote {args.output}")
    return 0
