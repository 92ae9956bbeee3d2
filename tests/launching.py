"""Run a module under ``accelerate launch`` with several CPU processes (tests of multi-process runs).

``accelerate launch --cpu --num_processes 2`` would start ONE process (accelerate's simple launcher needs an
MPI hostfile for more); the torchrun launcher (``--multi_gpu``) starts two, and lsb asks accelerate for the
CPU (gloo) backend itself when there is no GPU (``lsb.io.execution.process_state``,
``lsb.training.loop.make_accelerator``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(tmp_path: Path) -> dict:
    """Environment for the child processes: offline, one thread each, a private HF home."""
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf_home"))


def run_module(
    module: str, args: list[str], env: dict, processes: int = 1, timeout: float = 900
) -> subprocess.CompletedProcess:
    """``python -m module args`` (processes=1) or ``accelerate launch ... -m module args`` with ``processes``
    CPU processes; output captured as text."""
    if processes == 1:
        cmd = [sys.executable, "-m", module, *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
            "-m",
            module,
            *args,
        ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
