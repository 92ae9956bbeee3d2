"""The `lsb` command line on a tiny SD folder: outputs on disk and clear errors for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from lsb.surfaces.cli import main
from lsb.data import shapes
from tests.cli_helpers import translate_argv


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i, s in enumerate(shapes.scenes("test", 3, shape="circle")):
        shapes.render(s).save(d / f"c{i}.png")
    return d


def test_translate_folder_writes_outputs_and_grid(tiny_sd_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(translate_argv(inputs, model=tiny_sd_dir, nfe=2, out=out))
    assert rc == 0
    assert sorted(p.name for p in out.glob("c*.png")) == ["c0.png", "c1.png", "c2.png"]
    assert (out / "grid.png").is_file()
    settings = json.loads((out / "settings.json").read_text())
    assert settings["nfe"] == 2 and settings["solver"] == "euler"
    # same seed -> same pixels
    out2 = tmp_path / "out2"
    main(translate_argv(inputs, model=tiny_sd_dir, nfe=2, out=out2))
    assert Image.open(out / "c0.png").tobytes() == Image.open(out2 / "c0.png").tobytes()


def _err(capsys, argv):
    rc = main(argv)
    assert rc == 2
    return capsys.readouterr().err


def test_translate_errors(tiny_sd_dir, inputs, tmp_path, capsys):
    base = ["--source", "a circle", "--target", "a square", "--model", str(tiny_sd_dir), "-o", str(tmp_path / "o")]
    assert "no such file" in _err(capsys, ["translate", str(tmp_path / "nope.png"), *base])
    (tmp_path / "notes.png").write_text("not an image")
    assert "notes.png" in _err(capsys, ["translate", str(inputs / "c0.png"), str(tmp_path / "notes.png"), *base])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no image files" in _err(capsys, ["translate", str(empty), *base])
    Image.new("RGB", (60, 60)).save(tmp_path / "odd.png")
    assert "multiple of 8" in _err(capsys, ["translate", str(tmp_path / "odd.png"), *base, "--size-policy", "keep"])
    assert "<nope>" in _err(capsys, translate_argv(inputs, model=tiny_sd_dir, target="a <nope>", out=tmp_path / "o"))
    assert "--nfe" in _err(capsys, ["translate", str(inputs), *base, "--nfe", "1"])
    assert "t0" in _err(capsys, ["translate", str(inputs), *base, "--t0", "1.5"])
    missing = tmp_path / "missing-model"
    assert "does not exist" in _err(
        capsys, translate_argv(inputs, model=missing, source="a", target="b", out=tmp_path / "o")
    )
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_sd_dir, broken)
    shutil.rmtree(broken / "unet")
    assert "unet" in _err(capsys, translate_argv(inputs, model=broken, source="a", target="b", out=tmp_path / "o"))


def test_translate_other_modes_refused_unless_convert_mode(tiny_sd_dir, inputs, tmp_path, capsys):
    """RGBA / L / 16-bit files: a clear error naming the file before any compute; --convert-mode converts them."""
    import numpy as np

    base = ["--source", "a circle", "--target", "a square", "--model", str(tiny_sd_dir), "--nfe", "2"]
    rgb = Image.open(inputs / "c0.png")
    odd = {
        "alpha.png": rgb.convert("RGBA"),
        "gray.png": rgb.convert("L"),
        "deep.png": Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)),
    }
    for name, im in odd.items():
        im.save(tmp_path / name)
        err = _err(
            capsys, ["translate", str(inputs / "c1.png"), str(tmp_path / name), *base, "-o", str(tmp_path / "o")]
        )
        assert f"{name}: mode {im.mode}" in err and "--convert-mode" in err
    assert not (tmp_path / "o").exists()  # refused before anything was written
    out = tmp_path / "converted"
    assert main(["translate", *(str(tmp_path / n) for n in odd), *base, "--convert-mode", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["alpha.png", "deep.png", "gray.png", "grid.png"]
    assert "alpha.png: converted from mode RGBA" in capsys.readouterr().err


def test_translate_with_learned_domain_file(tiny_sd_dir, inputs, tmp_path):
    from lsb.training.prompt_optimization import learn_domain

    dom = learn_domain(
        inputs, "<tiny-circle>", str(tiny_sd_dir), output_dir=tmp_path / "dom", steps=2, batch_size=2, progress=False
    )
    rc = main(translate_argv(inputs / "c0.png", model=tiny_sd_dir, source=dom, nfe=2, out=tmp_path / "o"))
    assert rc == 0


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "lsb", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for cmd in ("translate", "learn-domain", "generate", "train"):
        assert cmd in proc.stdout


def test_translate_help_states_both_default_sets(capsys):
    from lsb.surfaces.cli import MINI_SD_TRANSLATE_DEFAULTS, TRANSLATE_DEFAULTS

    with pytest.raises(SystemExit):
        main(["translate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for key in ("tau", "t0", "guidance"):
        assert (
            f"default {MINI_SD_TRANSLATE_DEFAULTS[key]} on the embedded model, {TRANSLATE_DEFAULTS[key]} on others"
            in text
        )
    assert f"(default {TRANSLATE_DEFAULTS['nfe']})" in text


@pytest.mark.parametrize("method", ["sdedit", "ddib"])
def test_translate_baseline_methods(tiny_sd_dir, inputs, tmp_path, method, capsys):
    out = tmp_path / method
    rc = main(translate_argv(inputs / "c0.png", model=tiny_sd_dir, method=method, nfe=4, out=out))
    assert rc == 0 and (out / "c0.png").is_file()
    assert json.loads((out / "settings.json").read_text())["method"] == method
    argv = translate_argv(
        inputs / "c0.png", model=tiny_sd_dir, source="a", target="b", method=method, solver="ddim", out=out
    )
    assert "--solver" in _err(capsys, argv)
