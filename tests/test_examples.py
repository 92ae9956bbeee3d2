"""Every script in examples/ runs (short settings), so the examples never rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import lsb
from tests.cli_helpers import options

ROOT = Path(__file__).resolve().parents[1]
needs_model = pytest.mark.skipif(
    not (Path(lsb.MINI_SD) / "model_index.json").is_file(), reason="embedded model not installed"
)


def run_example(name: str, *args: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@needs_model
def test_translate_example(tmp_path):
    out = run_example("translate.py", "--nfe", "4", "--out", str(tmp_path / "t.png"), cwd=tmp_path)
    assert "read back" in out and (tmp_path / "t.png").is_file()


@needs_model
def test_learn_domain_example(tmp_path):
    out = run_example("learn_domain.py", "--steps", "3", "--images", "8", "--out", str(tmp_path / "dom"), cwd=tmp_path)
    assert (tmp_path / "dom" / "learned_embeds.safetensors").is_file()
    assert (tmp_path / "dom" / "translated.png").is_file()
    assert "a <my-square>" in out


@needs_model
def test_distill_example(tmp_path):
    shipped = run_example("distill.py", "--out", str(tmp_path / "s.png"), cwd=tmp_path)
    assert "NFE 1" in shipped and "read back" in shipped and (tmp_path / "s.png").is_file()
    argv = options(distill_steps=2, images=4, run=tmp_path / "run", out=tmp_path / "d.png")
    own = run_example("distill.py", *argv, cwd=tmp_path)
    assert "NFE 1" in own and (tmp_path / "run" / "final" / "pytorch_lora_weights.safetensors").is_file()


def test_train_example(tmp_path):
    run_example(
        "train_mini_sd.py", *options(out=tmp_path / "run", vae_steps=2, unet_steps=2, cached_scenes=64), cwd=tmp_path
    )
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert pipe.unet.config.sample_size == 8 and pipe.vae.config.latent_channels == 4


def test_ddm_generate_example(tmp_path):
    argv = options(tiny=True, train_steps=2, steps=2, run=tmp_path / "run", out=tmp_path / "ddm.png")
    out = run_example("ddm_generate.py", *argv, cwd=tmp_path)
    assert "NFE = 3 UNet calls" in out and "read back" in out and (tmp_path / "ddm.png").is_file()


def test_restore_diffir_example(tmp_path):
    argv = options(task="sr4", tiny=True, train_steps=2, n=4, model=tmp_path / "none", out=tmp_path / "r.png")
    out = run_example("restore_diffir.py", *argv, cwd=tmp_path)
    assert "restored" in out and "NFE 4" in out and (tmp_path / "r.png").is_file()


@needs_model
def test_restore_example(tmp_path):
    argv = options(steps=2, pairs=16, batch_size=4, images=2, run=tmp_path / "run", out=tmp_path / "r.png")
    out = run_example("restore.py", *argv, cwd=tmp_path)
    assert "dbim" in out and "NFE 5" in out and (tmp_path / "r.png").is_file()


@pytest.mark.skipif(not (Path(lsb.MINI_SD3) / "model_index.json").is_file(), reason="mini SD3 not installed")
def test_generate_mini_sd3_example(tmp_path):
    out = run_example("generate_mini_sd3.py", "--steps", "2", "--out", str(tmp_path / "g.png"), cwd=tmp_path)
    assert "read back" in out and (tmp_path / "g.png").is_file()


def test_translate_sd3_example(tmp_path):
    """LSB on an SD3-architecture model: lsb.MINI_SD3 when shipped (``--tiny`` otherwise: a random tiny SD3)."""
    tiny = [] if (Path(lsb.MINI_SD3) / "model_index.json").is_file() else ["--tiny"]
    out = run_example("translate_sd3.py", *tiny, "--nfe", "2", "--out", str(tmp_path / "t.png"), cwd=tmp_path)
    assert "read back" in out and "NFE 2" in out and (tmp_path / "t.png").is_file()


def test_translate_sdxl_example(tmp_path):
    """LSB, SDEdit and DDIB on an SDXL-shaped model (a tiny folder the example builds: no weights needed)."""
    out = run_example("translate_sdxl.py", "--nfe", "2", "--out", str(tmp_path / "t.png"), cwd=tmp_path)
    assert "lsb    : NFE 2" in out and "StableDiffusionXLImg2ImgPipeline" in out and "DDIBXLPipeline" in out
    assert (tmp_path / "t.png").is_file()


def test_flowedit_sd3_example(tmp_path):
    """FlowEdit next to LSB on an SD3-architecture model (lsb.MINI_SD3 when shipped, else ``--tiny``), both counts."""
    tiny = [] if (Path(lsb.MINI_SD3) / "model_index.json").is_file() else ["--tiny"]
    out = run_example("flowedit_sd3.py", *tiny, "--nfe", "2", "--out", str(tmp_path / "f.png"), cwd=tmp_path)
    assert "FlowEdit: NFE 2 batched calls, 8 forward passes" in out and (tmp_path / "f.png").is_file()


def test_learn_domain_sd3_example(tmp_path):
    """A domain token in both CLIPs and T5 of an SD3-architecture model, then FlowEdit with it."""
    tiny = [] if (Path(lsb.MINI_SD3) / "model_index.json").is_file() else ["--tiny"]
    out = run_example("learn_domain_sd3.py", *tiny, "--steps", "2", "--out", str(tmp_path / "d"), cwd=tmp_path)
    assert "'clip_l'" in out and "'clip_g'" in out and "source prompt 'a <circle>'" in out


@needs_model
def test_translate_region_example(tmp_path):
    out = run_example("translate_region.py", "--nfe", "4", "--out", str(tmp_path / "r.png"), cwd=tmp_path)
    assert out.count("kept pixels identical: True") == 2 and (tmp_path / "r.png").is_file()


def test_safe_runs_example(tmp_path):
    out = run_example("safe_runs.py", "--images", "6", "--nfe", "4", "--out", str(tmp_path / "safe"), cwd=tmp_path)
    assert "manifest: status interrupted" in out and "resuming: " in out and "manifest: status complete" in out
    assert len(list((tmp_path / "safe" / "out").glob("c*.png"))) == 6


def test_big_model_memory_example(tmp_path):
    pytest.importorskip("torchao")
    out = run_example("big_model_memory.py", "--nfe", "2", "--out", str(tmp_path / "m.png"), cwd=tmp_path)
    assert "bfloat16 + int8:" in out and "int8 transformer (2 network calls)" in out and (tmp_path / "m.png").is_file()


@pytest.mark.parametrize("kind", ["zimage", "qwenimage", "flux2"])
def test_translate_llm_families_example(tmp_path, kind):
    out = run_example(
        "translate_llm_families.py", "--tiny", kind, "--nfe", "2", "--out", str(tmp_path / "g.png"), cwd=tmp_path
    )
    assert "lsb: LatentSchrodingerBridge" in out and "flowedit: FlowEdit" in out and (tmp_path / "g.png").is_file()
