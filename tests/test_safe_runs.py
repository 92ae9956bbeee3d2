"""Issue 22 items 2-7 (in one process; the process-level cases are in tests/test_runs_transactions.py):

inputs anywhere under ``-o`` (through symbolic links) refuse ``--overwrite``; files lsb did not write are never
replaced (translate --overwrite, learn-domain); names too long or not UTF-8 work; model folders of the wrong kind or
with damaged weights are refused in one line before compute; pictures are read as a person sees them (EXIF
orientation, several frames, 16 bits per channel); float tensors outside [0, 1] are refused by the pipelines; the demo
refuses a wrong model or a taken port before serving; an lsb output folder with subfolders is translated again with
its tree; restore resumes too.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lsb.io.runs import fit_name, shown
from lsb.surfaces.cli import main
from tests.cli_helpers import translate_argv


def _shape(i=0):
    from lsb.data import shapes

    return shapes.render(shapes.scenes("test", i + 1, shape="circle")[i])


def _one_error(capsys, rc, needle):
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("lsb: error: ")]
    assert rc == 2 and len(errors) == 1 and needle in errors[0] and "Traceback" not in err, err[-1500:]
    return errors[0]


def _tree(path):
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*"))


# ------------------------------------------------------------------------------------------------ item 2
def test_inputs_anywhere_under_the_output_refuse_overwrite(tiny_sd_dir, tmp_path, capsys):
    out = tmp_path / "out"
    _shape().save(tmp_path / "a.png")
    assert main(translate_argv(tmp_path / "a.png", model=tiny_sd_dir, nfe=2, out=out)) == 0
    capsys.readouterr()
    (out / "photos").mkdir()
    _shape(1).save(out / "photos" / "mine.png")
    os.symlink(out / "photos" / "mine.png", tmp_path / "link.png")
    before = _tree(out)
    for inputs in ([out / "photos"], [out / "photos" / "mine.png"], [tmp_path / "link.png"]):
        rc = main(translate_argv(*inputs, model=tiny_sd_dir, nfe=2, out=out, overwrite=True))
        _one_error(capsys, rc, "holds the input")
    # a file lsb did not write in an lsb folder: --overwrite would delete it, so it is refused
    (out / "photos" / "mine.png").rename(out / "notes.png")
    shutil.rmtree(out / "photos")
    before = _tree(out)
    rc = main(translate_argv(tmp_path / "a.png", model=tiny_sd_dir, nfe=2, out=out, overwrite=True))
    assert "notes.png" in _one_error(capsys, rc, "files lsb did not write")
    assert _tree(out) == before


def test_learn_domain_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    _shape().save(d / "a.png")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "learned_embeds.safetensors").write_bytes(b"someone else's")
    rc = main(["learn-domain", "--images", str(d), "--token", "<c>", "--steps", "1", "-o", str(theirs)])
    _one_error(capsys, rc, "learned_embeds.safetensors")
    assert (theirs / "learned_embeds.safetensors").read_bytes() == b"someone else's"
    from lsb.training.prompt_optimization import PromptOptimizationError, learn_domain

    with pytest.raises(PromptOptimizationError, match="never replaces"):  # the Python API too
        learn_domain(d, "<c>", output_dir=theirs, steps=1)


def test_a_claimed_folder_refuses_a_second_run(tmp_path):
    from lsb.io.runs import FolderClaim, FolderInUseError

    first = FolderClaim(tmp_path / "o").take()
    assert first.created
    code = "from lsb.io.runs import FolderClaim; FolderClaim(%r).take()" % str(tmp_path / "o")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0 and "in use by another lsb run" in r.stderr
    first.release()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with pytest.raises(FolderInUseError, match="is a file"):
        (tmp_path / "f").write_text("x")
        FolderClaim(tmp_path / "f").take()


# ------------------------------------------------------------------------------------------------ item 3
def test_names_too_long_are_shortened_stably():
    long_a, long_b = "x" * 300 + "a.png", "x" * 300 + "b.png"
    a, b = fit_name(long_a), fit_name(long_b)
    assert a == fit_name(long_a) and a != b and a.endswith(".png") and len(a.encode()) <= 239
    assert fit_name("short.png") == "short.png"
    u = fit_name("é" * 200 + ".png")  # never cut a character in two
    assert u.encode("utf-8").decode("utf-8") == u and len(u.encode()) <= 239
    assert shown(os.fsdecode(b"caf\xe9.png")) == "caf\\xe9.png"
    assert shown("a\nb\x1b[31m.png") == "a\\x0ab\\x1b[31m.png"  # one line, no terminal escapes


def test_output_folder_names_that_cannot_work(tiny_sd_dir, tmp_path, capsys):
    _shape().save(tmp_path / "a.png")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    for out, needle in (
        (tmp_path / ("d" * 300), "longer than the file system allows"),
        (tmp_path / "dangling", "broken"),
    ):
        rc = main(translate_argv(tmp_path / "a.png", model=tiny_sd_dir, nfe=2, out=out))
        _one_error(capsys, rc, needle)
    rc = main(
        translate_argv(tmp_path / "a.png", model=tiny_sd_dir, nfe=2, out=tmp_path / "o", overwrite=True, resume=True)
    )
    _one_error(capsys, rc, "--overwrite or --resume")


def test_long_and_latin1_names_translate_and_print(tmp_path):
    d = tmp_path / "names"
    d.mkdir()
    long = "y" * 250 + ".png"
    _shape().save(d / long)
    _shape(1).save(os.path.join(os.fsencode(d), b"caf\xe9.png"))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")  # strict UTF-8 output
    argv = translate_argv(d, model="mini-sd", nfe=2, out=tmp_path / "out")
    r = subprocess.run([sys.executable, "-m", "lsb", *argv], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-1500:]
    assert "caf\\xe9.png -> " in r.stdout
    names = os.listdir(os.fsencode(tmp_path / "out"))
    assert b"caf\xe9.png" in names and all(len(n) <= 239 for n in names) and len(names) == 4


# ------------------------------------------------------------------------------------------------ item 4
def _write_safetensors_truncated(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])


def test_model_folders_checked_before_compute(tiny_sd_dir, tmp_path, capsys):
    _shape().save(tmp_path / "a.png")

    def run(model):
        return main(translate_argv(tmp_path / "a.png", model=model, nfe=2, out=tmp_path / "o"))

    import lsb

    bridge = os.path.join(os.path.dirname(lsb.__file__), "assets", "restoration", "bridge-inpaint")
    _one_error(capsys, run(bridge), "restoration model")
    trunc = tmp_path / "trunc"
    shutil.copytree(tiny_sd_dir, trunc)
    _write_safetensors_truncated(trunc / "unet" / "diffusion_pytorch_model.safetensors")
    _one_error(capsys, run(trunc), "truncated")
    inpaint = tmp_path / "inpaint"
    shutil.copytree(tiny_sd_dir, inpaint)
    cfg = json.loads((inpaint / "unet" / "config.json").read_text())
    (inpaint / "unet" / "config.json").write_text(json.dumps({**cfg, "in_channels": 9}))
    _one_error(capsys, run(inpaint), "9 input channels")
    other = tmp_path / "other-lib"
    shutil.copytree(tiny_sd_dir, other)
    index = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(json.dumps({**index, "unet": ["not_a_library_xyz", "Net"]}))
    _one_error(capsys, run(other), "not_a_library_xyz")
    sharded = tmp_path / "sharded"
    shutil.copytree(tiny_sd_dir, sharded)
    (sharded / "vae" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "diffusion_pytorch_model-00002-of-00002.safetensors"}})
    )
    _one_error(capsys, run(sharded), "00002-of-00002")
    empty = tmp_path / "noweights"
    shutil.copytree(tiny_sd_dir, empty)
    for f in (empty / "text_encoder").glob("*.safetensors"):
        f.unlink()
    _one_error(capsys, run(empty), "holds no weights")
    kandinsky = tmp_path / "kandinsky"  # another kind of diffusers pipeline
    kandinsky.mkdir()
    (kandinsky / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    _one_error(capsys, run(kandinsky), "without a unet or transformer")
    assert not (tmp_path / "o").exists()
    # restore checks its folder's weights too
    rbad = tmp_path / "rbad"
    shutil.copytree(bridge, rbad)
    _write_safetensors_truncated(next((rbad / "unet").glob("*.safetensors")))
    rc = main(
        ["restore", str(tmp_path / "a.png"), "--task", "inpaint", "--model", str(rbad), "-o", str(tmp_path / "r")]
    )
    _one_error(capsys, rc, "truncated")


# ------------------------------------------------------------------------------------------------ item 5
def _png16(path, arr):
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def test_pictures_read_as_a_person_sees_them(tmp_path, tiny_sd_dir, capsys):
    from lsb.io.images import ImageInputError, load_image

    im = Image.new("RGB", (32, 64), (255, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees for display
    im.save(tmp_path / "phone.jpg", exif=exif)
    assert load_image(tmp_path / "phone.jpg").size == (64, 32)
    frames = [Image.new("RGB", (64, 64), (40 * i, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageInputError, match="anim.gif: holds 3 frames"):
        load_image(tmp_path / "anim.gif")
    assert load_image(tmp_path / "anim.gif", convert=True).info["first_frame_of"] == 3
    _png16(tmp_path / "deep.png", (np.arange(64 * 64 * 3).reshape(64, 64, 3) * 7 % 65536).astype(np.uint16))
    with pytest.raises(ImageInputError, match="deep.png: 16 bits per channel"):
        load_image(tmp_path / "deep.png")
    assert load_image(tmp_path / "deep.png", convert=True).info["converted_from"] == "16-bit RGB"
    # on the command line: one line each, nothing written; with --convert-mode a note names the first frame
    for f, needle in (("anim.gif", "3 frames"), ("deep.png", "16 bits")):
        rc = main(translate_argv(tmp_path / f, model=tiny_sd_dir, nfe=2, out=tmp_path / "o"))
        _one_error(capsys, rc, needle)
    assert not (tmp_path / "o").exists()
    rc = main(translate_argv(tmp_path / "anim.gif", model=tiny_sd_dir, nfe=2, out=tmp_path / "o", convert_mode=True))
    assert rc == 0 and "first of its 3 frames used" in capsys.readouterr().err
    # --resize-back gives the size the picture is seen at
    rc = main(translate_argv(tmp_path / "phone.jpg", model=tiny_sd_dir, nfe=2, out=tmp_path / "p", resize_back=True))
    assert rc == 0 and Image.open(tmp_path / "p" / "phone.png").size == (64, 32)


def test_pipelines_refuse_floats_outside_unit_range(tiny_sd_components):
    from lsb import LatentSchrodingerBridgePipeline

    pipe = LatentSchrodingerBridgePipeline(**tiny_sd_components)
    kw = dict(source_prompt="a", target_prompt="b", num_inference_steps=2)
    for bad, range_hint in ((torch.rand(3, 64, 64) * 255, "255"), (torch.rand(3, 64, 64) * 2 - 1, "(x + 1) / 2")):
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\]") as e:
            pipe(image=bad, **kw)
        assert range_hint in str(e.value)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipe(image=np.full((64, 64, 3), 2.0, dtype=np.float32), **kw)


# ------------------------------------------------------------------------------------------------ item 6
def test_demo_checks_model_and_port_before_serving(tmp_path, capsys):
    pytest.importorskip("gradio")
    _one_error(capsys, main(["demo", "--model", "./missing"]), "./missing")
    import lsb

    bridge = os.path.join(os.path.dirname(lsb.__file__), "assets", "restoration", "bridge-inpaint")
    _one_error(capsys, main(["demo", "--model", bridge]), "restoration model")
    _one_error(capsys, main(["demo", "--domains", str(tmp_path / "none")]), "domain folder")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        _one_error(capsys, main(["demo", "--port", str(port)]), f"--port {port}")


# ------------------------------------------------------------------------------------------------ item 7 + restore
def test_output_folder_with_subfolders_translates_again(tiny_sd_dir, tmp_path, capsys):
    for rel in ("in/a/x.png", "in/b/x.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        _shape().save(tmp_path / rel)
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(translate_argv(tmp_path / "in/a", tmp_path / "in/b", model=tiny_sd_dir, nfe=2, out=first)) == 0
    assert (first / "a" / "x.png").is_file() and (first / "b" / "x.png").is_file()
    assert main(translate_argv(first, model=tiny_sd_dir, nfe=2, out=second)) == 0
    assert sorted(str(p.relative_to(second)) for p in second.rglob("*.png")) == ["a/x.png", "b/x.png", "grid.png"]


def test_restore_resumes_with_the_outputs_of_an_uninterrupted_run(tmp_path, capsys):
    from lsb.data import shapes

    d = tmp_path / "in"
    d.mkdir()
    for i, s in enumerate(shapes.scenes("test", 3, shape="circle")):
        shapes.render(s).save(d / f"d{i}.png")
    out = tmp_path / "out"
    argv = ["restore", str(d), "--task", "inpaint", "--nfe", "2", "--batch-size", "1", "-o", str(out)]
    assert main(argv) == 0
    full = {n: np.asarray(Image.open(out / n)) for n in ("d0.png", "d1.png", "d2.png")}
    manifest = json.loads((out / "settings.json").read_text())
    (out / "d2.png").unlink()  # as if interrupted after two outputs
    del manifest["inputs"]["d2.png"]
    (out / "settings.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    capsys.readouterr()
    assert main(argv) == 0
    assert "resuming: 2 of 3" in capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(out / "d2.png")), full["d2.png"])
    assert json.loads((out / "settings.json").read_text())["status"] == "complete"


def test_a_full_disk_keeps_the_finished_outputs(tiny_sd_dir, tmp_path, capsys, monkeypatch):
    import errno

    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        _shape(i).save(d / f"c{i}.png")
    real, calls = Image.Image.save, []

    def fill_up(img, fp, *args, **kwargs):  # the second image's write fails as on a full disk (no file named)
        calls.append(fp)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(img, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", fill_up)
    out = tmp_path / "out"
    argv = translate_argv(d, model=tiny_sd_dir, nfe=2, batch_size=1, out=out)
    line = _one_error(capsys, main(argv), "No space left on device")
    assert "c1.png" in line and "1 finished output(s) are kept" in line
    manifest = json.loads((out / "settings.json").read_text())
    assert manifest["status"] == "interrupted" and list(manifest["inputs"]) == ["c0.png"]
    assert not [p for p in out.iterdir() if p.name.startswith(".lsb-tmp-")]
    monkeypatch.setattr(Image.Image, "save", real)
    assert main(argv) == 0 and "resuming: 1 of 3" in capsys.readouterr().err
