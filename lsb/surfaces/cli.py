"""The ``lsb`` command line: translate, learn-domain, generate, train.

Every user error (bad image, unknown token, missing model folder, out-of-range parameter) is reported
as one line ``lsb: error: ...`` with exit status 2, before any model compute where possible.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .commands import CONVERT_MODE_HELP

# Defaults for translation. They are the paper's (METHODS.md section 2) except where the embedded
# model needs others; see README "Choosing parameters" for the measurements behind each.
TRANSLATE_DEFAULTS = dict(nfe=8, tau=5.29, t0=0.2, guidance=11.0, solver="euler")
MINI_SD_TRANSLATE_DEFAULTS = dict(nfe=8, tau=0.35, t0=0.02, guidance=3.0, solver="euler")  # tuned on the val split


def _user_errors():
    from ..prompts.domains import DomainFileError
    from ..io.images import ImageInputError
    from ..helpers.loading import ModelFolderError
    from ..prompts.tokens import UnknownTokenError

    return (ImageInputError, ModelFolderError, UnknownTokenError, DomainFileError, ValueError, FileNotFoundError)


def _default_note(key: str) -> str:
    a, b = MINI_SD_TRANSLATE_DEFAULTS[key], TRANSLATE_DEFAULTS[key]
    return f" (default {a})" if a == b else f" (default {a} on the embedded model, {b} on others)"


def _add_translate(sub):
    p = sub.add_parser("translate", help="translate images from a source domain to a target domain",
                       description="Translate images with the Latent Schrödinger Bridge (default) or a baseline.")
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    p.add_argument("--source", required=True, help="source domain: text, or a learned_embeds.safetensors file/folder")
    p.add_argument("--target", required=True, help="target domain: text, or a learned_embeds.safetensors file/folder")
    p.add_argument("--model", default=None, help="diffusers SD folder or Hub id (default: the embedded mini SD)")
    p.add_argument("--method", default="lsb", choices=["lsb", "sdedit", "ddib"],
                   help="lsb, or the LSB paper's baselines sdedit / ddib (same NFE budget)")
    p.add_argument("--nfe", type=int, default=None, help="UNet evaluations per image" + _default_note("nfe"))
    p.add_argument("--tau", type=float, default=None, help="bridge noise τ (paper's τ; official --tau is sqrt(τ))" + _default_note("tau"))
    p.add_argument("--t0", type=float, default=None, help="bridge start time t0 in (0, 1)" + _default_note("t0"))
    p.add_argument("--guidance", type=float, default=None, help="guidance weight w on the predictor difference" + _default_note("guidance"))
    p.add_argument("--solver", default=None, choices=["euler", "ddim", "multistep"], help="ODE solver" + _default_note("solver"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=None, help="resize inputs to SIZE x SIZE first (default: keep size)")
    p.add_argument("--convert-mode", action="store_true", help=CONVERT_MODE_HELP)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None)
    p.add_argument("-o", "--output", required=True, help="output folder (created)")
    p.set_defaults(func=cmd_translate)


def cmd_translate(args) -> int:
    from .translators import load_translator
    from ..prompts.domains import load_domain
    from ..io.images import check_size, list_images, load_image, make_grid, save_image

    files = list_images(args.inputs)
    defaults = MINI_SD_TRANSLATE_DEFAULTS if args.model in (None, "mini-sd") else TRANSLATE_DEFAULTS
    nfe = args.nfe if args.nfe is not None else defaults["nfe"]
    tau = args.tau if args.tau is not None else defaults["tau"]
    t0 = args.t0 if args.t0 is not None else defaults["t0"]
    guidance = args.guidance if args.guidance is not None else defaults["guidance"]
    if args.method != "lsb" and args.solver:
        raise ValueError("--solver applies only to --method lsb")
    solver = (args.solver or defaults["solver"]) if args.method == "lsb" else None
    if nfe < 2:
        raise ValueError(f"--nfe must be at least 2, got {nfe}")
    if not 0 < t0 < 1:
        raise ValueError(f"--t0 must lie strictly between 0 and 1, got {t0}")
    if not tau > 0:
        raise ValueError(f"--tau must be positive, got {tau}")
    # Validate every input before loading the model: a bad file is reported by name, nothing runs.
    images = [check_size(load_image(f, convert=args.convert_mode), str(f), resize_to=args.size) for f in files]
    for f, im in zip(files, images):
        if "converted_from" in im.info:
            print(f"{f}: converted from mode {im.info['converted_from']} to RGB", file=sys.stderr)
    # One process, or several under `accelerate launch` (lsb.surfaces.translate_files: identical outputs either way).
    from ..io.execution import process_state
    from .translate_files import translate_files

    state = process_state(args.device)
    device = args.device if args.device is not None or state.num_processes == 1 else state.device
    pipe = load_translator(args.method, args.model, device=device)
    if args.method == "lsb":
        pipe.scheduler.register_to_config(solver=solver)
    source, target = load_domain(pipe, args.source), load_domain(pipe, args.target)
    out = Path(args.output)
    done = translate_files(args.method, pipe, files, images, source, target, out, nfe=nfe, guidance=guidance,
                           tau=tau, t0=t0, seed=args.seed, batch_size=args.batch_size, state=state)
    if not state.is_main_process:
        return 0
    results = [(images[k], load_image(dest)) for k, dest in done]
    grid = make_grid([x for pair in results for x in pair], nrow=2 * min(4, len(results)))
    save_image(grid, out / "grid.png")
    (out / "settings.json").write_text(json.dumps(dict(
        model=args.model or "mini-sd", method=args.method, source=args.source, target=args.target,
        nfe=nfe, tau=tau, t0=t0, guidance=guidance, solver=solver, seed=args.seed), indent=2))
    print(f"wrote {len(results)} image(s) and grid.png to {out} (NFE {nfe} per image"
          + (f", {state.num_processes} processes)" if state.num_processes > 1 else ")"))
    return 0


def _add_learn_domain(sub):
    p = sub.add_parser("learn-domain", help="learn a domain token from a folder of unpaired images",
                       description="Prompt optimization (textual inversion of a domain). Rerun to resume.")
    p.add_argument("--images", required=True, nargs="+", help="folder(s) or files of the domain's images")
    p.add_argument("--token", required=True, help='new placeholder token, e.g. "<circle>"')
    p.add_argument("--model", default=None, help="diffusers SD folder or Hub id (default: the embedded mini SD)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-vectors", type=int, default=1)
    p.add_argument("--init", default=None, help="initializer word (default: 'shape' on the mini SD, else 'a')")
    p.add_argument("--templates", default=None, help="template preset: 'paper' or 'mini' (default: by model)")
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--convert-mode", action="store_true", help=CONVERT_MODE_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("-o", "--output", required=True, help="output folder: learned_embeds.safetensors + checkpoints")
    p.set_defaults(func=cmd_learn_domain)


def cmd_learn_domain(args) -> int:
    from ..training.prompt_optimization import learn_domain

    path = learn_domain(args.images, args.token, args.model, output_dir=args.output, steps=args.steps,
                        learning_rate=args.lr, batch_size=args.batch_size, num_vectors=args.num_vectors,
                        initializer_token=args.init, templates=args.templates, seed=args.seed,
                        checkpoint_every=args.checkpoint_every, max_images=args.max_images, device=args.device,
                        convert_mode=args.convert_mode)
    from accelerate import PartialState

    state = PartialState()  # set up by the training loop; several under `accelerate launch`
    if state.is_main_process:
        print(f"wrote {path}" + (f" ({state.num_processes} processes)" if state.num_processes > 1 else ""))
    return 0


def _add_generate(sub):
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

    from ..io.images import make_grid, save_image
    from ..helpers.loading import load_pipeline

    pipe = load_pipeline(StableDiffusionPipeline, args.model, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    imgs = pipe(args.prompts, num_inference_steps=args.steps, guidance_scale=args.guidance,
                num_images_per_prompt=args.num_images, generator=torch.Generator().manual_seed(args.seed)).images
    save_image(make_grid(imgs, nrow=args.num_images), args.output)
    print(f"wrote {args.output}")
    return 0


def _add_train(sub):
    p = sub.add_parser("train", help="train models (the embedded mini SD)")
    tsub = p.add_subparsers(dest="what", required=True)
    m = tsub.add_parser("mini-sd", help="train the embedded mini Stable Diffusion from scratch (resumable)")
    m.add_argument("--stage", default="all", choices=["vae", "decoder", "unet", "export", "all"])
    m.add_argument("--out", required=True, help="run folder (checkpoints go here; rerun to resume)")
    m.add_argument("--vae-steps", type=int)
    m.add_argument("--decoder-steps", type=int)
    m.add_argument("--unet-steps", type=int)
    m.add_argument("--unet-batch", type=int)
    m.add_argument("--cached-scenes", type=int)
    m.add_argument("--unet-lr", type=float)
    m.add_argument("--unet-init", help="continue the UNet stage from this pipeline folder (e.g. the shipped model)")
    m.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"])
    m.add_argument("--unet-max-minutes", type=float, help="stop the UNet stage after this many minutes (then export)")
    m.add_argument("--unet-focus-fraction", type=float,
                   help="share of UNet timesteps drawn from [0, --unet-focus-max-timestep) (low noise, where LSB works)")
    m.add_argument("--unet-focus-max-timestep", type=int, help="upper end of the focused timesteps (default 300)")
    m.add_argument("--decoder-init", help="continue the decoder stage from this pipeline folder's VAE")
    m.add_argument("--decoder-lr", type=float)
    m.add_argument("--decoder-latent-noise", type=float,
                   help="decode latents perturbed by up to this many latent stds (robust decoder; default 0)")
    m.add_argument("--decoder-max-minutes", type=float, help="stop the decoder stage after this many minutes")
    m.add_argument("--seed", type=int)
    m.add_argument("--install", action="store_true", help="after export, copy the pipeline into lsb/assets/mini-sd")
    m.set_defaults(func=cmd_train_mini_sd)
    m3 = tsub.add_parser("mini-sd3", help="train the embedded mini SD3 (rectified-flow transformer; resumable)")
    m3.add_argument("--out", required=True, help="run folder (checkpoints go here; rerun to resume)")
    for flag, typ in (("--steps", int), ("--batch", int), ("--lr", float), ("--cached-scenes", int), ("--seed", int),
                      ("--max-minutes", float), ("--logit-normal-fraction", float)):
        m3.add_argument(flag, type=typ)
    m3.add_argument("--base", help="mini SD folder whose VAE, text encoder and tokenizer are reused (default lsb.MINI_SD)")
    m3.add_argument("--transformer-config", type=json.loads, help='JSON overrides of the transformer config')
    m3.add_argument("--install", action="store_true", help="then copy the pipeline into lsb/assets/mini-sd3")
    m3.set_defaults(func=cmd_train_mini_sd3)


def cmd_train_mini_sd3(args) -> int:
    import lsb

    from ..training.mini_sd3 import install, run

    res = run(args.out, steps=args.steps, batch=args.batch, lr=args.lr, cached_scenes=args.cached_scenes, seed=args.seed,
              max_seconds=args.max_minutes * 60 if args.max_minutes else None, base=args.base,
              logit_normal_fraction=args.logit_normal_fraction, transformer=args.transformer_config)
    print(json.dumps(res, default=str))
    if args.install:
        print(f"installed into {install(args.out, lsb.MINI_SD3)}")
    return 0


def cmd_train_mini_sd(args) -> int:
    import shutil

    import lsb

    from ..training.mini_sd import run_stage

    stages = ["vae", "decoder", "unet", "export"] if args.stage == "all" else [args.stage]
    over = dict(vae_steps=args.vae_steps, decoder_steps=args.decoder_steps, unet_steps=args.unet_steps,
                unet_batch=args.unet_batch, cached_scenes=args.cached_scenes, seed=args.seed,
                unet_lr=args.unet_lr, unet_init=args.unet_init, mixed_precision=args.mixed_precision,
                unet_max_seconds=args.unet_max_minutes * 60 if args.unet_max_minutes else None,
                unet_focus_fraction=args.unet_focus_fraction, unet_focus_max_timestep=args.unet_focus_max_timestep,
                decoder_init=args.decoder_init, decoder_lr=args.decoder_lr, decoder_latent_noise=args.decoder_latent_noise,
                decoder_max_seconds=args.decoder_max_minutes * 60 if args.decoder_max_minutes else None)
    for st in stages:
        print(json.dumps({st: run_stage(st, args.out, **over)}, default=str))
    if args.install:
        dest = Path(lsb.MINI_SD)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(Path(args.out) / "pipeline", tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        print(f"installed into {dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lsb", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lsb {__import__('lsb').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_translate(sub)
    _add_learn_domain(sub)
    _add_generate(sub)
    _add_train(sub)
    import importlib

    from .commands import COMMANDS

    for name in COMMANDS:
        importlib.import_module(f"lsb.surfaces.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"lsb: error: {e}", file=sys.stderr)
        return 2
    finally:
        from ..training.loop import leave_process_group

        leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
