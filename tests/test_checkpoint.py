"""Checkpoints: exact round trip, atomic writes, and clear errors for damaged or mismatched files."""
import json
import os
import zipfile

import numpy as np
import pytest

from device_helpers import D, H
from minidiff import backend
from minidiff.nn import EMA, Adam, MLPDenoiser, UNetDenoiser, checkpoint, load, save

# Models, inputs and checkpoints live on the run's backend (the device under the strict CuPy stand-in);
# files are host data either way.


def trained(model, steps=3):
    opt = Adam(model.parameters(), lr=1e-2)
    ema = EMA(model, decay=0.9)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x = D(rng.standard_normal((4,) + model_input_shape(model)).astype(np.float32))
        out = model(x, 0.5)
        opt.zero_grad()
        model.backward(out)
        opt.step()
        ema.update()
    return opt, ema


def model_input_shape(model):
    return (model.dim,) if isinstance(model, MLPDenoiser) else (model.channels, 8, 8)


@pytest.mark.parametrize("make", [
    lambda: MLPDenoiser(2, hidden=(16, 16), num_classes=3, seed=1),
    lambda: UNetDenoiser(1, base_channels=8, channel_mult=(1, 2), groups=4, seed=1),
])
def test_save_load_identical_outputs(tmp_path, make):
    model = make()
    opt, ema = trained(model)
    path = tmp_path / "ckpt.npz"
    save(path, model, optimizer=opt, ema=ema, config={"lr": 1e-2}, extra={"step": 3, "losses": [1.0, 0.5]})
    ck = load(path)
    x = D(np.random.default_rng(5).standard_normal((3,) + model_input_shape(model)).astype(np.float32))
    assert np.array_equal(ck.model(x, 0.7), model(x, 0.7))  # bitwise: same weights, same code
    assert ck.config == {"lr": 1e-2} and ck.extra == {"step": 3, "losses": [1.0, 0.5]}
    assert ck.model_class == type(model).__name__ and ck.model.config == model.config
    # optimizer and EMA resume exactly
    opt2 = Adam(ck.model.parameters(), lr=1e-2)
    opt2.load_state_dict(ck.optimizer_state)
    assert opt2.step_count == 3
    for a, b in zip(opt.state, opt2.state):
        assert np.array_equal(a["m"], b["m"]) and np.array_equal(a["v"], b["v"])
    ema2 = EMA(ck.model, decay=0.5)
    ema2.load_state_dict(ck.ema_state)
    assert ema2.decay == 0.9 and all(np.array_equal(ema.shadow[k], ema2.shadow[k]) for k in ema.shadow)
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temp files left behind


def test_float64_model_roundtrip(tmp_path):
    model = MLPDenoiser(2, hidden=(8,), dtype="float64", seed=2)
    save(tmp_path / "m.npz", model)
    ck = load(tmp_path / "m.npz")
    assert all(p.data.dtype == np.float64 for p in ck.model.parameters())
    assert ck.optimizer_state is None and ck.ema_state is None and ck.extra is None


def test_truncated_file_gives_clear_error(tmp_path):
    path = tmp_path / "ckpt.npz"
    save(path, MLPDenoiser(2, hidden=(16,)))
    raw = path.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 10, 20):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="checkpoint"):
            load(bad)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all" * 10)
    with pytest.raises(ValueError, match="checkpoint"):
        load(garbage)


def rewrite(path, mutate):
    """Load the archive's raw arrays and header, let ``mutate`` change them, write them back."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    mutate(arrays, meta)
    arrays["__meta__"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("mutate,match", [
    (lambda a, m: m.update(version=99), "version 99"),
    (lambda a, m: m.update(format="something-else"), "not a minidiff checkpoint"),
    (lambda a, m: a.pop("model/linears.0.W"), "do not match the header"),
    (lambda a, m: a.update({"model/linears.0.W": np.zeros((3, 3), np.float32)}), "header says"),
    (lambda a, m: m["model_config"].update(hidden=[32]), "shape"),  # config disagrees with weights
    (lambda a, m: m.update(model_class="Nope"), "unknown model class"),
])
def test_mismatched_file_gives_clear_error(tmp_path, mutate, match):
    path = tmp_path / "ckpt.npz"
    save(path, MLPDenoiser(2, hidden=(16,)))
    rewrite(path, mutate)
    with pytest.raises(ValueError, match=match):
        load(path)


def test_failed_save_leaves_existing_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    model = MLPDenoiser(2, hidden=(16,), seed=1)
    save(path, model, extra={"step": 1})
    original = path.read_bytes()
    with pytest.raises(TypeError, match="JSON"):
        save(path, model, extra={"step": object()})  # fails before writing
    assert path.read_bytes() == original

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint.os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        save(path, MLPDenoiser(2, hidden=(16,), seed=2), extra={"step": 2})  # fails after writing the temp
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # the temp file was removed
    monkeypatch.undo()
    assert load(path).extra == {"step": 1}


# ----------------------------------------------------------------------------- bad input and bad luck
def test_non_finite_weights_are_never_written(tmp_path):
    path = tmp_path / "ckpt.npz"
    model = MLPDenoiser(2, hidden=(8,), seed=1)
    save(path, model)
    original = path.read_bytes()
    model.linears[0].W.data[0, 0] = np.inf
    with pytest.raises(checkpoint.NonFiniteCheckpointError, match="NaN or inf"):
        save(path, model)
    assert path.read_bytes() == original and os.listdir(tmp_path) == ["ckpt.npz"]


def test_nan_weights_on_disk_are_refused(tmp_path):
    path = tmp_path / "ckpt.npz"
    save(path, MLPDenoiser(2, hidden=(8,), seed=1))
    rewrite(path, lambda a, m: a["model/linears.0.W"].__setitem__((0, 0), np.nan))
    with pytest.raises(ValueError, match="NaN or inf"):
        load(path)


@pytest.mark.parametrize("mutate", [
    lambda a, m: m["model_config"].update(hidden=[10**9]),  # would be a 40 GB model
    lambda a, m: m["model_config"].update(num_frequencies=10**9),
    lambda a, m: m.update(arrays=[]),
    lambda a, m: m.update(optimizer={"class": "Adam"}),
    lambda a, m: m.update(ema={"decay": "x"}),
    lambda a, m: m["arrays"]["model/linears.0.W"].update(shape="x"),
])
def test_tampered_header_is_a_value_error_before_allocating(tmp_path, mutate):
    path = tmp_path / "ckpt.npz"
    model = MLPDenoiser(2, hidden=(8,), seed=1)
    save(path, model, optimizer=Adam(model.parameters()), ema=EMA(model))
    rewrite(path, mutate)
    with pytest.raises((ValueError, TypeError)):
        load(path)


def test_deeply_nested_header_is_a_value_error(tmp_path):
    path = tmp_path / "ckpt.npz"
    save(path, MLPDenoiser(2, hidden=(8,), seed=1))
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["__meta__"] = np.array('{"format": "minidiff-checkpoint", "x": ' + "[" * 100000 + "]" * 100000 + "}")
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="corrupted"):
        load(path)


def test_npy_header_claiming_a_huge_array_is_refused_before_reading(tmp_path):
    path = tmp_path / "ckpt.npz"
    save(path, MLPDenoiser(2, hidden=(8,), seed=1))
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    name = "model/linears.0.W.npy"
    raw = members[name]
    header_len = int.from_bytes(raw[8:10], "little")
    header = raw[10:10 + header_len].decode("latin1")
    fake = header.replace(str(tuple(np.load(path)["model/linears.0.W"].shape)), "(100000, 100000)")
    members[name] = raw[:8] + len(fake).to_bytes(2, "little") + fake.encode("latin1") + raw[10 + header_len:]
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(ValueError, match="claims shape"):
        load(path)


def test_stale_temp_files_are_cleaned_and_umask_respected(tmp_path):
    path = tmp_path / "ckpt.npz"
    stale = tmp_path / ".ckpt.npz.abc123.tmp"  # what a save killed before os.replace leaves behind
    stale.write_bytes(b"x" * 1000)
    other = tmp_path / ".other.npz.abc.tmp"  # another checkpoint's temp file: not ours to remove
    other.write_bytes(b"y")
    save(path, MLPDenoiser(2, hidden=(8,), seed=1))
    assert sorted(os.listdir(tmp_path)) == sorted(["ckpt.npz", other.name])
    mask = os.umask(0o022)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_save_rejects_wrong_argument_types(tmp_path):
    model = MLPDenoiser(2, hidden=(8,))
    with pytest.raises(TypeError, match="optimizer"):
        save(tmp_path / "a.npz", model, optimizer="adam")
    with pytest.raises(TypeError, match="ema"):
        save(tmp_path / "a.npz", model, ema=model)
    with pytest.raises(ValueError, match="directory"):
        save(tmp_path, model)
    assert os.listdir(tmp_path) == []


def test_sampling_model_holds_the_ema_weights(tmp_path):
    """``Checkpoint.sampling_model()``: the stored EMA weights (not the raw ones) in eval mode; the raw
    weights when no EMA was stored."""
    model = MLPDenoiser(2, hidden=[8], seed=0)
    opt, ema = trained(model)
    path = str(tmp_path / "m.npz")
    save(path, model, optimizer=opt, ema=ema)
    want = MLPDenoiser(2, hidden=[8], seed=0)
    want.load_state_dict(model.state_dict())
    ema.copy_to(want)
    got = load(path).sampling_model()
    assert not got.training
    for (_, a), (_, b), (_, raw) in zip(got.named_parameters(), want.named_parameters(), model.named_parameters()):
        np.testing.assert_array_equal(H(a.data), H(b.data))
        assert not np.array_equal(H(a.data), H(raw.data))  # three Adam steps moved the raw weights away
    save(path, model)
    for (_, a), (_, raw) in zip(load(path).sampling_model().named_parameters(), model.named_parameters()):
        np.testing.assert_array_equal(H(a.data), H(raw.data))
