"""`lsb translate --method lsb|flowedit|sdedit` on SD3 / FLUX folders (tiny real-class models), both NFE counts
through lsb.surfaces.translators, a learned multi-encoder domain file as --source, and the bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lsb.models.random_flow import tiny_flux_components, tiny_sd3_components
from tests.cli_helpers import options, translate_argv


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    root = tmp_path_factory.mktemp("flow-models")
    StableDiffusion3Pipeline(**tiny_sd3_components(0)).save_pretrained(root / "sd3")
    StableDiffusion3Pipeline(**tiny_sd3_components(0, t5=False)).save_pretrained(root / "sd3-no-t5")
    FluxPipeline(**tiny_flux_components(0)).save_pretrained(root / "flux")
    return root


def picture(seed=0):
    return Image.fromarray(np.random.default_rng(seed).uniform(0, 255, (64, 64, 3)).astype(np.uint8))


# (method, family) -> forward passes per batched call at the defaults
PER_CALL = {
    ("lsb", "sd3"): 2,
    ("lsb", "flux"): 2,
    ("flowedit", "sd3"): 4,
    ("flowedit", "flux"): 2,
    ("sdedit", "sd3"): 2,
    ("sdedit", "flux"): 1,
}


@pytest.mark.parametrize("family", ["sd3", "flux", "sd3-no-t5"])
@pytest.mark.parametrize("method", ["lsb", "flowedit", "sdedit"])
def test_translators_on_flow_folders_count_both_ways(folders, method, family):
    from lsb.surfaces.translators import load_translator, translate

    pipe = load_translator(method, str(folders / family), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    images, nfe, passes = translate(
        method,
        pipe,
        [picture()],
        "a red circle",
        "a blue square",
        nfe=3,
        generator=[torch.Generator().manual_seed(0)],
        output_type="np",
        return_forward_passes=True,
    )
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
    assert nfe == 3 and passes == PER_CALL[(method, family.split("-")[0])] * 3


def test_flowedit_budget_keeps_the_paper_start_level():
    from lsb.surfaces.flow_translators import flowedit_budget

    assert flowedit_budget("sd3", None) == {"num_inference_steps": 50, "n_max": 33}
    assert flowedit_budget("flux", None) == {"num_inference_steps": 28, "n_max": 24}
    assert flowedit_budget("sd3", 8) == {"num_inference_steps": 12, "n_max": 8}
    assert flowedit_budget("flux", 8) == {"num_inference_steps": 9, "n_max": 8}
    assert flowedit_budget("sd3", 8, n_max_fraction=0.33) == {"num_inference_steps": 24, "n_max": 8}
    with pytest.raises(ValueError, match="n_max_fraction"):
        flowedit_budget("sd3", 8, n_max_fraction=1.5)


def test_cli_flowedit_with_a_learned_domain_file(folders, tmp_path, capsys):
    from lsb.surfaces.cli import main
    from lsb.training.prompt_optimization import learn_domain

    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        picture(i).save(src / f"{i}.png")
    emb = learn_domain(
        src,
        "<dom>",
        str(folders / "sd3"),
        output_dir=tmp_path / "dom",
        steps=1,
        batch_size=1,
        num_validation_images=0,
        resolution=64,
        progress=False,
        device="cpu",
        max_sequence_length=256,
    )
    out = tmp_path / "out"
    argv = translate_argv(
        src, model=folders / "sd3", source=emb, target="a blue square", method="flowedit", nfe=2, device="cpu", out=out
    )
    rc = main(argv)
    assert rc == 0 and len(list(out.glob("*.png"))) >= 2
    assert "NFE 2 per image, 8 forward passes" in capsys.readouterr().out  # FlowEdit SD3: 4 latents per call


def test_flowedit_on_a_vp_model_and_ddib_on_a_flow_model_are_refused(folders, tiny_sd_dir):
    from lsb.surfaces.translators import load_translator, translate

    with pytest.raises(ValueError, match="ddib"):
        load_translator("ddib", str(folders / "sd3"), device="cpu")
    pipe = load_translator("lsb", str(tiny_sd_dir), device="cpu")
    with pytest.raises(ValueError, match="flowedit runs on SD3 / SD3.5, FLUX.1, .* models; this model is SD 1.x/2.x"):
        translate("flowedit", pipe, [picture()], "a", "b", nfe=2)


def test_flow_benchmark_runs_tiny(folders, tmp_path):
    import json

    from benchmarks.translation_flow import main

    cells = options(model=folders / "sd3", methods=("lsb-euler", "flowedit"), nfe=2, n=1, n_val=1, vp_model="mini-sd")
    rc = main([*cells, *options(tag="t", out=tmp_path)])
    assert rc == 0
    state = json.loads((tmp_path / "translation-flow-t.json").read_text())
    tests = [c for k, c in state["cells"].items() if "|test1|" in k]
    # lsb-euler, flowedit at NFE 2, FlowEdit's paper setting, LSB on the VP model
    assert sorted((c["nfe_spent"], c["forward_passes"]) for c in tests) == [(2, 4), (2, 4), (2, 8), (33, 132)]
    assert all("fid" in c and 0.0 <= c["mean"]["success"] <= 1.0 for c in tests)
    text = (tmp_path / "translation-flow-t.md").read_text()
    assert "flowedit-paper" in text and "lsb-euler (VP)" in text


@pytest.mark.parametrize(("family", "name"), [("sd3", "flowedit_sd3"), ("flux", "flowedit_flux")])
def test_flowedit_loads_as_a_custom_pipeline(folders, family, name):
    from diffusers import DiffusionPipeline

    import lsb

    pipe = DiffusionPipeline.from_pretrained(
        str(folders / family), custom_pipeline=str(lsb.pipeline_dir(name)), trust_remote_code=True
    )
    assert type(pipe).__name__ == {"sd3": "FlowEditSD3Pipeline", "flux": "FlowEditFluxPipeline"}[family]
    pipe.set_progress_bar_config(disable=True)
    out = pipe(picture(), "a red circle", "a blue square", num_inference_steps=3, n_max=2, max_sequence_length=16)
    assert out.nfe == 2 and len(out.images) == 1


def test_flowedit_from_pretrained_refuses_other_families(folders, tiny_sd_dir):
    from lsb_pipelines.flowedit_flux.pipeline import FlowEditFluxPipeline
    from lsb_pipelines.flowedit_sd3.pipeline import FlowEditSD3Pipeline

    with pytest.raises(ValueError, match="FlowEditSD3Pipeline.*UNet2DConditionModel"):
        FlowEditSD3Pipeline.from_pretrained(str(tiny_sd_dir))
    with pytest.raises(ValueError, match="FlowEditFluxPipeline.*SD3Transformer2DModel"):
        FlowEditFluxPipeline.from_pretrained(str(folders / "sd3"))
    pipe = FlowEditSD3Pipeline.from_pretrained(str(folders / "sd3-no-t5"))  # no text_encoder_3=None needed
    assert pipe.text_encoder_3 is None
