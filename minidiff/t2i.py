r"""Text to glyph: the glyph reader's training and the prompt-adherence measure.

See docs/attention.md §8-§12.
"""
from __future__ import annotations

import os
import time

from . import backend
from ._validate import check_bool, check_positive_int
from .nn import MODELS, Module, build_model

__all__ = ["WEIGHTS_DIR", "READER_PATH", "train_glyph_reader", "load_glyph_reader", "reader_accuracy",
           "TextConditionedDenoiser", "glyph_tokenizer", "make_text_model", "load_text_data", "load_text_model",
           "generate", "prompt_adherence", "adherence_prompt_sets", "export_for_shipping", "reproduce_text_glyphs"]

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


# ---------------------------------------------------------------------------------- the model
PROMPT_LENGTH = 12  # tokens; the longest caption the templates write is 10


def glyph_tokenizer(max_length: int = PROMPT_LENGTH):
    """The fixed tokenizer of ``captioned_glyphs``: every word a caption can use (deterministic)."""
    from .captioned import caption_words
    from .text import Tokenizer

    return Tokenizer.from_captions([" ".join(caption_words())], max_length=max_length)


class TextConditionedDenoiser(Module):
    r"""A text encoder and a context-conditioned denoiser, trained jointly (docs/attention.md §8).

    Calling convention of the wrapped ``denoiser`` (any Module built with ``context_dim``: the U-Net here,
    a DiT elsewhere): ``denoiser(x, sigma, context=c, context_mask=m) -> eps_hat`` with ``c`` (B, S,
    context_dim) and ``m`` (B, S) bool, and ``denoiser.backward(d_eps_hat) -> (dx, dcontext)``.

    ``forward(x, sigma, y=None)``: ``y`` are token ids (B, S) from :meth:`encode` (``None`` = the empty
    prompt for every row); the mask is ``y != PAD``; ``c = text_encoder(y, mask)``, then the denoiser.
    ``backward(d_eps_hat)`` runs the denoiser's backward, sends its ``dcontext`` into the text encoder's
    backward (so the encoder learns from the image loss alone), and returns ``dx``.

    ``null_ids`` (S,) is the empty prompt (the ``[NULL]`` token, then padding): the training loop swaps
    a caption for it ~10 % of the time (caption dropout), which teaches the same network the unconditional
    eps that classifier-free guidance needs (Ho & Salimans 2022).

    Parameters: ``tokenizer`` (a :class:`~minidiff.text.Tokenizer` or its config dict), ``text_encoder``
    (a :class:`~minidiff.text.TextEncoder` or its config dict), ``denoiser`` (a model or a
    ``{"model": class name, **config}`` dict). ``config`` holds all three, so checkpoints rebuild it.
    """

    num_classes = None

    def __init__(self, tokenizer, text_encoder, denoiser):
        from .text import TextEncoder, Tokenizer

        if isinstance(tokenizer, dict):
            tokenizer = Tokenizer.from_config(tokenizer)
        if isinstance(text_encoder, dict):
            text_encoder = TextEncoder(**text_encoder)
        if isinstance(denoiser, dict):
            denoiser = build_model(denoiser)
        if getattr(denoiser, "context_dim", None) != text_encoder.dim:
            raise ValueError(f"the denoiser's context_dim ({getattr(denoiser, 'context_dim', None)}) must equal "
                             f"the text encoder's dim ({text_encoder.dim})")
        if text_encoder.vocab_size != tokenizer.vocab_size or text_encoder.max_length < tokenizer.max_length:
            raise ValueError("the text encoder's vocab_size/max_length do not fit the tokenizer")
        self.tokenizer = tokenizer  # not a Module: no parameters
        self.text_encoder = text_encoder
        self.denoiser = denoiser
        self.config = dict(tokenizer=tokenizer.to_config(), text_encoder=dict(text_encoder.config),
                           denoiser={"model": type(denoiser).__name__, **denoiser.config})
        self.null_ids = tokenizer.encode([""])[0][0]  # (S,)
        self.channels = getattr(denoiser, "channels", None)

    def encode(self, prompts):
        """Token ids (B, S) of a list of prompts (an unknown word or too long a prompt: ValueError)."""
        return self.tokenizer.encode(list(prompts))[0]

    def forward(self, x, sigma, y=None):
        xp = backend.get_xp(x)
        B = x.shape[0]
        if y is None:
            y = xp.broadcast_to(self.null_ids[None, :], (B, self.null_ids.shape[0]))
        if getattr(y, "ndim", None) != 2 or y.shape[0] != B:
            raise ValueError(f"y must be token ids of shape ({B}, S) (from .encode); got {getattr(y, 'shape', y)}")
        mask = y != 0  # [PAD] is id 0
        c = self.text_encoder(y, mask)  # (B, S, context_dim)
        self._c = c
        return self.denoiser(x, sigma, context=c, context_mask=mask)

    def backward(self, d_eps_hat):
        dx, dcontext = self.denoiser.backward(d_eps_hat)
        self.text_encoder.backward(dcontext)
        return dx


MODELS["TextConditionedDenoiser"] = TextConditionedDenoiser


def make_text_model(cfg, data, tokenizer=None):
    """The text-to-image model a :class:`~minidiff.training.TrainConfig` names: a
    :class:`~minidiff.text.TextEncoder` (width ``text_dim``, ``text_depth`` blocks) and, for ``model="unet"``,
    a U-Net with cross-attention at ``attention_resolutions`` (default: every downsampled level, e.g. (2, 4)
    for channel_mult (1, 2, 2): the 12x12 and 6x6 maps of a 24x24 image), or for ``model="dit"`` a
    :class:`~minidiff.nn.DiTDenoiser` whose every block cross-attends to the prompt. ``data`` fixes the
    shape: pixels, or the latents of an autoencoder (latent diffusion, docs/latent.md §2)."""
    from .text import TextEncoder

    tok = glyph_tokenizer() if tokenizer is None else tokenizer
    enc = TextEncoder(tok.vocab_size, tok.max_length, dim=cfg.text_dim, depth=cfg.text_depth,
                      num_heads=cfg.num_heads, dtype=cfg.dtype, seed=cfg.seed + 1)
    if cfg.model == "dit":  # every DiT block cross-attends to the prompt (docs/latent.md §3)
        from .runs import make_model

        return TextConditionedDenoiser(tok, enc, make_model(cfg, data, context_dim=cfg.text_dim))
    if cfg.model != "unet":
        raise ValueError(f"a text-conditioned model is a 'unet' or a 'dit'; got model {cfg.model!r}")
    res = cfg.attention_resolutions or tuple(2 ** l for l in range(1, len(cfg.channel_mult))) or (1,)
    unet = build_model("UNetDenoiser", channels=int(data.shape[1]), base_channels=cfg.base_channels,
                       channel_mult=list(cfg.channel_mult), dtype=cfg.dtype, seed=cfg.seed,
                       context_dim=cfg.text_dim, attention_resolutions=list(res),
                       num_heads=cfg.num_heads, pooled_context=cfg.pooled_context)
    return TextConditionedDenoiser(tok, enc, unet)


def load_text_data(name, n, seed):
    """``(images, token ids (n, S))`` of ``n`` training draws of a captioned data set."""
    from .datasets import get_dataset

    ds = get_dataset(name)
    x, captions = ds.sample(n, backend.default_rng(seed), return_captions=True)
    return x, glyph_tokenizer().encode(captions)[0]


# ---------------------------------------------------------------------------------- sampling
def load_text_model(name_or_path="text-glyphs"):
    """A text-to-image checkpoint, by path or by the shipped name ``"text-glyphs"``, with its EMA weights
    (when stored) and, as attributes, its training ``schedule`` and ``sample_shape`` (C, H, W)."""
    from .nn import load
    from .nn.checkpoint import resolve
    from .runs import TrainConfig, make_schedule

    ck = load(name_or_path)
    if not isinstance(ck.model, TextConditionedDenoiser):
        raise ValueError(f"{name_or_path!r} holds a {type(ck.model).__name__}, not a TextConditionedDenoiser")
    model = ck.sampling_model()
    cfg = TrainConfig.from_dict(dict(ck.config or {}))
    model.schedule = make_schedule(cfg)
    model.sample_shape = tuple(int(k) for k in (ck.extra or {}).get("data_shape", (1, 24, 24)))
    model.latent = None  # latent diffusion: (autoencoder, scale, shift) that decode the samples
    if cfg.latent:
        from .latent import load_autoencoder

        model.latent = (load_autoencoder(cfg.latent, near=resolve(name_or_path)), cfg.latent_scale, cfg.latent_shift)
    return model


def generate(model, prompt, n: int = 16, guidance: float = 3.0, steps: int = 20,
             sampler: str = "gradient_estimation", grid: str = "log_linear", seed=0, schedule=None, shape=None,
             callback=None, return_nfe: bool = False, decode: bool = True):
    r"""Images for a prompt in one call: ``x (n, C, H, W)``.

    ``model``: a :class:`TextConditionedDenoiser` or a checkpoint path / shipped name (``"text-glyphs"``).
    ``prompt``: one str (all n rows), or a list of n str; ``""`` is the unconditional model. Sampling uses
    classifier-free guidance ``eps = eps_u + w (eps_c - eps_u)`` with ``w = guidance`` (Ho & Salimans 2022;
    w = 1 is the plain conditional model, w = 0 the unconditional one: docs/math.md's convention),
    from ``x ~ N(0, sigma_max^2 I)`` down ``steps`` levels of the training schedule with ``sampler``,
    ending on a plain DDIM step for the family samplers (as the CLI does). ``callback(state)`` sees every
    :class:`~minidiff.samplers.SamplerState` (the denoising animation of the demo uses it).
    A latent-diffusion model (loaded by :func:`load_text_model`, trained with ``TrainConfig(latent=...)``)
    samples latents and, with ``decode`` (default), returns them decoded by its autoencoder
    (``x = decoder(z0 / scale + shift)``, docs/latent.md §2); ``decode=False`` returns the latents.
    An unknown word is a ValueError listing the vocabulary; too long a prompt names the limit.
    """
    from .samplers import iter_sample
    from .guidance import classifier_free
    from .runs import TrainConfig, make_schedule

    if isinstance(model, str):
        model = load_text_model(model)
    if not isinstance(model, TextConditionedDenoiser):
        raise TypeError(f"model must be a TextConditionedDenoiser or a checkpoint name/path; got {type(model).__name__}")
    prompts = [prompt] * check_positive_int(n, "n") if isinstance(prompt, str) else list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompt must be a str or a non-empty list of str")
    n = len(prompts)
    schedule = schedule or getattr(model, "schedule", None) or make_schedule(TrainConfig())
    shape = tuple(shape or getattr(model, "sample_shape", None) or (1, 24, 24))
    ids = model.encode(prompts)  # ValueError for unknown words / too long prompts, before any work
    xp = backend.get_xp()
    sigmas = schedule.sampling_sigmas(check_positive_int(steps, "steps"), spacing=grid, final_zero=True)
    rng = backend.default_rng(seed, xp=xp)
    dtype = next(iter(model.parameters())).data.dtype
    x = float(sigmas[0]) * rng.standard_normal((n,) + tuple(int(k) for k in shape), dtype=dtype)
    den = classifier_free(model, ids, guidance)
    kw = {"final_step": "ddim"} if sampler in ("gradient_estimation", "ddim", "ddpm", "euler") else {}
    state = None
    for state in iter_sample(den, sigmas, x, method=sampler, rng=rng, **kw):
        if callback is not None:
            callback(state)
    x = state.x
    if check_bool(decode, "decode") and getattr(model, "latent", None) is not None:
        from .latent import decode_latents

        ae, scale, shift = model.latent
        x = decode_latents(ae, x, scale, shift)
    return (x, state.nfe) if return_nfe else x


# ---------------------------------------------------------------------------------- adherence
def prompt_adherence(model, prompts, n_per_prompt: int = 4, guidance: float = 3.0, steps: int = 20, seed=0,
                     reader=None, batch_size: int = 64):
    """How often samples show what their prompt names, read by the glyph reader (docs/attention.md §11).

    For each prompt (parsed with :func:`minidiff.captioned.parse_caption`), ``n_per_prompt`` samples are
    drawn with guidance ``w`` and read; the same number of real glyphs with the prompt's named attributes
    (the unnamed ones at random, held-out pairs included) are read too. Returns a dict with, per
    attribute ``k`` in char/family/weight/style: ``samples_<k>`` and ``real_<k>`` (share read as the named
    value, over the prompts that name ``k``), ``samples_all``/``real_all`` (every named attribute right),
    and ``n`` (samples)."""
    from .captioned import CaptionedGlyphs, parse_caption

    reader = load_glyph_reader() if reader is None else reader
    rows = [p for p in prompts for _ in range(check_positive_int(n_per_prompt, "n_per_prompt"))]
    want = [parse_caption(p) for p in rows]
    xs = []
    for s in range(0, len(rows), batch_size):
        xs.append(generate(model, rows[s:s + batch_size], guidance=guidance, steps=steps, seed=seed * 100003 + s))
    xp = backend.get_xp()
    samples = xp.concatenate(xs)
    # real glyphs of each row's named attributes: draw from all faces, keep the matching ones
    ds = CaptionedGlyphs(size=reader.size)
    real, rng = [], backend.default_rng(seed * 100003 + 99991)
    pool_x, pool_c, pool_a = ds.sample(20000, rng, return_labels=True, return_attributes=True, split="all")
    lab = backend.to_numpy(pool_c).tolist()
    att = {k: backend.to_numpy(v).tolist() for k, v in pool_a.items()}
    used = set()
    for w in want:
        for i in range(len(lab)):
            if i not in used and lab[i] == w["char"] and all(w[k] is None or att[k][i] == w[k] for k in att):
                used.add(i)
                real.append(i)
                break
        else:
            raise RuntimeError(f"no real glyph for {w} in the pool")  # pragma: no cover - 20000 draws
    real_x = pool_x[xp.asarray(real)]
    dtype = next(iter(reader.parameters())).data.dtype
    out = {"n": len(rows)}
    for name, imgs in (("samples", samples), ("real", real_x)):
        pred = {k: backend.to_numpy(v).tolist() for k, v in reader.predict(imgs.astype(dtype)).items()}
        all_ok = [True] * len(rows)
        for k in ("char", "family", "weight", "style"):
            idx = [i for i, w in enumerate(want) if w[k] is not None]
            ok = [pred[k][i] == want[i][k] for i in idx]
            for i, o in zip(idx, ok):
                all_ok[i] = all_ok[i] and o
            out[f"{name}_{k}"] = sum(ok) / len(ok) if ok else None
        out[f"{name}_all"] = sum(all_ok) / len(all_ok)
    out["samples"] = samples
    return out


def adherence_prompt_sets(seed: int = 0):
    """The prompt sets of the shipped model's report (docs/attention.md §12), deterministic:

    - ``"char"``: each of the 36 characters alone (``"R"``);
    - ``"one_attr"``: each character with one attribute word (cycling through the seven words);
    - ``"seen_full"``: each character in one face it was trained on, all three attributes named;
    - ``"heldout_full"``: each character in its held-out face, all three attributes named."""
    from .captioned import CHARS, HELDOUT_VARIANT, VARIANTS, describe

    one = [(0, None, None), (1, None, None), (2, None, None), (None, 0, None), (None, 1, None),
           (None, None, 0), (None, None, 1)]  # (family, weight, style) with one named
    sets = {"char": [describe(c) for c in range(len(CHARS))],
            "one_attr": [describe(c, *one[c % len(one)]) for c in range(len(CHARS))],
            "seen_full": [describe(c, *VARIANTS[(HELDOUT_VARIANT[c] + 1 + (c * 7 + seed) % 11) % 12])
                          for c in range(len(CHARS))],
            "heldout_full": [describe(c, *VARIANTS[HELDOUT_VARIANT[c]]) for c in range(len(CHARS))]}
    return sets


def export_for_shipping(src, dst, config=None, extra=None):
    """Write the EMA weights of training checkpoint ``src`` to ``dst`` as a sampling-only checkpoint
    (no optimizer state, no separate EMA copy: a third of the size), keeping the training config, the
    data shape, the step and the loss history; ``config``/``extra`` replace the stored ones when given."""
    from .nn import load, save

    ck = load(src)
    if extra is None:
        extra = dict(ck.extra or {}, exported_from_step=(ck.extra or {}).get("step"))
    save(dst, ck.sampling_model(), config=ck.config if config is None else config, extra=extra)
    return dst


class _StopStage(Exception):
    """Raised by a callback to end a stage at a chosen step (its checkpoint is already on disk)."""


def reproduce_text_glyphs(workdir, out=None, stages=(1800, 1200, 2400, 4000), stage1_plan: int = 3000,
                          n_train: int = 30000, batch_size: int = 32, progress: bool = True):
    """Re-run the four training stages of the shipped ``text-glyphs`` (docs/attention.md §12) in ``workdir``
    and export the EMA weights of the last stage to ``out`` (default ``workdir/text-glyphs.npz``).

    1. ``minidiff train --dataset captioned_glyphs --model unet --conditional ...`` (the README's command,
       planned for ``stage1_plan`` steps of a warm-up + cosine learning rate), stopped at its
       ``stages[0]``-step checkpoint;
    2. - 4. ``stages[1:]`` more steps each from the previous stage's raw weights with
       :func:`minidiff.training.train` (fresh Adam moments, peak lr 1e-3, warm-up 50, cosine to 1e-5,
       EMA decay 0.995, Min-SNR weighting, caption dropout 0.1, random seeds 1, 2, 3), on the same 30000
       captioned images.

    About 9400 steps at ~0.55 s each on one core of an idle 2-core machine: ~1.5 hours. BLAS thread
    counts change float rounding, so a rerun matches the shipped weights in behaviour, not bit for bit.
    ``stages``, ``stage1_plan``, ``n_train`` and ``batch_size`` (32) exist to shrink the recipe for a test.
    Returns the path written."""
    from .nn import load
    from .runs import TrainConfig, fit, make_schedule
    from .training import train

    if isinstance(stages, (str, bytes)) or not hasattr(stages, "__len__") or len(stages) < 1:
        raise TypeError(f"stages must be a sequence of step counts, the first for the CLI stage; got {stages!r}")
    stages = [check_positive_int(k, "stages entry") for k in stages]
    stage1_plan = check_positive_int(stage1_plan, "stage1_plan", minimum=stages[0])
    n_train, batch_size = check_positive_int(n_train, "n_train"), check_positive_int(batch_size, "batch_size")
    os.makedirs(workdir, exist_ok=True)
    out = os.path.join(workdir, "text-glyphs.npz") if out is None else out
    first = stages[0]
    cfg = TrainConfig(dataset="captioned_glyphs", model="unet", conditional=True, n_train=n_train, base_channels=32,
                      channel_mult=(1, 2, 2), attention_resolutions=(2, 4), steps=stage1_plan, batch_size=batch_size,
                      lr=2e-3, warmup_steps=200, ema_decay=0.998, loss_weighting="min_snr",
                      checkpoint_every=200 if first % 200 == 0 else first, seed=0)  # writes step `first`
    path = os.path.join(workdir, "stage1.npz")

    def stop(m):
        if m["step"] >= first:
            raise _StopStage

    try:
        fit(cfg, checkpoint_path=path, progress=progress, callback=stop)
    except _StopStage:
        pass
    data, ids = load_text_data("captioned_glyphs", n_train, 0)
    schedule = make_schedule(cfg)
    for k, steps in enumerate(stages[1:], start=2):
        model = load(path).model  # the previous stage's raw weights; fresh optimiser moments and EMA
        path = os.path.join(workdir, f"stage{k}.npz")
        for m in train(model, data.astype(cfg.dtype), schedule, steps=steps, batch_size=batch_size, lr=1e-3, labels=ids,
                       label_dropout=0.1, warmup_steps=50, min_lr=1e-5, ema_decay=0.995, loss_weighting="min_snr",
                       seed=k - 1, checkpoint_path=path, checkpoint_every=200):
            if progress and m["step"] % 200 == 0:
                print(f"stage {k}: step {m['step']}/{steps}, loss {m['loss']:.4f}", flush=True)
    first_ck = load(os.path.join(workdir, "stage1.npz"))
    return export_for_shipping(path, out, config=first_ck.config, extra={
        "step": sum(stages), "data_shape": first_ck.extra["data_shape"],
        "stages": f"reproduce_text_glyphs(stages={tuple(stages)}, stage1_plan={stage1_plan})"})
