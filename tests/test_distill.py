"""One-step students (lsb distill, lsb translate --student): training on tiny models, the LoRA file, resume, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lsb
from lsb.data import shapes
from lsb.surfaces.cli import main
from tests.cli_helpers import options

TINY = dict(teacher_nfe=2, steps=4, batch_size=4, lora_rank=2, checkpoint_every=2, allow_mixed=True, progress=False)


def _write_shapes(folder: Path, shape: str, n: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(shapes.scenes("train", n, start=start, shape=shape)):
        shapes.render(s).save(folder / f"{shape}-{start + i}.png")
    return folder


@pytest.fixture
def circles(tmp_path):
    return _write_shapes(tmp_path / "circles", "circle", 6)


def _distill(images, model, out, **kw):
    from lsb.training.distill import distill

    return distill(images, "a circle", "a square", model, output_dir=out, **{**TINY, **kw})


def _lora(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "pytorch_lora_weights.safetensors"))


def test_distill_writes_a_student_that_stock_load_lora_weights_loads(tiny_sd_dir, circles, tmp_path):
    from diffusers import StableDiffusionPipeline

    final = _distill(circles, str(tiny_sd_dir), tmp_path / "run")
    assert final == tmp_path / "run" / "final"
    info = json.loads((final / "lsb_student.json").read_text())
    assert info["format"] == "lsb-student" and info["student"]["nfe"] == 1
    assert info["teacher"]["num_inference_steps"] == 2 and info["training"]["steps"] == 4
    assert (tmp_path / "run" / "teacher-cache.safetensors").is_file()
    lora = _lora(final)
    assert lora and all(k.startswith("unet.") for k in lora)
    assert any(".attn1.to_q.lora_A" in k for k in lora) and any("conv1.lora_B" in k for k in lora)

    # stock diffusers: every saved tensor becomes a LoRA weight of the UNet, and the UNet's output changes
    stock = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None)
    x, t, h = torch.randn(1, 4, 8, 8), torch.tensor([300]), torch.randn(1, 8, 16)
    with torch.no_grad():
        before = stock.unet(x, t, encoder_hidden_states=h).sample
        stock.load_lora_weights(str(final))
        after = stock.unet(x, t, encoder_hidden_states=h).sample
    loaded = {n: p for n, p in stock.unet.named_parameters() if "lora_" in n}
    assert len(loaded) == len(lora)
    assert not torch.allclose(before, after)

    # the student pipeline: one UNet call per batch, deterministic per generator
    student = lsb.LatentSchrodingerBridgeStudentPipeline.from_student(tmp_path / "run")  # run folder -> final/
    calls = []
    student.unet.register_forward_hook(lambda *a: calls.append(1))
    image = shapes.render(shapes.scenes("val", 1, shape="circle")[0])
    a = student([image, image], generator=[torch.Generator().manual_seed(s) for s in (0, 0)], output_type="np")
    assert a.nfe == 1 and len(calls) == 1 and a.images.shape == (2, 64, 64, 3)
    assert abs(a.images[0] - a.images[1]).max() < 1e-5
    with torch.no_grad():
        same = student.unet(x, t, encoder_hidden_states=h).sample
    assert torch.allclose(same, after, atol=1e-5)  # the pipeline's UNet is the stock-loaded one


def test_distill_resumes_from_its_last_checkpoint(tiny_sd_dir, circles, tmp_path, capsys, monkeypatch):
    whole = _distill(circles, str(tiny_sd_dir), tmp_path / "whole")
    part = tmp_path / "part"
    from lsb.training.distill import DistillTask

    def interrupt(self, step):
        if step == 2:  # the third step, after checkpoint-2 was written
            raise KeyboardInterrupt

    monkeypatch.setattr(DistillTask, "after_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _distill(circles, str(tiny_sd_dir), part)
    monkeypatch.undo()
    assert (part / "checkpoint-2").is_dir() and not (part / "final").exists()
    resumed = _distill(circles, str(tiny_sd_dir), part)
    assert "resumed distill" in capsys.readouterr().out
    a, b = _lora(whole), _lora(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # another teacher setting in the same folder is refused, not mixed into the run
    from lsb.training.distill import DistillError

    with pytest.raises(DistillError, match="other settings"):
        _distill(circles, str(tiny_sd_dir), part, teacher_nfe=3)


def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lsb: error: "), err
    return err[0]


def test_distill_refusals_before_compute(tmp_path, circles, capsys):
    base = ["distill", "--source", "a circle", "--target", "a square", "-o", str(tmp_path / "o")]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no image files" in _err(capsys, [*base, "--images", str(empty)])
    mixed = tmp_path / "mixed"
    _write_shapes(mixed / "trainA", "circle", 1)
    _write_shapes(mixed / "trainB", "square", 1)
    assert "sub-folders" in _err(capsys, [*base, "--images", str(mixed)])
    for opt, words in (
        (options(t0=1.5), "--t0"),
        (options(tau=-1), "--tau"),
        (options(teacher_nfe=1), "--teacher-nfe"),
        (options(guidance="nan"), "--guidance"),
        (options(steps=0), "--steps"),
        (options(student_timestep=1000), "--student-timestep"),
    ):
        assert words in _err(capsys, [*base, "--images", str(circles), *opt])
    same = [
        "distill",
        "--images",
        str(circles),
        "--source",
        "a circle",
        "--target",
        "a circle",
        "-o",
        str(tmp_path / "o"),
    ]
    assert "same domain" in _err(capsys, same)
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not (Path(lsb.MINI_SD) / "model_index.json").is_file(), reason="embedded model not installed")
def test_distill_refuses_a_folder_the_model_reads_as_mixed(tmp_path, capsys):
    mixed = tmp_path / "mixed"
    _write_shapes(mixed, "circle", 4)
    _write_shapes(mixed, "square", 4)
    argv = [
        "distill",
        "--images",
        str(mixed),
        "--source",
        "a circle",
        "--target",
        "a square",
        "-o",
        str(tmp_path / "o"),
    ]
    msg = _err(capsys, argv)
    assert "look mixed" in msg and "square-" in msg
    assert not (tmp_path / "o" / "teacher-cache.safetensors").exists()


def test_translate_with_student_and_its_refusals(tiny_sd_dir, circles, tmp_path, capsys):
    from lsb.models import mini_sd  # noqa: F401  (the tiny builders)
    from tests.conftest import tiny_components

    run = tmp_path / "run"
    argv = ["distill", "--images", str(circles), "--source", "a circle", "--target", "a square", "-o", str(run)]
    opts = options(model=tiny_sd_dir, teacher_nfe=2, steps=2, batch_size=4, lora_rank=2, allow_mixed=True)
    assert main([*argv, *opts]) == 0
    final = run / "final"
    assert f"wrote {final}" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["translate", str(circles), "--student", str(final), "-o", str(out)]) == 0
    assert "NFE 1 per image" in capsys.readouterr().out
    settings = json.loads((out / "settings.json").read_text())
    assert settings["method"] == "student" and settings["nfe"] == 1 and settings["target"] == "a square"
    assert len(list(out.glob("circle-*.png"))) == 6

    base = ["translate", str(circles), "--student", str(final), "-o", str(tmp_path / "o2")]
    assert "--nfe" in _err(capsys, [*base, *options(nfe=8)])
    assert "--source" in _err(capsys, [*base, *options(source="a circle")])
    assert "--guidance" in _err(capsys, [*base, *options(guidance=3)])
    # another base network of the same family: refused once loaded, before any translation
    from diffusers import StableDiffusionPipeline

    other = tmp_path / "other-sd"
    StableDiffusionPipeline(
        **tiny_components(seed=1), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    ).save_pretrained(other)
    assert "another base" in _err(capsys, [*base, "--model", str(other)])
    # a folder without its adapter
    (final / "pytorch_lora_weights.safetensors").unlink()
    assert "adapter" in _err(capsys, base)
    assert not (tmp_path / "o2").exists()


def test_export_student_writes_a_model_card(tiny_sd_dir, circles, tmp_path, capsys):
    final = _distill(circles, str(tiny_sd_dir), tmp_path / "run", steps=2)
    out = tmp_path / "hub"
    assert main(["export", "--student", str(final), "-o", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "One-step student: a circle -> a square" in card and "--student" in card
    assert (out / "pytorch_lora_weights.safetensors").is_file() and (out / "lsb_student.json").is_file()


@pytest.mark.skipif(not (Path(lsb.MINI_SD) / "model_index.json").is_file(), reason="embedded model not installed")
@pytest.mark.parametrize("name", ["circle-square", "square-circle"])
def test_shipped_students_translate_in_one_call(name):
    from lsb.helpers.student import read_student
    from lsb.io.assets import STUDENTS
    from lsb.metrics import read_batch

    folder = STUDENTS / name
    info = read_student(folder)
    assert info["base_model"] == "mini-sd" and (folder / "pytorch_lora_weights.safetensors").stat().st_size < 5e6
    pipe = lsb.LatentSchrodingerBridgeStudentPipeline.from_student(name)  # a shipped name resolves to the folder
    source, target = name.split("-")
    scenes = shapes.scenes("val", 8, shape=source)
    out = pipe([shapes.render(s) for s in scenes], generator=torch.Generator().manual_seed(0), output_type="np")
    readings = read_batch([(im * 255).round().astype("uint8") for im in out.images])
    assert out.nfe == 1 and sum(r.clean and r.shape == target for r in readings) >= 6


def test_student_start_is_the_teachers_initial_state():
    from lsb.helpers.student import default_student_timestep, student_start
    from lsb.schedulers import LSBScheduler

    sched = LSBScheduler(tau=0.35, t0=0.02)
    sched.set_timesteps(8)
    x, z = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert torch.allclose(student_start(x, z, 0.02, 0.35), sched.prepare_initial_sample(x, z), atol=1e-6)
    k = default_student_timestep(sched.alphas_cumprod)
    assert abs(float(sched.alphas_cumprod[k]) - 0.5) < 2e-3


def test_distill_two_processes(tiny_sd_dir, circles, tmp_path):
    from tests.launching import child_env, run_module

    run = tmp_path / "run"
    argv = ["distill", "--images", str(circles), "--source", "a circle", "--target", "a square", "-o", str(run)]
    opts = options(model=tiny_sd_dir, teacher_nfe=2, steps=2, batch_size=2, lora_rank=2, checkpoint_every=1)
    two = run_module("lsb", [*argv, *opts, "--allow-mixed"], child_env(tmp_path), processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    result = json.loads((run / "train_result.json").read_text())
    assert result["processes"] == 2 and result["steps"] == 2 and result["replicas_in_sync"] is True
    info = json.loads((run / "final" / "lsb_student.json").read_text())
    assert info["training"]["processes"] == 2 and _lora(run / "final")


def test_distill_with_a_learned_domain_keeps_it_in_the_student(tiny_sd_dir, circles, tmp_path, capsys):
    from lsb.training.distill import distill
    from lsb.training.prompt_optimization import learn_domain

    dom = learn_domain(
        circles, "<tiny-circle>", str(tiny_sd_dir), output_dir=tmp_path / "dom", steps=2, batch_size=2, progress=False
    )
    final = distill(
        circles, str(dom), "a square", str(tiny_sd_dir), output_dir=tmp_path / "run", **{**TINY, "steps": 2}
    )
    info = json.loads((final / "lsb_student.json").read_text())
    assert info["source"]["file"] == "domains/source/learned_embeds.safetensors"
    assert (final / info["source"]["file"]).is_file() and "<tiny-circle>" in info["source_prompt"]
    out = tmp_path / "out"
    assert main(["translate", str(circles / "circle-0.png"), "--student", str(final), "-o", str(out)]) == 0
    assert json.loads((out / "settings.json").read_text())["source"] == str(final / info["source"]["file"])
