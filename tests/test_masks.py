"""Region translation (issue 23): one mask implementation, every family (SD, SDXL, SD3, FLUX) and method (LSB,
FlowEdit, SDEdit, DDIB), on tiny models of the real classes.

For every (family, method): pixels outside the mask are the input's, bit for bit; an all-white mask gives exactly
the unmasked result for the same seed; the kept latent cells end on the source latent (the blend runs inside the
trajectory, not only in the final paste); the masked region did change; an all-black mask returns the input with no
network call. Plus the feather and the bad inputs.
"""

from __future__ import annotations

import logging

import numpy as np
import PIL.Image
import pytest
import torch

import lsb
from lsb.data import shapes
from lsb.helpers.flux import pack_latents
from lsb.helpers.masks import feather_weights, prepare_region
from lsb.io.images import ImageInputError
from lsb.io.latents import encode_latents
from lsb.models.random_flow import tiny_flux_components, tiny_sd3_components
from lsb.models.sdxl import tiny_sdxl_components
from tests.conftest import tiny_components

SIZE, CUT = 64, 32  # the mask: white (may change) on columns < CUT


def _eval(components: dict) -> dict:
    for c in components.values():
        if isinstance(c, torch.nn.Module):
            c.eval()
    return components


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _lsb(cls_name, components, **extra):
    pipe = _quiet(getattr(lsb, cls_name)(**_eval(components)))

    def run(image, **kw):
        out = pipe(image, "a circle", "a square", num_inference_steps=3, guidance_scale=2.0, **extra, **kw)
        return out.images, out.nfe

    return pipe, run


def _flowedit(cls, components):
    pipe = _quiet(cls(**_eval(components)))

    def run(image, **kw):
        out = pipe(image, "a circle", "a square", num_inference_steps=4, n_max=3, max_sequence_length=16, **kw)
        return out.images, out.nfe

    return pipe, run


def _sdedit(pipe, flow: bool):
    from lsb.helpers.sdedit import as_ddim, sdedit_flow_translate, sdedit_translate

    pipe = _quiet(pipe)
    if not flow:
        as_ddim(pipe)

    def run(image, **kw):
        if flow:
            images, nfe, _ = sdedit_flow_translate(
                pipe, image, "a circle", "a square", nfe=3, t0=0.3, tau=1.0, max_sequence_length=16, **kw
            )
        else:
            images, nfe = sdedit_translate(pipe, image, "a circle", "a square", nfe=3, t0=0.3, tau=1.0, **kw)
        return images, nfe

    return pipe, run


def _ddib(cls_name, components):
    pipe = _quiet(getattr(lsb, cls_name)(**_eval(components)))

    def run(image, **kw):
        out = pipe(image, "a circle", "a square", num_inference_steps=4, guidance_scale=2.0, **kw)
        return out.images, out.nfe

    return pipe, run


def _build(case):
    from diffusers import (
        FluxImg2ImgPipeline,
        StableDiffusion3Img2ImgPipeline,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionXLImg2ImgPipeline,
    )
    from lsb_pipelines.flowedit_flux.pipeline import FlowEditFluxPipeline
    from lsb_pipelines.flowedit_sd3.pipeline import FlowEditSD3Pipeline

    family, method = case.split("-")
    if method == "lsb":
        return {
            "sd": lambda: _lsb("LatentSchrodingerBridgePipeline", tiny_components()),
            "sdxl": lambda: _lsb("LatentSchrodingerBridgeXLPipeline", tiny_sdxl_components()),
            "sd3": lambda: _lsb("LatentSchrodingerBridgeSD3Pipeline", tiny_sd3_components(0), max_sequence_length=16),
            "flux": lambda: _lsb(
                "LatentSchrodingerBridgeFluxPipeline", tiny_flux_components(0), max_sequence_length=16
            ),
        }[family]()
    if method == "flowedit":
        return _flowedit(
            FlowEditSD3Pipeline if family == "sd3" else FlowEditFluxPipeline,
            {"sd3": tiny_sd3_components, "flux": tiny_flux_components}[family](0),
        )
    if method == "sdedit":
        if family == "sd":
            sd = tiny_components()
            pipe = StableDiffusionImg2ImgPipeline(
                **sd, safety_checker=None, feature_extractor=None, requires_safety_checker=False
            )
        elif family == "sdxl":
            pipe = StableDiffusionXLImg2ImgPipeline(**_eval(tiny_sdxl_components()))
        elif family == "sd3":
            pipe = StableDiffusion3Img2ImgPipeline(**_eval(tiny_sd3_components(0)))
        else:
            pipe = FluxImg2ImgPipeline(**_eval(tiny_flux_components(0)))
        return _sdedit(pipe, flow=family in ("sd3", "flux"))
    return _ddib(
        "DDIBPipeline" if family == "sd" else "DDIBXLPipeline",
        tiny_components() if family == "sd" else tiny_sdxl_components(),
    )


CASES = [
    "sd-lsb", "sdxl-lsb", "sd3-lsb", "flux-lsb",
    "sd3-flowedit", "flux-flowedit",
    "sd-sdedit", "sdxl-sdedit", "sd3-sdedit", "flux-sdedit",
    "sd-ddib", "sdxl-ddib",
]  # fmt: skip


def _image():
    return shapes.render(shapes.scenes("test", 1)[0])


def _mask(value_left=255):
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[:, :CUT] = value_left
    return PIL.Image.fromarray(m, "L")


def _gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("case", CASES)
def test_the_mask_reaches_every_family_and_method(case):
    pipe, run = _build(case)
    img = _image()
    inp = np.asarray(img)

    masked, nfe = run(img, mask_image=_mask(), output_type="pil", generator=_gen())
    out = np.asarray(masked[0])
    assert nfe > 0
    assert np.array_equal(out[:, CUT:], inp[:, CUT:]), "pixels outside the mask must be the input's, bit for bit"
    assert not np.array_equal(out[:, :CUT], inp[:, :CUT]), "the masked region should have been translated"

    # an all-white mask: exactly the unmasked result for the same seed
    plain, _ = run(img, output_type="np", generator=_gen())
    white, _ = run(img, mask_image=np.ones((SIZE, SIZE), np.float32), output_type="np", generator=_gen())
    assert np.array_equal(plain, white)

    # the kept latent cells end on the source latent: the blend runs inside the trajectory
    latents, _ = run(img, mask_image=_mask(), output_type="latent", generator=_gen())
    x_src = encode_latents(pipe.vae, pipe.image_processor.preprocess(img))
    keep = torch.zeros_like(x_src, dtype=torch.bool)
    keep[..., CUT // 8 :] = True  # latent cells with no changeable pixel
    if latents.ndim == 3:  # FLUX img2img returns packed latents
        x_src, keep = pack_latents(x_src), pack_latents(keep.float()).bool()
    diff = (latents.float() - x_src.float()).abs()
    assert diff[keep].max().item() < 1e-4
    assert diff[~keep].max().item() > 1e-3


@pytest.mark.parametrize("case", ["sd-lsb", "sd3-flowedit", "sd-sdedit", "sd-ddib"])
def test_an_empty_mask_returns_the_input_without_a_network_call(case, caplog):
    pipe, run = _build(case)
    network = pipe.unet if hasattr(pipe, "unet") else pipe.transformer
    network.forward = lambda *a, **k: (_ for _ in ()).throw(AssertionError("network called"))
    img = _image()
    with caplog.at_level(logging.WARNING, logger="lsb.masks"):
        images, nfe = run(img, mask_image=_mask(0), output_type="pil", generator=_gen())
    assert nfe == 0 and np.array_equal(np.asarray(images[0]), np.asarray(img))
    assert sum("all black" in r.getMessage() for r in caplog.records) == 1


def test_feather_band_lies_inside_the_mask():
    m = torch.zeros(1, 1, 16, 16)
    m[..., 4:12, 4:12] = 1
    w = feather_weights(m, 2)
    assert torch.equal(w[m == 0], torch.zeros_like(w[m == 0]))  # kept pixels: weight 0, exactly
    assert w[0, 0, 8, 8] == 1  # beyond the band: the mask value
    assert 0 < w[0, 0, 8, 4] < w[0, 0, 8, 5] < 1  # a ramp inside the edge
    assert torch.equal(feather_weights(torch.ones(1, 1, 8, 8), 3), torch.ones(1, 1, 8, 8))
    assert torch.equal(feather_weights(m, 0), m)
    soft = m * 0.5
    assert feather_weights(soft, 2)[0, 0, 8, 8] == 0.5  # soft values are kept beyond the band


def test_one_mask_for_all_or_one_per_image_and_bad_masks():
    pixels = torch.zeros(2, 3, SIZE, SIZE)
    one = prepare_region(_mask(), pixels)
    assert one.mask.shape == (2, 1, SIZE, SIZE) and torch.equal(one.mask[0], one.mask[1])
    two = prepare_region([_mask(), _mask(0)], pixels)
    assert two.mask[1].max() == 0 and two.mask[0].max() == 1
    with pytest.raises(ImageInputError, match="size 32x32 does not match the image size 64x64"):
        prepare_region(np.zeros((32, 32), np.uint8), pixels)
    with pytest.raises(ImageInputError, match="unsupported type str"):
        prepare_region("mask.png", pixels)
    with pytest.raises(ImageInputError, match=r"\[0, 1\] \(white = may change, black = keep\)"):
        prepare_region(np.full((SIZE, SIZE), 2.0, np.float32), pixels)
    with pytest.raises(ImageInputError, match="3 masks for 2 images"):
        prepare_region([_mask()] * 3, pixels)
    with pytest.raises(ValueError, match="mask_feather"):
        prepare_region(_mask(), pixels, mask_feather=-1)


def test_a_method_that_cannot_take_a_mask_is_refused():
    from lsb.helpers.masks import check_mask_method

    check_mask_method("lsb", _mask())
    check_mask_method("student", None)
    with pytest.raises(ValueError, match="method 'student' cannot take a mask"):
        check_mask_method("student", _mask())


# ------------------------------------------------------------------------------------------------- lsb translate
def _cli_world(tmp_path):
    inputs, masks = tmp_path / "in", tmp_path / "masks"
    inputs.mkdir()
    masks.mkdir()
    for i, scene in enumerate(shapes.scenes("test", 3)):
        shapes.render(scene).save(inputs / f"s{i}.png")
        _mask(255 if i < 2 else 0).save(masks / f"s{i}.png")
    return inputs, masks


def test_cli_translate_with_a_folder_of_masks(tiny_sd_dir, tmp_path, capsys):
    from lsb.surfaces.cli import main
    from tests.cli_helpers import translate_argv

    inputs, masks = _cli_world(tmp_path)
    out = tmp_path / "out"
    assert main(translate_argv(inputs, model=tiny_sd_dir, out=out, nfe=2, mask=masks, mask_feather=2)) == 0
    err = capsys.readouterr().err
    assert err.count("mask is all black") == 1 and "s2.png is written unchanged" in err
    for i in range(3):
        a, b = np.asarray(PIL.Image.open(inputs / f"s{i}.png")), np.asarray(PIL.Image.open(out / f"s{i}.png"))
        assert np.array_equal(a[:, CUT:], b[:, CUT:])
        assert np.array_equal(a, b) == (i == 2)


def test_cli_mask_bad_inputs_are_one_line_before_the_model(tiny_sd_dir, tmp_path, capsys):
    from lsb.surfaces.cli import main
    from tests.cli_helpers import translate_argv

    inputs, masks = _cli_world(tmp_path)
    small = tmp_path / "small.png"
    PIL.Image.fromarray(np.full((32, 32), 255, np.uint8)).save(small)
    (tmp_path / "text.png").write_text("not a picture")
    odd = tmp_path / "odd"
    odd.mkdir()
    _mask().save(odd / "s0.png")
    _mask().save(odd / "zzz.png")
    table = [
        (dict(mask=small, size_policy="exact"), "mask " + str(small) + ": size 32x32, but its image"),
        (dict(mask=tmp_path / "text.png"), "not a picture"),
        (dict(mask=tmp_path / "nowhere"), "no such file or folder"),
        (dict(mask=odd), "do not pair up by name: no mask for " + str(inputs / "s1.png")),
        (dict(mask=odd), "no input for " + str(odd / "zzz.png")),
        (dict(mask_feather=2), "--mask-feather needs --mask"),
        (dict(mask=small, mask_feather=-1), "--mask-feather must be a finite number"),
    ]
    for opts, needle in table:
        out = tmp_path / "never"
        assert main(translate_argv(inputs, model=tiny_sd_dir, out=out, nfe=2, **opts)) == 2, opts
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("lsb: error: ") and needle in err[-1], (opts, err)
        assert not out.exists()
    # a mask of another size is resized with ONE note (not one per input)
    assert main(translate_argv(inputs, model=tiny_sd_dir, out=tmp_path / "ok", nfe=2, mask=small)) == 0
    assert capsys.readouterr().err.count("mask resized from 32x32 to its image's 64x64") == 1


# ------------------------------------------------------------------------------------------------- the demo
def test_demo_translates_the_painted_region_and_shows_the_mask(tiny_sd_dir, tmp_path):
    from lsb.surfaces.demo import Translator, editor_mask, mask_canvas

    path = tmp_path / "in.png"
    _image().resize((96, 96)).save(path)  # another size than the model's: the mask follows the resize
    canvas = mask_canvas(str(path))
    assert canvas["background"].shape == (96, 96, 3) and canvas["layers"] == []
    layer = np.zeros((96, 96, 4), np.uint8)
    layer[:, :48] = (255, 0, 255, 255)  # painted: the left half may change
    translator = Translator(str(tiny_sd_dir))
    out, side, _, status = translator(str(path), "a circle", "a square", nfe=2, mask={**canvas, "layers": [layer]})
    resized = np.asarray(PIL.Image.open(path).convert("RGB").resize((SIZE, SIZE), PIL.Image.BICUBIC))
    assert np.array_equal(np.asarray(out)[:, CUT:], resized[:, CUT:])
    assert not np.array_equal(np.asarray(out)[:, :CUT], resized[:, :CUT])
    assert side.size[0] > 3 * SIZE and "Region" in status  # input | mask | output
    assert editor_mask({**canvas, "layers": [np.zeros((96, 96, 4), np.uint8)]}, (96, 96)) is None  # nothing painted
    with pytest.raises(ImageInputError, match="the mask is 32x32 but the input image is 96x96"):
        editor_mask(np.zeros((32, 32), np.uint8), (96, 96))


def test_benchmark_masks_are_where_the_scenarios_say():
    from benchmarks.translation_region import AWAY_GAP, around_mask, away_mask, background_mask

    for scene in shapes.scenes("val", 30):
        cover = shapes.object_mask(scene) > 0
        target = "square" if scene.shape != "square" else "circle"
        around = around_mask(scene, target)
        assert (around[cover] == 255).all() and (
            around[shapes.object_mask(scene.replace(shape=target)) > 0] == 255
        ).all()
        away = away_mask(scene) == 255
        ys, xs = np.nonzero(cover)
        near = np.zeros_like(cover)
        near[
            max(0, ys.min() - AWAY_GAP) : ys.max() + 1 + AWAY_GAP, max(0, xs.min() - AWAY_GAP) : xs.max() + 1 + AWAY_GAP
        ] = True
        assert away.any() and not (away & near).any()  # the strip stays clear of the object's grown box
        background = background_mask(scene)
        assert (background[cover] == 0).all() and (background[~cover] == 255).all()


def test_cli_resize_back_keeps_the_input_files_own_pixels(tiny_sd_dir, tmp_path):
    from lsb.surfaces.cli import main
    from tests.cli_helpers import translate_argv

    inputs = tmp_path / "in"
    inputs.mkdir()
    big = np.asarray(_image().resize((96, 96), PIL.Image.BICUBIC))
    PIL.Image.fromarray(big).save(inputs / "a.png")
    mask = np.zeros((96, 96), np.uint8)
    mask[:, :48] = 255
    PIL.Image.fromarray(mask, "L").save(tmp_path / "m.png")
    out = tmp_path / "out"
    assert (
        main(translate_argv(inputs, model=tiny_sd_dir, out=out, nfe=2, mask=tmp_path / "m.png", resize_back=True)) == 0
    )
    result = np.asarray(PIL.Image.open(out / "a.png").convert("RGB"))
    assert result.shape == big.shape and np.array_equal(result[:, 48:], big[:, 48:])
