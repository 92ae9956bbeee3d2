"""``lsb translate``: translate images from a source domain to a target domain (LSB, FlowEdit, SDEdit, DDIB)."""

from __future__ import annotations

import sys
from pathlib import Path

from ...io.settings import PAPER_TRANSLATION, check_guidance, check_nfe, check_t0, check_tau, translation_defaults
from ..methods import METHODS, methods_help
from . import (
    CONVERT_MODE_HELP,
    add_dtype_argument,
    add_memory_arguments,
    add_image_output_arguments,
    check_family_and_method,
    check_memory_flags,
)


# Defaults for translation. They are the paper's (METHODS.md section 2) except where the embedded
# model needs others; see docs/guides/parameters.md for the measurements behind each.
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
        help="translate in ONE network call with a student from lsb distill (a folder, a Hub id or a shipped name: "
        "circle-square, square-circle; it fixes the model, domains and settings: no --source/--target/--nfe/--tau/"
        "--t0/--guidance/--solver/--method)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="a diffusers SD 1.x/2.x, SDXL, SD3, FLUX.1, Z-Image, Qwen-Image or FLUX.2 folder or Hub id, or "
        "mini-sd3 (default: the embedded mini SD)",
    )
    p.add_argument("--method", default=None, choices=list(METHODS), help=methods_help() + " (default lsb)")
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
    p.add_argument(
        "--mask",
        default=None,
        metavar="FILE_OR_FOLDER",
        help="translate a region only: a mask picture (white = may change, black = keep; soft greys mix) for every "
        "input, or a folder of masks matched to the inputs by name; pixels outside the mask stay the input's",
    )
    p.add_argument(
        "--mask-feather",
        type=float,
        default=None,
        metavar="PX",
        help="width of the soft edge inside the mask in px (default: 1/64 of the shorter side, at least 1)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the bridge noise (an input gets seed + its index among the inputs of its size)",
    )
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
    p.add_argument("--batch-size", type=int, default=8, help="images per pipeline call")
    p.add_argument("--device", default=None, help="torch device (default: cuda, mps or cpu)")
    add_dtype_argument(p)
    add_memory_arguments(p)
    p.add_argument(
        "-o", "--output", required=True, help="output folder (created; must be new or empty, see --overwrite)"
    )
    p.set_defaults(func=cmd_translate)


def cmd_translate(args) -> int:
    """``lsb translate``: every argument, input and the output folder checked, the folder claimed, the model loaded,
    then each input translated and recorded as it finishes (a rerun continues an interrupted run)."""
    settings = _settings(args)
    run = _prepare_run(args, settings)
    from ...io.execution import process_state
    from ..outputs import OutputPathError, read_manifest

    # One process, or several under `accelerate launch` (lsb.surfaces.translate_files: identical outputs either way).
    state = process_state(args.device)
    state.wait_for_everyone()  # every process has checked the output folder before the main one claims it
    refused = None
    if state.is_main_process:
        try:
            run["folder"].claim()
        except ValueError as e:  # every process reaches the barrier, then each stops
            refused = e
    state.wait_for_everyone()
    if refused is not None:
        raise refused
    if not state.is_main_process and read_manifest(run["folder"].path) is None:
        raise OutputPathError(f"{run['folder'].final}: the main process could not claim the output folder")
    try:
        pipe = _load_pipeline(args, run, state)
        done, counts = _translate(args, settings, run, pipe, state)
    except BaseException as e:
        if not state.is_main_process:
            raise
        _stop(run["folder"], e)
        raise
    if not state.is_main_process:
        return 0
    return _finish(args, settings, run, done, counts, state)


def _settings(args) -> dict:
    """The run's settings from the arguments and the model's defaults, each checked (one line naming the option)."""
    from .. import checks

    checks.check_model_arg(args.model)  # before any look-up: a path that does not exist is an error, not a Hub id
    from ..students import student_cli_settings

    student = student_cli_settings(
        args
    )  # --student: its refusals, domains and settings (None without; method "student")
    args.method = args.method or "lsb"
    args.model = checks.embedded_model(args.model)
    if args.model in checks.EMBEDDED_NAMES or Path(str(args.model)).expanduser().is_dir():
        checks.check_model_folder_before_load(args.model)  # kind, completeness, weight files: one line, no compute
    if student is None:
        check_family_and_method(args.model, args.method, args.dtype, args.device)  # before any weights load
    check_memory_flags(args)
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
    checks.check_domain_arg(args.source, "--source")
    checks.check_domain_arg(args.target, "--target")
    _check_mask_options(args)
    return dict(
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
        mask=args.mask,
        mask_feather=args.mask_feather,
    )


def _check_mask_options(args) -> None:
    """``--mask`` / ``--mask-feather``: a method that can take a mask, a feather width that makes sense."""
    if args.mask is not None or args.mask_feather is not None:
        from ...helpers.masks import check_feather, check_mask_method

        if args.mask is None:
            raise ValueError("--mask-feather needs --mask")
        check_mask_method(args.method, args.mask)
        check_feather(args.mask_feather, "--mask-feather")


def _prepare_run(args, settings: dict) -> dict:
    """Inputs, output names, the output folder and the model folder checked, and every input read, before the model
    loads: a bad one is reported by name. Returns the run's plan."""
    from ...families import native_resolution
    from .. import checks
    from ..inputs import load_inputs
    from ..outputs import plan_outputs

    max_pixels = checks.check_max_pixels(args.max_pixels)
    files, names, folder = plan_outputs(args, "translate", settings)
    local = args.model in checks.EMBEDDED_NAMES or Path(str(args.model)).expanduser().is_dir()
    native = native_resolution(args.model) if local else None
    images = load_inputs(
        files,
        native,
        policy=args.size_policy,
        size=args.size,
        convert=args.convert_mode,
        max_pixels=max_pixels,
        defer_size=not local and args.size is None,  # a Hub model: its native size is known once it is loaded
    )
    masks = _read_masks(args, files, images, local)
    checks.check_device(args.device)
    return dict(
        files=files, names=names, folder=folder, images=images, native=native, local=local, max_pixels=max_pixels,
        masks=masks,
    )  # fmt: skip


def _read_masks(args, files, images, local: bool):
    """The ``--mask`` of each input, paired by name and sized with it (None without ``--mask``); for a Hub model
    whose size is known only once loaded, paired and read now and sized later (:func:`_load_pipeline`)."""
    if args.mask is None:
        return None
    import logging

    from ..region_masks import load_masks, pair_masks

    logging.getLogger("lsb.masks").setLevel(logging.ERROR)  # the notes name each all-black mask; no second line
    if local or args.size is not None:
        return load_masks(args.mask, files, images, args.size_policy)
    pair_masks(args.mask, files)
    return None


def _load_pipeline(args, run: dict, state):
    """The translator on this process's device; a Hub model's native size applied to the inputs."""
    from ...families import native_resolution
    from .. import checks
    from ..inputs import load_inputs
    from ..translators import load_translator

    device = args.device if args.device is not None or state.num_processes == 1 else state.device
    extra = {} if args.trust_remote_code is None else {"trust_remote_code": True}
    checks.quiet_loading()
    try:
        if args.student is not None:
            from ..students import load_student

            return load_student(args.student, args.model, device=device)
        pipe = load_translator(
            args.method,
            args.model,
            device=device,
            dtype=args.dtype,
            offload=args.offload,
            quantize=args.quantize,
            **extra,
        )
    except OSError as e:  # a Hub id that is not there (offline, no such repo): one line, not diffusers' traceback
        if run["local"]:
            raise
        raise checks.hub_failure(args.model, e) from None
    if run["native"] is None and args.size is None:  # a Hub model: its size is known now, still before any compute
        run["native"] = native_resolution(pipe)
        run["images"] = load_inputs(
            run["files"],
            run["native"],
            policy=args.size_policy,
            convert=args.convert_mode,
            max_pixels=run["max_pixels"],
        )
        if args.mask is not None:
            from ..region_masks import load_masks

            run["masks"] = load_masks(args.mask, run["files"], run["images"], args.size_policy)
    return pipe


def _translate(args, settings: dict, run: dict, pipe, state):
    """Translate the inputs not finished yet, recording each output in the manifest as it is written."""
    from ...prompts.domains import load_domain
    from ..inputs import resize_back
    from ..translate_files import translate_files

    if args.method == "lsb":
        pipe.scheduler.register_to_config(solver=settings["solver"])
    if args.student is not None:  # the student's own domains (learned tokens already in its text encoder)
        source, target = pipe.student_settings["source_prompt"], pipe.student_settings["target_prompt"]
    else:
        source, target = load_domain(pipe, args.source), load_domain(pipe, args.target)
    folder, files, names, images = run["folder"], run["files"], run["names"], run["images"]
    skip = {k for k, n in enumerate(names) if str(n) in folder.finished}
    if skip and state.is_main_process:
        print(f"resuming: {len(skip)} of {len(files)} output(s) already finished in {folder.final}", file=sys.stderr)
    post = (lambda k, o: resize_back(o, images[k])) if args.resize_back else None
    masks = run["masks"]
    if args.resize_back and masks is not None:  # the kept pixels: the input file's own, at its own size
        from ..region_masks import keep_input_pixels

        def post(k, o):
            return keep_input_pixels(resize_back(o, images[k]), files[k], masks[k], args.convert_mode)

    record = (lambda k, dest: folder.record(names[k], files[k])) if state.is_main_process else None
    counts = []  # (NFE, forward passes per image) per batch
    done = translate_files(
        args.method,
        pipe,
        files,
        images,
        source,
        target,
        folder.path,
        nfe=settings["nfe"],
        guidance=settings["guidance"],
        tau=settings["tau"],
        t0=settings["t0"],
        seed=args.seed,
        batch_size=args.batch_size,
        state=state,
        names=names,
        postprocess=post,
        counts=counts,
        skip=skip,
        record=record,
        masks=masks,
        mask_feather=args.mask_feather,
    )
    return done, counts


def _stop(folder, exc: BaseException) -> None:
    """A run that stops early keeps and records what it finished; Ctrl-C / SIGTERM become one resume line."""
    from ...io.runs import Terminated

    if isinstance(exc, (KeyboardInterrupt, Terminated)):
        raise folder.interrupted(exc) from None
    if folder.is_own_write_error(exc):
        raise folder.failed(exc) from None  # disk full, permissions: one line, finished outputs kept
    folder.abort()


def _finish(args, settings: dict, run: dict, done, counts, state) -> int:
    """The grid (from the files on disk), the manifest marked complete, the summary line."""
    from ...io.images import load_image, make_grid, save_image
    from ...io.runs import shown
    from ..outputs import GRID_NAME

    folder, images = run["folder"], run["images"]
    for k, _dest in done:  # outputs of other processes (recorded here, in one process, at the end)
        if str(run["names"][k]) not in folder.finished:
            folder.finished[str(run["names"][k])] = str(run["files"][k])
    results = [(images[k], load_image(dest)) for k, dest in done]
    grid = make_grid([x for pair in results for x in pair], nrow=2 * min(4, len(results)))
    save_image(grid, folder.path / GRID_NAME)
    final = folder.commit()
    nfe = counts[0][0] if counts else settings["nfe"]
    if not counts:
        print(f"nothing left to do: all {len(results)} output(s) in {shown(final)} are finished (grid.png rewritten)")
        return 0
    print(
        f"wrote {len(results)} image(s) and grid.png to {shown(final)} (NFE {nfe} per image, "
        f"{counts[0][1] if counts else '?'} forward passes"
        + (f", {state.num_processes} processes)" if state.num_processes > 1 else ")")
    )
    return 0
