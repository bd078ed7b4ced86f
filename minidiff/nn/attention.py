r"""Multi-head attention and the pre-LN transformer block, with hand-written backward passes.

Scaled dot-product attention (Vaswani et al. 2017, Eq. 1), for queries ``Q (L, d)``, keys ``K (S, d)``
and values ``V (S, d)``:

    ``Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V``,

computed per head h on ``Q_h = X W_q[:, h]``, ``K_h = C W_k[:, h]``, ``V_h = C W_v[:, h]`` (head width
``d = dim / num_heads``), the heads concatenated and projected by ``W_o`` (Vaswani et al. 2017, Sec. 3.2.2,
multi-head attention). ``C = X`` for self-attention; ``C`` is the text embedding for cross-attention.

All heads of all samples are batched GEMMs over (B, heads) batch axes. The heads are views of the
projections, with no copy: head h of ``Q = X W_q`` is the column block ``Q[:, h d:(h + 1) d]``, an (L, d)
matrix whose row stride BLAS takes as its leading dimension, and the heads' outputs are written straight
into their column blocks of the (B, L, dim) array that ``W_o`` multiplies. The logits are computed
transposed, ``S^T = K Q^T``, so that the softmax over the keys is a reduction over rows. On the CPU the
samples are taken in blocks of about 1 MB of logits, so that the softmax passes run in cache
(docs/performance.md §7), and the blocks are shared among the cores by
:func:`minidiff._parallel.run_blocks` (§8).
The derivation of the forward and backward passes is in docs/attention.md §1-§4; the block is §5.

Layout: sequences are ``(B, L, dim)`` (tokens on the middle axis, features last), so ``Linear`` acts on
the last axis. A U-Net feature map ``(B, H, W, C)`` (channels-last) is the sequence ``(B, H*W, C)``
without a copy.
"""
from __future__ import annotations

import math

from .. import backend
from .._parallel import on_cpu, run_blocks
from .._validate import MAX_SIZE, check_array, check_float_dtype, check_positive_int
from .layers import LayerNorm, Linear, _sum_last, make_activation
from .module import Module

__all__ = ["MultiHeadAttention", "FeedForward", "TransformerBlock"]

# Shifted logits below this are clamped before exp: their weights (< 2e-35 of the row's largest) vanish
# in the sum, and float32 exp of -87..-103 returns subnormals that x86 processes ~40x slower.
_LOGIT_FLOOR = -80.0


class MultiHeadAttention(Module):
    r"""Multi-head scaled dot-product attention (Vaswani et al. 2017, Eq. 1 and Sec. 3.2.2).

    Forward, with ``x (B, L, dim)``, ``c (B, S, context_dim)`` (``c = x`` for self-attention), head
    width ``d = dim / num_heads``, and per head h (docs/attention.md §1-§2):

        ``Q_h = x W_q^h``,  ``K_h = c W_k^h``,  ``V_h = c W_v^h``                   (B, L|S, d)
        ``S_h = Q_h K_h^T / sqrt(d) + M``                                           (B, L, S)
        ``P_h = softmax(S_h)`` over the keys (last axis), computed stably
        ``O_h = P_h V_h``                                                           (B, L, d)
        ``y = concat_h(O_h) W_o + b_o``                                              (B, L, dim)

    ``M[b, :, j] = -inf`` where ``mask[b, j]`` is False (key padding: that key gets weight exactly 0),
    else 0. The stable softmax subtracts each row's maximum before ``exp`` (docs/attention.md §2).

    Backward (docs/attention.md §3), with ``dO_h`` from ``to_out``'s backward:

        ``dV_h = P_h^T dO_h``,  ``dP_h = dO_h V_h^T``,
        ``dS_h = P_h * (dP_h - sum_j(dP_h * P_h))``        (the softmax VJP, row-wise)
        ``dQ_h = dS_h K_h / sqrt(d)``,  ``dK_h = dS_h^T Q_h / sqrt(d)``,

    and the row sum ``sum_j dP_ij P_ij = dO_i . O_i`` is taken on the (L, d) side rather than the
    (L, S) side (docs/attention.md §3). ``dx`` collects ``to_q``'s gradient; ``dc`` collects ``to_k`` and
    ``to_v``'s (for self-attention both add into ``dx``).

    Parameters
    ----------
    dim : width of the queries' input ``x`` and of the output.
    num_heads : number of heads; must divide ``dim``.
    context_dim : width of the context for cross-attention; ``None`` means keys and values come from
        inputs of width ``dim`` (self-attention, or cross-attention to a context of width ``dim``).
    dtype, seed : parameter dtype (float32/float64) and initialisation seed or Generator.

    Submodules ``to_q``, ``to_k``, ``to_v`` (no bias) and ``to_out`` (with bias), as diffusers names them.
    After a forward pass, :attr:`attention` gives the weights ``P`` as (B, heads, L, S). The forward keeps
    them unnormalised and transposed, ``E^T = exp(S^T - max)`` with the sums ``z`` over the keys, and
    divides the (L, d) outputs by ``z`` instead of the (S, L) weights: ``O = (E V) / z``; the backward
    uses ``P^T = E^T / z`` (docs/attention.md §4).
    """

    def __init__(self, dim: int, num_heads: int = 4, context_dim=None, dtype="float32", seed=None):
        self.dim = check_positive_int(dim, "dim", maximum=MAX_SIZE)
        self.num_heads = check_positive_int(num_heads, "num_heads", maximum=MAX_SIZE)
        if self.dim % self.num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide dim ({dim})")
        self.context_dim = None if context_dim is None else check_positive_int(context_dim, "context_dim", maximum=MAX_SIZE)
        kv_dim = self.dim if context_dim is None else self.context_dim
        dt = check_float_dtype(dtype)
        rng = backend.default_rng(seed)
        self.head_dim = self.dim // self.num_heads
        self.to_q = Linear(self.dim, self.dim, bias=False, dtype=dt, seed=rng)
        self.to_k = Linear(kv_dim, self.dim, bias=False, dtype=dt, seed=rng)
        self.to_v = Linear(kv_dim, self.dim, bias=False, dtype=dt, seed=rng)
        self.to_out = Linear(self.dim, self.dim, dtype=dt, seed=rng)
        self._cache = self._p_buf = self._x_self = None

    def _split(self, t, B, n, parts=1, i=0):
        """Head ``h`` of part ``i`` of ``t (B n, parts dim)`` (columns ``[part 0 | part 1 | ...]``, each part
        ``[head 0 | head 1 | ...]``) as a (B, heads, n, d) view, no copy: each (n, d) matrix has row stride
        ``parts dim``, which BLAS takes as its leading dimension."""
        t = t.reshape(B, n, parts, self.num_heads, self.head_dim)[:, :, i]  # (B, n, heads, d)
        return t.transpose(0, 2, 1, 3)  # (B, heads, n, d)

    def _qkv(self, x):
        """Self-attention's projections as one GEMM, ``x [W_q / sqrt(d) | W_k | W_v]`` (B L, 3 dim): returns
        ``q / sqrt(d), k, v``, (B, heads, L, d) views of it. Keeps ``(x, W)`` for :meth:`_qkv_backward`."""
        xp = backend.get_xp(x)
        B, L, _ = x.shape
        scale = 1.0 / math.sqrt(self.head_dim)  # folded into W_q: S = (Q / sqrt(d)) K^T, at no extra pass
        W = xp.concatenate([self.to_q.W.data * scale, self.to_k.W.data, self.to_v.W.data], axis=1)  # (dim, 3 dim)
        self._x_self = (x, W)
        qkv = x.reshape(B * L, self.dim) @ W  # (B L, dim) @ (dim, 3 dim)
        return tuple(self._split(qkv, B, L, 3, i) for i in range(3))

    def _qkv_backward(self, dqkv):
        """VJP of :meth:`_qkv`: ``dqkv (B L, 3 dim)``, columns ``[dQ' | dK | dV]`` with ``Q' = Q / sqrt(d)``
        -> ``dx``; adds the three weight gradients (``dW_q = x^T dQ' / sqrt(d)``)."""
        x, W = self._x_self
        dW = x.reshape(-1, self.dim).T @ dqkv  # (dim, B L) @ (B L, 3 dim)
        dW[:, :self.dim] *= 1.0 / math.sqrt(self.head_dim)
        for i, lin in enumerate((self.to_q, self.to_k, self.to_v)):
            lin.W.grad += dW[:, i * self.dim:(i + 1) * self.dim]
        return (dqkv @ W.T).reshape(x.shape)  # (B L, 3 dim) @ (3 dim, dim) -> (B, L, dim)

    def forward(self, x, context=None, mask=None):
        """``x (B, L, dim)``; ``context (B, S, context_dim)`` or None (self-attention); ``mask (B, S)``
        bool, True = attend. Returns ``y (B, L, dim)``."""
        xp = backend.get_xp(x)
        check_array(x, "x", 3, finite=False, like=self.to_q.W.data, last=self.dim)  # no sync: hot loop
        c = self._check_context(x, context)
        B, L, _ = x.shape
        S = c.shape[1]
        if S == 0:
            raise ValueError("the context has no key to attend to (S = 0); it needs at least one token")
        keep = self._check_mask(mask, B, S, x)
        if context is None:  # self-attention: Q / sqrt(d), K and V from one GEMM against [W_q / sqrt(d) | W_k | W_v]
            q, k, v = self._qkv(x)
        else:
            q = self._split(self.to_q(x), B, L)  # (B, L, dim) -> (B, h, L, d) view
            k = self._split(self.to_k(c), B, S)  # (B, h, S, d)
            v = self._split(self.to_v(c), B, S)
            q *= 1.0 / math.sqrt(self.head_dim)  # fold 1/sqrt(d) into Q once: S = (Q/sqrt(d)) K^T
            self._x_self = None
        # The logits are computed transposed, S^T = K Q^T (B, h, S, L): the softmax over the keys is then a
        # reduction over rows, which NumPy vectorises along the contiguous query axis (docs/performance.md §8)
        # The weights are kept unnormalised, E^T = exp(S^T - max), with 1/z = 1 / (column sums of E^T): the
        # division by z is applied to the (L, d) outputs, not to the (S, L) weights (one pass fewer)
        et = self._weights_buffer(xp, (B, self.num_heads, S, L), q.dtype)  # E^T, kept for backward
        zinv = xp.empty((B, self.num_heads, 1, L), dtype=q.dtype)  # 1 / z per query
        o = xp.empty((B, L, self.dim), dtype=q.dtype)  # the heads' outputs, concatenated in place
        oh = self._split(o, B, L)  # (B, h, L, d) view
        # the floor as a broadcast row, not a scalar: NumPy's maximum with a float32 scalar took 90 us per
        # 230k logits, with a row 40 us (docs/performance.md §8)
        floor = xp.full((L,), _LOGIT_FLOOR, dtype=q.dtype)
        ones_S = xp.ones((1, S), dtype=q.dtype)
        bias = keepf = None
        if keep is not None:  # per key: 0 / -inf logit bias, and 1 / 0 weights, broadcast over heads and queries
            bias = xp.where(keep, 0.0, -xp.inf).astype(x.dtype)[:, None, :, None]  # (B, 1, S, 1)
            keepf = keep.astype(x.dtype)[:, None, :, None]

        def block(j):  # a block of samples: its logits stay in cache through every softmax pass
            st = xp.matmul(k[j], q[j].transpose(0, 1, 3, 2), out=et[j])  # (c,h,S,d) @ (c,h,d,L) -> (c,h,S,L)
            if bias is not None:
                st += bias[j]
            st -= st.max(axis=2, keepdims=True)  # stable softmax: each query's largest logit becomes 0
            xp.maximum(st, floor, out=st)  # avoid subnormal exp (masked -inf -> -80, zeroed below)
            xp.exp(st, out=st)  # E^T
            if keepf is not None:
                st *= keepf[j]  # masked keys: weight exactly 0
            zj = xp.matmul(ones_S, st, out=zinv[j])  # z = sum over keys, >= 1 (the max gives exp(0) = 1)
            xp.reciprocal(zj, out=zj)
            xp.matmul(st.transpose(0, 1, 3, 2), v[j], out=oh[j])  # E V: (c,h,L,S) @ (c,h,S,d) -> (c,h,L,d)
            oh[j] *= zj.transpose(0, 1, 3, 2)  # O = P V = (E V) / z, per query

        run_blocks(xp, block, B, self._chunk(xp, self.num_heads * L * S))  # NumPy: blocks in parallel
        self._cache = (q, k, v, et, o, B, context is None, zinv)
        return self.to_out(o)

    def _weights_buffer(self, xp, shape, dtype):
        """The array E^T is written into: the previous forward's when the shape matches. A fresh 39 MB array
        (256 heads of 196 x 196) costs its page faults on first touch, inside the threads that fill it;
        reused, it costs nothing (docs/performance.md §8)."""
        buf = self._p_buf
        if buf is None or buf.shape != shape or buf.dtype != dtype or backend.get_xp(buf) is not xp:
            buf = self._p_buf = xp.empty(shape, dtype=dtype)
        return buf

    @staticmethod
    def _chunk(xp, logits_per_sample):
        """Samples per block: on the CPU about 1 MB of logits, so the five softmax passes over a block run
        in cache rather than main memory (docs/performance.md §7); on a GPU all samples at once."""
        if not on_cpu(xp):
            return 1 << 62
        return max(1, (1 << 18) // logits_per_sample)

    def backward(self, dy):
        """``dy (B, L, dim)`` -> ``dx``, or ``(dx, dcontext)`` when forward was given a context."""
        q, k, v, et, o, B, is_self, zinv = self._cache
        xp = backend.get_xp(q)
        _, h, S, L = et.shape
        d = self.head_dim
        do = self.to_out.backward(dy)  # (B, L, dim)
        # r_i = sum_j dP_ij P_ij = dO_i . O_i per (sample, query, head), on the (L, d) side
        r = _sum_last((do * o).reshape(B, L, h, d))[..., 0].transpose(0, 2, 1)  # (B, L, h) -> (B, h, L)
        rz = (r * zinv[:, :, 0, :])[:, :, None, :]  # r / z: (B, h, 1, L)
        doh = self._split(do, B, L)  # (B, h, L, d) view
        if is_self:  # one (B L, 3 dim) array, [dQ | dK | dV], the layout _qkv_backward reads
            dqkv = xp.empty((B * L, 3 * self.dim), dtype=q.dtype)
            dq, dk, dv = (self._split(dqkv, B, L, 3, i) for i in range(3))
        else:
            dq_, dk_, dv_ = (xp.empty((B * n, self.dim), dtype=q.dtype) for n in (L, S, S))
            dq, dk, dv = self._split(dq_, B, L), self._split(dk_, B, S), self._split(dv_, B, S)

        def block(j):  # per block of samples, as in forward; P^T = E^T / z (each query a column)
            etj = et[j]  # E^T (c, h, S, L)
            dos = doh[j] * zinv[j].transpose(0, 1, 3, 2)  # dO / z per query: (c, h, L, d)
            xp.matmul(etj, dos, out=dv[j])  # dV = P^T dO = E^T (dO / z): (c,h,S,L) @ (c,h,L,d)
            dst = xp.matmul(v[j], dos.transpose(0, 1, 3, 2))  # dP^T / z = V (dO / z)^T: (c,h,S,d) @ (c,h,d,L)
            dst -= rz[j]  # (dP^T - r) / z
            dst *= etj  # dS^T = P^T * (dP^T - r) = E^T * (dP^T - r) / z
            xp.matmul(dst.transpose(0, 1, 3, 2), k[j], out=dq[j])  # dQ' = dS K: (c,h,L,S) @ (c,h,S,d)
            xp.matmul(dst, q[j], out=dk[j])  # dK = dS^T Q': q holds Q' = Q / sqrt(d)

        run_blocks(xp, block, B, self._chunk(xp, h * L * S))
        if is_self:
            return self._qkv_backward(dqkv)
        dq *= 1.0 / math.sqrt(d)  # dQ = dQ' / sqrt(d)
        dx = self.to_q.backward(dq_.reshape(B, L, self.dim))
        dc = self.to_k.backward(dk_.reshape(B, S, self.dim))
        dc += self.to_v.backward(dv_.reshape(B, S, self.dim))
        return dx, dc

    @property
    def attention(self):
        """The attention weights ``P`` of the last forward pass, (B, heads, L, S), a new array computed from
        the kept ``E^T`` and ``1/z``; None before one."""
        if self._cache is None:
            return None
        et, zinv = self._cache[3], self._cache[7]
        return (et * zinv).transpose(0, 1, 3, 2)  # P^T = E^T / z (B, h, S, L) -> P (B, h, L, S)

    # -- validation ---------------------------------------------------------------------------------
    def _check_context(self, x, context):
        kv_dim = self.dim if self.context_dim is None else self.context_dim
        if context is None:
            if kv_dim != self.dim:
                raise ValueError(
                    f"this attention was built for a context of width {kv_dim} (context_dim); "
                    "forward needs context=(B, S, context_dim)"
                )
            return x
        check_array(context, "context", 3, finite=False, like=self.to_k.W.data, last=kv_dim)
        if context.shape[0] != x.shape[0]:
            raise ValueError(f"context has batch {context.shape[0]} but x has batch {x.shape[0]}")
        return context

    @staticmethod
    def _check_mask(mask, B, S, x):
        """The key-padding mask as a bool (B, S) array, or None. A row with no True key would leave
        its queries nothing to attend to (softmax of an empty set): ValueError. One host sync (input
        validation)."""
        if mask is None:
            return None
        if not hasattr(mask, "dtype") or mask.dtype.kind != "b":
            raise TypeError(f"mask must be a bool array of shape (B, S) = ({B}, {S}); "
                            f"got {getattr(mask, 'dtype', type(mask).__name__)}")
        if tuple(mask.shape) != (B, S):
            raise ValueError(f"mask must have shape (B, S) = ({B}, {S}); got {tuple(mask.shape)}")
        if backend.is_cupy_array(mask) != backend.is_cupy_array(x):
            raise TypeError("mask must live on the same backend (numpy/cupy) as x")
        empty = ~mask.any(axis=1)
        if bool(empty.any()):
            rows = [int(i) for i in backend.to_numpy(backend.get_xp(mask).nonzero(empty)[0])[:5]]
            raise ValueError(
                f"mask leaves no key to attend to in batch rows {rows}: every row of mask needs at least "
                "one True (use a [NULL] token for an empty prompt)"
            )
        return mask


class FeedForward(Module):
    r"""The transformer's position-wise MLP (Vaswani et al. 2017, Eq. 2, with GELU in place of ReLU):

        ``y = act(x W_1 + b_1) W_2 + b_2``,  ``W_1 (dim, hidden)``, ``W_2 (hidden, dim)``.

    ``activation`` is 'gelu' (tanh form; the default) or any name in ``ACTIVATIONS``. Backward by the
    chain rule through the three layers.
    """

    def __init__(self, dim: int, hidden_dim: int, activation: str = "gelu", dtype="float32", seed=None):
        rng = backend.default_rng(seed)
        self.fc1 = Linear(dim, hidden_dim, dtype=dtype, seed=rng)
        self.act = make_activation(activation)
        self.fc2 = Linear(hidden_dim, dim, dtype=dtype, seed=rng)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))

    def backward(self, dy):
        return self.fc1.backward(self.act.backward(self.fc2.backward(dy)))


class TransformerBlock(Module):
    r"""Pre-LN transformer block (Xiong et al. 2020, Fig. 1(b); docs/attention.md §5):

        ``x1 = x  + SelfAttn(LN_1(x), mask)``
        ``x2 = x1 + CrossAttn(LN_2(x1), context, context_mask)``    (only when ``context_dim`` is given)
        ``y  = x2 + FF(LN_3(x2))``,   ``FF(h) = GELU(h W_1 + b_1) W_2 + b_2`` (tanh-form GELU)

    Each residual branch sees a normalised input and adds to an un-normalised stream, so the gradient
    reaches ``x`` through the identity path unscaled (Xiong et al. 2020's argument for pre-LN). Backward:

        ``dx2 = dy + LN_3^T FF^T dy``;  ``dx1 = dx2 + LN_2^T dq``, ``dcontext = dk``  with
        ``(dq, dk) = CrossAttn^T dx2``;  ``dx = dx1 + LN_1^T SelfAttn^T dx1``

    (``A^T`` = that module's backward). Returns ``dx``, or ``(dx, dcontext)`` for a block with a
    cross-attention.

    Parameters
    ----------
    dim, num_heads : width of the token stream and number of heads (must divide ``dim``).
    context_dim : width of the cross-attention context (the text embedding); None: no cross-attention.
    mlp_ratio : the FF hidden width is ``mlp_ratio * dim``.
    activation : FF non-linearity ('gelu' tanh form by default; 'silu' also works).
    """

    def __init__(self, dim: int, num_heads: int = 4, context_dim=None, mlp_ratio: int = 4,
                 activation: str = "gelu", dtype="float32", seed=None):
        dim = check_positive_int(dim, "dim", maximum=MAX_SIZE)
        mlp_ratio = check_positive_int(mlp_ratio, "mlp_ratio", maximum=MAX_SIZE)
        rng = backend.default_rng(seed)
        self.dim, self.context_dim = dim, context_dim
        self.norm1 = LayerNorm(dim, dtype=dtype)
        self.attn1 = MultiHeadAttention(dim, num_heads, dtype=dtype, seed=rng)
        self.norm2 = self.attn2 = None
        if context_dim is not None:
            self.norm2 = LayerNorm(dim, dtype=dtype)
            self.attn2 = MultiHeadAttention(dim, num_heads, context_dim=context_dim, dtype=dtype, seed=rng)
        self.norm3 = LayerNorm(dim, dtype=dtype)
        self.ff = FeedForward(dim, mlp_ratio * dim, activation=activation, dtype=dtype, seed=rng)

    def forward(self, x, context=None, mask=None, context_mask=None):
        """``x (B, L, dim)``; ``mask (B, L)`` bool key padding for the self-attention; ``context
        (B, S, context_dim)`` and ``context_mask (B, S)`` for the cross-attention. Returns (B, L, dim)."""
        if (context is None) != (self.attn2 is None):
            raise ValueError("context must be given exactly when the block has a cross-attention "
                             f"(context_dim={self.context_dim})")
        if context is None and context_mask is not None:
            raise ValueError("context_mask was given without a context")
        h = x + self.attn1(self.norm1(x), mask=mask)
        if self.attn2 is not None:
            h += self.attn2(self.norm2(h), context, mask=context_mask)
        h += self.ff(self.norm3(h))
        return h

    def backward(self, dy):
        dh = dy + self.norm3.backward(self.ff.backward(dy))
        dcontext = None
        if self.attn2 is not None:
            dq, dcontext = self.attn2.backward(dh)
            dh += self.norm2.backward(dq)
        dx = dh + self.norm1.backward(self.attn1.backward(dh))
        return dx if dcontext is None else (dx, dcontext)
