"""Reading a user's own data files (host module: file I/O is NumPy on the host)."""
from __future__ import annotations

import os

import numpy as np

from ._validate import check_path_read

__all__ = ["load_points_file"]


def load_points_file(path) -> np.ndarray:
    """Load training data from ``.npy`` (points (N, D) or images (N, C, H, W), or (N, H, W) taken
    as one channel) or ``.csv`` (points, one per row, comma-separated; a non-numeric header row is
    skipped). Returns float64 on the host; rejects empty files, NaN/inf and non-numeric data."""
    path = check_path_read(path, "data file")  # exists (MissingFileError otherwise), not a folder, readable
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise ValueError(f"data file {path!r} is not a plain numeric .npy array "
                             f"({type(exc).__name__}: {exc})") from exc
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"data file {path!r} is not a plain .npy array")
    elif ext == ".csv":
        try:
            with open(path) as f:
                first = f.readline()
        except UnicodeDecodeError as exc:
            raise ValueError(f"data file {path!r} is not a text CSV file") from exc
        try:
            [float(v) for v in first.strip().split(",")]
            skip = 0
        except ValueError:
            skip = 1  # a header row
        try:
            arr = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"data file {path!r} must hold numbers, one point per row ({exc})") from exc
    else:
        raise ValueError(f"data file must end in .npy or .csv; got {path!r}")
    if arr.dtype.kind not in "fiu" or arr.dtype == np.float16:
        raise ValueError(f"data file {path!r} must hold numbers; got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim == 3:
        arr = arr[:, None]  # (N, H, W) -> (N, 1, H, W)
    if arr.ndim not in (2, 4) or arr.shape[0] == 0:
        raise ValueError(f"data file {path!r} must hold points (N, D) or images (N, C, H, W); got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"data file {path!r} contains NaN or inf")
    return arr
