"""lsb.io.images: conversions, validation errors that name the input, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lsb.io.images import (
    ImageInputError,
    check_size,
    list_images,
    load_image,
    make_grid,
    pil_to_tensor,
    save_image,
    tensor_to_pil,
    to_rgb,
)


def test_modes_convert_to_rgb_on_request():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red -> white background
    out = to_rgb(rgba, allow_convert=True)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.info["converted_from"] == "RGBA"
    assert to_rgb(Image.new("L", (8, 8), 100), allow_convert=True).getpixel((0, 0)) == (100, 100, 100)
    deep = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))  # 16-bit grayscale
    assert to_rgb(deep, allow_convert=True).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("P", (8, 8)), allow_convert=True).mode == "RGB"
    rgb = Image.new("RGB", (8, 8))
    assert to_rgb(rgb) is rgb and "converted_from" not in rgb.info


@pytest.mark.parametrize(
    "mode, words", [("RGBA", "alpha"), ("L", "8-bit grayscale"), ("I;16", "16-bit"), ("P", "palette")]
)
def test_other_modes_refused_by_name(tmp_path, mode, words):
    im = Image.fromarray(np.zeros((8, 8), dtype=np.uint16)) if mode == "I;16" else Image.new(mode, (8, 8))
    with pytest.raises(ImageInputError, match=f"pic: mode {mode} .*{words}.*--convert-mode"):
        to_rgb(im, "pic")
    im.save(tmp_path / "pic.png")
    with pytest.raises(ImageInputError, match=f"pic.png: mode {mode}"):
        load_image(tmp_path / "pic.png")
    assert load_image(tmp_path / "pic.png", convert=True).mode == "RGB"


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ImageInputError, match="nope.png: no such file"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(ImageInputError, match="bad.png"):
        load_image(bad)
    with pytest.raises(ImageInputError, match="folder"):
        load_image(tmp_path)


def test_list_images(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    (tmp_path / "a" / "notes.txt").write_text("x")
    assert [p.name for p in list_images([tmp_path / "a"])] == ["x.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageInputError, match="no image files"):
        list_images([tmp_path / "empty"])
    with pytest.raises(ImageInputError, match="no such file"):
        list_images([tmp_path / "missing"])


def test_size_check_and_tensor_roundtrip():
    with pytest.raises(ImageInputError, match="multiple of 8"):
        check_size(Image.new("RGB", (30, 64)), "img")
    assert check_size(Image.new("RGB", (30, 50)), "img", resize_to=64).size == (64, 64)
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    x = pil_to_tensor([im])
    assert x.shape == (1, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert tensor_to_pil(x)[0].tobytes() == im.tobytes()
    with pytest.raises(ImageInputError, match="share a size"):
        pil_to_tensor([im, Image.new("RGB", (8, 8))])


def test_atomic_save_and_grid(tmp_path):
    g = make_grid([Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(5)], nrow=3)
    assert g.size == (3 * 8 + 4 * 2, 2 * 8 + 3 * 2)
    p = save_image(g, tmp_path / "sub" / "g.png")
    assert p.is_file() and not list((tmp_path / "sub").glob(".*"))  # no temp files left behind
    assert Image.open(p).size == g.size
