"""Issue 16: every user error of every command is one line ``lsb: error: ...`` (exit 2) naming the input, and
nothing is written. One table per command; each row is (extra argv, text the message must contain).

Also: ``import lsb`` and ``lsb --help`` import no torch (startup), and argparse errors return without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lsb.surfaces.cli import main
from tests.cli_helpers import options, translate_argv

NO_GPU = not torch.cuda.is_available()


def _snapshot(path):
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*"))


def _check_table(capsys, base, table, out):
    before = _snapshot(out)
    failures = []
    for extra, needle in table:
        # Path items replace the command's inputs (argv[1], or the value of --images), str items are options
        paths = [str(x) for x in extra if isinstance(x, Path)]
        argv = list(base)
        if paths:
            k = argv.index("--images") + 1 if "--images" in argv else 1
            argv[k : k + 1] = paths
        rc = main([*argv, *(x for x in extra if not isinstance(x, Path))])
        err = capsys.readouterr().err
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("lsb: error: ")]
        ok = rc == 2 and len(errors) == 1 and needle in errors[0] and "Traceback" not in err
        if not ok:
            failures.append((extra, needle, rc, err[-400:]))
        if _snapshot(out) != before:
            failures.append((extra, "output changed", rc, err[-200:]))
    assert not failures, "\n".join(map(str, failures))


@pytest.fixture
def world(tmp_path, tiny_sd_dir):
    from lsb.data import shapes

    d = tmp_path / "in"
    d.mkdir()
    for i, s in enumerate(shapes.scenes("test", 2, shape="circle")):
        shapes.render(s).save(d / f"c{i}.png")
    Image.new("RGB", (60, 60)).save(tmp_path / "odd.png")
    Image.new("RGBA", (64, 64)).save(tmp_path / "alpha.png")
    Image.new("L", (4096, 4096)).save(tmp_path / "huge.png")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "afile.txt").write_text("x")
    (tmp_path / "nonempty").mkdir()
    (tmp_path / "nonempty" / "mine.txt").write_text("user file")
    from lsb.prompts.domains import write_domain

    write_domain(tmp_path / "nan-domain", "<nan>", torch.full((1, 32), float("nan")))
    (tmp_path / "domain-folder").mkdir()
    broken = tmp_path / "broken-model"
    import shutil

    shutil.copytree(tiny_sd_dir, broken)
    shutil.rmtree(broken / "unet")
    (tmp_path / "models").mkdir()
    return tmp_path


def test_translate_bad_inputs(world, tiny_sd_dir, capsys, monkeypatch):
    monkeypatch.chdir(world)
    out = world / "out"
    t = world
    base = translate_argv(t / "in", model=tiny_sd_dir, nfe=2)
    table = [
        (["--guidance", "nan"], "--guidance"),
        (["--guidance", "inf"], "--guidance"),
        (["--tau", "nan"], "--tau"),
        (["--tau", "-1"], "--tau"),
        (["--t0", "nan"], "--t0"),
        (["--t0", "0"], "--t0"),
        (["--nfe", "1"], "--nfe"),
        (["--batch-size", "0"], "--batch-size"),
        (["--seed", "-1"], "--seed"),
        (["--size", "30"], "--size"),
        (["--size", "0"], "--size"),
        (["--max-pixels", "0"], "--max-pixels"),
        (["--max-pixels", "100"], "c0.png"),
        (["--source", "domains/circel"], "domains/circel"),
        (["--target", "sq.safetensors"], "sq.safetensors"),
        (["--source", ""], "--source"),
        (["--source", str(t / "nan-domain")], "NaN"),
        (["--target", str(t / "domain-folder")], "learned_embeds.safetensors"),
        (["--model", "./nothere"], "nothere"),
        (["--model", "models/nothere"], "models/nothere"),
        (["--model", str(t / "afile.txt")], "afile.txt"),
        (["--model", str(t / "broken-model")], "unet"),
        (["--device", "nonsense"], "--device"),
        (["--size-policy", "exact", t / "odd.png"], "odd.png"),
        ([t / "notes.png"], "notes.png"),
        ([t / "missing.png"], "missing.png"),
        ([t / "alpha.png"], "alpha.png"),
        ([t / "huge.png"], "huge.png"),
        (["--size-policy", "keep", t / "odd.png"], "multiple of 8"),
        (["--target", "a <nope>"], "<nope>"),
        (["--solver", "ddim", "--method", "sdedit"], "--solver"),
    ]
    if NO_GPU:
        table.append((["--device", "cuda"], "--device cuda"))
    _check_table(capsys, [*base, "-o", str(out)], table, out)
    # output paths that cannot be used; the input folder is untouched
    inputs_before = _snapshot(t / "in")
    outs = [
        ([str(t / "afile.txt")], "afile.txt"),
        ([str(t / "in")], "input folder"),
        ([str(t / "in" / "sub")], "input folder"),
        ([str(t / "nonempty")], "not empty"),
        ([str(t / "nonempty"), "--overwrite"], "not written by lsb"),
        ([str(t / "afile.txt" / "x")], "afile.txt"),
    ]
    for extra, needle in outs:
        _check_table(capsys, [*base, "-o", *extra], [([], needle)], out)
    assert _snapshot(t / "in") == inputs_before and (t / "nonempty" / "mine.txt").read_text() == "user file"


def test_restore_bad_inputs(world, tiny_sd_dir, capsys):
    t = world
    out = t / "out"
    Image.new("RGB", (32, 32)).save(t / "small-mask.png")
    base = ["restore", str(t / "in"), "--task", "inpaint", "--model", str(tiny_sd_dir), "-o", str(out)]
    table = [
        (["--nfe", "0"], "--nfe"),
        (["--batch-size", "0"], "--batch-size"),
        (["--eta", "nan", "--scheduler", "dbim"], "--eta"),
        (["--eta", "2", "--scheduler", "dbim"], "--eta"),
        (["--seed", "-1"], "--seed"),
        (["--mask", str(t / "nomask.png")], "nomask.png"),
        (["--mask", str(t / "notes.png")], "notes.png"),
        (["--mask", str(t / "small-mask.png")], "small-mask.png"),
        (["--max-pixels", "10"], "--max-pixels"),
        (["--max-pixels", "100"], "c0.png"),
        (["--model", str(t / "nothere")], "nothere"),
        (["--size-policy", "exact", t / "odd.png"], "odd.png"),
        (["--device", "nonsense"], "--device"),
    ]
    if NO_GPU:
        table.append((["--device", "cuda"], "--device cuda"))
    _check_table(capsys, base, table, out)
    for o, needle in ((t / "afile.txt", "afile.txt"), (t / "in", "input folder"), (t / "nonempty", "not empty")):
        _check_table(
            capsys,
            ["restore", str(t / "in"), "--task", "inpaint", "--model", str(tiny_sd_dir), "-o", str(o)],
            [([], needle)],
            out,
        )


def test_generate_bad_inputs(world, tiny_sd_dir, capsys):
    t = world
    out = t / "gen.png"
    base = ["generate", "a circle", "--model", str(tiny_sd_dir), "--steps", "2", "--num-images", "1"]
    table = [
        (["--steps", "0"], "--steps"),
        (["--num-images", "0"], "--num-images"),
        (["--guidance", "nan"], "--guidance"),
        (["--guidance", "-1"], "--guidance"),
        (["--seed", "-1"], "--seed"),
        (["--model", str(t / "nothere")], "nothere"),
        (["--device", "nonsense"], "--device"),
    ]
    if NO_GPU:
        table.append((["--device", "cuda"], "--device cuda"))
    _check_table(capsys, [*base, "-o", str(out)], table, out)
    _check_table(
        capsys, ["generate", "--model", str(tiny_sd_dir), "-o", str(out), "a", " "], [([], "prompt is empty")], out
    )
    Image.new("RGB", (8, 8)).save(t / "exists.png")
    for o, needle in (
        (t / "in", "is a folder"),
        (t / "exists.png", "exists"),
        (t / "out.txt", ".png"),
        (t / "afile.txt" / "x.png", "afile.txt"),
    ):
        _check_table(capsys, [*base, "-o", str(o)], [([], needle)], t / "in")
    assert (t / "exists.png").stat().st_size > 0 and not out.exists()


def test_learn_domain_bad_inputs(world, tiny_sd_dir, capsys):
    t = world
    out = t / "dom"
    (t / "empty").mkdir()
    base = ["learn-domain", *options(images=t / "in", token="<c>", model=tiny_sd_dir, steps=1, batch_size=1)]
    table = [
        (["--checkpoint-every", "0"], "--checkpoint-every"),
        (["--steps", "0"], "--steps"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "0"], "--lr"),
        (["--batch-size", "0"], "--batch-size"),
        (["--num-vectors", "0"], "--num-vectors"),
        (["--max-images", "0"], "--max-images"),
        (["--token", "a b"], "--token"),
        (["--templates", "foo"], "--templates"),
        (["--seed", "-1"], "--seed"),
        (["--model", str(t / "nothere")], "nothere"),
        (["--device", "nonsense"], "--device"),
        ([t / "missing"], "missing"),
        ([t / "empty"], "empty"),
        ([t / "alpha.png"], "alpha.png"),
        ([t / "huge.png"], "huge.png"),
        ([t / "odd.png", "--size-policy", "exact"], "odd.png"),
    ]
    if NO_GPU:
        table.append((["--device", "cuda"], "--device cuda"))
    _check_table(capsys, [*base, "-o", str(out)], table, out)
    for o, needle in ((t / "afile.txt", "afile.txt"), (t / "in" / "run", "input folder")):
        _check_table(capsys, [*base, "-o", str(o)], [([], needle)], t / "in")


def test_parser_constants_agree_with_the_library():
    from lsb.helpers.restoration_tasks import SAMPLERS, TASKS
    from lsb.surfaces.commands import restore

    assert restore.TASKS == TASKS and restore.SAMPLERS == SAMPLERS
    from lsb.io import images
    from lsb.surfaces import inputs

    assert inputs.SIZE_POLICIES == images.SIZE_POLICIES


def _fresh(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_import_lsb_and_help_import_no_torch():
    proc = _fresh("import lsb, sys; assert 'torch' not in sys.modules, 'import lsb imported torch'")
    assert proc.returncode == 0, proc.stderr
    for argv in (
        ["--help"],
        ["translate", "--help"],
        ["translate"],
        ["restore", "--task", "nope"],
        ["learn-domain", "--help"],
        ["generate", "--steps", "x"],
    ):
        proc = _fresh(
            "import sys\nfrom lsb.surfaces.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'accelerate') if m in sys.modules]\n"
            "assert not heavy, heavy\n" % (argv,)
        )
        assert proc.returncode == 0, (argv, proc.stderr[-500:])


def test_lazy_components_still_resolve_for_diffusers():
    """diffusers 0.42.1 finds custom components only via sys.modules: after a bare `import lsb` the entries are
    there and load on first use (a shipped restoration folder names lsb.schedulers.* / lsb.models.* modules)."""
    proc = _fresh(
        "import sys, lsb\n"
        "names = ['lsb.schedulers.scheduling_lsb', 'lsb.schedulers.scheduling_i2sb', 'lsb.models.diffir']\n"
        "assert all(n in sys.modules for n in names)\n"
        "assert 'torch' not in sys.modules\n"
        "from diffusers.pipelines.pipeline_loading_utils import _get_library_or_raise\n"
        "cls = getattr(_get_library_or_raise('lsb.schedulers.scheduling_i2sb'), 'I2SBScheduler')\n"
        "assert cls is lsb.I2SBScheduler, cls\n"
        "import inspect; assert inspect.getmodule(cls).__name__ == 'lsb.schedulers.scheduling_i2sb'\n"
    )
    assert proc.returncode == 0, proc.stderr[-800:]


def test_nan_in_learned_embedding_refused_before_model(tmp_path):
    from lsb.prompts.domains import DomainFileError, write_domain
    from lsb.surfaces.checks import check_domain_arg

    path = write_domain(tmp_path / "d", "<d>", torch.tensor([[0.0, float("inf")]]))
    with pytest.raises(DomainFileError, match="NaN or infinite"):
        check_domain_arg(str(path), "--source")
    ok = write_domain(tmp_path / "e", "<e>", torch.tensor(np.ones((1, 4), dtype=np.float32)))
    assert check_domain_arg(str(ok), "--source") == str(ok)


def test_train_bad_inputs(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "run"
    table = [
        (["mini-sd", "--vae-steps", "0"], "--vae-steps"),
        (["mini-sd", "--unet-lr", "nan"], "--unet-lr"),
        (["mini-sd", "--unet-focus-fraction", "2"], "--unet-focus-fraction"),
        (["mini-sd", "--unet-init", str(tmp_path / "nothere")], "nothere"),
        (["mini-sd", "--decoder-latent-noise", "-1"], "--decoder-latent-noise"),
        (["mini-sd", "--seed", "-3"], "--seed"),
        (["mini-sd3", "--steps", "0"], "--steps"),
        (["mini-sd3", "--lr", "inf"], "--lr"),
        (["mini-sd3", "--base", str(tmp_path / "nothere")], "nothere"),
    ]
    for extra, needle in table:
        rc = main(["train", *extra, "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("lsb: error: ") and needle in err and err.count("\n") == 1, (extra, err)
        assert not out.exists()
    assert main(["train", "mini-sd", "--out", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err
