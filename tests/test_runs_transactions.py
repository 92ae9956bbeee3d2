"""Issue 22 item 1 with real processes: a run is a transaction.

Ctrl-C (SIGINT) and SIGTERM keep the finished outputs, record them, print one line saying how to continue and exit
130 / 143 without a traceback; after ``kill -9`` the plain rerun continues the run; ``--overwrite`` replaces an
interrupted run; two runs started together into one new folder: exactly one succeeds, the other is refused in one
line. The embedded mini SD (64 px) keeps each run to seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from lsb.surfaces.cli import main

N = 8  # inputs of an interrupted run: enough that the signal arrives before the last one is written


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    from lsb.data import shapes

    d = tmp_path_factory.mktemp("runs") / "many"
    d.mkdir()
    for i, s in enumerate(shapes.scenes("test", N, shape="circle")):
        shapes.render(s).save(d / f"c{i:02d}.png")
    return d


def _argv(inputs, out, *extra):
    return ["translate", str(inputs), "--source", "a circle", "--target", "a square", "--nfe", "4"]  + [
        "--batch-size", "1", "-o", str(out), *extra
    ]  # fmt: skip


def _start(argv):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "lsb", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _recorded(out) -> dict:
    try:
        return json.loads((out / "settings.json").read_text()).get("inputs", {})
    except (OSError, ValueError):
        return {}


def _interrupt_after_first_output(proc, out, sig):
    """Send ``sig`` once the run has recorded one finished output; returns (returncode, stderr lines)."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not _recorded(out):
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "it/s" not in ln and "%" not in ln]
    return proc.returncode, lines, err


def _pngs(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith("c") and p.suffix == ".png")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_keeps_finished_outputs_and_the_rerun_continues(many, tmp_path, capsys, sig, code):
    out = tmp_path / "out"
    rc, lines, err = _interrupt_after_first_output(_start(_argv(many, out)), out, sig)
    assert rc == code and "Traceback" not in err, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("lsb: interrupted: ") and "--resume" in lines[0], lines
    manifest = json.loads((out / "settings.json").read_text())
    kept = _pngs(out)
    assert manifest["status"] == "interrupted" and 1 <= len(kept) < N
    assert sorted(manifest["inputs"]) == kept  # every finished output is recorded, nothing else
    before = {n: (out / n).read_bytes() for n in kept}
    # the plain rerun with the same settings continues: the finished outputs are kept as they are
    assert main(_argv(many, out)) == 0
    assert f"resuming: {len(kept)} of {N}" in capsys.readouterr().err
    assert _pngs(out) == [f"c{i:02d}.png" for i in range(N)]
    assert all((out / n).read_bytes() == b for n, b in before.items())
    assert json.loads((out / "settings.json").read_text())["status"] == "complete"
    if sig == signal.SIGINT:  # the resumed outputs are those of an uninterrupted run (each image has its own seed)
        fresh = tmp_path / "fresh"
        assert main(_argv(many, fresh)) == 0
        for n in _pngs(fresh):
            assert np.array_equal(np.asarray(Image.open(fresh / n)), np.asarray(Image.open(out / n))), n


def test_kill_9_then_resume_or_overwrite(many, tmp_path, capsys):
    out = tmp_path / "out"
    proc = _start(_argv(many, out))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not _recorded(out):
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    kept = _pngs(out)
    assert 1 <= len(kept) < N and json.loads((out / "settings.json").read_text())["status"] == "running"
    # another command's settings do not continue it: one line naming what differs
    assert main([*_argv(many, out), "--seed", "7"]) == 2
    err = capsys.readouterr().err
    assert "interrupted lsb run with other settings" in err and "seed" in err and "--overwrite" in err
    # --overwrite works on lsb's own interrupted folder (it was "not written by lsb" before issue 22)
    assert main([*_argv(many, out), "--overwrite", "--seed", "7", "--nfe", "2", "--batch-size", "8"]) == 0
    assert _pngs(out) == [f"c{i:02d}.png" for i in range(N)]
    assert json.loads((out / "settings.json").read_text())["seed"] == 7
    assert not any(p.name.startswith(".out.lsb") for p in tmp_path.iterdir())


def test_two_runs_into_one_new_folder_exactly_one_succeeds(many, tmp_path):
    out = tmp_path / "shared"
    procs = [_start(_argv(many, out, "--seed", str(s))) for s in (1, 2)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [r[1][-800:] for r in results]
    loser = next(r for p, r in zip(procs, results) if p.returncode == 2)
    errors = [ln for ln in loser[1].splitlines() if ln.startswith("lsb: error: ")]
    assert len(errors) == 1 and "Traceback" not in loser[1]
    assert "in use by another lsb run" in errors[0] or "not empty" in errors[0]
    winner_seed = 1 if procs[0].returncode == 0 else 2
    manifest = json.loads((out / "settings.json").read_text())
    assert manifest["seed"] == winner_seed and manifest["status"] == "complete"
    assert _pngs(out) == sorted(manifest["inputs"])  # one run's files only


def test_learn_domain_interrupted_keeps_its_checkpoint_and_is_claimed(many, tmp_path, capsys):
    out = tmp_path / "domain"
    argv = ["learn-domain", "--images", str(many), "--token", "<c>", "--checkpoint-every", "2", "-o", str(out)]
    proc = _start([*argv, "--steps", "500"])
    deadline = time.time() + 180
    while (
        time.time() < deadline and proc.poll() is None and not (out / "checkpoint-2" / "trainer_state.json").is_file()
    ):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert err.count("lsb: interrupted: ") == 1 and "checkpoint-" in err and "rerun the same command" in err
    # while another run holds the folder, a second one is refused in one line
    from lsb.io.runs import FolderClaim

    held = FolderClaim(out).take()
    try:
        assert main([*argv, "--steps", "4"]) == 2
        assert "in use by another lsb run" in capsys.readouterr().err
    finally:
        held.release()
    assert main([*argv, "--steps", "4"]) == 0  # the rerun resumes from the kept checkpoint
    assert (out / "checkpoint-4").is_dir() and json.loads((out / "train_result.json").read_text())["steps"] == 4


def test_restore_interrupted_keeps_finished_outputs(many, tmp_path, capsys):
    out = tmp_path / "restored"
    argv = ["restore", str(many), "--task", "inpaint", "--nfe", "10", "--batch-size", "1", "-o", str(out)]
    rc, lines, err = _interrupt_after_first_output(_start(argv), out, signal.SIGINT)
    assert rc == 130 and "Traceback" not in err and len(lines) == 1 and "--resume" in lines[0], err[-2000:]
    kept = _pngs(out)
    assert 1 <= len(kept) < N and sorted(json.loads((out / "settings.json").read_text())["inputs"]) == kept
    assert main([*argv, "--resume"]) == 0 and f"resuming: {len(kept)} of {N}" in capsys.readouterr().err
    assert _pngs(out) == [f"c{i:02d}.png" for i in range(N)]
