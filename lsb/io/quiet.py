"""A normal ``lsb`` run shows its own progress bar and result lines, not library notices.

Two kinds of library output are dropped, only in processes that ask for it (the ``lsb`` CLI and demo call
:func:`quiet_cli_run`, which sets ``LSB_QUIET=1`` for the loaders; the Python API keeps the libraries' defaults):

* the transformers notice that an image processor "requires torchvision (not installed)" and falls back to its PIL
  twin: diffusers' pipelines import CLIP / Siglip image processors for safety checkers and IP-adapters that lsb never
  uses; the fallback is exactly right for us.
* what torchao (the ``--quantize`` backend) says when any pipeline is imported with it installed on a CPU build of
  torch: its CUDA kernels (``torchao/_C*.so``) do not load, torch notes its enums, diffusers that torchao's tensor
  types do not import; none of it concerns a run that does not quantize, or int8 on the CPU.
* the loading bars of diffusers / transformers ("Loading pipeline components...", "Loading checkpoint shards",
  "Loading weights"), which nest inside the command's own bar.

Every other warning still prints.
"""

from __future__ import annotations

import logging
import os

#: substrings of the library log messages dropped in CLI runs
DROPPED = (
    "requires torchvision (not installed)",
    "torchao/_C",
    "is an Enum subclass and is now natively supported by torch.compile",
    "Unable to import `torchao` Tensor objects",
)

#: the loggers those messages come from (a logger's filter sees only its own records)
NOTICE_LOGGERS = (
    "transformers.utils.import_utils",
    "transformers",
    "torchao",
    "torch.utils._pytree",
    "diffusers.quantizers.torchao.torchao_quantizer",
)


class _DropKnownNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(d in message for d in DROPPED)


def quiet_library_notices() -> None:
    """Drop the known-harmless library notices (stdlib logging only: imports no library, safe before ``--help``)."""
    for name in NOTICE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNotices) for f in logger.filters):
            logger.addFilter(_DropKnownNotices())


def quiet_loading_bars() -> None:
    """Turn off diffusers' and transformers' model-loading progress bars (not the pipelines' own step bars)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def quiet_requested() -> bool:
    """Whether this process asked for quiet library output (``LSB_QUIET=1``: set by the CLI, or by the user)."""
    return os.environ.get("LSB_QUIET", "") == "1"


def quiet_cli_run() -> None:
    """For the ``lsb`` CLI: drop the notices now and the loading bars when a model loads (imports no library)."""
    os.environ.setdefault("LSB_QUIET", "1")
    if quiet_requested():
        quiet_library_notices()


def quiet_loading_if_requested() -> None:
    """Called by the model loaders: the loading bars off when :func:`quiet_requested`."""
    if quiet_requested():
        quiet_loading_bars()


__all__ = [
    "DROPPED",
    "quiet_library_notices",
    "quiet_loading_bars",
    "quiet_requested",
    "quiet_cli_run",
    "quiet_loading_if_requested",
]
