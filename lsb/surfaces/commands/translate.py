"""``lsb translate``: translate images from a source domain to a target domain (LSB, SDEdit, DDIB)."""

from __future__ import annotations

from pathlib import Path

from ...io.settings import PAPER_TRANSLATION, check_guidance, check_nfe, check_t0, check_tau, translation_defaults
from . import CONVERT_MODE_HELP, add_image_output_arguments


# Defaults for translation. They are the paper's (METHODS.md section 2) except where the embedded
# model needs others; see README "Choosing parameters" for the measurements behind each.
# The values live in ONE place, lsb.io.settings (the paper's) and each model folder's lsb_defaults.json (the
# embedded model's: lsb/assets/mini-sd/lsb_defaults.json); these dicts use the CLI's option names.
def _cli_defaults(d) -> dict:
    return dict(nfe=d.num_inference_steps, tau=d.tau, t0=d.t0, guidance=d.guidance_scale, solver=d.solver)


TRANSLATE_DEFAULTS = _cli_defaults(PAPER_TRANSLATION)
MINI_SD_TRANSLATE_DEFAULTS = _cli_defaults(translation_defaults(None))  # tuned on the val split


def _default_note(key: str) -> str:
    a, b = MINI_SD_TRANSLATE_DEFAULTS[key], TRANSLATE_DEFAULTS[key]
    return f" (default {a})" if a == b else f" (default {a} on the embedded model, {b} on others)"


def register(sub) -> None:
    p = sub.add_parser(
        "translate",
        help="translate images from a source domain to a target domain",
        description="Translate images with the Latent Schrödinger Bridge (default) or a baseline.",
    )
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    p.add_argument("--source", help="source domain: text, or a learned_embeds.safetensors file/folder")
    p.add_argument("--target", help="target domain: text, or a learned_embeds.safetensors file/folder")
    p.add_argument(
        "--student",
        default=None,
        metavar="FOLDER",
        help="translate in ONE network call with a student from lsb distill (it fixes the model, domains and "
        "settings: no --source/--target/--nfe/--tau/--t0/--guidance/--solver/--method)",
    )
    p.add_argument("--model", default=None, help="diffusers SD folder or Hub id (default: the embedded mini SD)")
    p.add_argument(
        "--method",
        default=None,
        choices=["lsb", "sdedit", "ddib", "flowedit"],
        help="lsb, or the LSB paper's baselines sdedit / ddib (same NFE budget); flowedit (SD3 / FLUX "
        "models: --nfe = FlowEdit steps n_max, --guidance = target guidance; unset: the paper's)",
    )
    for key, typ, text in (
        ("nfe", int, "UNet evaluations per image"),
        ("tau", float, "bridge noise τ (paper's τ; official --tau is sqrt(τ))"),
        ("t0", float, "bridge start time t0 in (0, 1)"),
        ("guidance", float, "guidance weight w on the predictor difference"),
    ):
        p.add_argument(f"--{key}", type=typ, default=None, help=text + _default_note(key))
    p.add_argument(
        "--solver", default=None, choices=["euler", "ddim", "multistep"], help="ODE solver" + _default_note("solver")
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="resize inputs to SIZE x SIZE first (default: the model's native size, see --size-policy)",
    )
    add_image_output_arguments(p)
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        default=None,
        help="run custom code shipped with a Hub model (a local folder you name is trusted)",
    )
    p.add_argument("--convert-mode", action="store_true", help=CONVERT_MODE_HELP)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None)
    p.add_argument(
        "-o", "--output", required=True, help="output folder (created; must be new or empty, see --overwrite)"
    )
    p.set_defaults(func=cmd_translate)


def cmd_translate(args) -> int:
    from ...io.images import make_grid, model_native_size, native_size, save_image
    from .. import checks
    from ..inputs import load_inputs, resize_back
    from ..outputs import GRID_NAME, OutputFolder, expand_inputs, output_names

    checks.check_model_arg(args.model)  # before any look-up: a path that does not exist is an error, not a Hub id
    from ..students import student_cli_settings

    student = student_cli_settings(args)  # --student: its refusals, its domains and settings (None without)
    args.method = args.method or "lsb"
    defaults = _cli_defaults(translation_defaults(args.model))  # the model folder's lsb_defaults.json, else the paper's
    nfe = args.nfe if args.nfe is not None else defaults["nfe"]
    tau = args.tau if args.tau is not None else defaults["tau"]
    t0 = args.t0 if args.t0 is not None else defaults["t0"]
    guidance = args.guidance if args.guidance is not None else defaults["guidance"]
    if args.method == "flowedit":  # FlowEdit's own defaults unless given (SD3 T=50 n_max=33; FLUX T=28 n_max=24)
        nfe, guidance = args.nfe, args.guidance
    if args.method != "lsb" and args.solver:
        raise ValueError("--solver applies only to --method lsb")
    solver = (args.solver or defaults["solver"]) if args.method == "lsb" else None
    if nfe is not None:
        check_nfe(nfe, name="--nfe")
    check_t0(t0, "--t0")
    check_tau(tau, "--tau")
    if guidance is not None:
        check_guidance(guidance, "--guidance")
    if student is not None:  # one network call at the student's own start (t0, tau); no guidance, no solver
        nfe, tau, t0, guidance, solver = 1, student["student"]["tau"], student["student"]["t0"], None, None
    checks.positive_int(args.batch_size, "--batch-size")
    checks.check_seed(args.seed)
    checks.check_size_arg(args.size)
    max_pixels = checks.check_max_pixels(args.max_pixels)
    checks.check_domain_arg(args.source, "--source")
    checks.check_domain_arg(args.target, "--target")
    # Validate every input and the output folder before loading the model: a bad one is reported by name.
    files = expand_inputs(args.inputs)
    names = output_names(files)
    folder = OutputFolder(args.output, args.inputs, files, overwrite=args.overwrite)
    local = args.model in checks.EMBEDDED_NAMES or Path(str(args.model)).expanduser().is_dir()
    native = model_native_size(_model_folder(args.model)) if local else None
    images = load_inputs(
        files,
        native,
        policy=args.size_policy,
        size=args.size,
        convert=args.convert_mode,
        max_pixels=max_pixels,
        defer_size=not local and args.size is None,  # a Hub model: its native size is known once it is loaded
    )
    checks.check_device(args.device)
    # One process, or several under `accelerate launch` (lsb.surfaces.translate_files: identical outputs either way).
    from ...io.execution import process_state
    from ...prompts.domains import load_domain
    from ..translate_files import translate_files
    from ..translators import load_translator

    state = process_state(args.device)
    device = args.device if args.device is not None or state.num_processes == 1 else state.device
    extra = {} if args.trust_remote_code is None else {"trust_remote_code": True}
    checks.quiet_loading()
    try:
        if student is not None:
            from ..students import load_student

            pipe = load_student(args.student, args.model, device=device)
        else:
            pipe = load_translator(args.method, args.model, device=device, **extra)
    except OSError as e:  # a Hub id that is not there (offline, no such repo): one line, not diffusers' traceback
        if local:
            raise
        raise checks.hub_failure(args.model, e) from None
    if native is None and args.size is None:  # a Hub model: its size is known now, still before any compute
        native = native_size(pipe)
        images = load_inputs(files, native, policy=args.size_policy, convert=args.convert_mode, max_pixels=max_pixels)
    if args.method == "lsb":
        pipe.scheduler.register_to_config(solver=solver)
    if student is not None:
        source, target = pipe.student_settings["source_prompt"], pipe.student_settings["target_prompt"]
    else:
        source, target = load_domain(pipe, args.source), load_domain(pipe, args.target)
    state.wait_for_everyone()  # every process has checked the output folder before the main one prepares it
    if state.is_main_process:
        folder.prepare()
    state.wait_for_everyone()
    out = folder.path
    post = (lambda k, o: resize_back(o, images[k])) if args.resize_back else None
    try:
        counts = []  # (NFE, forward passes per image) per batch
        done = translate_files(
            args.method,
            pipe,
            files,
            images,
            source,
            target,
            out,
            nfe=nfe,
            guidance=guidance,
            tau=tau,
            t0=t0,
            seed=args.seed,
            batch_size=args.batch_size,
            state=state,
            names=names,
            postprocess=post,
            counts=counts,
        )
    except BaseException:
        if state.is_main_process:
            folder.abort()
        raise
    if not state.is_main_process:
        return 0
    from ...io.images import load_image

    results = [(images[k], load_image(dest)) for k, dest in done]
    grid = make_grid([x for pair in results for x in pair], nrow=2 * min(4, len(results)))
    save_image(grid, out / GRID_NAME)
    folder.write_settings(
        "translate",
        dict(
            model=args.model or (student["base_model"] if student else "mini-sd"),
            method=args.method,
            **({"student": str(args.student)} if student is not None else {}),
            source=args.source,
            target=args.target,
            nfe=nfe,
            tau=tau,
            t0=t0,
            guidance=guidance,
            solver=solver,
            seed=args.seed,
            size_policy=args.size_policy,
            size=args.size,
            resize_back=args.resize_back,
            inputs={str(names[k]): str(files[k]) for k, _ in done},
        ),
    )
    final = folder.commit()
    print(
        f"wrote {len(results)} image(s) and grid.png to {final} (NFE {counts[0][0] if counts else nfe} per image, "
        f"{counts[0][1] if counts else '?'} forward passes"
        + (f", {state.num_processes} processes)" if state.num_processes > 1 else ")")
    )
    return 0


def _model_folder(model):
    from ...io.assets import MINI_SD

    return MINI_SD if model in (None, "", "mini-sd", "embedded") else Path(model).expanduser()
