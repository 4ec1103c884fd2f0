"""n2n_core.viz: maps on a fixed scale, labels that show."""

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from n2n_core import viz


def test_maps_are_drawn_on_the_stated_scale_not_their_own_range():
    weak, strong = torch.full((1, 8, 8), 0.1), torch.rand(1, 8, 8)
    weak[0, 0, 0] = 0.2
    rgb = torch.zeros(3, 8, 8)
    fig = viz.image_strip([rgb, weak, strong], ["image", "weak", "strong"])
    clims = [ax.images[0].get_clim() for ax in fig.axes[1:]]
    assert clims == [(0.0, 1.0), (0.0, 1.0)]  # autoscaling would give weak (0.1, 0.2)
    # drawn values are the map's own, not rescaled (the old path mapped [-1, 1] to [0, 1])
    assert float(fig.axes[1].images[0].get_array().max()) == pytest.approx(0.2)
    viz.plt.close(fig)
    fig = viz.image_strip([weak, strong], ["a", "b"], scale=[(0, 0.5), (0, 2)])
    assert [ax.images[0].get_clim() for ax in fig.axes] == [(0, 0.5), (0, 2)]
    viz.plt.close(fig)
    with pytest.raises(ValueError, match="one \\(vmin, vmax\\) per image"):
        viz.image_strip([weak, strong], ["a", "b"], scale=[(0, 1)])


def test_prediction_grid_row_labels_are_visible():
    img, m = torch.zeros(3, 8, 8), torch.zeros(1, 8, 8)
    fig = viz.prediction_grid([img, img], [img, img], [m, m], [m, m], ["a", "b"])
    first_column = fig.axes[0::2]
    labels = [ax.get_ylabel() for ax in first_column if ax.axison]
    assert labels == ["input", "x̂0", "anomaly map", "ground truth"]
    viz.plt.close(fig)


def test_mask_outline_leaves_the_masked_pixels_visible():
    img = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    mask = np.zeros((32, 32), dtype=bool)
    mask[10, 4:28] = True  # a one-pixel scratch: an outline on the mask would hide all of it
    out = viz.overlay_mask(img, mask)
    assert np.array_equal(out[mask], img[mask])
    assert (out[9, 4:28] == (255, 0, 255)).all() and (out[11, 4:28] == (255, 0, 255)).all()
