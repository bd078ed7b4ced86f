r"""A glyph reader: a small convolutional classifier that reads a glyph's character, family, weight, style.

It is the judge of the text-to-glyph model (docs/attention.md §11): prompt adherence is the share of
generated samples it reads as what the prompt asked for, relative to its accuracy on real glyphs. Its
penultimate features also serve as the embedding of a glyph FID.

Architecture (channels-last inside, NCHW in; ``x (B, 1, 24, 24)`` in [-1, 1])::

    h = silu(conv1(x))        (B, 24, 24, 16)    -> 2x2 average pool -> (B, 12, 12, 16)
    h = silu(conv2(h))        (B, 12, 12, 32)    -> 2x2 average pool -> (B, 6, 6, 32)
    h = silu(conv3(h))        (B, 6, 6, 64)      -> flatten (B, 2304)
    f = silu(fc(h))           (B, 128)           the features, ``features(x)``
    logits = head(f)          (B, 36 + 3 + 2 + 2) = [character | family | weight | style]

Loss: the sum of the four heads' mean cross-entropies (each a softmax over its own slice of the logits);
``loss_and_grad`` returns it with ``dL/dlogits`` for :meth:`GlyphReader.backward`. Flattening (not a
global mean) keeps where the ink is, which tells 6 from 9 and M from W.
"""
from __future__ import annotations

from .. import backend
from .._validate import check_array, check_float_dtype, check_positive_int
from .layers import Conv2d, Downsample, Linear, SiLU
from .models import MODELS, _seed_for_config, cross_entropy
from .module import Module

__all__ = ["GlyphReader"]


class GlyphReader(Module):
    """Classifier with four heads; see the module docstring.

    Parameters
    ----------
    size : image side (24 or 32; divisible by 4).
    head_sizes : classes per head, default (36, 3, 2, 2) = characters, families, weights, styles.
    width : channels of the first convolution (then 2x and 4x).
    feature_dim : width of the penultimate layer (the FID embedding).
    dtype, seed : as in the denoisers.
    """

    heads = ("char", "family", "weight", "style")

    def __init__(self, size: int = 24, head_sizes=(36, 3, 2, 2), width: int = 16, feature_dim: int = 128,
                 dtype="float32", seed=0):
        self.size = check_positive_int(size, "size", minimum=4)
        if self.size % 4:
            raise ValueError(f"size must be divisible by 4; got {size}")
        self.head_sizes = tuple(check_positive_int(k, "head size") for k in head_sizes)
        if len(self.head_sizes) != len(self.heads):
            raise ValueError(f"head_sizes must give {len(self.heads)} sizes {self.heads}; got {head_sizes}")
        width = check_positive_int(width, "width")
        feature_dim = check_positive_int(feature_dim, "feature_dim")
        dt = check_float_dtype(dtype)
        self.config = dict(size=self.size, head_sizes=list(self.head_sizes), width=width,
                           feature_dim=feature_dim, dtype=str(dt), seed=_seed_for_config(seed))
        rng = backend.default_rng(seed)
        self.conv1 = Conv2d(1, width, 3, dtype=dt, seed=rng)
        self.act1, self.pool1 = SiLU(), Downsample()
        self.conv2 = Conv2d(width, 2 * width, 3, dtype=dt, seed=rng)
        self.act2, self.pool2 = SiLU(), Downsample()
        self.conv3 = Conv2d(2 * width, 4 * width, 3, dtype=dt, seed=rng)
        self.act3 = SiLU()
        self.fc = Linear((self.size // 4) ** 2 * 4 * width, feature_dim, dtype=dt, seed=rng)
        self.act4 = SiLU()
        self.head = Linear(feature_dim, sum(self.head_sizes), dtype=dt, seed=rng)

    def features(self, x):
        """Penultimate features ``f (B, feature_dim)`` of images ``x (B, 1, size, size)``."""
        x = check_array(x, "x", like=self.conv1.W.data, ndim=4, finite=False)
        if tuple(x.shape[1:]) != (1, self.size, self.size):
            raise ValueError(f"x must have shape (B, 1, {self.size}, {self.size}); got {tuple(x.shape)}")
        xp = backend.get_xp(x)
        h = xp.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (B, 1, H, W) -> (B, H, W, 1)
        h = self.pool1(self.act1(self.conv1(h)))
        h = self.pool2(self.act2(self.conv2(h)))
        h = self.act3(self.conv3(h))
        self._hshape = h.shape
        return self.act4(self.fc(h.reshape(h.shape[0], -1)))  # (B, h, w, C) -> (B, hwC) -> (B, F)

    def forward(self, x):
        """Logits (B, sum(head_sizes)): [character | family | weight | style]."""
        return self.head(self.features(x))

    def backward(self, dlogits):
        dh = self.fc.backward(self.act4.backward(self.head.backward(dlogits))).reshape(self._hshape)
        dh = self.conv3.backward(self.act3.backward(dh))
        dh = self.conv2.backward(self.act2.backward(self.pool2.backward(dh)))
        dh = self.conv1.backward(self.act1.backward(self.pool1.backward(dh)))
        return dh.transpose(0, 3, 1, 2)  # (B, H, W, 1) -> (B, 1, H, W)

    def split(self, logits):
        """The logits of each head, as a dict ``{"char": (B, 36), "family": (B, 3), ...}``."""
        out, a = {}, 0
        for name, k in zip(self.heads, self.head_sizes):
            out[name] = logits[:, a:a + k]
            a += k
        return out

    def predict(self, x, batch_size: int = 512):
        """Predicted labels ``{"char", "family", "weight", "style"}``, each (B,) int64, in batches."""
        xp = backend.get_xp(x)
        parts = {name: [] for name in self.heads}
        for s in range(0, x.shape[0], batch_size):
            for name, lg in self.split(self.forward(x[s:s + batch_size])).items():
                parts[name].append(xp.argmax(lg, axis=1))
        return {name: xp.concatenate(v) for name, v in parts.items()}

    def loss_and_grad(self, logits, labels):
        r"""``L = sum_heads CE(logits_head, y_head)`` (each the mean cross-entropy of
        :func:`~minidiff.nn.cross_entropy`) and ``dL/dlogits`` (the heads' gradients side by side).
        ``labels``: dict of (B,) int arrays keyed like :attr:`heads`. Returns (loss float, dlogits)."""
        xp = backend.get_xp(logits)
        total, grads = 0.0, []
        for name, lg in self.split(logits).items():
            loss, d = cross_entropy(xp.ascontiguousarray(lg), labels[name])
            total += loss
            grads.append(d)
        return total, xp.concatenate(grads, axis=1)


MODELS["GlyphReader"] = GlyphReader  # so nn.save / nn.load handle it like the denoisers
