r"""Captioned glyphs: characters in three type families, two weights, two styles, with English captions.

The data set of the text-to-image path (docs/attention.md §10). One item is a 24x24 image of a
character (``0-9`` and ``A-Z``, attribute :attr:`CaptionedGlyphs.chars`) drawn from one of the twelve
DejaVu faces bundled with matplotlib (no download)::

    family  sans (DejaVu Sans) | serif (DejaVu Serif) | mono (DejaVu Sans Mono)
    weight  regular | bold
    style   upright | italic   (DejaVu's "Oblique"/"Italic" faces)

under the small random affine jitter of the digit glyphs (``datasets.GlyphDigits``), with the rotation
cut to +-4 degrees so that a rotated upright glyph is not confused with an italic one (DejaVu's italics
lean about 11 degrees). Images are (N, 1, 24, 24) in [-1, 1] (background -1, ink +1).

Captions are varied English built from templates with synonyms, random word order and a random subset
of the attribute words, e.g. ``"bold italic serif R"``, ``"the letter R in a bold serif face"``,
``"seven, monospace"``, ``"7"``. A caption that leaves an attribute out means "any value of it", so a
model trained on them understands a prompt naming only the character, or the character with any subset
of attribute words. :func:`parse_caption` reads a caption back into labels (the test that captions say
what the image shows, and the way adherence is scored).

Held-out combinations: character ``chars[i]`` is never drawn in the face ``VARIANTS[(5 i) mod 12]`` by
the training split (``split="train"``, the default). Since 5 and 12 are coprime, every face is held out
for exactly three characters and every character misses exactly one face, so each held-out pair
(character, face) is a combination of a character and attribute words that were each seen often, but
never together: ``split="heldout"`` draws exactly those, to measure whether a model composes them.

Host module (matplotlib rendering and caption strings); the images are moved to the default backend
with one explicit copy, as in :mod:`minidiff.datasets`. The 432 base renders (36 characters x 12 faces,
64x64) are cached per process, so sampling is a vectorised resampling only.
"""
from __future__ import annotations

import os
import re

import numpy  # host code: glyph rendering and caption strings

from . import backend
from ._validate import check_positive_int
from .datasets import _GLYPH_RES, Dataset, _affine_jitter, _glyph_canvas, _ink

__all__ = ["CaptionedGlyphs", "CHARS", "FAMILIES", "WEIGHTS", "STYLES", "VARIANTS", "HELDOUT_VARIANT",
           "parse_caption", "describe", "caption_words"]

CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
FAMILIES = ("sans", "serif", "mono")
WEIGHTS = ("regular", "bold")
STYLES = ("upright", "italic")
VARIANTS = tuple((f, w, s) for f in range(3) for w in range(2) for s in range(2))  # 12 faces
HELDOUT_VARIANT = tuple((5 * i) % len(VARIANTS) for i in range(len(CHARS)))  # char i never in this face

_FONT_FILES = {  # (family, weight, style) -> matplotlib's bundled file
    (0, 0, 0): "DejaVuSans.ttf", (0, 0, 1): "DejaVuSans-Oblique.ttf",
    (0, 1, 0): "DejaVuSans-Bold.ttf", (0, 1, 1): "DejaVuSans-BoldOblique.ttf",
    (1, 0, 0): "DejaVuSerif.ttf", (1, 0, 1): "DejaVuSerif-Italic.ttf",
    (1, 1, 0): "DejaVuSerif-Bold.ttf", (1, 1, 1): "DejaVuSerif-BoldItalic.ttf",
    (2, 0, 0): "DejaVuSansMono.ttf", (2, 0, 1): "DejaVuSansMono-Oblique.ttf",
    (2, 1, 0): "DejaVuSansMono-Bold.ttf", (2, 1, 1): "DejaVuSansMono-BoldOblique.ttf",
}

# Words, with synonyms. The first word of each tuple is the canonical one (used by :func:`describe`).
FAMILY_WORDS = (("sans", "grotesque"), ("serif", "serifed"), ("mono", "monospace", "monospaced", "typewriter"))
WEIGHT_WORDS = (("regular", "normal", "plain"), ("bold", "heavy", "thick"))
STYLE_WORDS = (("upright", "straight"), ("italic", "slanted", "oblique"))
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_NOUNS = ("face", "font", "type", "typeface")
_FILLERS = ("the", "a", "in", "set", "letter", "capital", "uppercase", "digit", "number", ",")

_WORD_TO_ATTR = {}
for _k, (_name, _table) in enumerate((("family", FAMILY_WORDS), ("weight", WEIGHT_WORDS), ("style", STYLE_WORDS))):
    for _v, _syn in enumerate(_table):
        for _w in _syn:
            _WORD_TO_ATTR[_w] = (_name, _v)


def caption_words():
    """Every word (token) a caption can contain, in a fixed order: build a tokenizer's vocabulary from it."""
    words = list(CHARS) + list(DIGIT_WORDS)
    for table in (FAMILY_WORDS, WEIGHT_WORDS, STYLE_WORDS):
        words += [w for syn in table for w in syn]
    return words + list(_NOUNS) + list(_FILLERS)


def _tokens(text):
    """Split on white space and commas; lower-case every word except single characters (``a`` is the
    article, ``A`` the letter)."""
    out = []
    for tok in re.findall(r"[^\s,]+|,", text):
        out.append(tok if len(tok) == 1 else tok.lower())
    return out


def parse_caption(text):
    """Labels a caption names: ``{"char": index into CHARS, "family", "weight", "style"}``, each ``None``
    when the caption does not name it. An unknown word, no character, or two different values of one
    attribute is a ValueError."""
    if not isinstance(text, str):
        raise TypeError(f"caption must be a str; got {type(text).__name__}")
    out = {"char": None, "family": None, "weight": None, "style": None}
    known = set(caption_words())
    for tok in _tokens(text):
        if tok in _WORD_TO_ATTR:
            key, val = _WORD_TO_ATTR[tok]
        elif tok in DIGIT_WORDS:
            key, val = "char", DIGIT_WORDS.index(tok)
        elif len(tok) == 1 and tok in CHARS:
            key, val = "char", CHARS.index(tok)
        elif tok in known:
            continue  # a filler word
        else:
            raise ValueError(f"unknown word {tok!r} in caption {text!r}; known words: {' '.join(caption_words())}")
        if out[key] is not None and out[key] != val:
            raise ValueError(f"caption {text!r} names two different values of {key}")
        out[key] = val
    if out["char"] is None:
        raise ValueError(f"caption {text!r} names no character (one of {CHARS} or a digit word)")
    return out


def describe(char, family=None, weight=None, style=None):
    """The canonical short prompt, e.g. ``describe(27, 1, 1, 1) == "bold italic serif R"`` (indices as in
    CHARS, FAMILIES, WEIGHTS, STYLES; ``None`` leaves an attribute unnamed)."""
    words = []
    if weight is not None:
        words.append(WEIGHT_WORDS[weight][0])
    if style is not None:
        words.append(STYLE_WORDS[style][0])
    if family is not None:
        words.append(FAMILY_WORDS[family][0])
    return " ".join(words + [CHARS[char]])


def _caption(c, f, w, s, u):
    """One random caption of char c in face (f, w, s), from the uniforms u (12,) in [0, 1)."""
    def pick(seq, x):
        return seq[min(int(x * len(seq)), len(seq) - 1)]

    attrs = []  # each attribute is named with probability 1/2, in a random order, by a random synonym
    for k, (table, v) in enumerate(((FAMILY_WORDS, f), (WEIGHT_WORDS, w), (STYLE_WORDS, s))):
        if u[k] < 0.5:
            attrs.append((u[3 + k], pick(table[v], u[6 + k])))
    attrs = [a for _, a in sorted(attrs)]
    ch = CHARS[c]
    if c < 10:
        bare = pick((ch, DIGIT_WORDS[c]), u[9])
        full = pick((bare, f"the digit {ch}", f"digit {DIGIT_WORDS[c]}", f"the number {DIGIT_WORDS[c]}",
                     f"number {ch}"), u[10])
    else:
        bare = ch
        full = pick((ch, f"the letter {ch}", f"letter {ch}", f"capital {ch}", f"uppercase {ch}"), u[10])
    if not attrs:
        return full
    a = " ".join(attrs)
    noun = pick(_NOUNS, u[9])
    return pick((f"{a} {bare}", f"{full}, {a}", f"{full} in a {a} {noun}", f"a {a} {bare}",
                 f"{full} set in {a} type"), u[11])


# ---------------------------------------------------------------------------------- rendering
_CACHE: dict = {}  # "base" -> (36 * 12, 64, 64) float64 in [0, 1], index = char * 12 + variant


def _render_all():
    """Render every character in every face on a 64x64 Agg canvas (host), once per process. Each face is
    scaled so that its capital H is 0.56 of the frame (so the families keep their relative widths), and
    each glyph is centred on its bounding box."""
    if "base" in _CACHE:
        return _CACHE["base"]
    import matplotlib
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import PathPatch
    from matplotlib.textpath import TextPath
    from matplotlib.transforms import Affine2D

    res = _GLYPH_RES
    fonts = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    out = numpy.zeros((len(CHARS) * len(VARIANTS), res, res))
    canvas, ax = _glyph_canvas(res)
    for v, key in enumerate(VARIANTS):
        prop = FontProperties(fname=os.path.join(fonts, _FONT_FILES[key]))
        (_, hy0), (_, hy1) = TextPath((0, 0), "H", size=1.0, prop=prop).get_extents().get_points()
        scale = 0.56 * res / (hy1 - hy0)
        for c, ch in enumerate(CHARS):
            path = TextPath((0, 0), ch, size=1.0, prop=prop)
            (x0, y0), (x1, y1) = path.get_extents().get_points()
            tr = Affine2D().translate(-(x0 + x1) / 2, -(y0 + y1) / 2).scale(scale).translate(res / 2, res / 2)
            patch = ax.add_patch(PathPatch(tr.transform_path(path), facecolor="k", edgecolor="none"))
            out[c * len(VARIANTS) + v] = _ink(canvas)
            patch.remove()
    _CACHE["base"] = out
    return out


class CaptionedGlyphs(Dataset):
    """Captioned glyph images (n, 1, size, size) in [-1, 1]; see the module docstring.

    ``sample(n, rng=None, return_labels=False, return_captions=False, return_attributes=False,
    split="train")`` returns ``x`` and, in this order when asked: the character labels (n,) int64
    (indices into :attr:`chars`), a dict of the attribute labels ``{"family", "weight", "style"}``
    (each (n,) int64, indices into FAMILIES / WEIGHTS / STYLES), and the captions (a list of n str).
    ``split``: ``"train"`` (never a held-out combination), ``"heldout"`` (only those) or ``"all"``.
    """

    has_projection = False
    chars = CHARS
    num_classes = len(CHARS)
    families, weights, styles = FAMILIES, WEIGHTS, STYLES

    def __init__(self, size=24, max_rotation=4.0, max_scale=0.08, max_shift=0.06):
        if size not in (24, 32):
            raise ValueError(f"size must be 24 or 32; got {size!r}")
        self.size = size
        self.name = "captioned_glyphs" if size == 24 else f"captioned_glyphs{size}"
        self.shape = (1, size, size)
        self.max_rotation, self.max_scale, self.max_shift = float(max_rotation), float(max_scale), float(max_shift)

    def sample(self, n, rng=None, return_labels=False, return_captions=False, return_attributes=False,
               split="train"):
        n = check_positive_int(n, "n")
        if split not in ("train", "heldout", "all"):
            raise ValueError(f"split must be 'train', 'heldout' or 'all'; got {split!r}")
        rng = backend.default_rng(rng)
        # every random draw comes from the injected generator (maybe CuPy): one host copy of the uniforms
        u = backend.to_numpy(rng.random((n, 18)))
        c = numpy.minimum((u[:, 0] * len(CHARS)).astype(numpy.int64), len(CHARS) - 1)
        held = numpy.asarray(HELDOUT_VARIANT)[c]
        V = len(VARIANTS)
        if split == "heldout":
            v = held
        elif split == "all":
            v = numpy.minimum((u[:, 1] * V).astype(numpy.int64), V - 1)
        else:  # one of the V - 1 faces that are not held out for this character
            v = numpy.minimum((u[:, 1] * (V - 1)).astype(numpy.int64), V - 2)
            v = v + (v >= held)
        img = _affine_jitter(_render_all(), c * V + v, u[:, 2:6], self.size, self.max_rotation,
                             self.max_scale, self.max_shift)  # (n, S, S) in [0, 1]
        x = backend.asarray((2.0 * img - 1.0)[:, None])  # (n, S, S) -> (n, 1, S, S), explicit host -> default copy
        out = [x]
        if return_labels:
            out.append(backend.asarray(c))
        fws = numpy.asarray(VARIANTS)[v]  # (n, 3): family, weight, style
        if return_attributes:
            out.append({k: backend.asarray(fws[:, j].copy()) for j, k in enumerate(("family", "weight", "style"))})
        if return_captions:
            out.append([_caption(int(c[i]), *map(int, fws[i]), u[i, 6:18]) for i in range(n)])
        return out[0] if len(out) == 1 else tuple(out)

    def _sample(self, n, rng):
        return self.sample(n, rng, return_labels=True)

    @staticmethod
    def is_heldout(char, family, weight, style):
        """True when (char, face) is one of the held-out combinations (never in the training split)."""
        return VARIANTS.index((family, weight, style)) == HELDOUT_VARIANT[char]
