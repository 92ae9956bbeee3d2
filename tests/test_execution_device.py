"""lsb.io.execution.execution_device answers what diffusers' ``_execution_device`` answers, faster when nothing is hooked."""

from __future__ import annotations

import types

import torch
from diffusers import DiffusionPipeline
from diffusers.hooks import apply_group_offloading

import lsb
from lsb.io.execution import execution_device, has_hooks, model_dtype
from tests.conftest import tiny_components


def _diffusers_answer(pipe):
    return DiffusionPipeline._execution_device.fget(pipe)


def test_plain_pipeline_matches_diffusers():
    pipe = lsb.LatentSchrodingerBridgePipeline(**tiny_components())
    assert not has_hooks(pipe)
    assert execution_device(pipe) == _diffusers_answer(pipe) == torch.device("cpu")


def test_accelerate_hook_defers_to_diffusers():
    pipe = lsb.LatentSchrodingerBridgePipeline(**tiny_components())
    # what enable_sequential_cpu_offload leaves behind: hooks naming an execution device on the modules
    hook = types.SimpleNamespace(execution_device=torch.device("meta"))
    for module in (pipe.vae, pipe.text_encoder, pipe.unet, pipe.unet.conv_in):
        module._hf_hook = hook
    assert has_hooks(pipe)
    assert execution_device(pipe) == _diffusers_answer(pipe) == torch.device("meta")


def test_group_offloading_defers_to_diffusers():
    pipe = lsb.LatentSchrodingerBridgePipeline(**tiny_components())
    apply_group_offloading(
        pipe.unet, onload_device=torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1
    )
    assert has_hooks(pipe)
    assert execution_device(pipe) == _diffusers_answer(pipe)
    out = pipe(
        torch.zeros(1, 3, 32, 32),
        source_prompt="a circle",
        target_prompt="a square",
        num_inference_steps=2,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.isfinite(out.images).all()


def test_model_dtype_matches_diffusers():
    pipe = lsb.LatentSchrodingerBridgePipeline(**tiny_components())
    assert model_dtype(pipe.unet) == pipe.unet.dtype == torch.float32
    pipe.unet.to(torch.float16)
    assert model_dtype(pipe.unet) == pipe.unet.dtype == torch.float16
    # layerwise casting: weights stored in fp8, computed in fp32; diffusers reports the compute dtype
    pipe.vae.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    assert model_dtype(pipe.vae) == pipe.vae.dtype == torch.float32
