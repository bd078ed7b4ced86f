"""Text: tokenizer round trips and rules, the checkpoint header round trip, TextEncoder gradients.

Gradcheck tolerance 1e-6 relative, as in test_layers.py (float64 central differences, eps = 1e-6).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidiff as md
from minidiff.text import NULL, PAD, TextEncoder, Tokenizer, split_words
from nn_helpers import randomize

pytestmark = pytest.mark.usefixtures("numpy_backend")

CAPTIONS = ["bold italic serif R", "the letter R in a bold serif face", "seven, monospace", "7",
            "an italic a", "A in sans"]


def test_split_words_case_and_punctuation():
    assert split_words("Bold A, serif!") == ["bold", "A", ",", "serif", "!"]
    assert split_words("THE Letter a") == ["the", "letter", "a"]  # words lower-cased, one char kept
    assert split_words("  ") == []


def test_vocabulary_is_deterministic_and_sorted():
    tok = Tokenizer.from_captions(CAPTIONS)
    assert tok.vocab[:3] == [PAD, "[UNK]", NULL]
    assert tok.words == sorted(tok.words)
    assert Tokenizer.from_captions(list(reversed(CAPTIONS))) == tok  # order of captions does not matter
    assert "A" in tok.index and "a" in tok.index and tok.index["A"] != tok.index["a"]
    assert "Bold" not in tok.index and "bold" in tok.index
    assert tok.max_length == 8  # "the letter R in a bold serif face"


words_st = st.lists(st.sampled_from(sorted({w for c in CAPTIONS for w in split_words(c)})), max_size=8)


@given(st.lists(words_st, min_size=1, max_size=5))
def test_encode_decode_round_trip(prompts_words):
    tok = Tokenizer.from_captions(CAPTIONS)
    prompts = [" ".join(ws) for ws in prompts_words]
    ids, mask = tok.encode(prompts)
    assert ids.dtype == np.int64 and mask.dtype == bool and ids.shape == mask.shape == (len(prompts), 8)
    assert np.all(mask.any(axis=1))  # every row has a key to attend to (the empty prompt: [NULL])
    assert np.all(ids[~mask] == 0)  # padding is [PAD] = 0
    assert np.all(np.diff(mask.astype(int), axis=1) <= 0)  # real tokens first, then padding
    assert tok.decode(ids, mask) == prompts
    assert tok.decode(ids) == prompts
    ids2, mask2 = tok.encode(prompts)  # deterministic
    assert np.array_equal(ids, ids2) and np.array_equal(mask, mask2)


def test_empty_prompt_is_the_null_token():
    tok = Tokenizer.from_captions(CAPTIONS)
    ids, mask = tok.encode(["", " ", "7"])
    assert ids[0, 0] == ids[1, 0] == tok.index[NULL] and mask[0].sum() == mask[1].sum() == 1
    assert ids[2, 0] == tok.index["7"]
    assert tok.decode(ids) == ["", "", "7"]


def test_unknown_word_lists_the_vocabulary_and_too_long_names_the_limit():
    tok = Tokenizer.from_captions(CAPTIONS)
    with pytest.raises(ValueError, match=r"unknown word\(s\) \['purple'\].*vocabulary is: .*bold") as e:
        tok.encode(["purple R"])
    assert "\n" not in str(e.value)  # one line, for the CLI
    with pytest.raises(ValueError, match="limit is max_length = 8"):
        tok.encode(["R " * 9])
    ids, _ = tok.encode(["purple R"], unknown="unk")
    assert list(ids[0, :2]) == [tok.index["[UNK]"], tok.index["R"]]
    with pytest.raises(TypeError, match="list of prompts"):
        tok.encode("R")


def test_vocabulary_round_trips_through_a_checkpoint_header(tmp_path):
    tok = Tokenizer.from_captions(CAPTIONS, max_length=10)
    model = md.MLPDenoiser(2, hidden=(4,))
    md.save_checkpoint(tmp_path / "c.npz", model, extra={"tokenizer": tok.to_config()})
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:  # the header is plain JSON: no pickle
        assert "__meta__" in z.files
    back = Tokenizer.from_config(md.load_checkpoint(tmp_path / "c.npz").extra["tokenizer"])
    assert back == tok and back.vocab == tok.vocab and back.max_length == 10
    with pytest.raises(ValueError, match="vocab"):
        Tokenizer(["a", "b"], 4)


def test_text_encoder_gradcheck_to_embeddings():
    """Every parameter (token and position tables, the blocks, the final norm), random upstream gradient;
    ids repeat a token so rows of the token table accumulate, and the mask has padding."""
    enc = randomize(TextEncoder(vocab_size=6, max_length=5, dim=8, depth=2, num_heads=2, dtype="float64"))
    ids = np.array([[3, 1, 3, 0], [5, 2, 0, 0]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    result = md.gradcheck(enc, ids, kwargs={"mask": mask}, check_inputs=False, seed=3)
    # 1e-6: see the module docstring
    assert result.max_rel_error < 1e-6, result.worst()
    assert {"tok", "pos", "norm.gamma", "blocks.1.ff.fc2.W"} <= set(result.errors)
    enc.zero_grad()
    enc(ids, mask)
    enc.backward(np.ones((2, 4, 8)))
    assert np.all(enc.tok.grad[4] == 0)  # token 4 never appears: no gradient
    assert np.all(enc.pos.grad[4] == 0)  # position 4 beyond S = 4: no gradient


def test_text_encoder_padding_does_not_change_real_tokens():
    """The real tokens' outputs do not depend on what sits at padded positions (masked keys)."""
    enc = TextEncoder(vocab_size=6, max_length=5, dim=8, depth=2, num_heads=2, dtype="float64", seed=0)
    mask = np.array([[1, 1, 0, 0, 0]], bool)
    a = enc(np.array([[3, 1, 0, 0, 0]]), mask)
    b = enc(np.array([[3, 1, 5, 4, 2]]), mask)
    # float64; the masked keys have weight exactly 0, so only rounding differs (~1e-16)
    np.testing.assert_allclose(a[:, :2], b[:, :2], rtol=1e-12, atol=1e-12)


def test_text_encoder_errors():
    enc = TextEncoder(vocab_size=6, max_length=4, dim=8, depth=1, num_heads=2)
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        enc(np.array([[1, 6]]))
    with pytest.raises(ValueError, match="max_length = 4"):
        enc(np.zeros((1, 5), np.int64))
    with pytest.raises(TypeError, match="integer"):
        enc(np.zeros((1, 2)))
