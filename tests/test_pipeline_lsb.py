"""LatentSchrodingerBridgePipeline on tiny random SD components: API, NFE, loading routes, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import lsb
from lsb.data import shapes
from lsb.io.images import ImageInputError, to_rgb
from lsb.prompts.tokens import UnknownTokenError
from tests.conftest import tiny_components


def _pipe(prediction_type="epsilon"):
    pipe = lsb.LatentSchrodingerBridgePipeline(**tiny_components(prediction_type))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _img(i=0):
    return shapes.render(shapes.scenes("test", i + 1)[i])


def _translate(pipe, image=None):
    """``pipe``'s seeded 2-NFE "a circle" -> "a square" translation of ``image`` (default ``_img()``), a tensor."""
    image = _img() if image is None else image
    generator = torch.Generator().manual_seed(0)
    return pipe(image, "a circle", "a square", num_inference_steps=2, output_type="pt", generator=generator).images


def _count_calls(pipe):
    calls = []
    orig = pipe.unet.forward

    def fwd(sample, *a, **k):
        calls.append(sample.shape[0])
        return orig(sample, *a, **k)

    pipe.unet.forward = fwd
    return calls


def test_scheduler_converted_and_nfe_counted():
    pipe = _pipe()
    assert isinstance(pipe.scheduler, lsb.LSBScheduler)
    calls = _count_calls(pipe)
    out = pipe(
        [_img(0), _img(1)],
        "a circle",
        "a square",
        num_inference_steps=5,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.images.shape == (2, 64, 64, 3)
    assert out.nfe == 5 and len(calls) == 5
    assert all(b == 4 for b in calls)  # one batched call on [source; target] x 2 images


@pytest.mark.parametrize("solver", ["euler", "ddim", "multistep"])
def test_solvers_run_and_are_deterministic(solver):
    pipe = _pipe()
    pipe.scheduler.register_to_config(solver=solver)
    kw = dict(num_inference_steps=4, output_type="pt")
    a = pipe(_img(), "a circle", "a square", generator=torch.Generator().manual_seed(3), **kw).images
    b = pipe(_img(), "a circle", "a square", generator=torch.Generator().manual_seed(3), **kw).images
    c = pipe(_img(), "a circle", "a square", generator=torch.Generator().manual_seed(4), **kw).images
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all()


def test_v_prediction_model_runs():
    pipe = _pipe("v_prediction")
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    out = pipe(_img(), "a circle", "a square", num_inference_steps=3, output_type="np")
    assert np.isfinite(out.images).all()


def test_inputs_pil_numpy_tensor_agree():
    pipe = _pipe()
    im = _img()
    arr = np.asarray(im).astype(np.float32) / 255.0
    ten = torch.from_numpy(arr).permute(2, 0, 1)
    outs = [_translate(pipe, x) for x in (im, arr, ten)]
    assert torch.allclose(outs[0], outs[1], atol=1e-5) and torch.allclose(outs[0], outs[2], atol=1e-5)


def test_prompt_embeds_equal_prompts_and_trajectory():
    pipe = _pipe()
    src = lsb.prompts.encoding.encode_text(pipe, "a circle", "cpu")
    tgt = lsb.prompts.encoding.encode_text(pipe, "a square", "cpu")
    kw = dict(num_inference_steps=3, output_type="latent", generator=torch.Generator().manual_seed(0))
    a = pipe(_img(), "a circle", "a square", return_trajectory=True, **kw)
    kw["generator"] = torch.Generator().manual_seed(0)
    b = pipe(_img(), source_prompt_embeds=src, target_prompt_embeds=tgt, **kw)
    assert torch.allclose(a.images, b.images)
    assert len(a.trajectory) == 3
    assert set(a.trajectory[0]) >= {"t", "timestep", "x_t", "source", "target"}
    ts = [s["t"] for s in a.trajectory]
    assert ts == sorted(ts) and 0 < ts[0] < 1


def test_callback_on_step_end():
    pipe = _pipe()
    seen = []

    def cb(p, i, t, tensors):
        seen.append((i, tensors["latents"].shape))
        return tensors

    pipe(
        _img(),
        "a circle",
        "a square",
        num_inference_steps=3,
        output_type="np",
        callback_on_step_end=cb,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    assert [i for i, _ in seen] == [0, 1, 2]


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(num_inference_steps=1), ValueError, "NFE"),
        (dict(t0=0.0), ValueError, "t0"),
        (dict(t0=1.2), ValueError, "t0"),
        (dict(tau=-1.0), ValueError, "tau"),
        (dict(target_prompt="a <nonexistent>"), UnknownTokenError, "<nonexistent>"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    pipe = _pipe()
    args = dict(image=_img(), source_prompt="a circle", target_prompt="a square", num_inference_steps=2)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        pipe(**args)


def test_bad_images():
    pipe = _pipe()
    with pytest.raises(ImageInputError, match="multiple of 8"):
        pipe(Image.new("RGB", (60, 64)), "a circle", "a square", num_inference_steps=2)
    with pytest.raises(ImageInputError, match="NaN"):
        pipe(np.full((64, 64, 3), np.nan, dtype=np.float32), "a circle", "a square", num_inference_steps=2)
    # other PIL modes, channel counts and integer dtypes are refused, naming the image; converted ones run
    for bad, match in (
        (_img().convert("RGBA"), "image #1: mode RGBA"),
        (_img().convert("L"), "image #1: mode L"),
        (np.zeros((64, 64, 1), dtype=np.uint8), "image #1: expected an RGB array"),
        (np.zeros((64, 64, 3), dtype=np.uint16), "image #1: dtype uint16"),
        (torch.zeros(4, 64, 64), "image #1: expected an RGB tensor"),
    ):
        with pytest.raises(ImageInputError, match=match):
            pipe([_img(), bad], "a circle", "a square", num_inference_steps=2)
    converted = [to_rgb(_img().convert(m), allow_convert=True) for m in ("RGBA", "L")]
    out = pipe(converted, "a circle", "a square", num_inference_steps=2, output_type="np")
    assert out.images.shape[0] == 2
    as_uint8 = torch.from_numpy(np.asarray(_img())).permute(2, 0, 1).contiguous()
    as_float = as_uint8.float() / 255
    kw = dict(num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    a = pipe(as_uint8, "a circle", "a square", **kw).images
    kw["generator"] = torch.Generator().manual_seed(0)
    assert np.array_equal(a, pipe(as_float, "a circle", "a square", **kw).images)  # uint8 tensors are /255


def test_from_pretrained_on_sd_folder_and_save_roundtrip(tiny_sd_dir, tmp_path):
    pipe = lsb.LatentSchrodingerBridgePipeline.from_pretrained(tiny_sd_dir)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, lsb.LSBScheduler)
    a = _translate(pipe)
    pipe.save_pretrained(tmp_path / "lsb-pipe")
    index = json.loads((tmp_path / "lsb-pipe" / "model_index.json").read_text())
    assert index["scheduler"][1] == "LSBScheduler"
    again = lsb.LatentSchrodingerBridgePipeline.from_pretrained(tmp_path / "lsb-pipe")
    again.set_progress_bar_config(disable=True)
    b = _translate(again)
    assert torch.allclose(a, b)


def test_custom_pipeline_loading(tiny_sd_dir):
    from diffusers import DiffusionPipeline

    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(tiny_sd_dir, custom_pipeline=lsb.pipeline_dir("lsb"))
    pipe = DiffusionPipeline.from_pretrained(
        tiny_sd_dir, custom_pipeline=lsb.pipeline_dir("lsb"), trust_remote_code=True
    )
    assert type(pipe).__name__ == "LatentSchrodingerBridgePipeline"
    pipe.set_progress_bar_config(disable=True)
    ref = lsb.LatentSchrodingerBridgePipeline.from_pretrained(tiny_sd_dir)
    ref.set_progress_bar_config(disable=True)
    assert torch.allclose(_translate(pipe), _translate(ref))
