"""``lsb restore``: restore degraded images (inpaint, sr4, deblur, jpeg) with a paired restoration model.

The model is any lsb restoration pipeline folder (``BridgeRestorationPipeline``: I2SB / DDBM / DBIM samplers;
``ConditionalDiffusionRestorationPipeline``: the Palette baseline; or any other pipeline in ``lsb._PIPELINES``
that follows the restoration contract, e.g. DiffIR). Without ``--model`` the shipped folder
``lsb/assets/restoration/<method>-<task>`` is used when present.
"""

from __future__ import annotations

from pathlib import Path

from . import CONVERT_MODE_HELP, add_image_output_arguments

METHODS = ("bridge", "palette", "diffir")
TRAIN_HINT = {
    "bridge": "python -m lsb.training.bridge --task {task} --bridge i2sb --out runs/bridge-{task}-i2sb",
    "palette": "python -m lsb.training.bridge --task {task} --bridge palette --out runs/palette-{task}",
    "diffir": "train a DiffIR model (see README) ",
}


def assets_dir() -> Path:
    import lsb

    return Path(lsb.__file__).parent / "assets" / "restoration"


def _is_shipped(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def default_method(task: str) -> str:
    """The first of :data:`METHODS` with a shipped model for ``task`` (``bridge`` when none is)."""
    return next((m for m in METHODS if _is_shipped(assets_dir() / f"{m}-{task}")), METHODS[0])


def default_model(method: str, task: str) -> Path:
    """The shipped model folder for ``method`` and ``task``, or a ModelFolderError saying how to train one."""
    from ...helpers.loading import ModelFolderError

    path = assets_dir() / f"{method}-{task}"
    if not _is_shipped(path):
        hint = TRAIN_HINT[method].format(task=task)
        out = hint.split("--out ")[-1] if "--out " in hint else "DIR"
        raise ModelFolderError(
            f"no {method} model for task {task!r} is shipped (looked in {path}); train one with `{hint}` "
            f"and pass `--model {out}/final`"
        )
    return path


#: lsb.helpers.restoration_tasks' TASKS and SAMPLERS, repeated here so that building the parser imports no torch
#: (tests/test_bad_inputs.py checks they agree)
TASKS = ("inpaint", "sr4", "deblur", "jpeg")
SAMPLERS = ("i2sb", "ddbm", "dbim")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "restore",
        help="restore degraded images (inpaint, sr4, deblur, jpeg) with a bridge or baseline model",
        description="Restore degraded images with a paired restoration model: a latent diffusion bridge "
        "(I2SB / DDBM / DBIM samplers), the Palette-style conditional-diffusion baseline, or any lsb "
        "restoration pipeline folder. NFE = UNet calls per image.",
    )
    p.add_argument("inputs", nargs="+", help="degraded image files and/or folders of images")
    p.add_argument("--task", required=True, choices=TASKS, help="the degradation the model restores")
    p.add_argument(
        "--method",
        default=None,
        choices=METHODS,
        help="which shipped model to use when --model is not given (default: the first of "
        f"{', '.join(METHODS)} shipped for the task)",
    )
    p.add_argument(
        "--model", default=None, help="restoration pipeline folder (default: lsb/assets/restoration/<method>-<task>)"
    )
    p.add_argument(
        "--scheduler",
        default=None,
        choices=SAMPLERS,
        help="bridge sampler (default: the one saved with the model); bridge models only",
    )
    p.add_argument(
        "--nfe",
        type=int,
        default=None,
        help="UNet calls per image (default 10; DDBM rounds to 3N - 1, DBIM needs >= 2)",
    )
    p.add_argument("--eta", type=float, default=None, help="DBIM's eta in [0, 1] (--scheduler dbim)")
    p.add_argument("--solver-order", type=int, default=None, choices=[1, 2, 3], help="DBIM's solver order")
    p.add_argument("--mask", default=None, help="inpainting mask image (white = missing); known pixels are kept")
    p.add_argument("--convert-mode", action="store_true", help=CONVERT_MODE_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise")
    p.add_argument("--batch-size", type=int, default=16, help="images per pipeline call")
    p.add_argument("--device", default=None, help="torch device (default: cuda, mps or cpu)")
    add_image_output_arguments(p)
    p.add_argument("-o", "--output", required=True, help="output folder (created; must be new or empty)")
    p.set_defaults(func=cmd_restore)


def cmd_restore(args) -> int:
    """``lsb restore``: arguments, inputs, mask and output folder checked, the folder claimed, the model loaded, each
    batch restored and its outputs recorded as they are written (a rerun continues an interrupted run)."""
    from .. import checks

    if args.nfe is not None and args.nfe < 1:
        raise ValueError(f"--nfe must be a positive integer, got {args.nfe}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    checks.finite(args.eta, "--eta", low=0, high=1)
    checks.check_seed(args.seed)
    dbim_opts = {k: v for k, v in (("eta", args.eta), ("solver_order", args.solver_order)) if v is not None}
    if dbim_opts and args.scheduler != "dbim":
        raise ValueError("--eta and --solver-order apply only with --scheduler dbim")
    if args.model and args.method:
        raise ValueError("give --model or --method, not both (--method picks a shipped model)")
    if args.model:
        checks.check_model_arg(args.model)
    model = Path(args.model) if args.model else default_model(args.method or default_method(args.task), args.task)
    run = _prepare_run(args, model)
    checks.check_device(args.device)
    checks.quiet_loading()
    from ..restorers import load_restoration_pipeline

    folder = run["folder"]
    folder.claim()  # before the model loads: a second run into the folder is refused at once
    try:
        pipe = load_restoration_pipeline(model, device=args.device)
        nfe = _restore(args, run, pipe, _call_options(args, pipe, model, dbim_opts))
    except BaseException as e:
        from ...io.runs import Terminated

        if isinstance(e, (KeyboardInterrupt, Terminated)):
            raise folder.interrupted(e) from None
        if folder.is_own_write_error(e):
            raise folder.failed(e) from None  # disk full, permissions: one line, finished outputs kept
        folder.abort()
        raise
    out_dir = folder.commit()
    from ...io.runs import shown

    print(
        f"restored {len(run['images'])} image(s) with {type(pipe).__name__} ({shown(model)})"
        + (f", NFE {nfe} per image" if nfe is not None else "")
        + f" -> {shown(out_dir)}"
    )
    return 0


def _prepare_run(args, model) -> dict:
    """Inputs, output names, the output folder, every input and the mask read and checked, before the model loads."""
    from .. import checks
    from ..inputs import load_inputs
    from ..outputs import plan_outputs

    max_pixels = checks.check_max_pixels(args.max_pixels)
    settings = {
        "model": str(model),
        "task": args.task,
        "scheduler": args.scheduler,
        "requested_nfe": args.nfe,
        "eta": args.eta,
        "solver_order": args.solver_order,
        "seed": args.seed,
        "batch_size": args.batch_size,  # each batch draws from its own generator: part of what the outputs are
        "mask": args.mask,
        "size_policy": args.size_policy,
        "resize_back": args.resize_back,
    }
    files, names, folder = plan_outputs(args, "restore", settings)
    from ...io.images import model_native_size

    native = model_native_size(model)
    images = load_inputs(files, native, policy=args.size_policy, convert=args.convert_mode, max_pixels=max_pixels)
    return dict(files=files, names=names, folder=folder, images=images, mask=_load_mask(args, files, images))


def _load_mask(args, files, images):
    """The inpainting mask (white = missing), checked against every input's size; None without ``--mask``."""
    if args.mask is None:
        return None
    from ...io.images import ImageInputError, load_image
    from .. import checks

    checks.check_readable_file(args.mask, "--mask", "mask file")
    mask = load_image(args.mask, name=f"--mask {args.mask}", convert=True).convert("L")
    for f, im in zip(files, images):
        w, h = im.info.get("resized_from", im.size)
        if (w, h) != mask.size:
            raise ImageInputError(f"mask {args.mask} is {mask.size[0]}x{mask.size[1]}, but {f} is {w}x{h}")
    if images and mask.size != images[0].size:
        from PIL import Image

        mask = mask.resize(images[0].size, Image.NEAREST)
    return mask


def _call_options(args, pipe, model, dbim_opts) -> dict:
    """The pipeline call's options: the trained task checked, the sampler set, NFE -> steps."""
    from ...helpers.bridge_schedulers import steps_for_nfe

    trained_task = pipe.config.get("task")
    if trained_task is not None and trained_task != args.task:
        raise ValueError(f"the model {model} restores {trained_task!r}, not {args.task!r}")
    is_bridge = hasattr(pipe, "set_sampler")
    if args.scheduler is not None:
        if not is_bridge:
            raise ValueError(f"--scheduler applies to bridge models; {model} is a {type(pipe).__name__}")
        pipe.set_sampler(args.scheduler, **dbim_opts)
    call = {}
    if is_bridge:
        call["num_inference_steps"] = steps_for_nfe(pipe.scheduler, args.nfe or 10)
    elif args.nfe is not None:
        call["num_inference_steps"] = args.nfe
    return call


def _restore(args, run: dict, pipe, call: dict):
    """Restore every batch with an unfinished output (batch ``i`` draws from a generator seeded ``seed + i``, so a
    resumed run gives the outputs of an uninterrupted one); returns the NFE per image."""
    import sys

    import torch

    from ...io.images import save_image
    from ..inputs import resize_back

    folder, images, names, files = run["folder"], run["images"], run["names"], run["files"]
    device = pipe._execution_device
    nfe = folder.settings.get("nfe")
    if folder.finished:
        print(f"resuming: {len(folder.finished)} of {len(images)} output(s) already finished", file=sys.stderr)
    for i in range(0, len(images), args.batch_size):
        ks = range(i, min(i + args.batch_size, len(images)))
        if all(str(names[k]) in folder.finished for k in ks):
            continue
        generator = torch.Generator(device).manual_seed(args.seed + i)
        res = pipe([images[k] for k in ks], mask=run["mask"], generator=generator, output_type="pil", **call)
        nfe = getattr(res, "nfe", None)
        if nfe is not None and folder.settings.get("nfe") != nfe:
            folder.settings["nfe"] = nfe  # the NFE per image the sampler spent (recorded with the outputs)
        for k, im in zip(ks, res.images):
            save_image(resize_back(im, images[k]) if args.resize_back else im, folder.path / names[k])
            folder.record(names[k], files[k])
    return nfe
