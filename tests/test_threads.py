"""The BLAS thread default of minidiff's entry points (minidiff/_threads.py)."""
import os
import subprocess
import sys

import pytest

from minidiff._threads import default_blas_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("cores,load,want", [
    (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 9.0, 1), (16, 1.0, 15), (1, 0.0, 1), (1, 5.0, 1),
])
def test_default_is_the_cores_not_kept_busy(cores, load, want):
    assert default_blas_threads(cores, load) == want


def _child(code, **env_over):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                           "MKL_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT")}
    env.update(env_over, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


def test_import_sets_the_variables_unless_the_user_did_or_numpy_came_first():
    show = "import os; print(os.environ.get('OPENBLAS_NUM_THREADS'), os.environ.get('OMP_NUM_THREADS'))"
    got = _child("import minidiff; " + show)
    assert got[0] == got[1] and 1 <= int(got[0]) <= (os.cpu_count() or 1)
    assert _child("import minidiff; " + show, OMP_NUM_THREADS="3") == ["None", "3"]  # the user's choice wins
    assert _child("import numpy, minidiff; " + show) == ["None", "None"]  # too late to matter: untouched


def test_import_shortens_openblas_spin_unless_the_user_set_it_or_numpy_came_first():
    show = "import os; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    assert _child("import minidiff; " + show) == ["10"]
    # independent of the thread count: set even when the user fixed OPENBLAS_NUM_THREADS
    assert _child("import minidiff; " + show, OPENBLAS_NUM_THREADS="1") == ["10"]
    assert _child("import minidiff; " + show, OPENBLAS_THREAD_TIMEOUT="20") == ["20"]  # the user's wins
    assert _child("import numpy, minidiff; " + show) == ["None"]
