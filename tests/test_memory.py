"""Memory options (lsb.helpers.memory): --quantize reaches diffusers (torchao modules in the loaded pipeline),
--offload installs diffusers' hooks (refused on the CPU), the estimate from safetensors headers, VAE tiling beyond
the native size; the same through the CLI, the demo and AutoPipelineForTranslation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from lsb.families import FAMILIES
from lsb.helpers import memory
from lsb.helpers.loading import load_pipeline
from lsb.models.random_flow import tiny_flux_components
from tests.cli_helpers import translate_argv


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    from diffusers import FluxPipeline

    folder = tmp_path_factory.mktemp("mem") / "tiny-flux"
    FluxPipeline(**tiny_flux_components(0)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory):
    from diffusers import StableDiffusion3Pipeline

    from lsb.models.random_flow import tiny_sd3_components

    folder = tmp_path_factory.mktemp("mem") / "tiny-sd3"
    StableDiffusion3Pipeline(**tiny_sd3_components(0, t5=False)).save_pretrained(folder)
    return folder


def picture(size=64, seed=0):
    return Image.fromarray(np.random.default_rng(seed).uniform(0, 255, (size, size, 3)).astype(np.uint8))


def stored_bytes(folder, component, itemsize=None):
    """Bytes of a component's tensors read back with safetensors (``itemsize``: floats counted at that size)."""
    total = 0
    for f in memory.weight_files(folder / component):
        with safe_open(f, "pt") as st:
            for k in st.keys():
                t = st.get_tensor(k)
                total += t.numel() * (itemsize if itemsize and t.is_floating_point() else t.element_size())
    return total


def test_estimate_reads_headers_and_scales_to_the_dtype(flux_dir):
    flux = FAMILIES["flux"]
    f32 = memory.component_bytes(flux_dir, torch.float32, family=flux)
    assert set(f32) == {"transformer", "vae", "text_encoder", "text_encoder_2"}
    for name, size in f32.items():
        assert size == stored_bytes(flux_dir, name) > 0
    bf16 = memory.component_bytes(flux_dir, torch.bfloat16, family=flux)
    assert bf16 == {name: stored_bytes(flux_dir, name, itemsize=2) for name in f32}
    q = memory.component_bytes(flux_dir, torch.bfloat16, "int8", family=flux)
    assert q["vae"] == bf16["vae"] and q["text_encoder"] < bf16["text_encoder"]
    assert q["transformer"] < bf16["transformer"] and q["text_encoder_2"] < bf16["text_encoder_2"]


def test_a_model_that_will_not_fit_names_what_would(flux_dir, monkeypatch):
    monkeypatch.setattr(memory, "OVERHEAD_MIN", 0)
    flux = FAMILIES["flux"]
    sizes = memory.component_bytes(flux_dir, torch.float32, family=flux)
    whole = memory.MemoryEstimate(sizes, "none").needed
    assert memory.check_fits(flux_dir, flux, "cuda", torch.float32, available=whole).weights == sum(sizes.values())
    with pytest.raises(memory.MemoryPlanError) as e:
        memory.check_fits(flux_dir, flux, "cuda", torch.float32, available=whole - 1)
    line = str(e.value)
    assert "\n" not in line and line.startswith("tiny-flux (FLUX.1) in float32 needs ~")
    assert line.endswith(": add --offload model or --quantize int8")
    with pytest.raises(memory.MemoryPlanError, match="add --offload sequential$"):
        memory.check_fits(flux_dir, flux, "cuda", torch.float32, available=1000)
    # CPU: no device memory to compare with; a Hub id: no weights to read
    assert memory.check_fits(flux_dir, flux, "cpu", torch.float32) is not None
    assert memory.check_fits("org/model", flux, "cuda", torch.float32, available=1) is None


def test_quantize_int8_reaches_the_transformer_and_text_encoders(flux_dir):
    pytest.importorskip("torchao")
    from torchao.quantization import Int8Tensor

    from lsb.surfaces.translators import load_translator, translate

    pipe = load_translator("lsb", str(flux_dir), device="cpu", quantize="int8")

    def int8_linears(module):
        kinds = [isinstance(m.weight, Int8Tensor) for m in module.modules() if isinstance(m, torch.nn.Linear)]
        return sum(kinds), len(kinds)

    for name in ("transformer", "text_encoder", "text_encoder_2"):
        done, linears = int8_linears(getattr(pipe, name))
        assert done == linears > 0, name
    assert pipe.transformer.config.quantization_config.quant_type.__class__.__name__ == "Int8WeightOnlyConfig"
    assert int8_linears(pipe.vae)[0] == 0  # the VAE is not quantized
    pipe.set_progress_bar_config(disable=True)
    images, nfe = translate("lsb", pipe, [picture()], "a red circle", "a blue square", nfe=2, output_type="np")
    assert nfe == 2 and np.isfinite(images).all()


def test_quantize_without_torchao_or_float8_on_cpu_is_one_line(flux_dir, monkeypatch):
    import importlib.util

    from lsb.surfaces.translators import load_translator

    with pytest.raises(ValueError, match=r"float8 needs a CUDA GPU of compute capability 8\.9"):
        load_translator("lsb", str(flux_dir), device="cpu", quantize="float8")
    with pytest.raises(ValueError, match="quantize must be one of int8, float8"):
        load_translator("lsb", str(flux_dir), device="cpu", quantize="int3")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    with pytest.raises(ValueError, match=r"^--quantize int8 needs the torchao package: pip install torchao"):
        load_translator("lsb", str(flux_dir), device="cpu", quantize="int8")


def test_offload_is_refused_on_the_cpu_before_loading(flux_dir):
    from lsb.surfaces.auto import AutoPipelineForTranslation

    for mode in ("model", "sequential"):
        with pytest.raises(ValueError, match=f"--offload {mode} moves weights .* this run is on the CPU"):
            AutoPipelineForTranslation.from_pretrained(str(flux_dir), method="flowedit", device="cpu", offload=mode)
    with pytest.raises(ValueError, match="offload must be one of none, model, sequential"):
        memory.check_offload("disk", "cuda")


def test_offload_installs_diffusers_hooks(flux_dir):
    """lsb's loader applies diffusers' offload: accelerate's hooks on every module and the accelerator as the
    execution device. No accelerator here: diffusers' model offload accepts device "cpu" when named (a run through
    its hooks), and the meta device stands in for an accelerator for sequential offload (hooks only, no run)."""
    from lsb.io.execution import execution_device
    from lsb.surfaces.translators import translate

    cls = FAMILIES["flux"].pipeline_class("lsb")
    pipe = load_pipeline(cls, str(flux_dir), device="cpu", offload="model")
    hooks = {
        n: type(getattr(pipe, n)._hf_hook).__name__ for n in ("transformer", "text_encoder", "text_encoder_2", "vae")
    }
    assert set(hooks.values()) == {"CpuOffload"}, hooks
    pipe.set_progress_bar_config(disable=True)
    images, nfe = translate("lsb", pipe, [picture()], "a red circle", "a blue square", nfe=2, output_type="np")
    assert nfe == 2 and np.isfinite(images).all()

    pipe = memory.apply_offload(cls.from_pretrained(flux_dir), "sequential", "meta")
    for name in ("transformer", "text_encoder", "text_encoder_2", "vae"):
        assert type(getattr(pipe, name)._hf_hook).__name__ == "AlignDevicesHook"
    assert execution_device(pipe).type == "meta"


def test_vae_tiling_beyond_the_native_size(sd3_dir):
    from lsb.families import native_resolution
    from lsb.surfaces.translators import load_translator, translate

    pipe = load_translator("lsb", str(sd3_dir), device="cpu")
    assert native_resolution(pipe) == 64
    pipe.set_progress_bar_config(disable=True)
    big, _ = translate("lsb", pipe, [picture(128)], "a red circle", "a blue square", nfe=2, output_type="np")
    assert pipe.vae.use_tiling and big.shape == (1, 128, 128, 3) and np.isfinite(big).all()
    translate("lsb", pipe, [picture(64)], "a red circle", "a blue square", nfe=2, output_type="np")
    assert not pipe.vae.use_tiling
    assert memory.largest_side(torch.zeros(1, 3, 32, 96)) == 96 and memory.largest_side(np.zeros((40, 20, 3))) == 40


def test_cli_memory_flags_are_one_line_errors(flux_dir, tmp_path, capsys):
    from lsb.surfaces.cli import main

    picture().save(tmp_path / "a.png")
    argv = translate_argv(tmp_path / "a.png", model=flux_dir, device="cpu", nfe=2, out=tmp_path / "out")
    assert main([*argv, "--offload", "model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lsb: error: --offload model moves weights")
    assert main([*argv, "--quantize", "float8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "float8 needs a CUDA GPU" in err[0]
    assert not (tmp_path / "out").exists()


def test_demo_checks_memory_flags_before_serving(flux_dir):
    from lsb.surfaces.demo import Translator

    with pytest.raises(ValueError, match="--offload model moves weights"):
        Translator(str(flux_dir), device="cpu", offload="model")
    assert Translator(str(flux_dir), device="cpu", quantize="int8").memory == {"offload": None, "quantize": "int8"}
