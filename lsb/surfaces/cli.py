"""The ``lsb`` command line: translate, learn-domain, generate, train.

Every user error (bad image, unknown token, missing model folder, out-of-range parameter) is reported
as one line ``lsb: error: ...`` with exit status 2, before any model compute where possible.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from ..io.quiet import quiet_cli_run
from .commands.translate import MINI_SD_TRANSLATE_DEFAULTS, TRANSLATE_DEFAULTS  # noqa: F401  (re-exported)


def _user_errors():
    from ..helpers.loading import ModelFolderError
    from ..io.images import ImageInputError
    from ..prompts.domains import DomainFileError
    from ..prompts.tokens import UnknownTokenError

    return (ImageInputError, ModelFolderError, UnknownTokenError, DomainFileError, ValueError, FileNotFoundError)


def _printable_streams() -> None:
    """Any file name prints, whatever its bytes: characters the terminal cannot show appear as escapes."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # not a text stream we may change (captured, replaced)
            pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lsb", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lsb {__import__('lsb').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    import importlib

    from .commands import COMMANDS

    for name in COMMANDS:
        importlib.import_module(f"lsb.surfaces.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_cli_run()  # our progress bar and result lines, not library notices (lsb.io.quiet)
    _printable_streams()
    from ..io.runs import RunInterrupted, Terminated, interrupt_code, restore_terminate, terminate_as_exception

    previous = terminate_as_exception()  # SIGTERM: the run keeps what it finished, as on Ctrl-C (safe-runs.md)
    try:
        return args.func(args)
    except RunInterrupted as e:
        print(f"lsb: interrupted: {e}", file=sys.stderr)
        return e.code
    except (KeyboardInterrupt, Terminated) as e:  # before any output was written (loading, checking)
        print("lsb: interrupted", file=sys.stderr)
        return interrupt_code(e)
    except _user_errors() as e:  # (evaluated only for other exceptions: it imports torch)
        print(f"lsb: error: {e}", file=sys.stderr)
        return 2
    finally:
        restore_terminate(previous)
        if "torch.distributed" in sys.modules:  # only a run that imported torch can hold a process group
            from ..training.loop import leave_process_group

            leave_process_group()


def run(argv: list[str] | None = None) -> NoReturn:
    """The process entry point (``lsb`` and ``python -m lsb``): :func:`main`, then the exit. A worker of a
    multi-process ``accelerate launch`` ends through ``lsb.training.loop.exit_process`` (its process group left,
    output flushed, no interpreter teardown of the gloo threads, which can abort after the results are written)."""
    code = main(argv)
    if "torch.distributed" in sys.modules:
        from ..training.loop import exit_process

        exit_process(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
