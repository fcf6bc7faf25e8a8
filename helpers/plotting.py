"""Matplotlib figures for the tutorial: image grids, measured curves, loss curves and attention maps."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image


def image_grid(
    images: Sequence[Image.Image | np.ndarray],
    titles: Sequence[str] | None = None,
    cols: int | None = None,
    size: float = 2.0,
    suptitle: str | None = None,
) -> Figure:
    """Images in a grid, each with an optional title above it; 2-D arrays are drawn in gray, 0 to 1 (normalize)."""
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    wrapped = [textwrap.fill(t, width=max(12, int(size * 12))) for t in titles] if titles is not None else []
    lines = max((w.count("\n") + 1 for w in wrapped if w), default=0)
    title_space = 0.17 * lines  # inches of title above each row, so no title hides behind the row above
    height = (size + title_space) * rows + (0.4 if suptitle else 0)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, height), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            if np.ndim(images[i]) == 2:  # one scale for every panel: 0 black, 1 white (see normalize)
                ax.imshow(images[i], interpolation="nearest", cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(images[i], interpolation="nearest")
            if wrapped:
                ax.set_title(wrapped[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()  # makes room for every title, so none hides behind the row above
    return fig


def plot_spread(
    x: Sequence[float],
    runs: dict[str, np.ndarray],
    xlabel: str,
    ylabel: str,
    title: str,
    ylim: tuple[float, float] | None = (0, 100),
) -> Figure:
    """One line per name: the mean over repeats (rows of `runs[name]`, one column per x) and a band from min to max."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, values in runs.items():
        values = np.atleast_2d(np.asarray(values, dtype=float))
        label = f"{name} (mean of {len(values)})" if len(values) > 1 else name
        (line,) = ax.plot(x, values.mean(0), marker="o", label=label)
        ax.fill_between(x, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_loss(
    losses: Sequence[float], window: int, title: str, checks: dict[str, dict[int, float]] | None = None
) -> Figure:
    """Training loss per step (faint), its running mean over `window` steps, and optional fixed-batch checks
    ({label: {step: loss}}), on a log scale so that all of them can be read."""
    losses = np.asarray(losses, dtype=float)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.plot(losses, color="0.75", lw=0.8, label="training batch, each step")
    ax.plot(np.arange(window - 1, len(losses)), smooth, lw=2, label=f"training batch, mean of {window} steps")
    for label, points in (checks or {}).items():
        ax.plot(list(points), list(points.values()), marker="o", lw=2, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (mean squared error)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)  # below: it hides no data
    fig.tight_layout()
    return fig


def normalize(array: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray:
    """Stretch an array to [0, 1] for display: from its own min and max, or from shared `limits` (lo, hi), clipped,
    so that several arrays drawn on one scale can be compared. A constant array becomes all zeros."""
    lo, hi = (float(array.min()), float(array.max())) if limits is None else limits
    return np.clip((array - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(array)


def attention_grid(
    image: Image.Image, maps: np.ndarray, tokens: Sequence[str], cols: int = 7, size: float = 1.7
) -> Figure:
    """The image, then one attention map per token on one shared colour scale (viridis), with a colour bar.

    Each map is the share of a pixel's attention that goes to that token; all panels use 0 to the largest value,
    so a brighter panel means more attention, comparable across tokens.
    """
    cols = min(cols, len(tokens) + 1)
    rows = -(-(len(tokens) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 0.8, size * rows + 0.3), squeeze=False)
    vmax = float(np.max(maps))
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image, interpolation="nearest")
    axes.flat[0].set_title("image", fontsize=8)
    for ax, heat, token in zip(axes.flat[1:], maps, tokens):
        shown = ax.imshow(heat, cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.set_title(token, fontsize=8)
    fig.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02, label="share of attention")
    return fig
