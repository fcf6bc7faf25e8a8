"""The tutorial's figures: shared gray scales and the schedule panels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from helpers import plotting  # noqa: E402


def test_normalize_own_range_and_shared_limits() -> None:
    a = np.array([[2.0, 4.0], [6.0, 10.0]])
    np.testing.assert_allclose(plotting.normalize(a), [[0.0, 0.25], [0.5, 1.0]])
    # shared limits: the same value maps to the same gray in every panel, and values outside are clipped
    np.testing.assert_allclose(plotting.normalize(a, (0.0, 8.0)), [[0.25, 0.5], [0.75, 1.0]])
    np.testing.assert_allclose(plotting.normalize(np.full((2, 2), 3.0)), np.zeros((2, 2)))


def test_image_grid_draws_gray_panels_on_one_scale() -> None:
    dim, bright = np.full((4, 4), 0.2), np.full((4, 4), 0.9)
    fig = plotting.image_grid([dim, bright, np.zeros((4, 4, 3), np.uint8)], ["a", "b", "c"])
    gray_axes = fig.axes[:2]
    # without a fixed scale, matplotlib would stretch each constant panel on its own and the two would look alike
    assert [ax.images[0].get_clim() for ax in gray_axes] == [(0.0, 1.0), (0.0, 1.0)]
    plt.close(fig)
