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
    """``--size-policy``, ``--resize-back``, ``--max-pixels`` and ``--overwrite``: the options of the commands that
    write one output image per input image (translate, restore)."""
    from ..inputs import MAX_PIXELS_HELP, SIZE_POLICIES, SIZE_POLICY_HELP

    p.add_argument("--size-policy", default="resize", choices=SIZE_POLICIES, help=SIZE_POLICY_HELP)
    p.add_argument("--resize-back", action="store_true", help="resize each output back to its input's size")
    p.add_argument("--max-pixels", type=int, default=None, help=MAX_PIXELS_HELP)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the previous run in a non-empty output folder (all its files, settings.json included)",
    )
