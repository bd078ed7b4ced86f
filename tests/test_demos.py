"""Smoke test of demos/: every script runs in --fast mode and writes non-trivial images.

Each demo runs in a subprocess (``sys.executable demos/X.py --fast --out tmp_path``), exactly as a
learner would run it. We check that it exits 0 and that every file it promises exists, is larger
than a few kB, decodes as an image, and is not a single flat colour (an empty axes or a failed plot
would be). The demos' numerical claims are not tested here; the library's own tests do that.

OPENBLAS_NUM_THREADS=1 in the child: the demos' matrices are small, and on a busy 2-core machine a
threaded BLAS oversubscribes the cores and runs up to ~50x slower (measured: a 256x128 GEMM loop).
"""
import os
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMOS = os.path.join(ROOT, "demos")

# demo -> (files it writes, the library modules it needs)
EXPECTED = {
    "01_forward_diffusion.py": (["01_random_walk_3d.png", "01_random_walk_3d.gif", "01_vp_chain_2d.png",
                                 "01_vp_chain_1d.png"], ["forward", "datasets"]),
    "02_point_cloud_reversal.py": (["02_point_cloud_reversal.png", "02_reversal_knobs.png"],
                                   ["forward", "datasets", "metrics", "reversal"]),
    "03_direction_field.py": (["03_direction_field.png", "03_training_loss.png"], ["ideal", "training", "samplers"]),
    "04_memorization.py": (["04_memorization.png"], ["ideal", "training", "samplers", "metrics"]),
    "05_sampler_comparison.py": (["05_samplers_ideal.png", "05_samplers_mlp.png", "05_sampler_metrics.png",
                                  "05_trajectories.png"], ["ideal", "training", "samplers", "metrics"]),
    "06_schedules.py": (["06_schedules.png", "06_sigma_grids.png"], ["schedules"]),
    "07_unet_glyphs.py": (["07_glyph_data.png", "07_unet_samples.png", "07_denoising.gif", "07_one_vs_many.png",
                           "07_unet_loss.png"], ["training", "samplers", "datasets", "nn"]),
    "08_guidance.py": (["08_guidance.png", "08_training.png"], ["guidance", "training", "samplers", "metrics", "nn"]),
    "09_text_to_glyph.py": (["09_prompt_grid.png", "09_one_step_vs_sampler.png", "09_denoising.gif",
                             "09_guidance_sweep.png", "09_heldout.png", "09_cross_attention.png"],
                            ["t2i", "captioned", "text", "guidance"]),
    "10_latent_diffusion.py": (["10_reconstructions.png", "10_latent_space.png", "10_prior_vs_ldm.png",
                                "10_cost.png"], ["latent", "runs", "samplers", "nn"]),
    "11_dit_vs_unet.py": (["11_loss_vs_time.png", "11_samples.png"], ["training", "runs", "samplers", "nn"]),
    "12_super_resolution.py": (["12_cascade.png", "12_held_out.png"], ["cascade", "runs", "samplers", "nn"]),
    "13_image_quality.py": (["13_fid_vs_nfe.png"], ["metrics", "runs", "samplers", "nn"]),
}
MIN_BYTES = 5_000  # a saved empty figure is ~2-4 kB; every real figure here is >= 50 kB


def test_every_demo_is_listed():
    on_disk = sorted(f for f in os.listdir(DEMOS) if f.endswith(".py") and f[:2].isdigit())
    assert on_disk == sorted(EXPECTED), "a demo was added or renamed: update EXPECTED"


def _missing_modules(names):
    import importlib

    missing = []
    for name in names:
        try:
            importlib.import_module(f"minidiff.{name}")
        except ImportError:
            missing.append(name)
    return missing


@pytest.mark.parametrize("demo", sorted(EXPECTED))
def test_demo_runs_fast(demo, tmp_path):
    files, needs = EXPECTED[demo]
    missing = _missing_modules(needs)
    if missing:
        pytest.skip(f"{demo} needs minidiff.{', minidiff.'.join(missing)}, which is not importable")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, os.path.join(DEMOS, demo), "--fast", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{demo} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    for name in files:
        path = tmp_path / name
        assert path.exists(), f"{demo} did not write {name}; wrote {sorted(os.listdir(tmp_path))}"
        size = path.stat().st_size
        assert size > MIN_BYTES, f"{name} is only {size} bytes"
        img = np.asarray(mpimg.imread(str(path)))  # decodes PNG natively, GIF (first frame) through Pillow
        assert img.ndim == 3 and min(img.shape[:2]) >= 100, f"{name} has shape {img.shape}"
        # a plot has ink: more than one distinct colour, and a real spread of values
        assert float(img.std()) > 0.01, f"{name} is (nearly) one flat colour (std {float(img.std()):.4f})"
