"""The shipped shapes-world feature network and the FID / KID computed in its feature space."""

from __future__ import annotations

import numpy as np
import pytest

from lsb.data import shapes
from lsb.metrics import features

pytestmark = pytest.mark.skipif(not features.WEIGHTS.is_file(), reason="feature weights not shipped")


def _renders(split, n, **fixed):
    return [shapes.render(s) for s in shapes.scenes(split, n, **fixed)]


def test_features_shape_and_classification():
    net = features.load_feature_net()
    f = features.extract(_renders("test", 8), net)
    assert f.shape == (8, features.FEATURE_DIM)
    import torch

    scenes = shapes.scenes("test", 64)
    with torch.no_grad():
        logits = net.logits(features._as_tensor([shapes.render(s) for s in scenes]))
    acc = (logits["shape"].argmax(1).numpy() == np.array([shapes.SHAPES.index(s.shape) for s in scenes])).mean()
    assert acc > 0.95


def test_fid_kid_separate_distributions():
    a, b = _renders("val", 150), _renders("test", 150)
    squares = _renders("test", 150, shape="square")
    same, diff = features.fid(a, b), features.fid(a, squares)
    assert same < diff / 3
    k_same, _ = features.kid(a, b, subset_size=100, subsets=10)
    k_diff, _ = features.kid(a, squares, subset_size=100, subsets=10)
    assert k_same < k_diff
