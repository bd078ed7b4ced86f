"""Killing a training run at a random moment never loses the last good checkpoint.

A forked child trains a tiny MLP with a checkpoint after every step (resuming from the file, so each
round continues the previous one); the parent SIGKILLs it after a random delay (uniform in [0, 150] ms:
inside a step, inside a save, between the two). After every kill the checkpoint must load, hold finite
weights, and be at least as far along as before the round. The temporary files that a kill inside a
save leaves behind are removed by the next save. Fork (not a fresh interpreter) keeps one round at
~0.1 s instead of ~1 s of imports.
"""
import os
import signal
import time

import numpy as np
import pytest

import minidiff as md

pytestmark = [pytest.mark.usefixtures("numpy_backend"),
              pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")]

KILLS = 20


def _train_forever(path):
    """Child: train, checkpointing every step, until killed (never returns to pytest)."""
    try:
        data = md.get_dataset("spiral").sample(64, md.default_rng(0))
        model = md.MLPDenoiser(2, hidden=(8,), seed=0)
        gen = md.train(model, data, md.Schedule.log_linear(T=20), steps=10**6, batch_size=16,
                       checkpoint_path=path, checkpoint_every=1, resume=True, ema_decay=0.9)
        for _ in gen:
            pass
    finally:
        os._exit(0)


def _tmp_files(d):
    return [f for f in os.listdir(d) if f.endswith(".tmp")]


def test_random_kills_leave_a_loadable_finite_checkpoint(tmp_path):
    path = str(tmp_path / "run.npz")
    rng = np.random.default_rng(12345)
    last_step = 0
    for i in range(KILLS):
        pid = os.fork()
        if pid == 0:
            _train_forever(path)
        # the first round waits for the first checkpoint; later ones kill at a random moment
        time.sleep(float(rng.uniform(0.0, 0.15)))
        while i == 0 and not os.path.exists(path):
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ck = md.load_checkpoint(path)  # raises if the file is torn or holds NaN
        assert all(np.isfinite(p.data).all() for p in ck.model.parameters())
        step = ck.extra["step"]
        assert step >= last_step and len(ck.extra["losses"]) == step
        last_step = step
        assert len(_tmp_files(tmp_path)) <= 1  # at most the one save the kill interrupted
    assert last_step > 1  # training did progress across the rounds
    # one more save cleans any temporary file a kill left behind
    ck = md.load_checkpoint(path)
    md.save_checkpoint(path, ck.model, config=ck.config, extra=ck.extra)
    assert _tmp_files(tmp_path) == []
