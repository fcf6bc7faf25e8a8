"""Matplotlib figures for the tutorial: image grids and noise schedules."""

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
    """Images in a grid, each with an optional title above it."""
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + (0.4 if suptitle else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], interpolation="nearest", cmap="gray" if np.ndim(images[i]) == 2 else None)
            if titles is not None:
                ax.set_title(textwrap.fill(titles[i], width=max(12, int(size * 12))), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def plot_schedules(schedules: dict[str, Sequence[float]], ylabel: str, title: str) -> Figure:
    """One line per scheduler: a value (timestep or sigma) against the step index."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, values in schedules.items():
        ax.plot(range(len(values)), values, marker=".", label=f"{name} ({len(values)})")
    ax.set_xlabel("U-Net evaluation")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_curve(x: Sequence[float], y: Sequence[float], xlabel: str, ylabel: str, title: str) -> Figure:
    """One measured curve with its points marked."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(x, y, marker="o")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def normalize(array: np.ndarray) -> np.ndarray:
    """Stretch an array to [0, 1] for display (a constant array becomes all zeros)."""
    lo, hi = float(array.min()), float(array.max())
    return (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """A heat map (same height and width as the image) blended over the image in matplotlib's 'jet' colours."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    colours = plt.get_cmap("jet")(normalize(heat))[..., :3]
    return (1 - alpha) * base + alpha * colours
