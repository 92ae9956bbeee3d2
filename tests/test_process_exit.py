"""lsb.training.loop.exit_process: how a process of the toolkit ends (a launched worker vs a plain process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.launching import free_port


def test_plain_process_exits_with_system_exit():
    from lsb.training.loop import exit_process

    with pytest.raises(SystemExit) as e:
        exit_process(3)
    assert e.value.code == 3


def test_worker_with_a_process_group_leaves_it_and_ends_with_its_code_and_flushed_output():
    """A process holding a gloo group (world size 1 here) ends through os._exit: the status is kept, buffered
    output still arrives, and the group is destroyed first (the atexit hook below must not run: os._exit)."""
    code = textwrap.dedent(
        f"""
        import atexit, sys
        import torch.distributed as dist
        from lsb.training.loop import exit_process
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        atexit.register(lambda: print("atexit ran"))
        sys.stdout.write("buffered result line")  # no newline, no flush: exit_process must flush it
        exit_process(5)
        print("not reached")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 5, r.stderr[-2000:]
    assert r.stdout == "buffered result line"
