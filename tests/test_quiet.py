"""A normal `lsb translate` prints its progress bar and result lines, not library notices or loading bars."""

import os
import subprocess
import sys

from PIL import Image

NOISE = ("torchvision", "Loading pipeline components", "Loading checkpoint shards", "Loading weights", "[transformers]")


def test_translate_output_has_no_library_noise(tiny_sd_dir, tmp_path):
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "in.png")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("LSB_QUIET", None)
    cmd = [sys.executable, "-m", "lsb", "translate", str(tmp_path / "in.png"), "-o", str(tmp_path / "o")]
    opts = ["--source", "a circle", "--target", "a square", "--model", str(tiny_sd_dir), "--nfe", "2"]
    res = subprocess.run([*cmd, *opts], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    assert "wrote 1 image(s)" in text
    assert not [n for n in NOISE if n in text], text[-3000:]


def test_the_python_api_keeps_the_library_defaults():
    code = (
        "import os, lsb.io.quiet as q; q.quiet_loading_if_requested(); "
        "from diffusers.utils import logging as l; print(l.is_progress_bar_enabled(), q.quiet_requested())"
    )
    env = {k: v for k, v in os.environ.items() if k != "LSB_QUIET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300).stdout
    assert out.split() == ["True", "False"]
