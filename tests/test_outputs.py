"""Issue 16 item 1 and 2 on the command line: colliding names, self-overwrite, reruns, chaining, file modes,
the size policy (notes, resize back), and learn-domain's resume check."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from lsb.surfaces.cli import main
from lsb.surfaces.outputs import expand_inputs, output_names


def _shape(i=0, size=None):
    from lsb.data import shapes

    im = shapes.render(shapes.scenes("test", i + 1, shape="circle")[i])
    return im.resize(size) if size else im


def _tr(model, *inputs, out, extra=()):
    return main(
        [
            "translate",
            *map(str, inputs),
            "--source",
            "a circle",
            "--target",
            "a square",
            "--model",
            str(model),
            "--nfe",
            "2",
            "-o",
            str(out),
            *extra,
        ]
    )


def test_output_names_are_distinct_and_keep_folders(tmp_path):
    for rel in ("a/x.png", "a/x.jpg", "b/x.png", "b/grid.png", "c/y.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        _shape().save(tmp_path / rel)
    files = expand_inputs([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    names = [str(n) for n in output_names(files)]
    assert len(set(names)) == len(names) == 5
    assert names == ["a/x.jpg.png", "a/x.png.png", "b/grid.png.png", "b/x.png", "c/y.png"]
    assert [str(n) for n in output_names([tmp_path / "c" / "y.png"])] == ["y.png"]  # unique stems: flat as before
    assert [str(n) for n in output_names([tmp_path / "b" / "grid.png"])] == ["grid.png.png"]  # never our grid.png
    assert len(expand_inputs([tmp_path / "c", tmp_path / "c" / "y.png"])) == 1  # one file named twice: read once


def test_collisions_rerun_overwrite_and_chaining(tiny_sd_dir, tmp_path, capsys):
    for rel in ("in/a/x.png", "in/a/x.jpg", "in/b/x.png", "in/b/z.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        _shape().save(tmp_path / rel)
    a, b = tmp_path / "in" / "a", tmp_path / "in" / "b"
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert _tr(tiny_sd_dir, a, b, out=out) == 0
    finally:
        os.umask(old)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["a/x.jpg.png", "a/x.png.png", "b/x.png", "b/z.png", "grid.png"]
    assert all((p.stat().st_mode & 0o777) == 0o644 for p in out.rglob("*.png"))  # umask honoured, not 0600
    settings = json.loads((out / "settings.json").read_text())
    assert settings["lsb_command"] == "translate" and settings["inputs"]["b/x.png"].endswith("in/b/x.png")
    # a rerun into the used folder is refused, nothing changes
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert _tr(tiny_sd_dir, b, out=out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # --overwrite replaces the whole previous run (no stale files), settings.json included
    assert _tr(tiny_sd_dir, b, out=out, extra=["--overwrite", "--seed", "3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "settings.json", "x.png", "z.png"]
    assert json.loads((out / "settings.json").read_text())["seed"] == 3
    assert not any(p.name.startswith(".out.lsb") for p in tmp_path.iterdir())  # staging and old folders gone
    # chaining: translating an output folder again works, its grid.png is not an input
    capsys.readouterr()
    out2 = tmp_path / "out2"
    assert _tr(tiny_sd_dir, out, out=out2) == 0
    assert sorted(p.name for p in out2.iterdir()) == ["grid.png", "settings.json", "x.png", "z.png"]


def test_self_overwrite_refused(tiny_sd_dir, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    _shape().save(d / "x.png")
    original = (d / "x.png").read_bytes()
    for out in (d, d / "sub"):
        assert _tr(tiny_sd_dir, d, out=out) == 2
        assert "inside the input folder" in capsys.readouterr().err
    assert _tr(tiny_sd_dir, d / "x.png", out=d, extra=["--overwrite"]) == 2
    assert "holds the input" in capsys.readouterr().err
    assert (d / "x.png").read_bytes() == original and sorted(p.name for p in d.iterdir()) == ["x.png"]


def test_size_policy_notes_and_resize_back(tiny_sd_dir, tmp_path, capsys):
    _shape(0, (128, 96)).save(tmp_path / "wide.png")
    out = tmp_path / "out"
    assert _tr(tiny_sd_dir, tmp_path / "wide.png", out=out, extra=["--resize-back"]) == 0
    err = capsys.readouterr().err
    assert err.count("resized from 128x96 to 64x64") == 1
    assert Image.open(out / "wide.png").size == (128, 96)
    assert _tr(tiny_sd_dir, tmp_path / "wide.png", out=tmp_path / "o2", extra=["--size-policy", "exact"]) == 2
    assert "native size is 64x64" in capsys.readouterr().err and not (tmp_path / "o2").exists()


def test_pipeline_size_policy_function():
    import numpy as np

    from lsb.io.images import ImageInputError, check_pipeline_images, fit_size, model_native_size
    from lsb.io.assets import MINI_SD

    assert model_native_size(MINI_SD) == 64
    a, b = Image.new("RGB", (64, 64)), Image.new("RGB", (128, 96))
    check_pipeline_images([a, a], native=64)
    with pytest.raises(ImageInputError, match=r"image\[1\] is 128x96 but image\[0\] is 64x64"):
        check_pipeline_images([a, b], native=64)
    with pytest.raises(ImageInputError, match="exceeds"):
        check_pipeline_images(np.zeros((2, 256, 256, 3)), max_pixels=1000)
    assert fit_size(b, "b", 64).size == (64, 64) and fit_size(b, "b", 64, "keep").size == (128, 96)


def test_learn_domain_resume_refuses_changed_settings(tiny_sd_dir, tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(2):
        _shape(i).save(d / f"c{i}.png")
    out = tmp_path / "dom"
    base = [
        "learn-domain",
        "--images",
        str(d),
        "--token",
        "<c>",
        "--model",
        str(tiny_sd_dir),
        "--batch-size",
        "1",
        "--checkpoint-every",
        "1",
        "-o",
        str(out),
    ]
    assert main([*base, "--steps", "1"]) == 0
    assert main([*base, "--steps", "2", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "learning_rate: 0.005 -> 0.1" in err and "--resume-anyway" in err
    (d / "c1.png").rename(tmp_path / "c1.png")
    assert main([*base, "--steps", "2"]) == 2
    assert "image_files" in capsys.readouterr().err
    (tmp_path / "c1.png").rename(d / "c1.png")
    assert main([*base, "--steps", "2", "--lr", "0.1", "--resume-anyway"]) == 0
    # checkpoints: no pickle written by lsb; accelerate's own state files only (never exported)
    accelerate_files = {
        "optimizer.bin",
        "scheduler.bin",
        "random_states_0.pkl",
        "model.safetensors",
        "model_0.safetensors",
    }
    ckpts = list(out.glob("checkpoint-*"))
    assert ckpts
    for ckpt in ckpts:
        ours = {p.name for p in ckpt.iterdir()} - accelerate_files
        assert ours <= {"trainer_state.json", "ema.safetensors"}, ours


def test_load_inputs_defers_the_size_policy_until_the_native_size_is_known(tmp_path, capsys):
    from lsb.io.images import ImageInputError
    from lsb.surfaces.inputs import load_inputs

    Image.new("RGB", (60, 60)).save(tmp_path / "odd.png")
    f = [tmp_path / "odd.png"]
    assert load_inputs(f, None, defer_size=True)[0].size == (60, 60)  # a Hub model before loading: not refused yet
    with pytest.raises(ImageInputError, match="multiple of 8"):
        load_inputs(f, None)  # native size unknown for good: run as it is, so sides must be multiples of 8
    assert load_inputs(f, 64)[0].size == (64, 64)
    assert "resized from 60x60 to 64x64" in capsys.readouterr().err
