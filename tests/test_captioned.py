"""Captioned glyphs: shapes and range, captions that say what the image shows, held-out combinations."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidiff as md
from minidiff import backend
from minidiff.captioned import (
    CHARS, DIGIT_WORDS, FAMILIES, HELDOUT_VARIANT, STYLES, VARIANTS, WEIGHTS, CaptionedGlyphs, caption_words,
    describe, parse_caption,
)


@pytest.fixture(scope="module")
def ds():
    return md.get_dataset("captioned_glyphs")


def test_registered_shapes_range_and_chars(ds):
    assert isinstance(ds, CaptionedGlyphs)
    assert set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") <= set(ds.chars)
    x, y = ds.sample(64, backend.default_rng(0), return_labels=True)
    assert x.shape == (64, 1, 24, 24) and y.shape == (64,) and y.dtype == np.int64
    x = backend.to_numpy(x)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x.min() == -1.0 and x.max() > 0.9  # background and ink both present
    ink = (x > 0).mean(axis=(1, 2, 3))
    assert (ink > 0.03).all() and (ink < 0.6).all()  # every image holds a glyph, none is a blob


def test_sampling_is_deterministic_given_the_generator(ds):
    a = ds.sample(8, backend.default_rng(3), return_captions=True)
    b = ds.sample(8, backend.default_rng(3), return_captions=True)
    assert np.array_equal(backend.to_numpy(a[0]), backend.to_numpy(b[0])) and a[1] == b[1]


def test_captions_parse_to_the_drawn_labels(ds):
    n = 400
    x, c, attrs, caps = ds.sample(n, backend.default_rng(1), return_labels=True, return_captions=True,
                                  return_attributes=True, split="all")
    c = backend.to_numpy(c)
    attrs = {k: backend.to_numpy(v) for k, v in attrs.items()}
    named = {k: 0 for k in ("family", "weight", "style")}
    for i, cap in enumerate(caps):
        p = parse_caption(cap)
        assert p["char"] == c[i], cap
        for k in named:
            if p[k] is not None:
                named[k] += 1
                assert p[k] == attrs[k][i], cap
    # each attribute is named in about half of the captions (binomial(400, 1/2): +-4 sd = +-40)
    assert all(160 <= v <= 240 for v in named.values()), named
    assert len(set(caps)) > n // 2  # varied, not a handful of templates


def test_heldout_combinations_never_in_training_draws(ds):
    _, c, attrs = ds.sample(3000, backend.default_rng(2), return_labels=True, return_attributes=True)
    c = backend.to_numpy(c)
    v = np.array([VARIANTS.index(t) for t in zip(*(backend.to_numpy(attrs[k]) for k in ("family", "weight", "style")))])
    assert not (v == np.asarray(HELDOUT_VARIANT)[c]).any()
    # but every face and every character still appears in training draws
    assert set(v) == set(range(len(VARIANTS))) and set(c) == set(range(len(CHARS)))
    _, c2, attrs2 = ds.sample(200, backend.default_rng(3), return_labels=True, return_attributes=True, split="heldout")
    for i, ch in enumerate(backend.to_numpy(c2)):
        assert CaptionedGlyphs.is_heldout(int(ch), *(int(backend.to_numpy(attrs2[k])[i]) for k in ("family", "weight", "style")))


def test_each_face_is_held_out_for_exactly_three_characters():
    counts = np.bincount(HELDOUT_VARIANT, minlength=len(VARIANTS))
    assert (counts == len(CHARS) // len(VARIANTS)).all()


@given(c=st.integers(0, len(CHARS) - 1), f=st.sampled_from([None, 0, 1, 2]), w=st.sampled_from([None, 0, 1]),
       s=st.sampled_from([None, 0, 1]))
def test_describe_round_trips_through_parse(c, f, w, s):
    assert parse_caption(describe(c, f, w, s)) == {"char": c, "family": f, "weight": w, "style": s}


def test_parse_examples_from_the_issue():
    R = CHARS.index("R")
    assert parse_caption("bold italic serif R") == {"char": R, "family": 1, "weight": 1, "style": 1}
    assert parse_caption("the letter R in a bold serif face") == {"char": R, "family": 1, "weight": 1, "style": None}
    assert parse_caption("seven, monospace") == {"char": 7, "family": 2, "weight": None, "style": None}
    assert parse_caption("7") == parse_caption("seven") == {"char": 7, "family": None, "weight": None, "style": None}
    assert parse_caption("a bold A")["char"] == CHARS.index("A")  # the article is not the letter


@pytest.mark.parametrize("bad", ["bold", "R in comic sans", "bold regular R"])
def test_parse_rejects(bad):
    with pytest.raises(ValueError):
        parse_caption(bad)


def test_vocabulary_covers_every_caption(ds):
    words = set(caption_words())
    _, caps = ds.sample(300, backend.default_rng(4), return_captions=True, split="all")
    for cap in caps:
        assert set(cap.replace(",", " , ").split()) <= words, cap
    assert set(DIGIT_WORDS) | set(FAMILIES) | set(WEIGHTS) | set(STYLES) <= words


def test_bad_arguments(ds):
    with pytest.raises(ValueError, match="split"):
        ds.sample(4, split="test")
    with pytest.raises(ValueError, match="size"):
        CaptionedGlyphs(size=20)
