"""Extra ``lsb`` subcommands, one module each.

A module here defines ``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed args and returning an exit status. ``lsb.surfaces.cli`` registers every module listed in
:data:`COMMANDS`.
"""

COMMANDS: list[str] = ["translate", "learn_domain", "generate", "train", "demo", "export", "restore", "distill"]

#: help of ``--convert-mode``, the flag of every command that reads user images
CONVERT_MODE_HELP = (
    "accept images that are not 8-bit RGB (RGBA, grayscale, 16-bit, palette ...) by converting them: "
    "alpha composited on white, 16-bit and float scaled to 8 bits (default: refuse them, naming "
    "the file)"
)


def add_image_output_arguments(p) -> None:
    """``--size-policy``, ``--resize-back``, ``--max-pixels``, ``--overwrite`` and ``--resume``: the options of the
    commands that write one output image per input image (translate, restore)."""
    from ..inputs import MAX_PIXELS_HELP, SIZE_POLICIES, SIZE_POLICY_HELP

    p.add_argument("--size-policy", default="resize", choices=SIZE_POLICIES, help=SIZE_POLICY_HELP)
    p.add_argument("--resize-back", action="store_true", help="resize each output back to its input's size")
    p.add_argument("--max-pixels", type=int, default=None, help=MAX_PIXELS_HELP)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the previous run in a non-empty output folder (all its files, settings.json included)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in the output folder, skipping its finished outputs (the plain rerun "
        "with the same settings does the same; docs/guides/safe-runs.md)",
    )


#: the dtype names ``--dtype`` accepts ("auto": the family's recommended dtype on the device)
DTYPES = ("auto", "float32", "float16", "bfloat16")


def add_dtype_argument(p) -> None:
    """``--dtype``: the precision the model runs in (commands that load a translation model)."""
    p.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="precision of the model (default auto: what diffusers runs the family in on the device: float32 on "
        "CPU, float16 for SD / SDXL on CUDA, bfloat16 for SD3 / FLUX.1 on CUDA)",
    )


def add_memory_arguments(p) -> None:
    """``--offload`` and ``--quantize``: running a model larger than the accelerator (lsb.helpers.memory)."""
    from ...io.memory_options import OFFLOAD_MODES, QUANTIZE_TYPES

    p.add_argument(
        "--offload",
        default="none",
        choices=OFFLOAD_MODES,
        help="keep weights on the CPU and move them to the accelerator when used: model (one component at a time) "
        "or sequential (one layer at a time: least memory, slowest); needs an accelerator (default none)",
    )
    p.add_argument(
        "--quantize",
        default=None,
        choices=tuple(QUANTIZE_TYPES),
        help="quantize the transformer / UNet and the text encoders with torchao (pip install torchao): "
        + "; ".join(f"{k}: {v[1]}" for k, v in QUANTIZE_TYPES.items())
        + " (default: none)",
    )


def check_memory_flags(args) -> None:
    """``--offload`` / ``--quantize`` checked against the device (an accelerator, torchao installed) before any input
    is read or weights load; the memory estimate follows when the model's weights are known (load_translator)."""
    from ...helpers.memory import check_offload, check_quantize
    from ...io.execution import default_device

    device = args.device if args.device is not None else default_device()
    check_offload(args.offload, device)
    check_quantize(args.quantize, device)


def check_family_and_method(model, method: str | None, dtype: str = "auto", device=None):
    """Before any weights load: the model's family (:func:`lsb.families.detect_family`; an unsupported model is one
    line naming the supported families), ``method`` supported by it (one line naming its methods), and one warning
    line on stderr when ``dtype`` is float16 for a family unstable in float16. Returns the family, or None for a Hub
    id whose index cannot be read here (its loader reports that)."""
    import sys

    from ...families import UnsupportedModelError, detect_family
    from ..methods import check_method, get_method

    if method is not None:
        get_method(method)
    try:
        family = detect_family(model, default=None)
    except UnsupportedModelError:
        raise
    except Exception:  # noqa: BLE001 (a missing or broken index, a Hub id offline): the loader reports it by name
        return None
    if method is not None:
        check_method(method, family)
    if dtype == "float16" and family.float16_unstable:
        print(
            f"lsb: warning: {family.label} in float16 may give NaNs or black images ({family.float16_unstable})",
            file=sys.stderr,
        )
    return family
