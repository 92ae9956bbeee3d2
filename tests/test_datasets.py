"""Deterministic shapes datasets, paired restoration data and users' image folders."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lsb.data import shapes
from lsb.data.datasets import PairedShapesDataset, ShapesDataset, collate
from lsb.io.images import ImageInputError


def test_shapes_dataset_is_deterministic_and_pins_attributes():
    a = ShapesDataset("train", 8, captions="augment", seed=3)
    b = ShapesDataset("train", 8, captions="augment", seed=3)
    for i in range(8):
        assert torch.equal(a[i]["pixel_values"], b[i]["pixel_values"]) and a[i]["caption"] == b[i]["caption"]
    c = ShapesDataset("train", 8, captions="augment", seed=4)
    assert [c[i]["caption"] for i in range(8)] != [a[i]["caption"] for i in range(8)]
    d = ShapesDataset("test", 5, shape="circle")
    assert all(d.scene(i).shape == "circle" for i in range(5))
    assert d[0]["caption"] == d.scene(0).caption
    x = a[0]["pixel_values"]
    assert x.shape == (3, 64, 64) and x.min() >= -1 and x.max() <= 1
    batch = next(iter(DataLoader(a, batch_size=4, collate_fn=collate)))
    assert batch["pixel_values"].shape == (4, 3, 64, 64) and len(batch["caption"]) == 4


def test_bad_arguments():
    with pytest.raises(shapes.SceneError, match="split"):
        ShapesDataset("nope", 4)
    with pytest.raises(shapes.SceneError, match="colour"):
        ShapesDataset("train", 4, colour="pink")
    with pytest.raises(ValueError, match="restoration task"):
        PairedShapesDataset("denoise")


@pytest.mark.parametrize("task", ["inpaint", "sr4", "deblur", "jpeg"])
def test_paired_dataset(task):
    ds = PairedShapesDataset(task, "val", 3)
    item = ds[1]
    assert item["clean"].shape == item["degraded"].shape == (3, 64, 64)
    assert not torch.equal(item["clean"], item["degraded"])
    assert ("mask" in item) == (task == "inpaint")


def test_image_folder(tmp_path):  # a user's image folder: lsb.data.domain_images.DomainImages
    from lsb.data.domain_images import DomainImages

    Image.new("RGB", (80, 40), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("L", (64, 64), 10).save(tmp_path / "b.jpg")
    with pytest.raises(ImageInputError, match="b.jpg: mode L"):
        DomainImages(tmp_path, size=32)
    ds = DomainImages(tmp_path, size=32, convert_mode=True, note=lambda _: None)
    assert len(ds) == 2 and ds.tensor().shape == (2, 3, 32, 32)
    (tmp_path / "c.png").write_bytes(b"garbage")
    with pytest.raises(ImageInputError, match="c.png"):
        DomainImages(tmp_path, size=32, convert_mode=True)
