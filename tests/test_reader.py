"""The glyph reader: gradcheck of its hand-written backward, its loss gradient, the shipped weights."""
import os

import numpy as np
import pytest

from minidiff import backend
from minidiff.nn import GlyphReader, gradcheck


def test_reader_gradcheck_float64():
    r = GlyphReader(size=8, head_sizes=(5, 3, 2, 2), width=4, feature_dim=8, dtype="float64", seed=1)
    x = backend.default_rng(0).standard_normal((3, 1, 8, 8))
    res = gradcheck(r, x)
    assert res.max_rel_error < 1e-6, res.worst()  # central differences, eps=1e-6, float64: ~1e-9 expected


def test_loss_gradient_matches_finite_differences():
    xp = backend.get_xp()
    r = GlyphReader(size=8, head_sizes=(5, 3, 2, 2), dtype="float64")
    rng = backend.default_rng(1)
    logits = rng.standard_normal((4, 12))
    labels = {"char": xp.asarray([0, 4, 2, 1]), "family": xp.asarray([0, 2, 1, 1]),
              "weight": xp.asarray([1, 0, 0, 1]), "style": xp.asarray([0, 0, 1, 1])}
    loss, d = r.loss_and_grad(logits, labels)
    eps = 1e-6
    for (i, j) in [(0, 0), (1, 4), (2, 6), (3, 9), (3, 11)]:
        lp, lm = logits.copy(), logits.copy()
        lp[i, j] += eps
        lm[i, j] -= eps
        num = (r.loss_and_grad(lp, labels)[0] - r.loss_and_grad(lm, labels)[0]) / (2 * eps)
        assert abs(num - float(d[i, j])) < 1e-7  # float64 central difference: truncation ~1e-12
    # the loss is the sum of four cross-entropies, each log(K) for uniform logits
    l0, _ = r.loss_and_grad(xp.zeros((4, 12)), labels)
    assert abs(l0 - (np.log(5) + np.log(3) + 2 * np.log(2))) < 1e-12


def test_features_shape_and_bad_input():
    r = GlyphReader(seed=0)
    x = backend.default_rng(0).standard_normal((2, 1, 24, 24), dtype="float32")
    assert r.features(x).shape == (2, 128)
    with pytest.raises(ValueError, match="shape"):
        r.features(backend.default_rng(0).standard_normal((2, 1, 16, 16), dtype="float32"))
