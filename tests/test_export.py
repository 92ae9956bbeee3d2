"""`lsb export`: a Hub-ready translator folder that a fresh process loads with diffusers and that reproduces
the export-time translation exactly; concept export; refusals (non-empty folder, no Hub credentials)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from lsb.surfaces.cli import main
from lsb.data import shapes
from lsb.prompts.domains import write_domain
from tests.cli_helpers import options

SEED = 3


def _env(tmp_path, **extra):
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_MODULES_CACHE=str(tmp_path / "modules"),
        OMP_NUM_THREADS="1",
        HF_HOME=str(tmp_path / "hf_home"),
    )
    env.pop("HF_TOKEN", None)
    env.update(extra)
    return env


@pytest.fixture
def domain(tmp_path):
    torch.manual_seed(1)
    return write_domain(
        tmp_path / "dom" / "learned_embeds.safetensors", "<tiny-circle>", torch.randn(2, 16), prompt="a {} shape"
    )


FRESH = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from PIL import Image
    from diffusers import DiffusionPipeline
    torch.set_num_threads(1)
    folder, image, out = sys.argv[1:4]
    try:
        DiffusionPipeline.from_pretrained(folder)
        refused = "loaded without trust_remote_code"
    except ValueError as e:
        refused = str(e)
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    call = json.load(open(folder + "/lsb_translator.json"))["call"]
    res = pipe(Image.open(image).convert("RGB"), generator=torch.Generator().manual_seed(int(sys.argv[4])),
               output_type="np", **call)
    np.save(out, res.images)
    print(json.dumps({"refused": refused, "pipeline": type(pipe).__name__, "module": type(pipe).__module__,
                      "scheduler": type(pipe.scheduler).__name__, "sched_config": dict(pipe.scheduler.config),
                      "nfe": res.nfe, "vocab_has_token": "<tiny-circle>" in pipe.tokenizer.get_vocab()}))
""")


def test_export_loads_in_fresh_process_and_reproduces(tiny_sd_dir, domain, tmp_path):
    from lsb.surfaces.translators import load_translator
    from lsb.prompts.domains import load_domain
    from lsb.schedulers import LSBScheduler

    out = tmp_path / "export"
    argv = options(model=tiny_sd_dir, source=domain.parent, target="a square", nfe=3, guidance=2.5, tau=4.0, t0=0.3)
    rc = main(["export", *argv, "--solver", "ddim", "-o", str(out)])
    assert rc == 0
    # layout per diffusers' custom-pipeline rules
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "LatentSchrodingerBridgePipeline"]
    assert index["scheduler"] == ["scheduling_lsb", "LSBScheduler"]
    for f in (
        "pipeline.py",
        "scheduler/scheduling_lsb.py",
        "scheduler/scheduler_config.json",
        "README.md",
        "unet/diffusion_pytorch_model.safetensors",
        "domains/source/learned_embeds.safetensors",
    ):
        assert (out / f).is_file(), f
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # staging folder renamed away
    info = json.loads((out / "lsb_translator.json").read_text())
    assert info["base_model"] == str(tiny_sd_dir)
    assert info["call"] == {
        "source_prompt": "a <tiny-circle> shape",
        "target_prompt": "a square",
        "num_inference_steps": 3,
        "guidance_scale": 2.5,
        "tau": 4.0,
        "t0": 0.3,
    }
    assert info["source"]["kind"] == "learned" and info["target"]["kind"] == "text"
    sched = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["tau"], sched["t0"], sched["solver"]) == (4.0, 0.3, "ddim")
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "image-to-image"
    assert set(card.data.tags) >= {"lsb", "image-to-image", "schrodinger-bridge", "textual-inversion"}
    assert "trust_remote_code=True" in card.text and "lsb_translator.json" in card.text

    # export-time reference: the base model + the domain + the same settings, in this process
    image = shapes.render(shapes.scenes("test", 1, shape="circle")[0])
    image.save(tmp_path / "in.png")
    pipe = load_translator("lsb", str(tiny_sd_dir), device="cpu")
    pipe.scheduler = LSBScheduler.from_config(pipe.scheduler.config, tau=4.0, t0=0.3, solver="ddim")
    src, tgt = load_domain(pipe, str(domain)), load_domain(pipe, "a square")
    ref = pipe(
        image,
        src,
        tgt,
        num_inference_steps=3,
        guidance_scale=2.5,
        tau=4.0,
        t0=0.3,
        output_type="np",
        generator=torch.Generator().manual_seed(SEED),
    ).images

    script = tmp_path / "fresh.py"
    script.write_text(FRESH)
    r = subprocess.run(
        [sys.executable, str(script), str(out), str(tmp_path / "in.png"), str(tmp_path / "o.npy"), str(SEED)],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert "trust_remote_code" in rep["refused"]  # diffusers' own refusal without the flag
    assert rep["pipeline"] == "LatentSchrodingerBridgePipeline" and rep["module"].startswith("diffusers_modules")
    assert rep["scheduler"] == "LSBScheduler" and rep["sched_config"]["solver"] == "ddim"
    assert rep["nfe"] == 3 and rep["vocab_has_token"]
    got = np.load(tmp_path / "o.npy")
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    print("max abs diff", float(np.abs(got - ref).max()))


def test_export_refuses_non_empty_folder_and_writes_nothing(tiny_sd_dir, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    rc = main(["export", "--model", str(tiny_sd_dir), "--source", "a circle", "--target", "a square", "-o", str(out)])
    assert rc == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "tiny-sd"]


def test_push_to_hub_without_credentials_fails_before_writing(tiny_sd_dir, tmp_path):
    out = tmp_path / "never"
    argv = ["export", *options(model=tiny_sd_dir, source="a circle", target="a square"), "-o", str(out)]
    r = subprocess.run(
        [sys.executable, "-m", "lsb", *argv, *options(push_to_hub="someone/lsb-test", private=True)],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=600,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "credentials" in r.stderr and "HF_TOKEN" in r.stderr
    assert not out.exists()


def test_export_concept_layout_and_loading(domain, tmp_path):
    from diffusers import StableDiffusionPipeline

    from lsb.surfaces.export import export_concept, load_concept

    out = export_concept(domain, tmp_path / "concept")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "learned_embeds.safetensors",
        "token_identifier.txt",
        "type_of_concept.txt",
    ]
    assert (out / "token_identifier.txt").read_text() == "<tiny-circle>"
    assert (out / "type_of_concept.txt").read_text() == "object"
    with pytest.raises(ValueError, match="not empty"):
        export_concept(domain, out)

    def fresh():
        from tests.conftest import tiny_components

        return StableDiffusionPipeline(
            **tiny_components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )

    pipe = fresh()
    assert load_concept(pipe, out) == "a <tiny-circle> shape"
    ids = pipe.tokenizer.convert_tokens_to_ids(["<tiny-circle>", "<tiny-circle>_1"])
    from lsb.prompts.domains import read_domain

    _, emb, _ = read_domain(domain)
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids].detach(), emb)
    plain = fresh()
    plain.load_textual_inversion(str(out))  # stock diffusers loader on the same folder
    assert "<tiny-circle>" in plain.tokenizer.get_vocab()
    rc = main(["export", "--concept", str(domain), "-o", str(tmp_path / "concept2")])
    assert rc == 0 and (tmp_path / "concept2" / "token_identifier.txt").is_file()


def _card_snippet(folder) -> str:
    text = (folder / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, blocks
    return blocks[0]


def test_embedded_export_keeps_precision_and_round_trips(tmp_path, capsys):
    """The embedded mini SD exports in its shipped precision with its defaults; `lsb translate --model <export>`
    (no trust_remote_code) gives the pixels of `lsb translate` on the embedded model; the demo serves the export."""
    from PIL import Image

    from lsb.io.assets import MINI_SD
    from lsb.io.settings import translation_defaults
    from lsb.surfaces.demo import Translator, build_demo, model_defaults
    from lsb.surfaces.export import load_translator, stored_dtype

    out = tmp_path / "export"
    assert main(["export", "--source", "a circle", "--target", "a square", "-o", str(out)]) == 0
    for comp in ("unet", "vae", "text_encoder"):
        assert stored_dtype(out, comp) == stored_dtype(MINI_SD, comp) == torch.float16, comp

    def size(folder, comp):
        return sum(f.stat().st_size for f in (folder / comp).glob("*.safetensors"))

    assert abs(size(out, "unet") - size(Path(MINI_SD), "unet")) < 0.01 * size(Path(MINI_SD), "unet")
    assert translation_defaults(str(out)) == translation_defaults(None)
    assert json.loads((out / "lsb_translator.json").read_text())["precision"]["unet"] == "float16"

    image = shapes.render(shapes.scenes("test", 1, shape="circle")[0])
    image.save(tmp_path / "in.png")
    common = [str(tmp_path / "in.png"), "--source", "a circle", "--target", "a square"]
    assert main(["translate", *common, "-o", str(tmp_path / "t_base")]) == 0
    assert main(["translate", *common, "--model", str(out), "-o", str(tmp_path / "t_export")]) == 0
    base = np.asarray(Image.open(tmp_path / "t_base" / "in.png"))
    exported = np.asarray(Image.open(tmp_path / "t_export" / "in.png"))
    assert np.array_equal(base, exported)

    pipe, call = load_translator(out)  # installed classes: no code from the folder runs
    assert type(pipe).__module__.startswith("lsb_pipelines") and type(pipe.scheduler).__module__.startswith("lsb.")
    ref = pipe(image, generator=torch.Generator().manual_seed(0), output_type="np", **call).images
    defaults_only = pipe(
        image, "a circle", "a square", generator=torch.Generator().manual_seed(0), output_type="np"
    ).images  # no call arguments: the folder's lsb_defaults.json
    np.testing.assert_array_equal(ref, defaults_only)

    assert model_defaults(str(out))["source"] == "a circle" and model_defaults(str(out))["guidance"] == 3.0
    build_demo(str(out))  # the page builds with the export's defaults
    *_, status = Translator(str(out))(str(tmp_path / "in.png"), "a circle", "a square", nfe=2, trajectory=False)
    assert "2 network calls" in status


def test_model_card_snippet_runs_on_the_folder_and_on_a_hub_id(tiny_sd_dir, domain, tmp_path):
    """The card's usage snippet, exactly as written, on the local export (offline, in a fresh process) and, with a
    Hub repo id, with snapshot_download answering for that id (no network here)."""
    local = tmp_path / "local"
    argv = options(model=tiny_sd_dir, source=domain, target="a square", nfe=2)
    assert main(["export", *argv, "-o", str(local)]) == 0
    hub = tmp_path / "hub"
    from lsb.surfaces.export import export_translator

    export_translator(hub, str(domain), "a square", str(tiny_sd_dir), nfe=2, repo_id="someone/lsb-tiny")
    work = tmp_path / "work"
    work.mkdir()
    shapes.render(shapes.scenes("test", 1, shape="circle")[0]).save(work / "input.png")

    snippet = _card_snippet(local)
    assert f'repo = "{local.resolve()}"' in snippet
    r = subprocess.run(
        [sys.executable, "-c", snippet], cwd=work, capture_output=True, text=True, env=_env(tmp_path), timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (work / "output.png").is_file()
    (work / "output.png").unlink()

    snippet = _card_snippet(hub)
    assert 'repo = "someone/lsb-tiny"' in snippet
    fake_hub = textwrap.dedent(f"""
        import huggingface_hub
        def snapshot_download(repo_id, **kwargs):
            assert repo_id == "someone/lsb-tiny", repo_id
            return {str(hub)!r}
        huggingface_hub.snapshot_download = snapshot_download
    """)
    r = subprocess.run(
        [sys.executable, "-c", fake_hub + snippet],
        cwd=work,
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (work / "output.png").is_file()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--guidance", "nan", "--guidance must be a finite number, got nan"),
        ("--guidance", "inf", "--guidance must be a finite number, got inf"),
        ("--tau", "0", "--tau must be a positive number, got 0.0"),
        ("--tau", "-1", "--tau must be a positive number, got -1.0"),
        ("--tau", "nan", "--tau must be a positive number, got nan"),
        ("--t0", "0", "--t0 must lie strictly between 0 and 1, got 0.0"),
        ("--t0", "1", "--t0 must lie strictly between 0 and 1, got 1.0"),
        ("--t0", "1.5", "--t0 must lie strictly between 0 and 1, got 1.5"),
        ("--nfe", "1", "--nfe must be an integer >= 2, got 1"),
    ],
)
def test_invalid_values_refused_before_writing(tiny_sd_dir, tmp_path, capsys, option, value, message):
    out = tmp_path / "never"
    argv = options(model=tiny_sd_dir, source="a circle", target="a square")
    rc = main(["export", *argv, option, value, "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"lsb: error: {message}", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-sd"]  # nothing written, no staging folder


def test_hub_ids_never_run_remote_code_by_default(monkeypatch, tiny_sd_dir):
    """export.load_translator on a Hub id builds the pipeline from the installed classes (trust_remote_code False);
    a model with custom code lsb does not know is refused for a Hub id unless trust_remote_code is given."""
    import lsb.helpers.loading as loading
    import lsb.surfaces.export as export
    from lsb.helpers.loading import CustomCodeError, load_pipeline
    from lsb_pipelines.lsb.pipeline import LatentSchrodingerBridgePipeline

    seen = {}

    def fake_load(cls, model, **kwargs):
        seen.update(cls=cls, model=model, **kwargs)
        return "pipe"

    index = {
        "_class_name": ["pipeline", "LatentSchrodingerBridgePipeline"],
        "scheduler": ["scheduling_lsb", "LSBScheduler"],
    }
    monkeypatch.setattr(export, "read_translator_info", lambda folder: {"call": {"tau": 1.0}})
    monkeypatch.setattr(loading, "read_model_index", lambda model: dict(index))
    monkeypatch.setattr(loading, "load_pipeline", fake_load)
    assert export.load_translator("someone/lsb-export") == ("pipe", {"tau": 1.0})
    assert seen["cls"] is LatentSchrodingerBridgePipeline and seen["trust_remote_code"] is False
    assert ("scheduling_lsb", "LSBScheduler") in seen["known"]

    monkeypatch.undo()
    foreign = {"_class_name": "StableDiffusionPipeline", "scheduler": ["my_scheduler", "MyScheduler"]}
    monkeypatch.setattr(loading, "read_model_index", lambda model: dict(foreign))
    with pytest.raises(
        CustomCodeError,
        match=r"model someone/odd contains custom code \(scheduler\): pass "
        r"--trust-remote-code",
    ):
        load_pipeline(LatentSchrodingerBridgePipeline, "someone/odd")
    with pytest.raises(CustomCodeError, match="--trust-remote-code"):
        load_pipeline(LatentSchrodingerBridgePipeline, "someone/odd", trust_remote_code=False)


def test_export_keeps_fp32_weights_and_their_fp16_variant(tmp_path):
    """A base folder storing fp32 weights plus an fp16 variant exports both, in those precisions."""
    from diffusers import StableDiffusionPipeline

    from lsb.surfaces.export import export_translator, stored_dtype, stored_variants
    from tests.conftest import tiny_components

    base = tmp_path / "base"
    pipe = StableDiffusionPipeline(
        **tiny_components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(base)
    pipe.unet.half().save_pretrained(base / "unet", variant="fp16")
    out = export_translator(tmp_path / "out", "a circle", "a square", str(base), nfe=2)
    assert stored_dtype(out, "unet") == torch.float32 and stored_variants(out, "unet") == ["fp16"]
    with safe_open(str(out / "unet" / "diffusion_pytorch_model.fp16.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    assert stored_dtype(out, "vae") == torch.float32 and stored_variants(out, "vae") == []
