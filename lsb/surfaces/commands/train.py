"""``lsb train``: train the embedded models (mini SD, mini SD3); rerun to resume."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("train", help="train the embedded models (mini SD, mini SD3); rerun to resume")
    tsub = p.add_subparsers(dest="what", required=True)
    m = tsub.add_parser("mini-sd", help="train the embedded mini Stable Diffusion from scratch (resumable)")
    m.add_argument(
        "--stage",
        default="all",
        choices=["vae", "decoder", "unet", "export", "all"],
        help="which stage to run; all = vae, decoder and unet, then export",
    )
    m.add_argument("--out", required=True, help="run folder (checkpoints go here; rerun to resume)")
    m.add_argument("--vae-steps", type=int, help="VAE optimizer steps (default: the shipped recipe's)")
    m.add_argument("--decoder-steps", type=int, help="decoder fine-tune steps (default: the shipped recipe's)")
    m.add_argument("--unet-steps", type=int, help="UNet + text encoder steps (default: the shipped recipe's)")
    m.add_argument("--unet-batch", type=int, help="UNet batch size (default: the shipped recipe's)")
    m.add_argument(
        "--cached-scenes", type=int, help="training scenes encoded to latents once (default: the shipped recipe's)"
    )
    m.add_argument("--unet-lr", type=float, help="UNet learning rate (default: the shipped recipe's)")
    m.add_argument("--unet-init", help="continue the UNet stage from this pipeline folder (e.g. the shipped model)")
    m.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], help="accelerate mixed precision (default no)")
    m.add_argument("--unet-max-minutes", type=float, help="stop the UNet stage after this many minutes (then export)")
    m.add_argument(
        "--unet-focus-fraction",
        type=float,
        help="share of UNet timesteps drawn from [0, --unet-focus-max-timestep) (low noise, where LSB works)",
    )
    m.add_argument("--unet-focus-max-timestep", type=int, help="upper end of the focused timesteps (default 300)")
    m.add_argument("--decoder-init", help="continue the decoder stage from this pipeline folder's VAE")
    m.add_argument("--decoder-lr", type=float, help="decoder learning rate (default: the shipped recipe's)")
    m.add_argument(
        "--decoder-latent-noise",
        type=float,
        help="decode latents perturbed by up to this many latent stds (robust decoder; default 0)",
    )
    m.add_argument("--decoder-max-minutes", type=float, help="stop the decoder stage after this many minutes")
    m.add_argument("--seed", type=int, help="seed of initialisation, batches and noise (default: the shipped recipe's)")
    m.add_argument("--install", action="store_true", help="after export, copy the pipeline into lsb/assets/mini-sd")
    m.set_defaults(func=cmd_train_mini_sd)
    m3 = tsub.add_parser("mini-sd3", help="train the embedded mini SD3 (rectified-flow transformer; resumable)")
    m3.add_argument("--out", required=True, help="run folder (checkpoints go here; rerun to resume)")
    for flag, typ, text in (
        ("--steps", int, "transformer optimizer steps"),
        ("--batch", int, "batch size"),
        ("--lr", float, "learning rate"),
        ("--cached-scenes", int, "training scenes encoded to latents once"),
        ("--seed", int, "seed of initialisation, batches and noise"),
        ("--max-minutes", float, "stop after this many minutes (then export)"),
        ("--logit-normal-fraction", float, "share of timesteps drawn logit-normal (SD3's), the rest uniform"),
    ):
        m3.add_argument(flag, type=typ, help=f"{text} (default: the shipped recipe's)")
    m3.add_argument(
        "--base", help="mini SD folder whose VAE, text encoder and tokenizer are reused (default lsb.MINI_SD)"
    )
    m3.add_argument("--transformer-config", type=json.loads, help="JSON overrides of the transformer config")
    m3.add_argument("--install", action="store_true", help="then copy the pipeline into lsb/assets/mini-sd3")
    m3.set_defaults(func=cmd_train_mini_sd3)


def cmd_train_mini_sd3(args) -> int:
    _check_train_args(
        args,
        ints=("steps", "batch", "cached_scenes"),
        floats=("lr", "max_minutes"),
        fractions=("logit_normal_fraction",),
        folders=("base",),
    )
    import lsb

    from ...training.mini_sd3 import install, run

    over = _recipe_overrides(
        args, ("steps", "batch", "lr", "cached_scenes", "seed", "base", "logit_normal_fraction"), ("max",)
    )
    res = run(args.out, **over, transformer=args.transformer_config)
    print(json.dumps(res, default=str))
    if args.install:
        print(f"installed into {install(args.out, lsb.MINI_SD3)}")
    return 0


def _recipe_overrides(args, names, timed=()) -> dict:
    """The recipe fields set on the ``lsb train`` command line (None: the recipe's default), from the options
    of the same names; each ``X`` of ``timed`` turns ``--X-minutes`` into the field ``X_seconds``."""
    over = {name: getattr(args, name) for name in names}
    for stage in timed:
        minutes = getattr(args, f"{stage}_minutes")
        over[f"{stage}_seconds"] = minutes * 60 if minutes else None
    return over


def _check_train_args(args, ints=(), floats=(), fractions=(), folders=()) -> None:
    """One line per bad ``lsb train`` argument, before any data or model is built."""
    from .. import checks
    from ..outputs import check_output_folder_writable

    for name in ints:
        checks.positive_int(getattr(args, name), "--" + name.replace("_", "-"))
    for name in floats:
        checks.finite(getattr(args, name), "--" + name.replace("_", "-"), low=0, low_open=True)
    for name in fractions:
        checks.finite(getattr(args, name), "--" + name.replace("_", "-"), low=0, high=1)
    for name in folders:
        value = getattr(args, name)
        if value is not None and not Path(value).expanduser().is_dir():
            raise checks.ArgumentError(f"--{name.replace('_', '-')} {value}: no such folder")
    if getattr(args, "seed", None) is not None:
        checks.check_seed(args.seed)
    check_output_folder_writable(args.out, "--out")


def cmd_train_mini_sd(args) -> int:
    _check_train_args(
        args,
        ints=("vae_steps", "decoder_steps", "unet_steps", "unet_batch", "cached_scenes", "unet_focus_max_timestep"),
        floats=("unet_lr", "decoder_lr", "unet_max_minutes", "decoder_max_minutes"),
        fractions=("unet_focus_fraction",),
        folders=("unet_init", "decoder_init"),
    )
    from .. import checks

    checks.finite(args.decoder_latent_noise, "--decoder-latent-noise", low=0)

    import lsb

    from ...io.assets import replace_folder
    from ...training.mini_sd import run_stage

    stages = ["vae", "decoder", "unet", "export"] if args.stage == "all" else [args.stage]
    over = _recipe_overrides(
        args,
        (
            "vae_steps",
            "decoder_steps",
            "unet_steps",
            "unet_batch",
            "cached_scenes",
            "seed",
            "unet_lr",
            "unet_init",
            "mixed_precision",
            "unet_focus_fraction",
            "unet_focus_max_timestep",
            "decoder_init",
            "decoder_lr",
            "decoder_latent_noise",
        ),
        ("unet_max", "decoder_max"),
    )
    for st in stages:
        print(json.dumps({st: run_stage(st, args.out, **over)}, default=str))
    if args.install:
        print(f"installed into {replace_folder(Path(args.out) / 'pipeline', lsb.MINI_SD)}")
    return 0
