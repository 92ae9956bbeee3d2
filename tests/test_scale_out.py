"""`accelerate launch -m lsb translate` with 2 CPU processes gives exactly the files of a 1-process run."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from lsb.data import shapes
from lsb.surfaces.translate_files import plan_batches
from tests.cli_helpers import translate_argv
from tests.launching import child_env, run_module


def test_plan_seeds_follow_global_position():
    class Im:
        def __init__(self, size):
            self.size = size

    ims = [Im((64, 64)), Im((32, 32)), Im((64, 64)), Im((64, 64)), Im((32, 32))]
    plan = plan_batches([f"f{i}.png" for i in range(5)], ims, batch_size=2, seed=10)
    flat = [(k, s) for b in plan for k, _, s in b]
    # size groups in first-seen order, seed = seed + index within the size group (the historical rule)
    assert flat == [(0, 10), (2, 11), (3, 12), (1, 10), (4, 11)]
    assert [len(b) for b in plan] == [2, 1, 2]


def test_two_process_launch_matches_one_process(tiny_sd_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, s in enumerate(shapes.scenes("test", 4, shape="circle")):
        shapes.render(s).save(inputs / f"c{i}.png")
    env = child_env(tmp_path)
    args = translate_argv(inputs, model=tiny_sd_dir, nfe=2, batch_size=1, seed=5)
    one = run_module("lsb", [*args, "-o", str(tmp_path / "one")], env)
    assert one.returncode == 0, one.stderr[-3000:]
    # two CPU processes through accelerate's torchrun launcher (see tests/launching.py)
    two = run_module("lsb", [*args, "-o", str(tmp_path / "two")], env, processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes" in two.stdout
    # both processes translated (each printed its own files)
    lines = [ln for ln in two.stdout.splitlines() if " -> " in ln]
    assert len(lines) == 4
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    assert names == ["c0.png", "c1.png", "c2.png", "c3.png", "grid.png", "settings.json"]
    for n in names:
        a, b = tmp_path / "one" / n, tmp_path / "two" / n
        if n.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), n
        else:
            assert json.loads(a.read_text()) == json.loads(b.read_text())
