"""Attention: finite-difference gradients, a literal per-head loop, masking, softmax invariants, errors.

Gradcheck tolerance: relative error < 1e-6, as in test_layers.py (central differences in float64 with
eps = 1e-6: truncation ~1e-12, roundoff ~1e-10 relative; observed 1e-10..1e-8; a wrong derivative gives
errors of order 1, see the mutation test).
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff.nn import FeedForward, MultiHeadAttention, TransformerBlock, gradcheck
from nn_helpers import randomize, rn

F64 = "float64"
TOL = 1e-6

pytestmark = pytest.mark.usefixtures("numpy_backend")

MASK_Q = np.array([[1, 1, 0, 1, 1], [1, 0, 0, 0, 1]], bool)  # self-attention keys (B=2, L=5)
MASK_C = np.array([[1, 1, 0, 1], [0, 0, 1, 0]], bool)  # context keys (B=2, S=4); row 1 keeps one key

GRAD_CASES = {
    "self": lambda: (MultiHeadAttention(8, 2, dtype=F64), rn(2, 5, 8), {}),
    "self_masked": lambda: (MultiHeadAttention(8, 2, dtype=F64), rn(2, 5, 8), {"mask": MASK_Q}),
    "self_one_head": lambda: (MultiHeadAttention(6, 1, dtype=F64), rn(2, 3, 6), {}),
    "cross": lambda: (MultiHeadAttention(8, 4, context_dim=6, dtype=F64), (rn(2, 5, 8), rn(2, 4, 6, seed=3)), {}),
    "cross_masked": lambda: (MultiHeadAttention(8, 2, context_dim=6, dtype=F64),
                             (rn(2, 5, 8), rn(2, 4, 6, seed=3)), {"mask": MASK_C}),
    "feedforward": lambda: (FeedForward(6, 12, dtype=F64), rn(2, 3, 6), {}),
    "feedforward_silu": lambda: (FeedForward(6, 12, activation="silu", dtype=F64), rn(2, 3, 6), {}),
    "block_self": lambda: (TransformerBlock(8, 2, dtype=F64), rn(2, 5, 8), {"mask": MASK_Q}),
    "block_cross": lambda: (TransformerBlock(8, 2, context_dim=6, mlp_ratio=2, dtype=F64),
                            (rn(2, 5, 8), rn(2, 4, 6, seed=3)), {"mask": MASK_Q, "context_mask": MASK_C}),
}


@pytest.mark.parametrize("case", sorted(GRAD_CASES))
def test_gradcheck(case):
    """Inputs (x and the context) and every parameter, random upstream gradient (gradcheck's g)."""
    module, inputs, kwargs = GRAD_CASES[case]()
    result = gradcheck(randomize(module), inputs, kwargs=kwargs, seed=7)
    assert result.max_rel_error < TOL, result.worst()
    names = {name for name, _ in module.named_parameters()}
    assert names <= set(result.errors)  # every parameter was checked


@pytest.mark.parametrize("chunk", [1, 2])
@pytest.mark.parametrize("case", ["self_masked", "cross_masked", "cross"])
def test_blocks_of_heads_change_nothing(case, chunk, monkeypatch):
    """On the CPU the samples are processed in blocks of about 1 MB of logits; the tests' small sequences
    fit in one. Forcing blocks of 1 and 2 samples (B = 3: an uneven last block for 2) gives the same
    output, weights and gradients up to float64 rounding, and passes the gradcheck."""
    module, inputs, kwargs = GRAD_CASES[case]()
    module = randomize(module)

    def three(a):  # the case's batch of 2 and a third sample (its first, changed)
        return np.concatenate([a, 0.5 * a[:1] if a.dtype.kind == "f" else a[:1]])

    inputs = tuple(three(a) for a in inputs) if isinstance(inputs, tuple) else three(inputs)
    kwargs = {key: three(m) for key, m in kwargs.items()}
    x, c = inputs if isinstance(inputs, tuple) else (inputs, None)
    g = rn(*x.shape, seed=11)

    def run():
        module.zero_grad()
        y = module(x, c, **kwargs)
        d = module.backward(g)
        return [y, module.attention.copy()] + list(d if isinstance(d, tuple) else (d,)) + [
            p.grad.copy() for _, p in module.named_parameters()]

    whole = run()
    monkeypatch.setattr(MultiHeadAttention, "_chunk", staticmethod(lambda xp, logits_per_sample: chunk))
    blocked = run()
    for a, b in zip(whole, blocked):
        np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-15)  # the same sums in the same order
    result = gradcheck(module, inputs, kwargs=kwargs, seed=7)
    assert result.max_rel_error < TOL, result.worst()


class SoftmaxVJPWithoutRowSum(MultiHeadAttention):
    """Mutation: dS = P * dP (drops the - sum(dP * P) term of the softmax VJP)."""

    def backward(self, dy):
        q, k, v, p, o, *rest = self._cache
        self._cache = (q, k, v, p, o * 0.0, *rest)  # makes the row sum dO . O vanish
        return super().backward(dy)


def test_gradcheck_catches_a_wrong_softmax_vjp():
    result = gradcheck(randomize(SoftmaxVJPWithoutRowSum(8, 2, dtype=F64)), rn(2, 5, 8), seed=7)
    assert result.max_rel_error > 1e-2, result.worst()  # a real error is O(1), far above TOL


def literal_attention(m, x, c, mask=None):
    """The definition, one (sample, head, query) at a time with Python loops and float64 NumPy."""
    Wq, Wk, Wv = m.to_q.W.data, m.to_k.W.data, m.to_v.W.data
    Wo, bo = m.to_out.W.data, m.to_out.b.data
    B, L, _ = x.shape
    S = c.shape[1]
    h, d = m.num_heads, m.head_dim
    y = np.zeros((B, L, m.dim))
    P = np.zeros((B, h, L, S))
    for b in range(B):
        heads = []
        for j in range(h):
            cols = slice(j * d, (j + 1) * d)
            Q, K, V = x[b] @ Wq[:, cols], c[b] @ Wk[:, cols], c[b] @ Wv[:, cols]
            O = np.zeros((L, d))
            for i in range(L):
                logits = [Q[i] @ K[t] / math.sqrt(d) for t in range(S)]
                keep = [t for t in range(S) if mask is None or mask[b, t]]
                top = max(logits[t] for t in keep)
                w = {t: math.exp(logits[t] - top) for t in keep}
                Z = sum(w.values())
                for t in keep:
                    P[b, j, i, t] = w[t] / Z
                    O[i] += P[b, j, i, t] * V[t]
            heads.append(O)
        y[b] = np.concatenate(heads, axis=1) @ Wo + bo
    return y, P


@pytest.mark.parametrize("cross,masked", [(False, False), (True, False), (True, True), (False, True)])
def test_equals_literal_per_head_loop(cross, masked):
    m = randomize(MultiHeadAttention(8, 4, context_dim=6 if cross else None, dtype=F64), seed=2)
    x = rn(2, 5, 8)
    c = rn(2, 4, 6, seed=3) if cross else x
    mask = (MASK_C if cross else MASK_Q) if masked else None
    y = m(x, c if cross else None, mask=mask)
    y_ref, P_ref = literal_attention(m, x, c, mask)
    # float64, a few dozen flops per entry: agreement to ~1e-15 relative; 1e-12 leaves margin
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.attention, P_ref, rtol=1e-12, atol=1e-14)


def test_masking_equals_dropping_the_masked_keys():
    """Per sample: attention with a key-padding mask == attention to the kept keys only, in the output
    and in the gradients (dcontext is exactly 0 at masked keys)."""
    m = randomize(MultiHeadAttention(8, 2, context_dim=6, dtype=F64), seed=4)
    x, c = rn(2, 5, 8), rn(2, 4, 6, seed=3)
    g = rn(2, 5, 8, seed=9)
    y = m(x, c, mask=MASK_C)
    m.zero_grad()
    dx, dc = m.backward(g)
    grads = {n: p.grad.copy() for n, p in m.named_parameters()}
    sums = {n: 0.0 for n in grads}
    for b in range(2):
        kept = c[b:b + 1, MASK_C[b]]
        y_b = m(x[b:b + 1], kept)
        m.zero_grad()
        dx_b, dc_b = m.backward(g[b:b + 1])
        # float64; the masked keys enter with weight exactly 0: agreement to rounding (~1e-15)
        np.testing.assert_allclose(y[b:b + 1], y_b, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx[b:b + 1], dx_b, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dc[b:b + 1, MASK_C[b]], dc_b, rtol=1e-12, atol=1e-12)
        assert np.all(dc[b, ~MASK_C[b]] == 0.0)
        for n, p in m.named_parameters():
            sums[n] = sums[n] + p.grad
    for n in grads:  # parameter gradients add over the batch
        np.testing.assert_allclose(grads[n], sums[n], rtol=1e-12, atol=1e-12)


def test_batched_equals_per_sample():
    m = randomize(TransformerBlock(8, 2, context_dim=6, dtype=F64), seed=5)
    x, c = rn(3, 5, 8), rn(3, 4, 6, seed=3)
    y = m(x, c)
    for b in range(3):
        # float64 batched vs per-sample GEMMs: differ only in summation order (~1e-15)
        np.testing.assert_allclose(m(x[b:b + 1], c[b:b + 1]), y[b:b + 1], rtol=1e-12, atol=1e-12)


@given(
    B=st.integers(1, 3), L=st.integers(1, 6), S=st.integers(1, 6), heads=st.sampled_from([1, 2, 4]),
    log_scale=st.floats(-3.0, 3.0), dtype=st.sampled_from(["float32", "float64"]),
    seed=st.integers(0, 2 ** 16), masked=st.booleans(),
)
def test_rows_of_P_sum_to_one(B, L, S, heads, log_scale, dtype, seed, masked):
    """Every row of P is a probability vector (finite, >= 0, sums to 1), with masked keys at exactly 0,
    for inputs scaled by 1e-3..1e3 (logits up to ~1e6: the stable softmax must not overflow)."""
    rng = np.random.default_rng(seed)
    m = MultiHeadAttention(8, heads, context_dim=5, dtype=dtype, seed=seed)
    x = (rng.standard_normal((B, L, 8)) * 10.0 ** log_scale).astype(dtype)
    c = (rng.standard_normal((B, S, 5)) * 10.0 ** log_scale).astype(dtype)
    mask = None
    if masked:
        mask = rng.random((B, S)) < 0.5
        mask[np.arange(B), rng.integers(0, S, B)] = True  # at least one key per row
    y = m(x, c, mask=mask)
    P = m.attention
    assert P.shape == (B, heads, L, S)
    assert np.all(np.isfinite(P)) and np.all(np.isfinite(y)) and np.all(P >= 0)
    # float32: a sum of <= 6 terms in [0, 1] rounds to within ~6 * 6e-8; float64 ~1e-15
    tol = 1e-6 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(P.sum(axis=-1), 1.0, atol=tol)
    if masked:
        assert np.all(P[np.broadcast_to(~mask[:, None, None, :], P.shape)] == 0.0)


def test_query_with_no_key_is_an_error():
    m = MultiHeadAttention(8, 2, context_dim=6)
    x = np.zeros((2, 3, 8), np.float32)
    c = np.zeros((2, 4, 6), np.float32)
    mask = np.array([[True, False, False, False], [False, False, False, False]])
    with pytest.raises(ValueError, match=r"no key to attend to in batch rows \[1\]"):
        m(x, c, mask=mask)
    with pytest.raises(ValueError, match="no key"):
        m(x, c[:, :0])  # S = 0 keys


def test_argument_errors():
    with pytest.raises(ValueError, match="must divide dim"):
        MultiHeadAttention(10, 4)
    with pytest.raises(TypeError, match="num_heads"):
        MultiHeadAttention(8, 2.0)
    m = MultiHeadAttention(8, 2, context_dim=6)
    x = np.zeros((2, 3, 8), np.float32)
    with pytest.raises(ValueError, match="context_dim"):
        m(x)  # built for a width-6 context, none given
    with pytest.raises(ValueError, match="last dimension 6"):
        m(x, np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="batch"):
        m(x, np.zeros((3, 4, 6), np.float32))
    with pytest.raises(TypeError, match="bool"):
        m(x, np.zeros((2, 4, 6), np.float32), mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"\(B, S\) = \(2, 4\)"):
        m(x, np.zeros((2, 4, 6), np.float32), mask=np.ones((2, 5), bool))
    blk = TransformerBlock(8, 2, context_dim=6)
    with pytest.raises(ValueError, match="exactly when"):
        blk(x)
    with pytest.raises(ValueError, match="exactly when"):
        TransformerBlock(8, 2)(x, np.zeros((2, 4, 8), np.float32))


def test_weights_buffer_is_reused_for_one_shape_and_never_leaks_between_shapes():
    """forward writes its weights into the previous forward's array when the shape matches
    (docs/performance.md §8): results must equal a fresh module's whatever shapes came before, a new shape
    gets a new array, and an attention map already taken is a copy that the next forward leaves alone."""
    m, fresh = MultiHeadAttention(8, 2, dtype=F64), MultiHeadAttention(8, 2, dtype=F64)
    fresh.load_state_dict(m.state_dict())
    x1, x2 = rn(2, 5, 8, seed=1), rn(3, 4, 8, seed=2)
    g1 = rn(2, 5, 8, seed=3)
    m(x1)
    buf, first = m._p_buf, m.attention
    m(x2)  # another shape: its own array
    assert m.attention.shape == (3, 2, 4, 4) and m._p_buf is not buf
    y = m(x1)  # back to the first shape
    buf = m._p_buf
    dx = m.backward(g1)
    np.testing.assert_array_equal(y, fresh(x1))
    np.testing.assert_array_equal(dx, fresh.backward(g1))
    np.testing.assert_array_equal(m.attention, fresh.attention)
    np.testing.assert_array_equal(first, fresh.attention)
    m(2.0 * x1)  # same shape: the same array is overwritten, and the map taken before stays as it was
    assert m._p_buf is buf and not np.array_equal(m.attention, fresh.attention)
    np.testing.assert_array_equal(first, fresh.attention)