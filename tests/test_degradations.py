"""The paired degradations of WORLD.md (lsb/data/degradations.py)."""

import numpy as np
import pytest
from PIL import Image

from lsb.data.degradations import (
    DEGRADATIONS,
    blur,
    degrade,
    inpaint_box,
    inpaint_mask,
    jpeg,
    sr4,
)
from lsb.data.shapes import Scene, render, scenes


@pytest.fixture(scope="module")
def images():
    return [render(s) for s in scenes("test", 6)]


def _a(img):
    return np.asarray(img).astype(np.int16)


def test_registry_names():
    assert set(DEGRADATIONS) == {"inpaint", "sr4", "deblur", "jpeg"}
    assert DEGRADATIONS["deblur"] is blur


@pytest.mark.parametrize("task", sorted(DEGRADATIONS))
def test_each_degradation_keeps_size_and_mode_and_leaves_input_alone(task, images):
    img = images[0]
    before = _a(img).copy()
    out = degrade(img, task)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == img.size
    assert np.array_equal(_a(img), before)
    assert not np.array_equal(_a(out), before)  # it did something
    assert np.array_equal(_a(degrade(img, task)), _a(out))  # deterministic


def test_inpaint_mask_is_the_centred_24_box():
    m = inpaint_mask()
    assert m.shape == (64, 64) and m.dtype == bool and m.sum() == 24 * 24
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (20, 43, 20, 43)
    assert inpaint_mask(32, box=8).sum() == 64 and inpaint_mask((32, 48), box=8)[12:20, 20:28].all()


def test_inpaint_box_fills_the_hole_with_mid_gray_only(images):
    img = images[1]
    out, m = _a(inpaint_box(img)), inpaint_mask()
    assert np.all(out[m] == 128)
    assert np.array_equal(out[~m], _a(img)[~m])
    custom = _a(inpaint_box(img, box=10, fill=(1, 2, 3)))
    assert np.all(custom[inpaint_mask(64, 10)] == [1, 2, 3])


def test_inpaint_bad_arguments():
    img = render(scenes("test", 1)[0])
    with pytest.raises(ValueError, match="box"):
        inpaint_box(img, box=80)
    with pytest.raises(ValueError, match="fill"):
        inpaint_box(img, fill=(300, 0, 0))


def test_sr4_is_box_down_then_bicubic_up(images):
    img = images[2]
    out = sr4(img)
    # the 16 x 16 image it is made from is the 4 x 4 block mean (up to rounding)
    blocks = _a(img).reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
    small = _a(img.reduce(4))
    assert np.abs(small - blocks).max() <= 0.5 + 1e-9
    assert np.array_equal(
        _a(out), _a(Image.fromarray(small.astype(np.uint8)).resize((64, 64), Image.Resampling.BICUBIC))
    )
    # a 4x low-pass: downsampling the output again lands near the same 16 x 16 image
    assert np.abs(_a(out.reduce(4)) - small).mean() < 6
    # and fine detail is gone: the output is smoother than the input
    assert np.abs(np.diff(_a(out), axis=1)).max() < np.abs(np.diff(_a(img), axis=1)).max()


def test_sr4_needs_a_multiple_of_four():
    with pytest.raises(ValueError, match="divisible"):
        sr4(Image.new("RGB", (30, 30)))
    assert sr4(Image.new("RGB", (32, 32), (9, 9, 9))).size == (32, 32)


def test_blur_has_sigma_2():
    # a vertical step edge: the blurred profile is a Gaussian CDF whose derivative has variance sigma^2
    arr = np.zeros((64, 64, 3), dtype=np.uint8)
    arr[:, 32:] = 200
    out = _a(blur(Image.fromarray(arr)))[32, :, 0].astype(float)
    d = np.diff(out)
    x = np.arange(d.size) + 1.0  # the step sits between columns 31 and 32, i.e. at diff index 31
    w = d / d.sum()
    mean = (w * x).sum()
    var = (w * (x - mean) ** 2).sum()
    assert abs(mean - 32) < 0.5
    assert var == pytest.approx(4.0, rel=0.2)
    # sigma 1 is narrower
    out1 = _a(blur(Image.fromarray(arr), sigma=1.0))[32, :, 0].astype(float)
    d1 = np.diff(out1)
    w1 = d1 / d1.sum()
    assert (w1 * (x - (w1 * x).sum()) ** 2).sum() == pytest.approx(1.0, rel=0.3)


def test_blur_keeps_flat_images_and_sigma_zero_is_identity(images):
    flat = Image.new("RGB", (64, 64), (40, 80, 220))
    assert np.array_equal(_a(blur(flat)), _a(flat))
    assert np.array_equal(_a(blur(images[0], sigma=0)), _a(images[0]))
    with pytest.raises(ValueError, match="sigma"):
        blur(images[0], sigma=-1)


def test_jpeg_quality_orders_the_error(images):
    img = images[3]
    err10 = np.abs(_a(jpeg(img)) - _a(img)).mean()
    err30 = np.abs(_a(jpeg(img, quality=30)) - _a(img)).mean()
    err95 = np.abs(_a(jpeg(img, quality=95)) - _a(img)).mean()
    assert err10 > err30 > err95
    assert 0.5 < err10 < 20  # visibly degraded, still the same picture
    with pytest.raises(ValueError, match="quality"):
        jpeg(img, quality=0)


def test_degrade_passes_keyword_arguments(images):
    img = images[4]
    assert np.array_equal(_a(degrade(img, "jpeg", quality=30)), _a(jpeg(img, quality=30)))
    assert np.array_equal(_a(degrade(img, "deblur", sigma=1.0)), _a(blur(img, sigma=1.0)))


def test_unknown_task_names_it_and_the_valid_ones(images):
    with pytest.raises(ValueError) as info:
        degrade(images[0], "denoise")
    msg = str(info.value)
    assert "denoise" in msg and all(t in msg for t in DEGRADATIONS)


@pytest.mark.parametrize("fn", [inpaint_box, sr4, blur, jpeg])
def test_bad_inputs_are_rejected(fn):
    with pytest.raises(TypeError, match="PIL"):
        fn(np.zeros((64, 64, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="'L'"):
        fn(Image.new("L", (64, 64)))
    with pytest.raises(ValueError, match="RGBA"):
        fn(Image.new("RGBA", (64, 64)))


def test_other_sizes_work():
    img = render(Scene("square", "green", "black", 30.0, 32.0, 32.0)).resize((128, 128))
    for task in DEGRADATIONS:
        assert degrade(img, task).size == (128, 128)
