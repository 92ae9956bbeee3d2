"""The shapes-world generator (lsb/data/shapes.py) against its spec, WORLD.md."""

import math

import numpy as np
import pytest

from lsb.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    Scene,
    SceneError,
    caption,
    caption_variants,
    object_mask,
    render,
    render_array,
    scenes,
)


def _coverage(scene: Scene) -> np.ndarray:
    """The object's coverage recovered from the rendered pixels (projection on the bg -> fg line)."""
    img = render_array(scene).astype(np.float64)
    fg = np.asarray(COLOURS[scene.colour], dtype=np.float64)
    bg = np.asarray(BACKGROUNDS[scene.background], dtype=np.float64)
    d = fg - bg
    return ((img - bg) @ d) / (d @ d)


# ---------------------------------------------------------------------------------------------
# sampling


def test_scenes_are_deterministic_per_split_and_index():
    a, b = scenes("test", 8), scenes("test", 8)
    assert a == b
    # a scene is addressed by its index, independently of where the batch starts
    assert scenes("test", 3, start=5) == a[5:8]
    assert np.array_equal(render_array(a[0]), render_array(b[0]))


def test_splits_differ():
    train, val, test = scenes("train", 20), scenes("val", 20), scenes("test", 20)
    assert all(x != y for x, y in zip(train, val))
    assert all(x != y for x, y in zip(val, test))
    assert all(x != y for x, y in zip(train, test))
    assert scenes(2, 5) == test[:5]  # a split can be named by its entropy word


def test_unknown_split_is_named():
    with pytest.raises(SceneError, match="holdout"):
        scenes("holdout", 1)


def test_scenes_cover_the_world():
    many = scenes("train", 400)
    assert {s.shape for s in many} == set(SHAPES)
    assert {s.colour for s in many} == set(COLOURS)
    assert {s.background for s in many} == set(BACKGROUNDS)
    sizes = np.array([s.size for s in many])
    assert sizes.min() >= 20 and sizes.max() <= 36 and sizes.max() - sizes.min() > 14
    for s in many:
        lo, hi = s.size / 2 + 4, 64 - s.size / 2 - 4
        assert lo - 1e-9 <= s.cx <= hi + 1e-9 and lo - 1e-9 <= s.cy <= hi + 1e-9


@pytest.mark.parametrize("pin", [{"shape": "circle"}, {"colour": "blue"}, {"background": "black"}])
def test_pinned_attribute_keeps_the_other_fields(pin):
    free, pinned = scenes("val", 30), scenes("val", 30, **pin)
    ((key, value),) = pin.items()
    for f, p in zip(free, pinned):
        assert getattr(p, key) == value
        assert p == f.replace(**pin)


def test_pinned_size_keeps_attributes_and_relative_centre():
    free, pinned = scenes("val", 20), scenes("val", 20, size=30.0)
    for f, p in zip(free, pinned):
        assert (p.shape, p.colour, p.background, p.size) == (f.shape, f.colour, f.background, 30.0)
        # the centre is drawn as the same fraction of the admissible range
        u_free = (f.cx - (f.size / 2 + 4)) / (64 - f.size - 8)
        u_pin = (p.cx - 19) / (64 - 30 - 8)
        assert u_pin == pytest.approx(u_free, abs=1e-9)


def test_unknown_pinned_field_raises():
    with pytest.raises(SceneError, match="rotation"):
        scenes("val", 1, rotation=3)


# ---------------------------------------------------------------------------------------------
# validation

GOOD = dict(shape="circle", colour="red", background="white", size=28.0, cx=32.0, cy=32.0)


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("shape", "hexagon", "hexagon"),
        ("colour", "pink", "pink"),
        ("background", "plaid", "plaid"),
        ("size", 50.0, "size"),
        ("size", 19.5, "size"),
        ("size", float("nan"), "size"),
        ("cx", 10.0, "cx"),
        ("cy", 60.0, "cy"),
    ],
)
def test_invalid_scene_raises_scene_error_naming_the_problem(field, value, needle):
    with pytest.raises(SceneError, match=needle):
        Scene(**{**GOOD, field: value})


def test_scene_error_is_a_value_error():
    assert issubclass(SceneError, ValueError)


def test_centre_range_edges_are_valid():
    s = 36.0
    Scene(**{**GOOD, "size": s, "cx": s / 2 + 4, "cy": 64 - s / 2 - 4})
    with pytest.raises(SceneError, match="cx"):
        Scene(**{**GOOD, "size": s, "cx": s / 2 + 4 - 0.01})


# ---------------------------------------------------------------------------------------------
# rendering


def test_render_is_64x64_rgb_with_exact_flat_colours():
    s = Scene(**GOOD)
    img = render(s)
    assert img.size == (64, 64) and img.mode == "RGB"
    arr = np.asarray(img)
    assert tuple(arr[0, 0]) == BACKGROUNDS["white"]
    assert tuple(arr[32, 32]) == COLOURS["red"]


def test_render_is_anti_aliased():
    s = Scene(shape="circle", colour="blue", background="white", size=27.3, cx=31.6, cy=30.2)
    alpha = _coverage(s)
    edge = (alpha > 0.05) & (alpha < 0.95)
    assert edge.sum() > 20  # a disc of this size has a whole ring of partial pixels
    arr = render_array(s).astype(float)
    fg, bg = np.array(COLOURS["blue"], float), np.array(BACKGROUNDS["white"], float)
    # edge pixels lie between the background and the object colour, channel by channel
    lo, hi = np.minimum(fg, bg), np.maximum(fg, bg)
    assert np.all((arr[edge] >= lo - 0.5) & (arr[edge] <= hi + 0.5))
    assert np.any((arr[edge] > lo + 5) & (arr[edge] < hi - 5))
    # coverage in the pixels equals the box-filtered 4x mask, up to 8-bit rounding
    assert np.abs(alpha - object_mask(s)).max() < 0.01
    # partial coverages come in multiples of 1/16 (4 x 4 subpixels)
    m = object_mask(s)
    assert np.allclose(m * 16, np.rint(m * 16))


@pytest.mark.parametrize("shape,area", [("circle", math.pi / 4), ("square", 1.0), ("triangle", math.sqrt(3) / 4)])
def test_object_area_matches_the_shape(shape, area):
    s = Scene(**{**GOOD, "shape": shape, "size": 30.0, "cx": 31.3, "cy": 33.7})
    assert object_mask(s).sum() == pytest.approx(area * 30.0**2, rel=0.01)


@pytest.mark.parametrize("index", range(6))
def test_triangle_geometry(index):
    s = scenes("test", 6, start=40 + 10 * index, shape="triangle")[0]
    h = s.size * math.sqrt(3) / 2
    alpha = _coverage(s)
    area = alpha.sum()
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    mx, my = (alpha * xx).sum() / area, (alpha * yy).sum() / area
    # side s (area sqrt(3)/4 s^2); centroid on the axis, h/6 below the bbox centre (cx, cy)
    assert area == pytest.approx(math.sqrt(3) / 4 * s.size**2, rel=0.02)  # 4x supersampling quantises
    assert abs(mx - s.cx) < 0.1
    assert abs(my - (s.cy + h / 6)) < 0.1
    # the bbox of the rendered object: s wide, s*sqrt(3)/2 high, centred at (cx, cy)
    covered = alpha > 0.02
    cols, rows = np.flatnonzero(covered.any(axis=0)), np.flatnonzero(covered.any(axis=1))
    left, right, top, bottom = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    assert abs(left - (s.cx - s.size / 2)) < 1 and abs(right - (s.cx + s.size / 2)) < 1
    assert abs(top - (s.cy - h / 2)) < 1 and abs(bottom - (s.cy + h / 2)) < 1
    assert abs((left + right) / 2 - s.cx) <= 0.5 + 1e-9
    assert abs((top + bottom) / 2 - s.cy) <= 0.5 + 1e-9
    # the base is a horizontal edge: its row coverage puts it at cy + h/2 to sub-pixel precision
    base_row = rows[-1]
    rowmax = alpha.max(axis=1)
    assert abs(base_row + rowmax[base_row] - (s.cy + h / 2)) < 0.3
    # pointing up: the top row is much narrower than the bottom one
    assert covered[top].sum() < covered[bottom - 1].sum() / 3


# ---------------------------------------------------------------------------------------------
# captions


def test_caption_strings():
    s = Scene(**GOOD)
    assert caption(s) == "a red circle on a white background"
    assert s.caption == "a red circle on a white background"
    assert caption_variants(s) == [
        "a red circle on a white background",
        "a red circle",
        "a circle on a white background",
        "a circle",
    ]
    t = Scene(shape="triangle", colour="purple", background="gray", size=25.0, cx=30.0, cy=40.0)
    assert t.caption == "a purple triangle on a gray background"
