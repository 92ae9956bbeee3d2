"""LatentSchrodingerBridgeXLPipeline on a tiny SDXL-shaped model (SDXL's classes at toy widths).

(a) the UNet's conditioning equals diffusers' StableDiffusionXLPipeline's for the same prompts and size (forward
hooks); (c) with source == target prompt, tiny tau and t0 the output is the VAE round trip of the input; NFE and
loading routes; bad input refused before any UNet compute; (b) the real SDXL architecture (slow)."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lsb
from lsb.data import shapes
from lsb.io.images import ImageInputError
from lsb.models.sdxl import real_sdxl_components, save_tiny_sdxl, tiny_sdxl_components
from lsb.prompts.tokens import UnknownTokenError

CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "configs"


@pytest.fixture(scope="module")
def tiny_sdxl_dir(tmp_path_factory):
    """A saved tiny StableDiffusionXLPipeline folder (the layout of an SDXL base checkpoint)."""
    return save_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl")


def _pipe(prediction_type="epsilon", **kw):
    pipe = lsb.LatentSchrodingerBridgeXLPipeline(**tiny_sdxl_components(prediction_type, **kw))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sd_unet():
    from tests.conftest import tiny_components

    return tiny_components()["unet"]


def _img(i=0, size=64):
    im = shapes.render(shapes.scenes("test", i + 1)[i])
    return im if size == 64 else im.resize((size, size))


def _capture(unet):
    """Record (sample, encoder_hidden_states, added_cond_kwargs) of every UNet forward call."""
    seen = []

    def hook(module, args, kwargs):
        seen.append(
            {
                "batch": args[0].shape[0],
                "encoder_hidden_states": kwargs["encoder_hidden_states"].clone(),
                "text_embeds": kwargs["added_cond_kwargs"]["text_embeds"].clone(),
                "time_ids": kwargs["added_cond_kwargs"]["time_ids"].clone(),
            }
        )

    return seen, unet.register_forward_pre_hook(hook, with_kwargs=True)


def _with_reference(cls):
    """diffusers' StableDiffusionXLPipeline and ``cls`` on the same tiny SDXL modules (progress bars off)."""
    from diffusers import StableDiffusionXLPipeline

    comps = tiny_sdxl_components()
    ref = StableDiffusionXLPipeline(**comps, add_watermarker=False)
    ours = cls(**comps)  # the same modules
    for pipe in (ref, ours):
        pipe.set_progress_bar_config(disable=True)
    return ref, ours


MAX_DIFFS: dict[str, float] = {}


@pytest.mark.parametrize("case", ["square", "micro-conditioning", "batch-lists"])
def test_unet_conditioning_matches_diffusers_sdxl(case):
    ref, ours = _with_reference(lsb.LatentSchrodingerBridgeXLPipeline)

    src, tgt, h, w, n = "a blue square", "a red circle", 64, 64, 1
    ref_kw, our_kw = {}, {}
    if case == "micro-conditioning":  # non-square image, prompt_2, SDXL's size/crop conditioning
        h, w = 64, 128
        sizes = dict(original_size=(512, 1024), crops_coords_top_left=(16, 32), target_size=(256, 512))
        ref_kw = dict(prompt_2="a big red circle", negative_prompt_2="a small blue square", **sizes)
        our_kw = dict(target_prompt_2="a big red circle", source_prompt_2="a small blue square", **sizes)
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    if case == "batch-lists":  # two images, one prompt each
        n, src, tgt = 2, ["a blue square", "a green triangle"], ["a red circle", "a red square"]
        image = [image, torch.rand(3, h, w, generator=torch.Generator().manual_seed(1))]

    seen_ref, hook = _capture(ref.unet)
    ref(
        tgt,
        negative_prompt=src,
        height=h,
        width=w,
        num_inference_steps=1,
        guidance_scale=5.0,
        output_type="latent",
        **ref_kw,
    )
    hook.remove()
    seen_ours, hook = _capture(ours.unet)
    ours(image, src, tgt, num_inference_steps=2, output_type="latent", **our_kw)
    hook.remove()

    a = seen_ref[0]
    assert a["batch"] == 2 * n and a["encoder_hidden_states"].shape[-1] == 16 + 24  # [negative; positive]
    for b in seen_ours:  # every LSB step: [source; target] with the same conditioning
        assert b["batch"] == 2 * n
        for key in ("encoder_hidden_states", "text_embeds", "time_ids"):
            assert b[key].shape == a[key].shape, key
            diff = float((b[key] - a[key]).abs().max())
            MAX_DIFFS[f"{case}/{key}"] = max(MAX_DIFFS.get(f"{case}/{key}", 0.0), diff)
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)
    print("max abs diffs vs StableDiffusionXLPipeline:", json.dumps(MAX_DIFFS))


def test_conditioning_test_can_fail():
    """The comparison above sees a change of a single micro-conditioning number."""
    ref, ours = _with_reference(lsb.LatentSchrodingerBridgeXLPipeline)
    seen_ref, hook = _capture(ref.unet)
    ref(
        "a red circle",
        negative_prompt="a blue square",
        height=64,
        width=64,
        num_inference_steps=1,
        output_type="latent",
    )
    hook.remove()
    seen_ours, hook = _capture(ours.unet)
    ours(
        torch.rand(3, 64, 64),
        "a blue square",
        "a red circle",
        num_inference_steps=2,
        output_type="latent",
        crops_coords_top_left=(0, 8),
    )
    hook.remove()
    assert not torch.equal(seen_ours[0]["time_ids"], seen_ref[0]["time_ids"])
    torch.testing.assert_close(seen_ours[0]["encoder_hidden_states"], seen_ref[0]["encoder_hidden_states"])


def test_same_prompt_tiny_tau_returns_the_vae_round_trip():
    """source == target, tau 1e-4, t0 0.01: no drift (both predictors agree), sigma_t <= 5e-3, so the output is the
    decoded start state (1 - t0) x_src: the VAE round trip up to LSB's 1 % start shrink (the paper omits t0 x_1)."""
    pipe = _pipe()
    worst_rt = worst_shrunk = 0.0
    for i in range(3):
        image = _img(i)
        out = pipe(
            image,
            "a circle",
            "a circle",
            num_inference_steps=4,
            tau=1e-4,
            t0=0.01,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
        ).images
        with torch.no_grad():
            x_src = pipe.encode_image(pipe.preprocess_images(image))
            round_trip = pipe.decode_latents(x_src, output_type="pt")
            shrunk = pipe.decode_latents((1 - 0.01) * x_src, output_type="pt")
        worst_rt = max(worst_rt, float((out - round_trip).abs().max()))
        worst_shrunk = max(worst_shrunk, float((out - shrunk).abs().max()))
        assert float((out - round_trip).abs().mean()) < 2e-3
    print(f"round trip: max abs diff {worst_rt:.4f} to the VAE round trip, {worst_shrunk:.4f} to decode(0.99 x_src)")
    assert worst_shrunk < 1.5e-2 and worst_rt < 2.5e-2
    # and a real translation moves away from it (the test can fail)
    moved = pipe(
        _img(0),
        "a circle",
        "a square",
        num_inference_steps=4,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert (
        float((moved - pipe.decode_latents(pipe.encode_image(pipe.preprocess_images(_img(0))), "pt")).abs().max())
        > 5e-2
    )


def test_nfe_batched_calls_determinism_and_v_prediction():
    pipe = _pipe()
    assert isinstance(pipe.scheduler, lsb.LSBScheduler)
    seen, hook = _capture(pipe.unet)
    kw = dict(num_inference_steps=3, output_type="pt")
    a = pipe([_img(0), _img(1)], "a circle", "a square", generator=torch.Generator().manual_seed(3), **kw)
    hook.remove()
    assert a.nfe == 3 and [s["batch"] for s in seen] == [4, 4, 4]
    b = pipe([_img(0), _img(1)], "a circle", "a square", generator=torch.Generator().manual_seed(3), **kw)
    c = pipe([_img(0), _img(1)], "a circle", "a square", generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    v = _pipe("v_prediction")
    assert v.scheduler.config.prediction_type == "v_prediction"
    out = v(_img(), "a circle", "a square", num_inference_steps=2, output_type="np", return_trajectory=True)
    assert np.isfinite(out.images).all() and len(out.trajectory) == 2


def test_prompt_embeds_with_pooled_equal_prompts_and_callback():
    from lsb.prompts.encoding_sdxl import encode_text_sdxl

    pipe = _pipe()
    src, src_pooled = encode_text_sdxl(pipe, "a circle", device="cpu")
    tgt, tgt_pooled = encode_text_sdxl(pipe, "a square", device="cpu")
    seen = []

    def cb(p, i, t, tensors):
        seen.append((i, sorted(tensors)))
        return {}

    kw = dict(num_inference_steps=2, output_type="latent")
    a = pipe(
        _img(),
        "a circle",
        "a square",
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=cb,
        callback_on_step_end_tensor_inputs=["latents", "add_time_ids"],
        **kw,
    ).images
    b = pipe(
        _img(),
        source_prompt_embeds=src,
        target_prompt_embeds=tgt,
        source_pooled_prompt_embeds=src_pooled,
        target_pooled_prompt_embeds=tgt_pooled,
        generator=torch.Generator().manual_seed(0),
        **kw,
    ).images
    torch.testing.assert_close(a, b)
    assert seen == [(0, ["add_time_ids", "latents"]), (1, ["add_time_ids", "latents"])]


def test_force_upcast_vae_runs_in_float32_and_returns_to_float16():
    for force_upcast, want in ((True, torch.float32), (False, torch.float16)):
        pipe = _pipe(force_upcast=force_upcast)
        pipe.vae.to(torch.float16)
        dtypes = []
        hook = pipe.vae.decoder.register_forward_pre_hook(lambda m, a, dtypes=dtypes: dtypes.append(a[0].dtype))
        out = pipe(_img(), "a circle", "a square", num_inference_steps=2, output_type="np")
        hook.remove()
        assert dtypes == [want] and pipe.vae.dtype == torch.float16
        assert np.isfinite(out.images).all()


def test_bad_input_refused_before_unet_compute(tiny_sdxl_dir, tiny_sd_dir):
    # folders of the other family: refused before any weights load, naming the pipeline to use
    with pytest.raises(ValueError, match="SDXL folder.*LatentSchrodingerBridgeXLPipeline"):
        lsb.LatentSchrodingerBridgePipeline.from_pretrained(tiny_sdxl_dir)
    with pytest.raises(ValueError, match="SDXL folder.*DDIBXLPipeline"):
        lsb.DDIBPipeline.from_pretrained(tiny_sdxl_dir)
    for cls in (lsb.LatentSchrodingerBridgeXLPipeline, lsb.DDIBXLPipeline):
        with pytest.raises(ValueError, match="SD 1.x/2.x folder.*LatentSchrodingerBridgePipeline"):
            cls.from_pretrained(tiny_sd_dir)
    # components of the other family (e.g. built by hand, or a Hub id): refused in __init__
    comps = tiny_sdxl_components()
    sd_like = {k: comps[k] for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    with pytest.raises(ValueError, match="SDXL UNet.*LatentSchrodingerBridgeXLPipeline"):
        lsb.LatentSchrodingerBridgePipeline(**sd_like)
    with pytest.raises(ValueError, match="SDXL UNet"):
        lsb.DDIBPipeline(**sd_like)
    with pytest.raises(ValueError, match="missing: text_encoder_2, tokenizer_2"):
        lsb.LatentSchrodingerBridgeXLPipeline(**{**comps, "text_encoder_2": None, "tokenizer_2": None})
    with pytest.raises(ValueError, match="without SDXL's added conditioning"):
        lsb.LatentSchrodingerBridgeXLPipeline(**{**comps, "unet": _sd_unet()})

    pipe = _pipe()
    calls, hook = _capture(pipe.unet)
    args = dict(source_prompt="a circle", target_prompt="a square", num_inference_steps=2)
    with pytest.raises(ImageInputError, match="multiple of 8"):
        pipe(torch.rand(3, 60, 64), **args)
    with pytest.raises(ValueError, match="source_pooled_prompt_embeds"):
        pipe(_img(), source_prompt_embeds=torch.zeros(1, 24, 40), target_prompt="a square", num_inference_steps=2)
    with pytest.raises(UnknownTokenError, match="<nope>"):
        pipe(_img(), "a circle", "a <nope>", num_inference_steps=2)
    with pytest.raises(UnknownTokenError, match="tokenizer_2"):
        pipe(_img(), "a circle", "a square", target_prompt_2="a <nope>", num_inference_steps=2)
    with pytest.raises(ValueError, match="original_size"):
        pipe(_img(), original_size=(64,), **args)
    with pytest.raises(ValueError, match="t0"):
        pipe(_img(), t0=1.5, **args)
    assert calls == []


def test_from_pretrained_save_roundtrip_and_custom_pipeline(tiny_sdxl_dir, tmp_path):
    from diffusers import DiffusionPipeline

    pipe = lsb.LatentSchrodingerBridgeXLPipeline.from_pretrained(tiny_sdxl_dir)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=2, output_type="pt")
    a = pipe(_img(), "a circle", "a square", generator=torch.Generator().manual_seed(0), **kw).images
    pipe.save_pretrained(tmp_path / "xl")
    index = json.loads((tmp_path / "xl" / "model_index.json").read_text())
    assert index["scheduler"][1] == "LSBScheduler" and index["force_zeros_for_empty_prompt"] is True
    again = lsb.LatentSchrodingerBridgeXLPipeline.from_pretrained(tmp_path / "xl")
    again.set_progress_bar_config(disable=True)
    assert torch.equal(
        a, again(_img(), "a circle", "a square", generator=torch.Generator().manual_seed(0), **kw).images
    )
    # a folder's lsb_defaults.json sets the unset call arguments, as for the SD pipeline
    from lsb.io.settings import TranslationDefaults, write_translation_defaults

    write_translation_defaults(tmp_path / "xl", TranslationDefaults(num_inference_steps=3, tau=0.5, t0=0.05))
    tuned = lsb.LatentSchrodingerBridgeXLPipeline.from_pretrained(tmp_path / "xl")
    tuned.set_progress_bar_config(disable=True)
    res = tuned(_img(), "a circle", "a square", output_type="latent", return_trajectory=True)
    assert res.nfe == 3 and abs(res.trajectory[0]["t"] - 0.05) < 1e-9
    custom = DiffusionPipeline.from_pretrained(
        tiny_sdxl_dir, custom_pipeline=lsb.pipeline_dir("lsb_xl"), trust_remote_code=True
    )
    assert type(custom).__name__ == "LatentSchrodingerBridgeXLPipeline"
    custom.set_progress_bar_config(disable=True)
    assert torch.equal(
        a, custom(_img(), "a circle", "a square", generator=torch.Generator().manual_seed(0), **kw).images
    )


@pytest.mark.slow
@pytest.mark.skipif(not (CONFIGS / "sdxl").is_dir(), reason=f"SDXL configs not found at {CONFIGS}")
def test_lsb_xl_on_real_sdxl_architecture():
    """The published SDXL base architecture (2567M-parameter UNet, both CLIP encoders), random weights in bfloat16,
    one translation of a 64 x 64 image (latents 8 x 8) at NFE 2."""
    comps = real_sdxl_components(CONFIGS, dtype=torch.bfloat16)
    try:
        n_unet = sum(p.numel() for p in comps["unet"].parameters())
        assert abs(n_unet / 1e6 - 2567.46) < 0.5
        pipe = lsb.LatentSchrodingerBridgeXLPipeline(**comps)
        pipe.set_progress_bar_config(disable=True)
        assert pipe.vae_scale_factor == 8 and pipe.vae.config.force_upcast
        seen, hook = _capture(pipe.unet)
        with torch.inference_mode():
            out = pipe(
                torch.rand(3, 64, 64),
                "a circle",
                "a square",
                num_inference_steps=2,
                guidance_scale=3.0,
                output_type="pt",
                generator=torch.Generator().manual_seed(0),
            )
        hook.remove()
        assert out.images.shape == (1, 3, 64, 64) and torch.isfinite(out.images).all()
        assert [s["batch"] for s in seen] == [2, 2]
        assert seen[0]["encoder_hidden_states"].shape == (2, 77, 2048)
        assert seen[0]["text_embeds"].shape == (2, 1280)
        assert seen[0]["time_ids"].tolist() == [[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2
    finally:
        del comps
        gc.collect()


def test_ddib_xl_conditioning_matches_diffusers_and_nfe():
    """DDIB on SDXL: NFE // 2 inversion calls under the null condition (SDXL's zeroed embeddings, as
    force_zeros_for_empty_prompt makes diffusers use), then CFG calls on [null; target] equal to what
    StableDiffusionXLPipeline passes for prompt=target without a negative prompt."""
    ref, ddib = _with_reference(lsb.DDIBXLPipeline)
    seen_ref, hook = _capture(ref.unet)
    ref("a red circle", height=64, width=64, num_inference_steps=1, guidance_scale=5.0, output_type="latent")
    hook.remove()
    seen, hook = _capture(ddib.unet)
    phases = []
    out = ddib(
        _img(),
        "a blue square",
        "a red circle",
        num_inference_steps=5,
        guidance_scale=5.0,
        output_type="np",
        callback_on_step_end=lambda p, i, t, k: phases.append(p.phase) or {},
    )
    hook.remove()
    assert out.nfe == 5 and phases == ["inversion"] * 2 + ["sampling"] * 3 and ddib.phase is None
    assert [s["batch"] for s in seen] == [1, 1, 2, 2, 2]
    assert float(seen[0]["encoder_hidden_states"].abs().max()) == 0.0  # null = zeros (force_zeros_for_empty_prompt)
    for key in ("encoder_hidden_states", "text_embeds", "time_ids"):
        torch.testing.assert_close(seen[2][key], seen_ref[0][key], rtol=0, atol=1e-6)
    assert out.inverted_latents.shape == (1, 4, 8, 8) and np.isfinite(out.images).all()
    # inversion under the source prompt (Su et al.'s DDIB): conditioned, batch 1
    seen, hook = _capture(ddib.unet)
    ddib(
        _img(),
        "a blue square",
        "a red circle",
        num_inference_steps=4,
        inversion_guidance_scale=1.0,
        output_type="latent",
    )
    hook.remove()
    assert float(seen[0]["encoder_hidden_states"].abs().max()) > 0


def test_sdedit_xl_through_stock_img2img(tiny_sdxl_dir):
    from lsb.helpers.sdedit import sdedit_schedule, sdedit_start_timestep, sdedit_translate
    from lsb.surfaces.translators import load_translator

    pipe = load_translator("sdedit", str(tiny_sdxl_dir), device="cpu")
    assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
    seen, hook = _capture(pipe.unet)
    kw = dict(nfe=4, t0=0.2, tau=5.29, guidance_scale=3.0, output_type="np")
    a, nfe = sdedit_translate(pipe, [_img()], "a circle", "a square", generator=torch.Generator().manual_seed(0), **kw)
    hook.remove()
    b, _ = sdedit_translate(pipe, [_img()], "a circle", "a square", generator=torch.Generator().manual_seed(0), **kw)
    assert nfe == 4 and len(seen) == 4 and np.array_equal(a, b)
    assert seen[0]["text_embeds"].shape == (2, 8) and seen[0]["time_ids"][0].tolist() == [64, 64, 0, 0, 64, 64]
    start = sdedit_start_timestep(0.2, 5.29, pipe.scheduler.alphas_cumprod)
    assert sdedit_schedule(4, start, pipe.scheduler)[0] > 4  # strength < 1: starts at LSB's SNR, not pure noise


def test_cli_translate_detects_sdxl_for_every_method(tiny_sdxl_dir, tmp_path):
    from PIL import Image

    from lsb.surfaces.cli import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(2):
        _img(i).save(inputs / f"c{i}.png")
    for method in ("lsb", "sdedit", "ddib"):
        out = tmp_path / f"out-{method}"
        argv = [
            "translate",
            str(inputs),
            "--source",
            "a circle",
            "--target",
            "a square",
            "--model",
            str(tiny_sdxl_dir),
            "--method",
            method,
            "--nfe",
            "2",
            "-o",
            str(out),
        ]
        assert main(argv) == 0
        assert sorted(p.name for p in out.glob("c*.png")) == ["c0.png", "c1.png"]
        again = tmp_path / f"again-{method}"
        assert main(argv[:-1] + [str(again)]) == 0
        assert Image.open(out / "c0.png").tobytes() == Image.open(again / "c0.png").tobytes()


FRESH_EXPORT = """
import json, sys
import numpy as np, torch
from PIL import Image
from diffusers import DiffusionPipeline
torch.set_num_threads(1)
folder, image, out, seed = sys.argv[1:5]
pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
call = json.load(open(folder + "/lsb_translator.json"))["call"]
res = pipe(Image.open(image).convert("RGB"), generator=torch.Generator().manual_seed(int(seed)), output_type="np",
           **call)
np.save(out, res.images)
print(json.dumps({"pipeline": type(pipe).__name__, "module": type(pipe).__module__, "nfe": res.nfe}))
"""


def test_export_sdxl_translator_round_trip_in_a_fresh_process(tiny_sdxl_dir, tmp_path):
    """`lsb export --model <sdxl>`: a folder a fresh process loads with stock diffusers (trust_remote_code) and that
    reproduces the in-process translation for the same seed; lsb itself loads it without running its code."""
    import os
    import subprocess
    import sys

    from lsb.surfaces.cli import main
    from lsb.surfaces.translators import load_translator

    out = tmp_path / "export"
    argv = ["export", "--model", str(tiny_sdxl_dir), "--source", "a circle", "--target", "a square", "--nfe", "2"]
    assert main([*argv, "--guidance", "2.5", "--tau", "4.0", "--t0", "0.3", "-o", str(out)]) == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "LatentSchrodingerBridgeXLPipeline"]
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    call = json.loads((out / "lsb_translator.json").read_text())["call"]
    _img().save(tmp_path / "in.png")
    ref_pipe = lsb.LatentSchrodingerBridgeXLPipeline.from_pretrained(tiny_sdxl_dir)
    ref_pipe.set_progress_bar_config(disable=True)
    ref = ref_pipe(_img(), generator=torch.Generator().manual_seed(3), output_type="np", **call).images
    (tmp_path / "fresh.py").write_text(FRESH_EXPORT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, str(tmp_path / "fresh.py"), str(out), str(tmp_path / "in.png"), str(tmp_path / "o.npy"), "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["pipeline"] == "LatentSchrodingerBridgeXLPipeline" and rep["module"].startswith("diffusers_modules")
    assert rep["nfe"] == 2
    got = np.load(tmp_path / "o.npy")
    print("export round trip max abs diff", float(np.abs(got - ref).max()))
    assert np.array_equal(got, ref)
    # lsb loads the export with its installed classes (no code from the folder runs)
    pipe = load_translator("lsb", str(out), device="cpu")
    assert type(pipe).__module__ == "lsb_pipelines.lsb_xl.pipeline"
    again = pipe(_img(), generator=torch.Generator().manual_seed(3), output_type="np", **call).images
    assert np.array_equal(again, ref)
