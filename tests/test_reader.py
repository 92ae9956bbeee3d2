"""The reader (lsb/metrics/reader.py): pictures of the shapes world back into scene attributes."""

import math

import numpy as np
import pytest
from PIL import Image

from lsb.data.degradations import blur, jpeg
from lsb.data.shapes import BACKGROUNDS, COLOURS, Scene, object_mask, render, render_array, scenes
from lsb.metrics import Reading, attribute_accuracy, read_batch, read_scene, translation_success
from lsb.metrics.reader import centre_error, matches

CLEAN = scenes("test", 300)
ROBUST = CLEAN[:150]


def _compose(*scenes_, background="white"):
    """Several objects painted over one background (later ones on top)."""
    img = np.broadcast_to(np.asarray(BACKGROUNDS[background], float), (64, 64, 3)).copy()
    for s in scenes_:
        a = object_mask(s)[..., None]
        img = a * np.asarray(COLOURS[s.colour], float) + (1 - a) * img
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# clean renders are read back exactly


@pytest.fixture(scope="module")
def clean_readings():
    return read_batch([render(s) for s in CLEAN])


def test_clean_renders_read_back_exactly(clean_readings):
    wrong = [
        (s, r)
        for s, r in zip(CLEAN, clean_readings)
        if (r.shape, r.colour, r.background) != (s.shape, s.colour, s.background)
    ]
    assert not wrong, wrong[:3]
    assert all(r.clean for r in clean_readings), [r.reason for r in clean_readings if not r.clean][:3]
    errs = np.array([centre_error(r, s) for r, s in zip(clean_readings, CLEAN)])
    size_errs = np.array([abs(r.size - s.size) for r, s in zip(clean_readings, CLEAN)])
    assert errs.max() < 1.0, errs.max()
    assert size_errs.max() < 1.5, size_errs.max()
    # and in fact to a small fraction of a pixel
    assert errs.mean() < 0.1 and size_errs.mean() < 0.2


def test_clean_readings_have_confident_shapes(clean_readings):
    assert min(r.shape_iou for r in clean_readings) > 0.95
    assert min(r.shape_margin for r in clean_readings) > 0.1
    assert max(r.colour_distance for r in clean_readings) < 5
    assert max(r.background_distance for r in clean_readings) < 1e-9
    assert all(r.n_regions == 1 for r in clean_readings)


def test_attribute_accuracy_on_clean(clean_readings):
    acc = attribute_accuracy(clean_readings, CLEAN)
    assert acc["shape"] == acc["colour"] == acc["background"] == acc["all"] == 1.0
    assert acc["centre_error"] < 0.1
    assert acc["size_ratio"] == pytest.approx(1.0, abs=0.01)
    assert acc["clean"] == 1.0 and acc["n"] == 300


# ---------------------------------------------------------------------------------------------
# robustness


def _noisy(s, rng, std=10.0):
    return np.clip(np.rint(render_array(s) + rng.normal(0, std, (64, 64, 3))), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["noise", "blur", "jpeg"])
def test_reader_tolerates_degradations(name):
    rng = np.random.default_rng(0)
    make = {
        "noise": lambda s: _noisy(s, rng),  # Gaussian noise, std 10 of 255
        "blur": lambda s: blur(render(s), sigma=1.0),  # Gaussian blur, sigma 1 px
        "jpeg": lambda s: jpeg(render(s), quality=30),
    }[name]
    readings = read_batch([make(s) for s in ROBUST])
    acc = attribute_accuracy(readings, ROBUST)
    assert acc["all"] >= 0.97, acc
    centred = np.mean([centre_error(r, s) <= 1.5 for r, s in zip(readings, ROBUST)])
    assert centred >= 0.97, centred
    assert acc["size_ratio"] == pytest.approx(1.0, abs=0.03)


# ---------------------------------------------------------------------------------------------
# what is not a clean scene


@pytest.mark.parametrize("background", sorted(BACKGROUNDS))
def test_blank_image_is_not_clean(background):
    r = read_scene(Image.new("RGB", (64, 64), BACKGROUNDS[background]))
    assert not r.clean and r.shape is None and r.colour is None
    assert r.background == background and "no object" in r.reason
    assert math.isnan(r.cx) and math.isnan(r.size)


def test_two_objects_read_the_largest():
    big = Scene("square", "blue", "white", 28.0, 20.0, 21.0)
    small = Scene("circle", "red", "white", 20.0, 48.0, 47.0)
    r = read_scene(_compose(big, small))
    assert (r.shape, r.colour, r.background) == ("square", "blue", "white")
    assert centre_error(r, big) < 1.0 and abs(r.size - 28.0) < 1.0
    assert r.n_regions == 2 and not r.clean and "2 significant" in r.reason


def test_noise_image_is_not_clean():
    rng = np.random.default_rng(1)
    r = read_scene(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert not r.clean and r.reason


def test_wrong_colour_is_flagged():
    s = Scene("circle", "red", "black", 30.0, 32.0, 32.0)
    arr = render_array(s).copy()
    arr[object_mask(s) > 0.99] = (120, 200, 255)  # a colour the world does not have
    r = read_scene(arr)
    assert not r.clean and "colour" in r.reason and r.colour_distance > 40


def test_ellipse_is_not_a_clean_circle():
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    inside = ((xx - 32) / 18) ** 2 + ((yy - 32) / 9) ** 2 <= 1
    arr = np.where(inside[..., None], COLOURS["green"], BACKGROUNDS["gray"]).astype(np.uint8)
    r = read_scene(arr)
    assert r.shape == "circle" and not r.clean and "tall" in r.reason


def test_object_cut_by_the_border_is_not_clean():
    s = Scene("square", "yellow", "black", 30.0, 32.0, 32.0)
    arr = np.roll(render_array(s), 30, axis=1)  # wraps the square over the right edge
    assert not read_scene(arr).clean


def test_soft_cornered_square_is_still_a_square():
    # the case a fill-ratio threshold gets wrong: rounded corners (radius 5 px)
    yy, xx = np.mgrid[0:256, 0:256] / 4 + 0.125
    qx, qy = np.maximum(np.abs(xx - 32) - 9, 0), np.maximum(np.abs(yy - 32) - 9, 0)
    inside = (qx**2 + qy**2 <= 25).astype(float).reshape(64, 4, 64, 4).mean(axis=(1, 3))[..., None]
    arr = np.rint(inside * COLOURS["orange"] + (1 - inside) * np.asarray(BACKGROUNDS["white"])).astype(np.uint8)
    r = read_scene(arr)
    assert r.shape == "square" and r.clean and abs(r.cx - 32) < 0.2 and abs(r.cy - 32) < 0.2


# ---------------------------------------------------------------------------------------------
# inputs


def test_input_formats_agree():
    s = CLEAN[7]
    arr = render_array(s)
    ref = read_scene(render(s))
    f = arr.astype(np.float32) / 255
    variants = [arr, f, np.moveaxis(f, -1, 0)]
    torch = pytest.importorskip("torch")
    variants += [torch.from_numpy(np.moveaxis(f, -1, 0).copy()), torch.from_numpy(arr.copy())]
    for v in variants:
        r = read_scene(v)
        assert (r.shape, r.colour, r.background) == (ref.shape, ref.colour, ref.background)
        assert abs(r.cx - ref.cx) < 1e-3 and abs(r.cy - ref.cy) < 1e-3 and abs(r.size - ref.size) < 1e-3


def test_batches():
    ss = CLEAN[:4]
    arr = np.stack([render_array(s) for s in ss])
    for batch in (arr, np.moveaxis(arr, -1, 1).astype(np.float32) / 255, [render(s) for s in ss]):
        rs = read_batch(batch)
        assert [r.shape for r in rs] == [s.shape for s in ss]
    with pytest.raises(ValueError, match="4-D"):
        read_batch(arr[0])


@pytest.mark.parametrize(
    "bad,exc,needle",
    [
        (np.zeros((64, 64), np.uint8), ValueError, "shape"),
        (np.zeros((64, 64, 4), np.uint8), ValueError, "channels"),
        (np.full((64, 64, 3), 2.0), ValueError, r"\[0, 1\]"),
        (np.full((64, 64, 3), -0.5, np.float32), ValueError, r"\[-1, 1\]"),
        (np.zeros((64, 64, 3), np.int64), ValueError, "dtype"),
        (Image.new("L", (64, 64)), ValueError, "'L'"),
        ([[1, 2, 3]], TypeError, "list"),
        (np.zeros((5, 5, 3), np.uint8), ValueError, "too small"),
    ],
)
def test_bad_inputs(bad, exc, needle):
    with pytest.raises(exc, match=needle):
        read_scene(bad)


def test_larger_pictures_scale():
    s = Scene("triangle", "purple", "gray", 26.0, 30.0, 34.0)
    r = read_scene(render(s).resize((128, 128), Image.Resampling.NEAREST))
    assert (r.shape, r.colour, r.background) == ("triangle", "purple", "gray") and r.clean
    assert abs(r.cx - 60) < 1.0 and abs(r.cy - 68) < 1.0 and abs(r.size - 52) < 1.5


# ---------------------------------------------------------------------------------------------
# comparisons


def test_matches_and_accuracy_count_mistakes():
    ss = CLEAN[:4]
    rs = read_batch([render(s) for s in ss])
    assert all(matches(r, s) for r, s in zip(rs, ss))
    other = ss[0].replace(colour="green" if ss[0].colour != "green" else "red")
    assert not matches(rs[0], other)
    assert matches(rs[0], other, attrs=("shape", "background"))
    moved = ss[0].replace(cx=ss[0].cx + 7 if ss[0].cx + 7 <= 64 - ss[0].size / 2 - 4 else ss[0].cx - 7)
    assert not matches(rs[0], moved) and matches(rs[0], moved, centre_tol=None)
    acc = attribute_accuracy(rs, [other, *ss[1:]])
    assert acc["colour"] == 0.75 and acc["all"] == 0.75 and acc["shape"] == 1.0
    with pytest.raises(ValueError, match="readings"):
        attribute_accuracy(rs, ss[:3])
    with pytest.raises(ValueError, match="size"):
        matches(rs[0], ss[0], attrs=("size",))


def test_translation_success():
    src = Scene("circle", "orange", "black", 30.0, 30.0, 33.0)
    ideal = read_scene(render(src.replace(shape="triangle")))
    assert translation_success(ideal, src, "triangle")
    assert not translation_success(read_scene(render(src)), src, "triangle")  # untranslated
    assert not translation_success(read_scene(render(src.replace(shape="triangle", colour="red"))), src, "triangle")
    assert not translation_success(
        read_scene(render(src.replace(shape="triangle", background="white"))), src, "triangle"
    )
    assert not translation_success(read_scene(render(src.replace(shape="triangle", cx=38.0))), src, "triangle")
    assert translation_success(read_scene(render(src.replace(shape="triangle", cx=34.0))), src, "triangle")
    assert not translation_success(read_scene(Image.new("RGB", (64, 64), BACKGROUNDS["black"])), src, "triangle")
    with pytest.raises(ValueError, match="hexagon"):
        translation_success(ideal, src, "hexagon")


def test_reading_is_a_dataclass_with_a_dict():
    r = read_scene(render(CLEAN[0]))
    assert isinstance(r, Reading)
    d = r.to_dict()
    assert d["shape"] == CLEAN[0].shape and set(d["ious"]) == {"circle", "square", "triangle"}
