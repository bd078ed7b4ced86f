r"""Text to glyph: the glyph reader's training and the prompt-adherence measure.

See docs/attention.md §7-§10.
"""
from __future__ import annotations

import os
import time

from . import backend
from ._validate import check_positive_int

__all__ = ["WEIGHTS_DIR", "READER_PATH", "train_glyph_reader", "load_glyph_reader", "reader_accuracy"]

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
READER_PATH = os.path.join(WEIGHTS_DIR, "glyph-reader.npz")


def train_glyph_reader(steps: int = 1500, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                       out=None, log_every: int = 100, size: int = 24):
    """Train a :class:`~minidiff.nn.GlyphReader` on fresh clean draws of ``captioned_glyphs`` (all 432
    (character, face) pairs, held-out ones included: the reader is the judge, not the generator), with
    Adam and a warm-up + cosine learning rate. Writes ``out`` (an ``nn.save`` checkpoint) when given.

    Reproduce the shipped weights::

        OPENBLAS_NUM_THREADS=2 python -c "import minidiff.t2i as t; t.train_glyph_reader(out='minidiff/weights/glyph-reader.npz')"
    """
    from .captioned import CaptionedGlyphs
    from .nn import Adam, GlyphReader, save, warmup_cosine_lr

    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    ds = CaptionedGlyphs(size=size)
    reader = GlyphReader(size=size, seed=seed)
    opt = Adam(reader.parameters(), lr=lr)
    rng = backend.default_rng(seed)
    t0, recent = time.perf_counter(), []
    for step in range(steps):
        x, c, attrs = ds.sample(batch_size, rng, return_labels=True, return_attributes=True, split="all")
        x = x.astype("float32")
        loss, d = reader.loss_and_grad(reader(x), {"char": c, **attrs})
        reader.zero_grad()
        reader.backward(d)
        opt.lr = warmup_cosine_lr(step, steps, lr, warmup_steps=50, min_lr=lr * 0.01)
        opt.step()
        recent = (recent + [loss])[-50:]
        if log_every and (step + 1) % log_every == 0:
            print(f"reader step {step + 1}/{steps} loss {sum(recent) / len(recent):.4f} "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    reader.eval()
    if out is not None:
        save(out, reader, extra={"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                                 "seconds": time.perf_counter() - t0})
    return reader


def load_glyph_reader(path=None):
    """The shipped glyph reader (``minidiff/weights/glyph-reader.npz``) or one at ``path``."""
    from .nn import load

    return load(READER_PATH if path is None else path).model.eval()


def reader_accuracy(reader, n: int = 2000, seed: int = 1, split: str = "all"):
    """The reader's accuracy per head on ``n`` fresh real glyphs: ``{"char": ..., "family": ..., ...}``."""
    from .captioned import CaptionedGlyphs

    ds = CaptionedGlyphs(size=reader.size)
    x, c, attrs = ds.sample(n, backend.default_rng(seed), return_labels=True, return_attributes=True, split=split)
    dtype = next(iter(reader.parameters())).data.dtype
    pred = reader.predict(x.astype(dtype))
    truth = {"char": c, **attrs}
    return {k: float((pred[k] == truth[k]).mean()) for k in reader.heads}
