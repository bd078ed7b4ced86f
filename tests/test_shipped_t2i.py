"""The shipped text-to-glyph model and glyph reader: they load by name, match the code, and work."""
import os

import numpy as np
import pytest

from minidiff import backend
from minidiff.captioned import CHARS
from minidiff.nn import load
from minidiff.nn.checkpoint import WEIGHTS_DIR
from minidiff.t2i import (
    TextConditionedDenoiser, generate, glyph_tokenizer, load_glyph_reader, load_text_model, make_text_model,
    reader_accuracy,
)
from minidiff.training import TrainConfig


def test_shipped_files_are_small():
    for name, limit in (("text-glyphs.npz", 8e6), ("glyph-reader.npz", 2e6)):
        assert os.path.getsize(os.path.join(WEIGHTS_DIR, name)) <= limit


def test_shipped_text_model_loads_by_name_and_its_config_matches_the_code():
    ck = load("text-glyphs")
    assert isinstance(ck.model, TextConditionedDenoiser)
    assert ck.optimizer_state is None and ck.ema_state is None  # sampling weights only
    cfg = TrainConfig.from_dict(ck.config)  # the stored training config is one the code accepts ...
    rebuilt = make_text_model(cfg, np.zeros((1,) + tuple(ck.extra["data_shape"]), dtype=cfg.dtype))
    assert rebuilt.config == ck.model.config  # ... and builds exactly the stored model
    assert ck.model.tokenizer == glyph_tokenizer()  # the vocabulary is the data set's
    assert ck.extra["data_shape"] == [1, 24, 24]


def test_shipped_reader_reads_real_glyphs():
    acc = reader_accuracy(load_glyph_reader(), n=300, seed=5)
    # measured on 2000 glyphs: char 0.998, family 0.96, weight 1.0, style 0.999; 300 draws: -3 sd margins
    assert acc["char"] >= 0.97 and acc["weight"] >= 0.97 and acc["style"] >= 0.97 and acc["family"] >= 0.90


PROMPTS = ["R", "7", "bold A", "italic 3", "serif K", "seven, monospace"]


def test_shipped_model_samples_are_images():
    x = backend.to_numpy(generate(load_text_model("text-glyphs"), PROMPTS, guidance=3.0, steps=10, seed=0))
    assert x.shape == (6, 1, 24, 24) and np.isfinite(x).all()
    # the data lie in [-1, 1]; the undertrained models overshot to about -3.6 (measured at step 1800), so this only
    # bounds the order of magnitude: a broken checkpoint or sampler gives values of 10 to 80 (sigma_max)
    assert np.abs(x).max() < 10.0


def test_shipped_model_draws_the_prompted_character():
    x = generate(load_text_model("text-glyphs"), PROMPTS, guidance=3.0, steps=10, seed=0)
    read = backend.to_numpy(load_glyph_reader().predict(x.astype("float32"))["char"])
    want = [CHARS.index(c) for c in "R7A3K7"]
    # chance is 1/36 per sample: 5 of 6 right by chance has probability < 1e-7. The shipped model reads right
    # in ~90 % of samples (docs/attention.md §12), so 5 of 6 fails by bad luck with probability ~11 % for a
    # random seed; at this fixed seed all 6 are read right (measured), so a failure means the weights or the
    # sampler changed
    assert sum(int(r == w) for r, w in zip(read, want)) >= 5, [CHARS[i] for i in read]
