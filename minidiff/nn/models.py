r"""Denoisers ``eps_hat(x, sigma, y)`` and a noise-aware classifier, with hand-written backward passes.

Preconditioning (both denoisers): the network sees the VP-scaled input

    ``x_in = x / sqrt(1 + sigma^2)``

(docs/math.md §1: ``x_vp = sqrt(ab) x_ve`` with ``ab = 1 / (1 + sigma^2)``), so its input has roughly unit
variance for unit-variance data at every sigma, and it predicts ``eps`` directly (Ho et al. 2020's
parametrisation; Karras et al. 2022 call this factor ``c_in``). The noise level enters through
:class:`~minidiff.nn.layers.SigmaEmbedding` of ``log(sigma)``. ``backward(d_eps_hat)`` returns the
gradient w.r.t. ``x`` (the chain rule includes the ``1/sqrt(1 + sigma^2)`` factor); sigma is not
differentiated.

Class conditioning (``num_classes=K``): labels ``y`` are ints in ``[0, K]``; the value ``K`` is the NULL
label used for classifier-free guidance (Ho & Salimans 2022), and ``y=None`` means all-NULL.

Every model records its constructor arguments in ``model.config`` (JSON-able), and
``build_model({"model": name, **config})`` rebuilds it (see :mod:`minidiff.nn.checkpoint`).
"""
from __future__ import annotations

import math
import numbers

from .. import backend
from .._validate import check_array, check_float_dtype, check_labels, check_positive_int, check_rng, sigma_like
from .layers import (
    MAX_WIDTH,
    Conv2d, Downsample, Embedding, GroupNorm, Linear, ResBlock, SigmaEmbedding, SiLU, Upsample,
    make_activation,
)
from .attention import TransformerBlock
from .module import Module

__all__ = ["MLPDenoiser", "UNetDenoiser", "NoiseAwareClassifier", "cross_entropy", "MODELS", "build_model"]


def _seed_for_config(seed):
    return int(seed) if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) else None


def _sigma_inputs(sigma, x):
    """(sigma as a (B,) array for the embedding, c_in = 1/sqrt(1 + sigma^2) shaped to broadcast on x)."""
    xp = backend.get_xp(x)
    s = sigma_like(sigma, x)  # float, or (B, 1, ..., 1) array of x.dtype
    B = x.shape[0]
    if isinstance(s, float):
        return xp.full((B,), s, dtype=x.dtype), 1.0 / math.sqrt(1.0 + s * s)
    return s.reshape(B), 1.0 / xp.sqrt(1.0 + s * s)  # (B, 1, ..., 1) -> (B,)


class _Conditioning:
    """Mixin: label handling shared by the class-conditional denoisers."""

    def _labels(self, y, B, xp):
        if self.num_classes is None:
            if y is not None:
                raise ValueError("y was given but the model is unconditional (num_classes=None)")
            return None
        if y is None:
            return xp.full((B,), self.num_classes, dtype=xp.int64)  # all NULL
        # num_classes itself is the NULL label (classifier-free guidance), so K + 1 values are allowed
        # shape, dtype, backend here; the range once, in class_emb's forward (one sync, not two)
        return check_labels(y, "y", self.num_classes + 1, batch=B, like=self.class_emb.W.data, values=False)


class _MLPTrunk:
    """Mixin: the MLP trunk shared by :class:`MLPDenoiser` and :class:`NoiseAwareClassifier`.

    Input ``h_0 = [x / sqrt(1 + sigma^2), e(sigma) (, extra)]``, then ``h_{l+1} = act(h_l W_l + b_l)``
    for the hidden layers and a last linear layer without activation. The layers live in
    ``self.linears`` and ``self.acts`` (so parameter names are ``linears.<i>.W``/``.b``)."""

    def _build_trunk(self, width_in, hidden, width_out, activation, dt, rng):
        widths = (width_in,) + tuple(hidden) + (width_out,)
        self.linears = [Linear(a, b, dtype=dt, seed=rng) for a, b in zip(widths[:-1], widths[1:])]
        self.acts = [make_activation(activation) for _ in hidden]

    def _trunk_hidden(self, x, sigma, extra=None):
        """``x (B, dim)`` (checked by the caller) -> the last hidden activations ``h_L``; caches ``c_in``."""
        xp = backend.get_xp(x)
        sig, c_in = _sigma_inputs(sigma, x)
        parts = [x * c_in, self.sigma_emb.embed(sig)] + ([] if extra is None else [extra])  # sig validated
        h = xp.concatenate(parts, axis=1)  # (B, dim + 2K_f [+ extra width])
        for lin, act in zip(self.linears, self.acts):
            h = act(lin(h))
        self._c_in = c_in
        return h

    def _trunk_forward(self, x, sigma, extra=None):
        """``x (B, dim)`` (checked by the caller) -> output of the last linear layer; caches ``c_in``."""
        return self.linears[-1](self._trunk_hidden(x, sigma, extra))

    def _trunk_backward(self, dout):
        """Returns ``(dx, d_extra)``: the gradient w.r.t. ``x`` and w.r.t. the extra input columns."""
        dh = self.linears[-1].backward(dout)
        for lin, act in zip(reversed(self.linears[:-1]), reversed(self.acts)):
            dh = lin.backward(act.backward(dh))
        return dh[:, :self.dim] * self._c_in, dh[:, self.dim + self.sigma_emb.dim:]


class MLPDenoiser(_Conditioning, _MLPTrunk, Module):
    r"""MLP noise predictor for points ``x (B, dim)``:

    ``h_0 = [x / sqrt(1 + sigma^2), e(sigma), c(y)]`` (concatenated), ``h_{l+1} = act(h_l W_l + b_l)``,
    ``eps_hat = h_L W_L + b_L``, with ``e`` the sinusoidal log-sigma features and ``c`` a learned class
    embedding (conditional models only).

    Parameters
    ----------
    dim : data dimension.
    hidden : hidden widths (default (128, 128, 128): ~35k parameters, trains a 2-D spiral in about a
        minute on 2 cores).
    activation : 'silu' (default), 'relu', 'gelu' (tanh form) or 'tanh'.
    num_classes : None (unconditional) or K >= 1 (labels 0..K-1, K = NULL).
    class_dim : width of the class embedding.
    num_frequencies : K_f of :class:`SigmaEmbedding` (2 K_f features).
    dtype : 'float32' (default) or 'float64' (for gradient checks).
    seed : int or Generator for the initialisation.
    """

    def __init__(self, dim: int, hidden=(128, 128, 128), activation: str = "silu", num_classes=None,
                 class_dim: int = 16, num_frequencies: int = 8, dtype="float32", seed=0):
        self.dim = check_positive_int(dim, "dim", maximum=MAX_WIDTH)
        hidden = tuple(check_positive_int(h, "hidden width", maximum=MAX_WIDTH) for h in hidden)
        if not hidden:
            raise ValueError("hidden must list at least one width")
        dt = check_float_dtype(dtype)
        self.num_classes = None if num_classes is None else check_positive_int(num_classes, "num_classes", maximum=MAX_WIDTH)
        self.config = dict(dim=self.dim, hidden=list(hidden), activation=activation,
                           num_classes=self.num_classes, class_dim=int(class_dim),
                           num_frequencies=int(num_frequencies), dtype=str(dt), seed=_seed_for_config(seed))
        rng = check_rng(seed, "seed")
        self.sigma_emb = SigmaEmbedding(num_frequencies, dtype=dt)
        self.class_emb = None
        width_in = self.dim + self.sigma_emb.dim
        if self.num_classes is not None:
            self.class_emb = Embedding(self.num_classes + 1, class_dim, dtype=dt, seed=rng)
            width_in += class_dim
        self._build_trunk(width_in, hidden, self.dim, activation, dt, rng)

    def forward(self, x, sigma, y=None):
        x = check_array(x, "x", like=self.linears[0].W.data, ndim=2, last=self.dim, finite=False)
        labels = self._labels(y, x.shape[0], backend.get_xp(x))
        self._conditional = labels is not None
        return self._trunk_forward(x, sigma, None if labels is None else self.class_emb(labels))

    def backward(self, d_eps_hat):
        dx, d_class = self._trunk_backward(d_eps_hat)
        if self._conditional:
            self.class_emb.backward(d_class)
        return dx


class UNetDenoiser(_Conditioning, Module):
    r"""Small U-Net noise predictor for images ``x (B, C, H, W)`` (NCHW in and out; channels-last inside).

    ``x_in = x / sqrt(1 + sigma^2)``; embedding ``e = silu(W2 silu(W1 e(sigma) + b1) + b2 [+ c(y)])``;
    ``h = conv_in(x_in)``; for each resolution l: ``h = ResBlock_l(h, e)``, keep ``h`` as a skip, 2x2
    average-pool (except at the last); a middle ResBlock; then back up: ``h = ResBlock(concat(h, skip_l), e)``
    and nearest 2x upsampling; ``eps_hat = conv_out(silu(GroupNorm(h)))``. Each ResBlock adds a
    per-channel projection of ``e`` (Ho et al. 2020, App. B, with one block per resolution).

    Parameters
    ----------
    channels : C of the images.
    base_channels : width at full resolution (default 32).
    channel_mult : width multipliers per resolution (default (1, 2, 2): three resolutions, so H and W must
        be divisible by 4, e.g. 16x16 -> 8x8 -> 4x4, 28x28 -> 14x14 -> 7x7).
    groups : GroupNorm groups (every width, including concatenations, must be divisible by it).
    emb_dim : embedding width (default 4 * base_channels).
    num_classes, class_dim=emb_dim, num_frequencies, dtype, seed : as in :class:`MLPDenoiser`.
    context_dim : width of a text context for cross-attention (None: no text conditioning).
    attention_resolutions : downsampling factors (1 = full resolution, 2, 4, ...) at which a pre-LN
        :class:`~minidiff.nn.TransformerBlock` follows the ResBlock, on the way down and up (and after
        the middle block when the lowest resolution is listed); guided-diffusion's convention. The block
        reads the feature map (B, H, W, C) as the token sequence (B, H*W, C): self-attention over the
        pixels, then cross-attention from every pixel to the text tokens when ``context_dim`` is set
        (Rombach et al. 2022, Sec. 3.3; docs/attention.md §8).
    num_heads : heads of those attention layers.
    pooled_context : also add ``W_p mean_j(c_j)`` (the context averaged over its real tokens) to the
        embedding ``e``, the pooled text embedding of Imagen (Saharia et al. 2022, Sec. 2.1 and App. F).

    Text conditioning (``context_dim`` set): ``forward(x, sigma, context=c, context_mask=m)`` with ``c``
    (B, S, context_dim) and ``m`` (B, S) bool (True = a real token); ``backward(d_eps_hat)`` then returns
    ``(dx, dcontext)`` (dcontext summed over every cross-attention and the pooled path), otherwise ``dx``.
    """

    def __init__(self, channels: int, base_channels: int = 32, channel_mult=(1, 2, 2), groups: int = 8,
                 emb_dim=None, num_classes=None, num_frequencies: int = 8, dtype="float32", seed=0,
                 context_dim=None, attention_resolutions=(), num_heads: int = 4, pooled_context: bool = False):
        self.channels = check_positive_int(channels, "channels", maximum=MAX_WIDTH)
        base = check_positive_int(base_channels, "base_channels", maximum=MAX_WIDTH)
        mult = tuple(check_positive_int(m, "channel_mult entry", maximum=MAX_WIDTH) for m in channel_mult)
        if not mult:
            raise ValueError("channel_mult must have at least one entry")
        groups = check_positive_int(groups, "groups", maximum=MAX_WIDTH)
        emb_dim = 4 * base if emb_dim is None else check_positive_int(emb_dim, "emb_dim", maximum=MAX_WIDTH)
        dt = check_float_dtype(dtype)
        self.num_classes = None if num_classes is None else check_positive_int(num_classes, "num_classes", maximum=MAX_WIDTH)
        self.config = dict(channels=self.channels, base_channels=base, channel_mult=list(mult), groups=groups,
                           emb_dim=emb_dim, num_classes=self.num_classes, num_frequencies=int(num_frequencies),
                           dtype=str(dt), seed=_seed_for_config(seed))
        self.context_dim = None if context_dim is None else check_positive_int(context_dim, "context_dim",
                                                                                maximum=MAX_WIDTH)
        attn_res = sorted({check_positive_int(r, "attention_resolutions entry", maximum=MAX_WIDTH)
                           for r in attention_resolutions})
        factors = [2 ** l for l in range(len(mult))]
        if any(r not in factors for r in attn_res):
            raise ValueError(f"attention_resolutions must be downsampling factors among {factors}; got {attn_res}")
        if pooled_context and self.context_dim is None:
            raise ValueError("pooled_context needs a context_dim")
        self.pooled_context = bool(pooled_context)
        if attn_res or self.context_dim is not None:
            self.config.update(context_dim=self.context_dim, attention_resolutions=attn_res,
                               num_heads=int(num_heads), pooled_context=self.pooled_context)
        widths = [base * m for m in mult]
        L = len(widths)
        # up block l works at resolution l on concat(h, skip_l): h has the width of the level below
        # (widths[-1] at the bottom, coming from the middle block), skip_l has widths[l]
        self._split = [(widths + widths[-1:])[l + 1] for l in range(L)]  # channels of h in up block l
        up_in = [self._split[l] + widths[l] for l in range(L)]
        for w in widths + up_in:
            if w % groups:
                raise ValueError(f"every width must be divisible by groups={groups}; widths {widths}")
        self.widths = widths
        rng = check_rng(seed, "seed")
        self.sigma_emb = SigmaEmbedding(num_frequencies, dtype=dt)
        self.emb1 = Linear(self.sigma_emb.dim, emb_dim, dtype=dt, seed=rng)
        self.emb_act1 = SiLU()
        self.emb2 = Linear(emb_dim, emb_dim, dtype=dt, seed=rng)
        self.class_emb = Embedding(self.num_classes + 1, emb_dim, dtype=dt, seed=rng) if self.num_classes else None
        self.emb_act2 = SiLU()
        self.conv_in = Conv2d(self.channels, base, 3, dtype=dt, seed=rng)
        self.down_blocks = [ResBlock(([base] + widths)[l], widths[l], emb_dim, groups, dt, rng) for l in range(L)]
        self.downs = [Downsample() for _ in range(L - 1)]
        self.mid = ResBlock(widths[-1], widths[-1], emb_dim, groups, dt, rng)
        self.up_blocks = [ResBlock(up_in[l], widths[l], emb_dim, groups, dt, rng) for l in range(L)]
        self.ups = [Upsample() for _ in range(L - 1)]
        self.gn_out = GroupNorm(groups, widths[0], dtype=dt)
        self.act_out = SiLU()
        self.conv_out = Conv2d(widths[0], self.channels, 3, dtype=dt, seed=rng)
        # attention blocks, one list per position, in level order (only the listed levels have one)
        self.attn_levels = [l for l in range(L) if 2 ** l in attn_res]
        cd = self.context_dim
        self.down_attn = [TransformerBlock(widths[l], num_heads, cd, dtype=dt, seed=rng) for l in self.attn_levels]
        self.mid_attn = (TransformerBlock(widths[-1], num_heads, cd, dtype=dt, seed=rng)
                         if L - 1 in self.attn_levels else None)
        self.up_attn = [TransformerBlock(widths[l], num_heads, cd, dtype=dt, seed=rng) for l in self.attn_levels]
        self.ctx_proj = Linear(cd, emb_dim, dtype=dt, seed=rng) if self.pooled_context else None

    def _attend(self, block, h, ctx):
        """A transformer block on the feature map ``h (B, H, W, C)`` read as the sequence (B, H*W, C)."""
        B, H, W, C = h.shape
        seq = h.reshape(B, H * W, C)  # (B, H, W, C) -> (B, HW, C), a view
        out = block(seq, context=ctx[0], context_mask=ctx[1]) if ctx else block(seq)
        return out.reshape(B, H, W, C)

    def _attend_backward(self, block, d):
        """Backward of :meth:`_attend`: returns (dh, dcontext or None)."""
        B, H, W, C = d.shape
        g = block.backward(d.reshape(B, H * W, C))
        dc = None
        if isinstance(g, tuple):
            g, dc = g
        return g.reshape(B, H, W, C), dc

    def forward(self, x, sigma, y=None, context=None, context_mask=None):
        x = check_array(x, "x", like=self.conv_in.W.data, ndim=4, finite=False)
        xp = backend.get_xp(x)
        B, C, H, W = x.shape
        L = len(self.widths)
        if C != self.channels:
            raise ValueError(f"x must have {self.channels} channels (shape (B, C, H, W)); got shape {tuple(x.shape)}")
        f = 2 ** (L - 1)
        if H % f or W % f:
            raise ValueError(f"H and W must be divisible by {f} for {L} resolutions; got {H}x{W}")
        labels = self._labels(y, B, xp)
        ctx = self._context(context, context_mask, B)  # () or (context, context_mask)
        sig, c_in = _sigma_inputs(sigma, x)
        e = self.emb2(self.emb_act1(self.emb1(self.sigma_emb.embed(sig))))  # (B, emb_dim)
        if labels is not None:
            e += self.class_emb(labels)
        if self.pooled_context:
            m = ctx[1].astype(x.dtype)[:, :, None]  # (B, S) -> (B, S, 1)
            self._pool_w = m / m.sum(axis=1, keepdims=True)  # weights 1/n_b on the real tokens
            e += self.ctx_proj((ctx[0] * self._pool_w).sum(axis=1))  # (B, S, Dc) -> (B, Dc) -> (B, emb_dim)
        e = self.emb_act2(e)
        h = xp.ascontiguousarray((x * c_in).transpose(0, 2, 3, 1))  # (B, C, H, W) -> (B, H, W, C)
        h = self.conv_in(h)
        attn = {l: k for k, l in enumerate(self.attn_levels)}
        skips = []
        for l in range(L):
            h = self.down_blocks[l](h, e)
            if l in attn:
                h = self._attend(self.down_attn[attn[l]], h, ctx)
            skips.append(h)
            if l < L - 1:
                h = self.downs[l](h)
        h = self.mid(h, e)
        if self.mid_attn is not None:
            h = self._attend(self.mid_attn, h, ctx)
        for l in reversed(range(L)):
            h = self.up_blocks[l](xp.concatenate([h, skips[l]], axis=-1), e)  # channels: h | skip
            if l in attn:
                h = self._attend(self.up_attn[attn[l]], h, ctx)
            if l > 0:
                h = self.ups[l - 1](h)
        out = self.conv_out(self.act_out(self.gn_out(h)))
        self._c_in, self._conditional, self._has_context = c_in, labels is not None, bool(ctx)
        return xp.ascontiguousarray(out.transpose(0, 3, 1, 2))  # (B, H, W, C) -> (B, C, H, W)

    def backward(self, d_eps_hat):
        """``d_eps_hat (B, C, H, W)`` -> ``dx``, or ``(dx, dcontext)`` after a forward with a context."""
        xp = backend.get_xp(d_eps_hat)
        L = len(self.widths)
        attn = {l: k for k, l in enumerate(self.attn_levels)}
        dctx = []  # the context's gradient from each cross-attention (and the pooled path)

        def through(block, d):
            d, dc = self._attend_backward(block, d)
            if dc is not None:
                dctx.append(dc)
            return d

        d = xp.ascontiguousarray(d_eps_hat.transpose(0, 2, 3, 1))  # (B, C, H, W) -> (B, H, W, C)
        d = self.gn_out.backward(self.act_out.backward(self.conv_out.backward(d)))
        de = None
        d_skips = [None] * L
        for l in range(L):
            if l > 0:
                d = self.ups[l - 1].backward(d)
            if l in attn:
                d = through(self.up_attn[attn[l]], d)
            d, de_l = self.up_blocks[l].backward(d)
            de = de_l if de is None else de + de_l
            n = self._split[l]
            d_skips[l] = d[..., n:]
            d = d[..., :n]
        if self.mid_attn is not None:
            d = through(self.mid_attn, d)
        d, de_l = self.mid.backward(d)
        de += de_l
        for l in reversed(range(L)):
            if l < L - 1:
                d = self.downs[l].backward(d)
            d = d + d_skips[l]
            if l in attn:
                d = through(self.down_attn[attn[l]], d)
            d, de_l = self.down_blocks[l].backward(d)
            de += de_l
        d = self.conv_in.backward(d)
        de = self.emb_act2.backward(de)
        if self._conditional:
            self.class_emb.backward(de)
        if self.pooled_context:
            dctx.append(self.ctx_proj.backward(de)[:, None, :] * self._pool_w)  # (B, Dc) -> (B, S, Dc)
        self.emb1.backward(self.emb_act1.backward(self.emb2.backward(de)))
        dx = d.transpose(0, 3, 1, 2) * self._c_in  # (B, H, W, C) -> (B, C, H, W)
        if not self._has_context:
            return dx
        dcontext = dctx[0]
        for g in dctx[1:]:
            dcontext = dcontext + g
        return dx, dcontext

    def _context(self, context, context_mask, B):
        """() without text conditioning, else (context, mask) checked against the model."""
        if self.context_dim is None:
            if context is not None or context_mask is not None:
                raise ValueError("context was given but the model has no cross-attention (context_dim=None)")
            return ()
        if context is None:
            raise ValueError(f"this model is text-conditioned: forward needs context=(B, S, {self.context_dim}) "
                             "(the null prompt's encoding for unconditional predictions)")
        context = check_array(context, "context", like=self.conv_in.W.data, ndim=3, last=self.context_dim, finite=False)
        if context.shape[0] != B:
            raise ValueError(f"context has batch {context.shape[0]} but x has batch {B}")
        if context_mask is None:
            context_mask = backend.get_xp(context).ones(context.shape[:2], dtype=bool)
        return (context, context_mask)


class NoiseAwareClassifier(_MLPTrunk, Module):
    r"""Classifier ``p(y | x, sigma)`` on noisy points ``x (B, dim)``, for classifier guidance
    (Dhariwal & Nichol 2021, Sec. 4): an MLP on ``[x / sqrt(1 + sigma^2), e(sigma)]`` giving logits (B, K).

    ``forward(x, sigma) -> logits``; ``backward(dlogits) -> dx``;
    ``grad_log_prob(x, sigma, y) = d/dx log softmax(logits)_y``, from
    ``d log p_y / d logits = onehot(y) - softmax(logits)`` pushed through the hand-written backward.
    """

    def __init__(self, dim: int, num_classes: int, hidden=(128, 128), activation: str = "silu",
                 num_frequencies: int = 8, dtype="float32", seed=0):
        self.dim = check_positive_int(dim, "dim", maximum=MAX_WIDTH)
        self.num_classes = check_positive_int(num_classes, "num_classes", maximum=MAX_WIDTH)
        hidden = tuple(check_positive_int(h, "hidden width", maximum=MAX_WIDTH) for h in hidden)
        dt = check_float_dtype(dtype)
        self.config = dict(dim=self.dim, num_classes=self.num_classes, hidden=list(hidden),
                           activation=activation, num_frequencies=int(num_frequencies), dtype=str(dt),
                           seed=_seed_for_config(seed))
        rng = check_rng(seed, "seed")
        self.sigma_emb = SigmaEmbedding(num_frequencies, dtype=dt)
        self._build_trunk(self.dim + self.sigma_emb.dim, hidden, self.num_classes, activation, dt, rng)

    def forward(self, x, sigma):
        x = check_array(x, "x", like=self.linears[0].W.data, ndim=2, last=self.dim, finite=False)
        return self._trunk_forward(x, sigma)  # (B, K) logits

    def backward(self, dlogits):
        return self._trunk_backward(dlogits)[0]

    def grad_log_prob(self, x, sigma, y):
        """``d/dx log p(y | x, sigma)``, shape of ``x``. Parameter gradients are left as they were."""
        xp = backend.get_xp(x)
        logits = self.forward(x, sigma)
        y = check_labels(y, "y", self.num_classes, batch=x.shape[0], like=logits)
        p = _softmax(logits)
        p *= -1.0
        p[xp.arange(x.shape[0]), y] += 1.0  # onehot(y) - softmax
        saved = [q.grad.copy() for q in self.parameters()]
        dx = self.backward(p)
        for q, g in zip(self.parameters(), saved):
            q.grad[...] = g
        return dx


def _softmax(logits):
    xp = backend.get_xp(logits)
    z = logits - logits.max(axis=1, keepdims=True)
    xp.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def cross_entropy(logits, y):
    r"""Mean cross-entropy ``L = mean_b (logsumexp(logits_b) - logits_{b, y_b})`` (log-sum-exp with the
    max subtracted) and its gradient ``dL/dlogits = (softmax(logits) - onehot(y)) / B``.
    Returns ``(loss as a Python float, dlogits)``."""
    logits = check_array(logits, "logits", ndim=2, min_size=1)
    xp = backend.get_xp(logits)
    B, K = logits.shape
    y = check_labels(y, "y", K, batch=B, like=logits)
    m = logits.max(axis=1, keepdims=True)
    lse = xp.log(xp.exp(logits - m).sum(axis=1)) + m[:, 0]  # (B,)
    rows = xp.arange(B)
    loss = float((lse - logits[rows, y]).mean())
    d = _softmax(logits)
    d[rows, y] -= 1.0
    d *= 1.0 / B
    return loss, d


from .autoencoder import Autoencoder  # noqa: E402  (a model too: saved and rebuilt by checkpoints)
from .dit import DiTDenoiser  # noqa: E402  (after _Conditioning and _sigma_inputs, which it uses)
from .superres import SuperResDenoiser  # noqa: E402

MODELS = {cls.__name__: cls for cls in (MLPDenoiser, UNetDenoiser, NoiseAwareClassifier, Autoencoder, DiTDenoiser,
                                        SuperResDenoiser)}


def build_model(kind_or_config, **kwargs):
    """Build a model from a class name (``build_model("MLPDenoiser", dim=2)``) or from a dict
    ``{"model": "MLPDenoiser", **config}`` (e.g. ``{"model": type(m).__name__, **m.config}``);
    ``kwargs`` override entries of the dict."""
    if isinstance(kind_or_config, str):
        kind, config = kind_or_config, {}
    elif isinstance(kind_or_config, dict):
        config = dict(kind_or_config)
        if "model" not in config:
            raise ValueError("a model config dict needs a 'model' entry naming the class, one of "
                             f"{sorted(MODELS)}")
        kind = config.pop("model")
    else:
        raise TypeError(f"kind_or_config must be a class name or a dict; got {type(kind_or_config).__name__}")
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; known: {sorted(MODELS)}")
    config.update(kwargs)
    return MODELS[kind](**config)
