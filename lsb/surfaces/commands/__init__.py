"""Extra ``lsb`` subcommands, one module each.

A module here defines ``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed args and returning an exit status. ``lsb.surfaces.cli`` registers every module listed in
:data:`COMMANDS`.
"""

COMMANDS: list[str] = ["translate", "learn_domain", "generate", "train", "demo", "export", "restore"]

#: help of ``--convert-mode``, the flag of every command that reads user images
CONVERT_MODE_HELP = (
    "accept images that are not 8-bit RGB (RGBA, grayscale, 16-bit, palette ...) by converting them: "
    "alpha composited on white, 16-bit and float scaled to 8 bits (default: refuse them, naming "
    "the file)"
)
