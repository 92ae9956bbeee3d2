"""The ``lsb`` command line: translate, learn-domain, generate, train.

Every user error (bad image, unknown token, missing model folder, out-of-range parameter) is reported
as one line ``lsb: error: ...`` with exit status 2, before any model compute where possible.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
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


def _distributed_loaded() -> bool:
    """Whether ``torch.distributed`` is imported and usable: not after Ctrl-C / SIGTERM (the signal may have cut the
    import of torch short, and importing it again would fail)."""
    from ..io.runs import signalled

    dist = sys.modules.get("torch.distributed")
    return signalled() is None and dist is not None and callable(getattr(dist, "is_initialized", None))


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
    from ..io.runs import RunInterrupted, interrupt_code, restore_terminate, signalled, terminate_as_exception

    previous = terminate_as_exception()  # Ctrl-C / SIGTERM: the run keeps what it finished (safe-runs.md)
    try:
        with warnings.catch_warnings():
            # commands print their own one-line `lsb: warning:` for a float16 run of an unstable family
            warnings.filterwarnings("ignore", message=r".* in float16 may give NaNs")
            return args.func(args)
    except BaseException as e:
        if isinstance(e, RunInterrupted):
            print(f"lsb: interrupted: {e}", file=sys.stderr)
            return e.code
        code = interrupt_code(e) if signalled() is None else signalled()
        if signalled() is not None or isinstance(e, KeyboardInterrupt):
            # before any output was written (loading, checking); also whatever an import cut short by the signal
            # raised afterwards
            print("lsb: interrupted", file=sys.stderr)
            return code
        if isinstance(e, _user_errors()):  # (evaluated only for other exceptions: it imports torch)
            print(f"lsb: error: {e}", file=sys.stderr)
            return 2
        raise
    finally:
        restore_terminate(previous)
        if _distributed_loaded():  # only a run that imported torch (completely) can hold a process group
            from ..training.loop import leave_process_group

            leave_process_group()


def run(argv: list[str] | None = None) -> NoReturn:
    """The process entry point (``lsb`` and ``python -m lsb``): :func:`main`, then the exit. A worker of a
    multi-process ``accelerate launch`` ends through ``lsb.training.loop.exit_process`` (its process group left,
    output flushed, no interpreter teardown of the gloo threads, which can abort after the results are written);
    an interrupted run ends with ``os._exit`` for the same reason (130 / 143)."""
    code = main(argv)
    from ..io.runs import signalled

    if signalled() is not None:  # after Ctrl-C / SIGTERM (files and manifest already written): no interpreter
        for stream in (sys.stdout, sys.stderr):  # teardown, which can abort on an import of torch cut short
            stream.flush()
        os._exit(code)
    if _distributed_loaded():
        from ..training.loop import exit_process

        exit_process(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
