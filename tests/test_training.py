"""The training loop: it learns, it resumes exactly, it stops cleanly on a non-finite loss."""
import hashlib
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minidiff import backend
from minidiff.datasets import get_dataset
from minidiff.nn import MLPDenoiser, load
from minidiff.schedules import Schedule
from minidiff.runs import TrainConfig, fit
from minidiff.training import NonFiniteLossError, loss_weight, train


def _spiral(n=256, seed=0):
    return get_dataset("spiral").sample(n, backend.default_rng(seed))


def _params(model):
    return {k: backend.to_numpy(v) for k, v in model.state_dict().items()}


SCHED = Schedule.log_linear(0.01, 80.0, T=200)


def test_training_lowers_the_loss():
    data = _spiral(512)
    model = MLPDenoiser(2, hidden=(64, 64), seed=0)
    losses = [m["loss"] for m in train(model, data, SCHED, steps=300, batch_size=256, lr=3e-3, seed=1)]
    # the first 5 steps: by step 30 the net has already learnt much (measured: mean of steps 1-30 is
    # 0.67-0.71 on both backends, of steps 1-5 0.90-1.01, of the last 30 about 0.51)
    first, last = np.mean(losses[:5]), np.mean(losses[-30:])
    # an untrained net predicts eps at chance (loss ~1); on a 1-D curve in 2-D the normal half of
    # eps becomes predictable, so a working loop must cut the loss by well over 25 %
    assert last < 0.75 * first, (first, last)


def test_metrics_fields_and_lr_schedule():
    model = MLPDenoiser(2, hidden=(16,), seed=0)
    ms = list(train(model, _spiral(64), SCHED, steps=12, batch_size=16, lr=1e-2, warmup_steps=4, seed=0))
    assert [m["step"] for m in ms] == list(range(1, 13))
    for m in ms:
        assert {"loss", "grad_norm", "lr", "sigma_mean", "seconds"} <= set(m)
        assert math.isfinite(m["loss"]) and m["grad_norm"] >= 0
        assert SCHED.sigma_min <= m["sigma_mean"] <= SCHED.sigma_max
    lrs = [m["lr"] for m in ms]
    assert lrs[0] < lrs[3] == pytest.approx(1e-2)  # linear warm-up reaches the peak ...
    assert lrs[-1] < lrs[4]  # ... then cosine decay


def test_resume_gives_the_uninterrupted_result(tmp_path):
    data = _spiral(128)
    kw = dict(steps=20, batch_size=32, lr=2e-3, warmup_steps=3, seed=7, ema_decay=0.9)
    full = MLPDenoiser(2, hidden=(16, 16), seed=3)
    list(train(full, data, SCHED, **kw))

    ck = tmp_path / "ck.npz"
    first = MLPDenoiser(2, hidden=(16, 16), seed=3)
    gen = train(first, data, SCHED, checkpoint_path=ck, checkpoint_every=10, **kw)
    for m in gen:
        if m["step"] == 10:
            assert m["checkpoint"] == str(ck)
            break  # the run is cut off right after its step-10 checkpoint
    resumed = MLPDenoiser(2, hidden=(16, 16), seed=99)  # different init: everything comes from the file
    ms = list(train(resumed, data, SCHED, checkpoint_path=ck, resume=True, **kw))
    assert [m["step"] for m in ms] == list(range(11, 21))
    a, b = _params(full), _params(resumed)
    for k in a:
        # same ops on the same numbers in the same order: bit-identical on one machine
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert load(ck).extra["step"] == 20


def test_weight_decay_is_decoupled():
    """One step of train(weight_decay=wd) against AdamW's rule written out by hand:
    p1 = p0 (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps), where the Adam part is computed from the
    gradient of the loss alone. The same step with wd = 0 (same seed: same batch, same gradient)
    gives p0 - lr m_hat / (...), so the decoupled rule reads p1(wd) = p1(0) - lr wd p0.
    L2 decay (g + wd p fed to Adam) would instead move every weight by about lr sign(g + wd p0)."""
    data = _spiral(64).astype(np.float64)
    lr, wd = 1e-2, 3.0
    kw = dict(steps=1, batch_size=32, lr=lr, min_lr=lr, grad_clip=0.0, ema_decay=None, seed=5)
    p0 = _params(MLPDenoiser(2, hidden=(8,), dtype="float64", seed=1))
    plain = MLPDenoiser(2, hidden=(8,), dtype="float64", seed=1)
    decayed = MLPDenoiser(2, hidden=(8,), dtype="float64", seed=1)
    list(train(plain, data, SCHED, weight_decay=0.0, **kw))
    list(train(decayed, data, SCHED, weight_decay=wd, **kw))
    a, b = _params(plain), _params(decayed)
    for k in p0:
        # the two sides differ only by rounding of a few float64 ops on O(1) numbers
        np.testing.assert_allclose(b[k], a[k] - lr * wd * p0[k], rtol=0, atol=1e-12, err_msg=k)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    data = _spiral(64)
    model = MLPDenoiser(2, hidden=(16,), seed=0)
    ck = tmp_path / "ck.npz"
    gen = train(model, data, SCHED, steps=50, batch_size=16, seed=0, checkpoint_path=ck, checkpoint_every=5)
    for m in gen:
        if m["step"] == 5:
            break
    digest = hashlib.sha256(ck.read_bytes()).hexdigest()
    before = _params(model)
    good_forward = model.forward
    model.forward = lambda x, sigma, y=None: good_forward(x, sigma, y) * float("nan")
    with pytest.raises(NonFiniteLossError, match=r"step 6.*last good checkpoint"):
        next(gen)
    assert hashlib.sha256(ck.read_bytes()).hexdigest() == digest  # checkpoint untouched
    after = _params(model)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])  # the bad update was not applied
    assert load(ck).extra["step"] == 5


def test_non_finite_without_checkpoint_says_so():
    model = MLPDenoiser(2, hidden=(8,), seed=0)
    data = _spiral(32) * 1e30  # finite data whose squared error overflows float32
    with pytest.raises(NonFiniteLossError, match="step 1.*no checkpoint"):
        list(train(model, data, SCHED, steps=3, batch_size=8))


def test_conditional_training_with_label_dropout():
    ds = get_dataset("spiral_arms")
    x, y = ds.sample(120, backend.default_rng(0), return_labels=True)
    model = MLPDenoiser(2, hidden=(16,), num_classes=ds.num_classes, seed=0)
    ms = list(train(model, x, SCHED, steps=5, batch_size=16, labels=y, label_dropout=0.5))
    assert len(ms) == 5
    with pytest.raises(ValueError, match="labels must lie in"):
        list(train(model, x, SCHED, steps=1, labels=y + ds.num_classes))
    with pytest.raises(ValueError, match="not class-conditional"):
        list(train(MLPDenoiser(2, hidden=(8,)), x, SCHED, steps=1, labels=y))


@given(st.floats(min_value=math.log(1e-4), max_value=math.log(1e4)))
def test_min_snr_weight_formula(log_sigma):
    sigma = np.array([math.exp(log_sigma)])
    snr = 1.0 / sigma**2
    # Hang et al. 2023: eps-loss weight min(SNR, gamma)/SNR with gamma = 5
    np.testing.assert_allclose(loss_weight(sigma, "min_snr"), np.minimum(snr, 5.0) / snr, rtol=1e-12)
    assert loss_weight(sigma, "none") is None


@pytest.mark.parametrize("kw, match", [
    (dict(steps=0), "steps"), (dict(lr=-1.0), "lr"), (dict(label_dropout=1.0), "label_dropout"),
    (dict(model="transformer"), "model"), (dict(loss_weighting="p2"), "loss_weighting"),
    (dict(ema_decay=1.0), "ema_decay"),
])
def test_config_validation(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TrainConfig(**kw)


def test_train_bad_input():
    m = MLPDenoiser(2, hidden=(8,))
    with pytest.raises(ValueError, match="checkpoint_every needs a checkpoint_path"):
        list(train(m, _spiral(16), SCHED, steps=2, checkpoint_every=1))
    with pytest.raises(ValueError, match="NaN"):
        list(train(m, np.full((4, 2), np.nan), SCHED, steps=2))
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"stepz": 3})


def test_fit_returns_an_ema_model_that_differs_from_the_raw_one():
    res = fit(TrainConfig(steps=30, n_train=200, batch_size=64, hidden=(16, 16)), progress=False)
    assert len(res.losses) == 30 and res.data.shape == (200, 2)
    a, b = _params(res.model), _params(res.ema_model)
    assert any(np.abs(a[k] - b[k]).max() > 0 for k in a)  # EMA lags the raw weights
    with pytest.raises(ValueError, match="model 'unet' needs images"):
        fit(TrainConfig(steps=1, model="unet", n_train=10), progress=False)


def test_fit_with_resume_is_a_cache(tmp_path):
    ck = tmp_path / "cache.npz"
    cfg = TrainConfig(steps=20, n_train=100, batch_size=32, hidden=(8,))
    first = fit(cfg, checkpoint_path=ck, resume=True, progress=False)
    calls = []
    again = fit(cfg, checkpoint_path=ck, resume=True, progress=False, callback=calls.append)
    assert calls == []  # a finished run is loaded, not retrained
    assert again.losses == first.losses and len(again.losses) == 20
    a, b = _params(first.ema_model), _params(again.ema_model)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    longer = fit(TrainConfig(steps=20, n_train=100, batch_size=32, hidden=(16,)), checkpoint_path=ck,
                 resume=False, progress=False)  # resume=False overwrites whatever is there
    assert len(longer.losses) == 20
    with pytest.raises(ValueError, match=r"different config \(fields \['hidden'\]\)"):
        fit(cfg, checkpoint_path=ck, resume=True, progress=False)


def test_update_that_makes_weights_inf_never_overwrites_the_checkpoint(tmp_path, monkeypatch):
    """The loss is finite, but the optimiser step turns a weight into inf (what lr=1e39 did): the
    checkpoint of that step is refused and the last good one stays on disk."""
    from minidiff.nn import optim

    model = MLPDenoiser(2, hidden=(8,), seed=0)
    ck = tmp_path / "ck.npz"
    gen = train(model, _spiral(64), SCHED, steps=10, batch_size=16, checkpoint_path=ck, checkpoint_every=1)
    next(gen)
    digest = hashlib.sha256(ck.read_bytes()).hexdigest()
    real_step = optim.Adam.step

    def poisoned(self):
        real_step(self)
        self.params[0].data[0, 0] = np.inf

    monkeypatch.setattr(optim.Adam, "step", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 2.*last good checkpoint"):
        next(gen)
    assert hashlib.sha256(ck.read_bytes()).hexdigest() == digest
    assert load(ck).extra["step"] == 1


@pytest.mark.parametrize("change", [{"lr": 1e-2}, {"batch_size": 8}, {"weight_decay": 0.1}, {"grad_clip": 0.5}])
def test_resume_refuses_different_optimiser_settings(tmp_path, change):
    ck = tmp_path / "ck.npz"
    base = dict(steps=2, batch_size=16, lr=2e-3, checkpoint_path=ck)
    list(train(MLPDenoiser(2, hidden=(8,), seed=0), _spiral(64), SCHED, **base))
    with pytest.raises(ValueError, match="different optimiser settings.*" + next(iter(change))):
        list(train(MLPDenoiser(2, hidden=(8,), seed=0), _spiral(64), SCHED, resume=True, **{**base, "steps": 4, **change}))
    # the same settings with more steps continue the finished run
    list(train(MLPDenoiser(2, hidden=(8,), seed=0), _spiral(64), SCHED, resume=True, **{**base, "steps": 4}))
    assert load(ck).extra["step"] == 4
