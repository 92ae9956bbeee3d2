"""Extra ``lsb`` subcommands, one module each.

A module here defines ``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed args and returning an exit status. ``lsb.cli`` registers every module listed in
:data:`COMMANDS`.
"""

COMMANDS: list[str] = ["demo", "export", "restore"]
