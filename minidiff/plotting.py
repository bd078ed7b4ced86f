"""Figures for the CLI (demos draw their own). Host-only: every array goes through
``backend.to_numpy`` first, and matplotlib is used with the Agg backend (no display)."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402  (host module: matplotlib needs NumPy arrays)

from . import backend  # noqa: E402

__all__ = ["plot_points", "plot_images", "plot_samples", "plot_demo"]


def _host(a):
    return None if a is None else np.asarray(backend.to_numpy(a), dtype=np.float64)


def plot_points(ax, x, *, data=None, s=3, color="C1", label=None, data_label="data"):
    """Scatter 2-D points (first two coordinates for higher D), with the data underneath."""
    x, data = _host(x), _host(data)
    if data is not None:
        ax.scatter(data[:, 0], data[:, 1], s=2, c="0.75", label=data_label, linewidths=0)
    ax.scatter(x[:, 0], x[:, 1], s=s, c=color, label=label, linewidths=0)
    ax.set_aspect("equal")


def plot_images(ax, images, nrow=None, title=None):
    """Tile (N, C, H, W) images in [-1, 1] into one grey/RGB panel."""
    im = _host(images)
    n, c, h, w = im.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    ncol = int(np.ceil(n / nrow))
    canvas = np.ones((ncol * (h + 1) + 1, nrow * (w + 1) + 1, c))
    for k in range(n):
        r, q = divmod(k, nrow)
        canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = \
            np.moveaxis(im[k], 0, -1)  # (C, H, W) -> (H, W, C)
    canvas = np.clip((canvas + 1.0) / 2.0, 0.0, 1.0)
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def plot_samples(x, path, *, data=None, title=None):
    """One figure of samples (points or images), written to ``path``."""
    x = _host(x)
    fig, ax = plt.subplots(figsize=(5, 5))
    if x.ndim == 4:
        plot_images(ax, x[:64], title=title)
    else:
        plot_points(ax, x, data=data, label="samples")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.03), ncol=2, markerscale=4)  # below: off the data
        if title:
            ax.set_title(title)
    _save(fig, path)


def plot_demo(data, samples, trajectories, losses, metrics, path, *, title="minidiff demo"):
    """The main job's figure: data, samples, a few sampling trajectories, and the loss curve.

    ``trajectories``: (steps + 1, K, 2) positions of K samples along the sampler's path.
    ``metrics``: dict of numbers printed in the samples panel's title.
    """
    data, samples, traj = _host(data), _host(samples), _host(trajectories)
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.6))
    lim = np.abs(data).max() * 1.25
    plot_points(axes[0], data, s=3, color="C0")
    axes[0].set_title(f"training data ({len(data)} points)")
    plot_points(axes[1], samples, data=data, label="samples")
    axes[1].set_title("samples\n" + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()), fontsize=9)
    axes[1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.03), ncol=2, markerscale=4, fontsize=8)  # off the data
    ax = axes[2]
    ax.scatter(data[:, 0], data[:, 1], s=2, c="0.8", linewidths=0)
    for k in range(traj.shape[1]):
        path_k = traj[:, k]
        ax.plot(path_k[:, 0], path_k[:, 1], "-", lw=0.8, alpha=0.8)
        ax.plot(path_k[-1, 0], path_k[-1, 1], "k.", ms=5)
    ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim), ax.set_aspect("equal")
    ax.set_title("sampling trajectories (clipped to the data's box)")
    for a in axes[:2]:
        a.set_xlim(-lim, lim), a.set_ylim(-lim, lim)
    losses = np.asarray(losses, dtype=np.float64)
    ax = axes[3]
    ax.plot(losses, lw=0.5, alpha=0.4, label="per step")
    if len(losses) >= 50:
        k = max(len(losses) // 50, 10)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(k - 1, len(losses)), smooth, lw=1.5, label=f"running mean ({k})")
    ax.set_yscale("log"), ax.set_xlabel("step"), ax.set_title("training loss (eps MSE)")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
