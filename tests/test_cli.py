"""The command line: train -> sample round trip, user files, and errors as messages."""
import json
import subprocess
import sys

import numpy as np
import pytest

from minidiff.cli import main


def test_datasets_and_info(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "spiral" in out and "glyphs16" in out
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "minidiff" in out and "numpy" in out and "backend" in out


def test_train_then_sample_round_trip(tmp_path, capsys):
    ck = tmp_path / "spiral.npz"
    assert main(["train", "--dataset", "spiral", "--steps", "40", "--n-train", "300", "--out", str(ck),
                 "--quiet"]) == 0
    assert ck.exists()
    out = tmp_path / "s.npz"
    fig = tmp_path / "s.png"
    assert main(["sample", "--checkpoint", str(ck), "--sampler", "ddim", "--steps", "5", "--n", "50",
                 "--out", str(out), "--plot", str(fig)]) == 0
    x = np.load(out)["x"]
    assert x.shape == (50, 2) and np.all(np.isfinite(x))
    assert fig.stat().st_size > 5000
    assert "5 denoiser calls" in capsys.readouterr().out


def test_train_on_a_users_csv_file(tmp_path):
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    pts = np.stack([np.cos(t), np.sin(t)], 1)
    f = tmp_path / "circle.csv"
    np.savetxt(f, pts, delimiter=",", header="x,y", comments="")
    ck = tmp_path / "c.npz"
    assert main(["train", "--dataset", str(f), "--steps", "20", "--out", str(ck), "--quiet"]) == 0
    assert main(["sample", "--checkpoint", str(ck), "--n", "10", "--steps", "4", "--out",
                 str(tmp_path / "o.npz")]) == 0


@pytest.mark.parametrize("argv, match", [
    (["train", "--dataset", "no_such_set", "--out", "x.npz", "--steps", "1"], "no_such_set"),
    (["train", "--dataset", "glyphs16", "--model", "mlp", "--steps", "1", "--out", "x.npz"], "model 'mlp' needs points"),
    (["train", "--dataset", "spiral", "--model", "unet", "--steps", "1", "--out", "x.npz"], "model 'unet' needs images"),
    (["sample", "--checkpoint", "missing.npz", "--out", "o.npz"], "does not exist"),
    (["train", "--dataset", "missing.csv", "--steps", "1", "--out", "x.npz"], "does not exist"),
])
def test_errors_are_messages_not_tracebacks(argv, match, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_corrupt_checkpoint_is_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a checkpoint")
    assert main(["sample", "--checkpoint", str(bad), "--out", str(tmp_path / "o.npz")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_demo_fast_writes_figure_and_metrics(tmp_path):
    # the real entry point, as the README runs it (python -m minidiff)
    r = subprocess.run([sys.executable, "-m", "minidiff", "demo", "--fast", "--quiet", "--n", "300",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo.png").stat().st_size > 20000
    rep = json.loads((tmp_path / "demo_metrics.json").read_text())
    assert {"dist_to_manifold_mean", "sliced_W2", "memorization_rate"} <= set(rep["metrics"])
    assert "wrote" in r.stdout


def test_unet_on_glyphs_round_trip(tmp_path):
    ck = tmp_path / "g.npz"
    assert main(["train", "--dataset", "glyphs16", "--model", "unet", "--steps", "2", "--n-train", "32",
                 "--out", str(ck), "--quiet"]) == 0
    from minidiff.nn import load

    assert load(ck).config["batch_size"] == 64  # the U-Net's default batch, also with --steps given
    out = tmp_path / "g_s.npz"
    assert main(["sample", "--checkpoint", str(ck), "--steps", "3", "--n", "4", "--out", str(out),
                 "--plot", str(tmp_path / "g.png")]) == 0
    x = np.load(out)["x"]
    assert x.shape == (4, 1, 16, 16) and np.all(np.isfinite(x))


def test_image_defaults_for_pixel_unet_runs(tmp_path, capsys):
    """`train --model unet` on pixels uses runs.IMAGE_DEFAULTS (EDM preconditioning, log-normal sigmas, batch
    64) unless an option overrides one; `sample` then uses the image sampling defaults; a text run keeps eps."""
    from minidiff.nn import load
    from minidiff.runs import IMAGE_DEFAULTS, IMAGE_SAMPLING

    ck = tmp_path / "u.npz"
    assert main(["train", "--dataset", "glyphs16", "--model", "unet", "--steps", "2", "--n-train", "8",
                 "--base-channels", "8", "--out", str(ck), "--quiet"]) == 0
    cfg = load(ck).config
    assert {k: cfg[k] for k in IMAGE_DEFAULTS if k != "steps"} == {k: v for k, v in IMAGE_DEFAULTS.items() if k != "steps"}
    assert cfg["steps"] == 2  # the option wins
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(ck), "--n", "2", "--steps", "3", "--out", str(tmp_path / "s.npz")]) == 0
    assert f"with {IMAGE_SAMPLING['sampler']} on the {IMAGE_SAMPLING['grid']} grid" in capsys.readouterr().out
    assert main(["train", "--dataset", "glyphs16", "--model", "unet", "--steps", "2", "--n-train", "8",
                 "--base-channels", "8", "--parametrization", "eps", "--sigma-distribution", "schedule",
                 "--out", str(ck), "--quiet"]) == 0
    assert load(ck).config["parametrization"] == "eps"
    t = tmp_path / "t.npz"
    assert main(["train", "--dataset", "captioned_glyphs", "--model", "unet", "--conditional", "--steps", "1",
                 "--n-train", "4", "--batch-size", "2", "--base-channels", "8", "--channel-mult", "1",
                 "--text-dim", "8", "--text-depth", "1", "--out", str(t), "--quiet"]) == 0
    assert load(t).config["parametrization"] == "eps" and load(t).config["sigma_distribution"] == "schedule"
