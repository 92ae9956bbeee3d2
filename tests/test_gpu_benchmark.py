"""The GPU benchmark (benchmarks/gpu/families.py) dry-runs on the CPU with tiny models: every method of each family
measured, FLUX.1-dev reloaded through lsb's loader with int8 quantization (offload skipped without an accelerator),
the table and JSON written."""

from __future__ import annotations

import json

import pytest


def test_gpu_benchmark_dry_run(tmp_path):
    pytest.importorskip("torchao")
    from benchmarks.gpu.families import main

    argv = ["--dry-run", "--families", "flux-dev", "zimage", "--out", str(tmp_path / "out")]
    assert main([*argv, "--workdir", str(tmp_path / "work")]) == 0
    data = json.loads((tmp_path / "out" / "gpu-families.json").read_text())
    rows = {(r["family"], r["method"], r["solver"], r.get("offload"), r.get("quantize")): r for r in data["rows"]}
    for family in ("flux-dev", "zimage"):
        for key in ((family, "lsb", "euler"), (family, "lsb", "multistep"), (family, "flowedit", None)):
            row = rows[(*key, None, None)]
            assert row["calls"] >= 1 and row["seconds"] > 0 and row["forward_passes"] >= 2 * row["calls"]
        assert rows[(family, "lsb", "euler", None, None)]["calls"] == 8
    assert rows[("flux-dev", "flowedit", None, None, None)]["calls"] == 24  # FlowEdit FLUX: n_max 24 of T 28
    assert rows[("flux-dev", "lsb", "euler", None, "int8")]["forward_passes"] == 16
    assert rows[("flux-dev", "lsb", "euler", "model", None)]["skipped"] == "offload needs an accelerator"
    table = (tmp_path / "out" / "gpu-families.md").read_text()
    assert "| Z-Image | 64 | flowedit |" in table and "quantize int8" in table and "--dry-run" in table


@pytest.mark.parametrize(
    "name,network_millions",
    [("flux-dev", 11901.41), ("zimage", 6154.91), ("qwenimage", 20430.40), ("flux2-klein-4b", 3875.54)],
)
def test_gpu_benchmark_builds_the_real_architectures_on_meta(name, network_millions):
    """What the GPU run builds (random weights of the real configs) constructs, here on the meta device."""
    import torch

    from benchmarks.gpu.families import CONFIGS, real_pipeline

    if not CONFIGS.is_dir():
        pytest.skip(f"real configs not found at {CONFIGS}")
    pipe = real_pipeline(name, "meta", torch.bfloat16)
    count = sum(p.numel() for p in pipe.transformer.parameters())
    assert round(count / 1e6, 2) == network_millions
    assert next(pipe.transformer.parameters()).dtype == torch.bfloat16
