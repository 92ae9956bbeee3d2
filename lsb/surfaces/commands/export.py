"""``lsb export``: write one translator (model + source/target domains + settings) as a ready Hub repository."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a translator (model + domains + settings) as a Hub-ready diffusers repository",
        description="Write a self-contained diffusers folder for one source->target translator: the base model's "
        "components with the learned domain tokens baked in, the LSB scheduler with the chosen defaults, "
        "pipeline.py + scheduler/scheduling_lsb.py (load with trust_remote_code=True; needs `pip install "
        "lsb`), lsb_translator.json (prompts and call defaults) and a model card. With --concept, "
        "export a learned domain alone in the sd-concepts-library layout instead.",
    )
    p.add_argument("--model", default=None, help="diffusers SD folder or Hub id (default: the embedded mini SD)")
    p.add_argument("--source", help="source domain: text, or a learned_embeds.safetensors file/folder")
    p.add_argument("--target", help="target domain: text, or a learned_embeds.safetensors file/folder")
    p.add_argument(
        "--concept",
        default=None,
        metavar="DOMAIN",
        help="export only this learned domain (sd-concepts-library layout); no --source/--target",
    )
    p.add_argument(
        "--student",
        default=None,
        metavar="FOLDER",
        help="export a one-step student (lsb distill) with a model card; no --source/--target",
    )
    p.add_argument("--nfe", type=int, default=None, help="default NFE (default: the model's, as lsb translate)")
    p.add_argument("--tau", type=float, default=None, help="default τ > 0 (default: the model's)")
    p.add_argument("--t0", type=float, default=None, help="default bridge start time in (0, 1) (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="default guidance weight (default: the model's)")
    p.add_argument(
        "--solver",
        default=None,
        choices=["euler", "ddim", "multistep"],
        help="default ODE solver (default: the model's)",
    )
    p.add_argument("--results", default=None, help="benchmark results JSON (benchmarks/translation.py) for the card")
    p.add_argument("--push-to-hub", default=None, metavar="REPO", help="also upload the folder to this Hub repo")
    p.add_argument("--private", action="store_true", help="create the Hub repo private (with --push-to-hub)")
    p.add_argument("-o", "--output", required=True, help="output folder (must not exist or be empty)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from pathlib import Path

    from ..export import (
        ExportError,
        check_empty_target,
        check_hub_credentials,
        export_concept,
        export_settings,
        export_translator,
        push_folder,
    )

    if args.private and not args.push_to_hub:
        raise ExportError("--private applies only with --push-to-hub")
    if args.student is not None:
        from ..students import export_student_command

        return export_student_command(args)
    if args.concept is None and (not args.source or not args.target):
        raise ExportError("give --source and --target (or --concept DOMAIN to export a learned domain alone)")
    if args.concept is not None and (args.source or args.target):
        raise ExportError("--concept exports one domain alone; do not combine it with --source/--target")
    check_empty_target(Path(args.output))
    if args.concept is None:  # NaN guidance, tau <= 0, t0 outside (0, 1), NFE < 2: refused before anything runs
        export_settings(args.model, nfe=args.nfe, tau=args.tau, t0=args.t0, guidance=args.guidance, solver=args.solver)
    token = check_hub_credentials() if args.push_to_hub else None  # before anything is written
    if args.concept is not None:
        out = export_concept(args.concept, args.output)
    else:
        out = export_translator(
            args.output,
            args.source,
            args.target,
            args.model,
            nfe=args.nfe,
            tau=args.tau,
            t0=args.t0,
            guidance=args.guidance,
            solver=args.solver,
            results=args.results,
            repo_id=args.push_to_hub,
        )
    print(f"wrote {out}")
    if args.push_to_hub:
        url = push_folder(out, args.push_to_hub, private=args.private, token=token)
        print(f"uploaded to {url}")
    return 0
