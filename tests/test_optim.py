"""Optimizers, clipping, LR schedule and EMA against their formulas, computed by hand in the test."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_helpers import D, H
from minidiff import backend
from minidiff.nn import EMA, SGD, Adam, AdamW, Linear, Parameter, clip_grad_norm, warmup_cosine_lr

# Parameters live on the run's backend (the device under the strict CuPy stand-in); host references are
# compared with H(...) copies.


def param(values, grad):
    p = Parameter(D(np.array(values, dtype=np.float64)))
    p.grad[...] = D(np.asarray(grad, dtype=np.float64))
    return p


def test_adam_two_hand_computed_steps():
    p = param([1.0, -2.0], [0.5, -1.0])
    opt = Adam([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    opt.step()
    # step 1: m = 0.1 g, v = 0.01 g^2, m_hat = g, v_hat = g^2 -> update = lr * g / (|g| + eps) = lr sign(g)
    expected = np.array([1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 1.0 / (1.0 + 1e-8)])
    assert np.abs(H(p.data) - expected).max() < 1e-15
    p.grad[...] = D(np.array([0.25, 0.0]))
    opt.step()
    g1, g2 = np.array([0.5, -1.0]), np.array([0.25, 0.0])
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.99 * 0.01 * g1 ** 2 + 0.01 * g2 ** 2
    expected = expected - 0.1 * (m / (1 - 0.9 ** 2)) / (np.sqrt(v / (1 - 0.99 ** 2)) + 1e-8)
    assert np.abs(H(p.data) - expected).max() < 1e-14  # float64, a few roundings
    assert opt.step_count == 2


def test_adam_l2_vs_adamw_decoupled():
    g, w, lr, wd = 0.5, 2.0, 0.1, 0.3
    a = param([w], [g])
    Adam([a], lr=lr, weight_decay=wd).step()
    # L2: g' = g + wd w; the first Adam step is lr * sign(g') (up to eps)
    assert abs(a.data[0] - (w - lr * (g + wd * w) / (abs(g + wd * w) + 1e-8))) < 1e-14
    b = param([w], [g])
    AdamW([b], lr=lr, weight_decay=wd).step()
    assert abs(b.data[0] - (w * (1 - lr * wd) - lr * g / (g + 1e-8))) < 1e-14


def test_sgd_momentum():
    p = param([1.0], [2.0])
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    opt.step()  # same gradient twice: v1 = 2, v2 = 0.9 * 2 + 2 = 3.8
    assert abs(p.data[0] - (1.0 - 0.1 * 2.0 - 0.1 * 3.8)) < 1e-15


def test_lr_is_settable_and_float32_stays_float32():
    lin = Linear(3, 2)
    opt = Adam(lin.parameters())
    opt.lr = 5e-4
    assert opt.lr == 5e-4
    for p in lin.parameters():
        p.grad[...] = 1.0
    opt.step()
    assert all(p.data.dtype == np.float32 for p in lin.parameters())
    assert all(s["m"].dtype == np.float32 for s in opt.state)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0
    with pytest.raises(ValueError, match="empty"):
        Adam([])


def test_optimizer_state_roundtrip_continues_identically():
    def run(n, opt_state=None):
        lin = Linear(3, 2, dtype="float64", seed=0)
        opt = Adam(lin.parameters(), lr=0.01)
        if opt_state is not None:
            lin.load_state_dict(opt_state[0])
            opt.load_state_dict(opt_state[1])
        for _ in range(n):
            for p in lin.parameters():
                p.grad[...] = D(np.sin(np.arange(p.data.size) + opt.step_count).reshape(p.data.shape))
            opt.step()
        return lin, opt

    full, _ = run(6)
    half, opt = run(3)
    resumed, _ = run(3, (half.state_dict(), opt.state_dict()))
    for (_, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        assert np.array_equal(a.data, b.data)  # bitwise: same operations in the same order
    bad = opt.state_dict()
    bad["state"][0]["m"] = np.zeros((5, 5))
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="for Adam"):
        SGD(half.parameters(), lr=0.1).load_state_dict({**opt.state_dict(), "class": "Adam"})


@given(st.lists(st.floats(-10, 10), min_size=1, max_size=6), st.floats(0.01, 20))
def test_clip_grad_norm(values, max_norm):
    ps = [param(np.zeros(1), v) for v in values]
    norm = math.sqrt(sum(v * v for v in values))
    total = clip_grad_norm(ps, max_norm)
    assert isinstance(total, float) and abs(total - norm) <= 1e-12 * max(1.0, norm)
    after = math.sqrt(sum(float(p.grad[0]) ** 2 for p in ps))
    assert after <= max_norm * (1 + 1e-12)
    if norm <= max_norm:
        assert [float(p.grad[0]) for p in ps] == values  # untouched
    else:
        assert abs(after - max_norm) < 1e-9 * max_norm  # scaled onto the ball, direction kept


def test_warmup_cosine_lr():
    assert warmup_cosine_lr(0, 100, 1.0, warmup_steps=10) == pytest.approx(0.1, abs=1e-15)
    assert warmup_cosine_lr(9, 100, 1.0, warmup_steps=10) == pytest.approx(1.0, abs=1e-15)
    assert warmup_cosine_lr(10, 100, 1.0, warmup_steps=10) == pytest.approx(1.0, abs=1e-15)
    assert warmup_cosine_lr(55, 100, 1.0, warmup_steps=10, min_lr=0.1) == pytest.approx(0.55, abs=1e-12)
    assert warmup_cosine_lr(100, 100, 1.0, warmup_steps=10, min_lr=0.1) == pytest.approx(0.1, abs=1e-15)
    assert warmup_cosine_lr(500, 100, 1.0) == pytest.approx(0.0, abs=1e-15)  # clamps past the end
    lrs = [warmup_cosine_lr(s, 50, 1.0) for s in range(51)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    with pytest.raises(ValueError):
        warmup_cosine_lr(-1, 100, 1.0)


def test_ema_formula_and_copy():
    lin = Linear(2, 1, dtype="float64", seed=0)
    w0 = lin.W.data.copy()
    ema = EMA(lin, decay=0.9)
    lin.W.data[...] = 1.0
    ema.update()
    lin.W.data[...] = 3.0
    ema.update()
    expected = 0.9 * (0.9 * w0 + 0.1 * 1.0) + 0.1 * 3.0  # on the parameters' backend
    assert np.abs(ema.shadow["W"] - expected).max() < 1e-15
    other = Linear(2, 1, dtype="float64", seed=1)
    ema.copy_to(other)
    assert np.array_equal(other.W.data, ema.shadow["W"])
    assert np.all(lin.W.data == 3.0)  # the tracked model keeps its own weights
    state = ema.state_dict()
    ema2 = EMA(Linear(2, 1, dtype="float64", seed=2), decay=0.5)
    ema2.load_state_dict(state)
    assert ema2.decay == 0.9 and ema2.num_updates == 2 and np.array_equal(ema2.shadow["W"], ema.shadow["W"])
    with pytest.raises(ValueError, match="decay"):
        EMA(lin, decay=1.0)
    bad = {**state, "shadow": {"W": np.zeros((3, 3)), "b": np.zeros(1)}}
    with pytest.raises(ValueError, match="shape"):
        ema2.load_state_dict(bad)
