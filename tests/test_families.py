"""The family record (lsb.families), the method registry (lsb.surfaces.methods) and AutoPipelineForTranslation.

Detection before any weights load, one line for what lsb does not run, the dtype each family runs in, methods per
family on every surface, pipelines discovered, and the family facts written once.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lsb
from lsb.families import (
    FAMILIES,
    UnsupportedModelError,
    detect_family,
    family_of,
    family_of_index,
    native_resolution,
    pixel_multiple,
)
from lsb.surfaces.methods import METHODS, check_method

ROOT = Path(__file__).resolve().parents[1]


def _index(network_key, network_class, *extra, cls="SomePipeline"):
    entries = {k: ["transformers", "X"] for k in extra}
    return {
        "_class_name": cls,
        network_key: ["diffusers", network_class],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "S"],
        **entries,
    }


@pytest.mark.parametrize(
    "index, family",
    [
        (_index("unet", "UNet2DConditionModel", "text_encoder", "tokenizer"), "sd"),
        (
            _index("unet", "UNet2DConditionModel", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"),
            "sdxl",
        ),
        (
            _index(
                "transformer", "SD3Transformer2DModel", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"
            ),
            "sd3",
        ),
        (
            _index(
                "transformer", "FluxTransformer2DModel", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"
            ),
            "flux",
        ),
    ],
)
def test_family_of_index(index, family):
    assert family_of_index(index).name == family


@pytest.mark.parametrize(
    "index, words",
    [
        (
            {"_class_name": "KandinskyV22Pipeline", "unet": ["diffusers", "UNet2DConditionModel"]},
            "KandinskyV22Pipeline",
        ),
        ({"_class_name": "BridgeRestorationPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}, "restoration"),
        ({"_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"]}, "WanPipeline"),
    ],
)
def test_unsupported_model_is_one_line_naming_the_families(index, words):
    with pytest.raises(UnsupportedModelError) as e:
        family_of_index(index)
    msg = str(e.value)
    assert words in msg and "\n" not in msg
    assert all(f.label in msg for f in FAMILIES.values())


def test_embedded_models_and_their_facts():
    assert detect_family(None).name == "sd" and detect_family("mini-sd3").name == "sd3"
    assert detect_family(lsb.MINI_SD3).name == "sd3"
    assert native_resolution(None) == native_resolution("mini-sd3") == 64
    assert native_resolution("no/such/folder") is None


def test_restoration_bridge_folder_refused_before_loading():
    with pytest.raises(UnsupportedModelError, match="restoration bridge"):
        detect_family(str(ROOT / "lsb" / "assets" / "restoration" / "bridge-inpaint"))


@pytest.mark.parametrize(
    "family, device, expected",
    [
        ("sd", "cuda", torch.float16),
        ("sdxl", "cuda", torch.float16),
        ("sd3", "cuda", torch.bfloat16),
        ("flux", "cuda", torch.bfloat16),
        ("flux", "mps", torch.bfloat16),
        ("sd", "cpu", torch.float32),
        ("flux", "cpu", torch.float32),
    ],
)
def test_recommended_dtype_per_family_and_device(family, device, expected):
    from lsb.helpers.loading import device_and_dtype

    assert device_and_dtype(device, None, FAMILIES[family])[1] == expected
    assert device_and_dtype(device, "auto", FAMILIES[family])[1] == expected
    assert device_and_dtype(device, "float32", FAMILIES[family])[1] == torch.float32


def test_float16_warning_only_where_unstable():
    from lsb.helpers.loading import as_dtype, float16_warning

    assert "bfloat16" in float16_warning(FAMILIES["flux"], "float16")
    assert float16_warning(FAMILIES["sd"], "float16") is None and float16_warning(FAMILIES["flux"], "bfloat16") is None
    with pytest.raises(ValueError, match="dtype must be one of"):
        as_dtype("float8")


def test_every_family_method_names_a_real_class():
    for family in FAMILIES.values():
        assert "lsb" in family.methods  # SDEdit where diffusers has the family's img2img pipeline (not FLUX.2)
        for method in family.methods:
            assert method in METHODS
            cls = family.pipeline_class(method)
            assert isinstance(cls, type) and cls.__name__.endswith("Pipeline")
    assert FAMILIES["sd3"].supports("flowedit") and not FAMILIES["sd"].supports("flowedit")
    assert FAMILIES["sd"].supports("ddib") and not FAMILIES["flux"].supports("ddib")


def test_method_family_mismatch_is_one_line():
    with pytest.raises(
        ValueError,
        match=r"flowedit runs on SD3 / SD3.5, FLUX.1, Z-Image, Qwen-Image or FLUX.2 models; this model is SD 1.x/2.x",
    ):
        check_method("flowedit", FAMILIES["sd"])
    with pytest.raises(ValueError, match=r"unknown translation method 'cyclegan'; lsb has: lsb, flowedit"):
        check_method("cyclegan", FAMILIES["sd"])


def test_auto_pipeline_picks_the_family_pipeline():
    from lsb_pipelines.flowedit_sd3.pipeline import FlowEditSD3Pipeline
    from lsb_pipelines.lsb_sd3.pipeline import LatentSchrodingerBridgeSD3Pipeline

    pipe = lsb.AutoPipelineForTranslation.from_pretrained(lsb.MINI_SD3, device="cpu")
    assert isinstance(pipe, LatentSchrodingerBridgeSD3Pipeline) and family_of(pipe).name == "sd3"
    assert pipe.transformer.dtype == torch.float32  # the family's CPU dtype
    edit = lsb.AutoPipelineForTranslation.from_pipe(pipe, method="flowedit")
    assert isinstance(edit, FlowEditSD3Pipeline) and edit.transformer is pipe.transformer
    assert pixel_multiple(pipe) == pipe.vae_scale_factor * pipe.transformer.config.patch_size
    assert native_resolution(pipe) == 64
    with pytest.raises(ValueError, match="ddib runs on SD 1.x/2.x or SDXL models; this model is SD3 / SD3.5"):
        lsb.AutoPipelineForTranslation.from_pretrained(lsb.MINI_SD3, method="ddib")
    with pytest.raises(EnvironmentError, match="from_pretrained"):
        lsb.AutoPipelineForTranslation()


def test_auto_pipeline_on_the_vp_model_every_method():
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    sdedit = lsb.AutoPipelineForTranslation.from_pretrained(lsb.MINI_SD, method="sdedit", device="cpu")
    assert isinstance(sdedit, StableDiffusionImg2ImgPipeline) and isinstance(sdedit.scheduler, DDIMScheduler)
    ddib = lsb.AutoPipelineForTranslation.from_pipe(sdedit, method="ddib")
    assert type(ddib).__name__ == "DDIBPipeline" and ddib.unet is sdedit.unet


def test_cli_method_choices_come_from_the_registry():
    from lsb.surfaces.cli import build_parser

    parser = build_parser()
    sub = next(
        a for a in parser._actions if a.dest == "command" or getattr(a, "choices", None) and "translate" in a.choices
    )
    translate = sub.choices["translate"]
    method = next(a for a in translate._actions if a.dest == "method")
    dtype = next(a for a in translate._actions if a.dest == "dtype")
    assert list(method.choices) == list(METHODS) and dtype.default == "auto"


def test_cli_refuses_flowedit_on_sd_and_unsupported_models(tmp_path, capsys):
    from lsb.surfaces.cli import main

    image = ROOT / "examples" / "images" / "circles" / "circle-0.png"
    base = ["translate", str(image), "--source", "a circle", "--target", "a square"]
    assert main([*base, "--method", "flowedit", "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lsb: error: flowedit runs on SD3") and "\n" not in err
    bridge = ROOT / "lsb" / "assets" / "restoration" / "bridge-inpaint"
    assert main([*base, "--model", str(bridge), "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lsb: error:") and "restoration" in err and "\n" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_float16_on_flux_warns_one_line(tmp_path, capsys):
    from lsb.models.random_flow import tiny_flux_components
    from lsb.surfaces.commands import check_family_and_method
    from diffusers import FluxPipeline

    folder = tmp_path / "tiny-flux"
    FluxPipeline(**tiny_flux_components()).save_pretrained(folder)
    capsys.readouterr()
    assert check_family_and_method(str(folder), "flowedit", "float16").name == "flux"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lsb: warning: FLUX.1 in float16")
    check_family_and_method(str(folder), "lsb", "bfloat16")
    assert capsys.readouterr().err == ""


def test_pipelines_are_discovered_and_packaged():
    import tomllib

    folders = sorted(p.parent.name for p in (ROOT / "pipelines").glob("*/pipeline.py"))
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    missing = [f for f in folders if f"lsb_pipelines.{f}" not in packages]
    assert not missing, f"pipelines/{missing} missing from pyproject.toml's packages"
    public = set(lsb.__all__)
    for folder in folders:
        text = (ROOT / "pipelines" / folder / "pipeline.py").read_text()
        found = re.findall(r"^class (\w+)\(([^)]*)\):", text, re.M)
        classes = [c for c, bases in found if "DiffusionPipeline" in bases]
        assert classes and all(c in public and c in dir(lsb) for c in classes), folder
    assert "AutoPipelineForTranslation" in dir(lsb) and "LatentSchrodingerBridgePipeline" in dir(lsb)


def test_import_lsb_and_families_stay_free_of_torch():
    code = "import sys, lsb, lsb.families, lsb.surfaces.methods; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_transformer_calls_live_in_the_family_modules():
    """No module outside lsb/families calls an SD3 / FLUX transformer with that family's arguments."""
    offenders = []
    for path in [*(ROOT / "lsb").rglob("*.py"), *(ROOT / "pipelines").rglob("*.py")]:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("lsb/families/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and {k.arg for k in node.keywords} >= {"pooled_projections", "timestep"}:
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, f"transformer calls outside lsb/families: {offenders}"
