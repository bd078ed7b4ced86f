r"""Text: a word-level tokenizer with a fixed vocabulary, and a small transformer text encoder.

The text-to-glyph model reads a prompt such as ``"bold serif R"`` in two steps (docs/attention.md §6-§7):

1. :class:`Tokenizer` turns each prompt into integer ids, padded to a common length, with a bool mask
   (True = a real token). The vocabulary is fixed: built once from the training captions, stored in the
   checkpoint as a plain list of strings.
2. :class:`TextEncoder` maps the ids to a sequence of vectors ``(B, S, dim)``: token + learned position
   embeddings, ``depth`` pre-LN transformer blocks whose self-attention ignores the padding, and a final
   LayerNorm. The image model cross-attends to that sequence. It is trained jointly with the denoiser:
   its gradient is the denoiser's ``dcontext``.

The null prompt (classifier-free guidance, Ho & Salimans 2022): the empty string encodes to the single
learned token ``[NULL]`` followed by padding, so every row has at least one key to attend to (an
all-padding row would leave attention nothing to average: docs/attention.md §2).
"""
from __future__ import annotations

import re

from . import backend
from ._validate import MAX_SIZE, check_choice, check_float_dtype, check_positive_int
from .nn.attention import TransformerBlock
from .nn.layers import LayerNorm
from .nn.module import Module, Parameter

__all__ = ["Tokenizer", "TextEncoder", "PAD", "UNK", "NULL"]

PAD, UNK, NULL = "[PAD]", "[UNK]", "[NULL]"
_SPECIAL = (PAD, UNK, NULL)  # ids 0, 1, 2
_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_")  # runs of letters/digits, or one punctuation character


def split_words(text: str) -> list:
    """Split a prompt into tokens: runs of letters and digits, each punctuation character on its own.
    Words of two or more characters are lower-cased; a one-character token keeps its case, because the
    letter ``a`` and the letter ``A`` are different glyphs (``"Bold A, serif"`` ->
    ``["bold", "A", ",", "serif"]``)."""
    return [t if len(t) == 1 else t.lower() for t in _TOKEN.findall(text)]


class Tokenizer:
    r"""Deterministic word-level tokenizer with a fixed vocabulary.

    ``vocab[0] = "[PAD]"``, ``vocab[1] = "[UNK]"``, ``vocab[2] = "[NULL]"``, then the words in sorted
    order. ``encode(prompts)`` returns ``ids (B, max_length)`` int64 and ``mask (B, max_length)`` bool
    (True = real token). The empty prompt is ``[NULL]`` + padding (the null prompt of classifier-free
    guidance). A word not in the vocabulary is a ValueError listing the vocabulary (or ``[UNK]`` with
    ``unknown="unk"``); a prompt longer than ``max_length`` tokens is a ValueError naming the limit.
    """

    def __init__(self, vocab, max_length: int):
        self.max_length = check_positive_int(max_length, "max_length", maximum=MAX_SIZE)
        vocab = list(vocab)
        if vocab[:3] != list(_SPECIAL) or not all(isinstance(w, str) and w for w in vocab):
            raise ValueError(f"vocab must be a list of non-empty strings starting with {list(_SPECIAL)}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocab has repeated entries")
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def from_captions(cls, captions, max_length=None):
        """The vocabulary of ``captions`` (an iterable of str), sorted, after the special tokens.
        ``max_length`` defaults to the longest caption's token count."""
        captions = list(captions)
        if not all(isinstance(c, str) for c in captions):
            raise TypeError("captions must be strings")
        tokens = [split_words(c) for c in captions]
        words = sorted({w for ts in tokens for w in ts} - set(_SPECIAL))
        longest = max((len(ts) for ts in tokens), default=1)
        return cls(list(_SPECIAL) + words, max(longest, 1) if max_length is None else max_length)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def words(self) -> list:
        """The vocabulary without the special tokens."""
        return self.vocab[len(_SPECIAL):]

    def tokenize(self, prompt: str, unknown: str = "error") -> list:
        """The ids of one prompt, unpadded (``[NULL]`` for an empty prompt)."""
        if not isinstance(prompt, str):
            raise TypeError(f"a prompt must be a str; got {type(prompt).__name__}")
        check_choice(unknown, "unknown", ("error", "unk"))
        words = split_words(prompt)
        if not words:
            return [self.index[NULL]]
        bad = [w for w in words if w not in self.index or w in _SPECIAL]
        if bad and unknown == "error":
            raise ValueError(f"unknown word(s) {bad} in prompt {prompt!r}; the vocabulary is: "
                             + " ".join(self.words))
        if len(words) > self.max_length:
            raise ValueError(f"prompt {prompt!r} has {len(words)} tokens; the limit is max_length = "
                             f"{self.max_length}")
        return [self.index[UNK] if w in bad else self.index[w] for w in words]

    def encode(self, prompts, unknown: str = "error"):
        """``prompts`` (a list of str) -> ``(ids (B, max_length) int64, mask (B, max_length) bool)`` on the
        default backend (built on the host and moved once)."""
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts; wrap a single prompt in a list")
        rows = [self.tokenize(p, unknown) for p in prompts]
        S = self.max_length
        ids = [r + [0] * (S - len(r)) for r in rows]
        mask = [[True] * len(r) + [False] * (S - len(r)) for r in rows]
        xp = backend.get_xp()
        return xp.asarray(ids, dtype=xp.int64).reshape(len(rows), S), xp.asarray(mask, dtype=bool).reshape(len(rows), S)

    def decode(self, ids, mask=None) -> list:
        """The prompts back from ``ids (B, S)``: the tokens joined by spaces, padding (and positions where
        ``mask`` is False) dropped, ``[NULL]`` -> ``""``."""
        ids = backend.to_numpy(ids).tolist()  # device -> host, once
        keep = None if mask is None else backend.to_numpy(mask).tolist()
        out = []
        for b, row in enumerate(ids):
            words = []
            for j, i in enumerate(row):
                if not 0 <= i < len(self.vocab):
                    raise ValueError(f"id {i} is outside the vocabulary [0, {len(self.vocab) - 1}]")
                if (keep is not None and not keep[b][j]) or self.vocab[i] in (PAD, NULL):
                    continue
                words.append(self.vocab[i])
            out.append(" ".join(words))
        return out

    def to_config(self) -> dict:
        """A JSON-able dict (a plain list of strings and an int) for a checkpoint's header."""
        return {"vocab": list(self.vocab), "max_length": self.max_length}

    @classmethod
    def from_config(cls, config: dict):
        if not isinstance(config, dict) or set(config) != {"vocab", "max_length"}:
            raise ValueError("a tokenizer config is a dict with keys 'vocab' and 'max_length'")
        return cls(config["vocab"], config["max_length"])

    def __eq__(self, other):
        return isinstance(other, Tokenizer) and self.to_config() == other.to_config()

    def __repr__(self):
        return f"Tokenizer({self.vocab_size} tokens, max_length={self.max_length})"


class TextEncoder(Module):
    r"""Token ids -> a sequence of context vectors for cross-attention (docs/attention.md §7).

        ``h_0[b, j] = E_tok[ids[b, j]] + E_pos[j]``                     (B, S, dim)
        ``h_l = Block_l(h_{l-1}, mask)``,  l = 1..depth                 (pre-LN, self-attention only)
        ``c = LN(h_depth)``

    ``E_tok (vocab_size, dim)`` and ``E_pos (max_length, dim)`` are learned, initialised N(0, 1). Each
    block's self-attention uses ``mask`` as its key-padding mask, so real tokens never read padding.
    Outputs at padding positions are computed but carry no information; the image model's
    cross-attention masks them with the same mask.

    Backward: ``dh_0`` from the blocks, then ``dE_tok += onehot(ids)^T dh_0`` (a GEMM over the B*S
    positions; a repeated token accumulates) and ``dE_pos[j] += sum_b dh_0[b, j]``. Ids get no gradient:
    ``backward`` returns None.
    """

    def __init__(self, vocab_size: int, max_length: int, dim: int = 64, depth: int = 2, num_heads: int = 4,
                 dtype="float32", seed=None):
        self.vocab_size = check_positive_int(vocab_size, "vocab_size", maximum=MAX_SIZE)
        self.max_length = check_positive_int(max_length, "max_length", maximum=MAX_SIZE)
        self.dim = check_positive_int(dim, "dim", maximum=MAX_SIZE)
        self.depth = check_positive_int(depth, "depth", minimum=0, maximum=MAX_SIZE)
        dt = check_float_dtype(dtype)
        self.config = dict(vocab_size=self.vocab_size, max_length=self.max_length, dim=self.dim,
                           depth=self.depth, num_heads=int(num_heads), dtype=str(dt))
        rng = backend.default_rng(seed)
        self.tok = Parameter(rng.standard_normal((self.vocab_size, self.dim), dtype=dt))
        self.pos = Parameter(rng.standard_normal((self.max_length, self.dim), dtype=dt))
        self.blocks = [TransformerBlock(self.dim, num_heads, dtype=dt, seed=rng) for _ in range(self.depth)]
        self.norm = LayerNorm(self.dim, dtype=dt)

    def forward(self, ids, mask=None):
        """``ids (B, S)`` ints in [0, vocab_size), ``S <= max_length``; ``mask (B, S)`` bool or None
        (every token real). Returns ``c (B, S, dim)``."""
        self._check_ids(ids)
        S = ids.shape[1]
        h = self.tok.data[ids] + self.pos.data[:S]  # (B, S, dim) + (S, dim)
        for block in self.blocks:
            h = block(h, mask=mask)
        self._ids = ids
        return self.norm(h)

    def backward(self, dc):
        xp = backend.get_xp(dc)
        dh = self.norm.backward(dc)
        for block in reversed(self.blocks):
            dh = block.backward(dh)
        ids = self._ids
        B, S = ids.shape
        dh2 = dh.reshape(B * S, self.dim)  # (B, S, dim) -> (BS, dim)
        onehot = (ids.reshape(B * S, 1) == xp.arange(self.vocab_size)[None, :]).astype(dc.dtype)  # (BS, V)
        self.tok.grad += onehot.T @ dh2  # (V, BS) @ (BS, dim) -> (V, dim)
        self.pos.grad[:S] += dh.sum(axis=0)  # (B, S, dim) -> (S, dim)
        return None

    def _check_ids(self, ids):
        """Integer ids of shape (B, S) with 1 <= S <= max_length, in range, before any indexing (CuPy
        wraps out-of-range indices silently). One host sync (input validation)."""
        if not hasattr(ids, "dtype") or ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be an integer array (B, S); got {getattr(ids, 'dtype', type(ids).__name__)}")
        if ids.ndim != 2 or not 1 <= ids.shape[1] <= self.max_length:
            raise ValueError(f"ids must have shape (B, S) with 1 <= S <= max_length = {self.max_length}; "
                             f"got {tuple(ids.shape)}")
        if backend.is_cupy_array(ids) != backend.is_cupy_array(self.tok.data):
            raise TypeError("ids must live on the same backend (numpy/cupy) as the parameters")
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size - 1}]; got range [{int(ids.min())}, {int(ids.max())}]")
