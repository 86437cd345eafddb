"""Tile-mode training: each labelled pixel seen as tile mode classifies it.

Tile mode (models.learning.inference.grid_probabilities) sends the backbone a window every
``step`` pixels, on a grid fixed in raster coordinates, and gives each pixel the bilinear mix of
its four surrounding grid points' pooled features beside its own inputs. Training in window mode
centres every window on its labelled pixel, which tile mode does only for the pixels that lie on
the grid. Training in tile mode shows the head what it will see: a training sample is the crop
that holds the four grid windows around its pixel (side window + step), with one more channel
that marks the pixel, so that the flips and quarter turns of the augmentation move the pixel
with the crop. ``TileView`` wraps the model: it cuts the four windows, mixes their pooled
features with the pixel's bilinear weights and classifies them with the pixel's inputs; the
model's own tensors, the adapter's and the head's, are the only ones trained.

The four windows cost four passes through the backbone per training pixel. Sampled, a training
step sends one of them instead, the corner drawn with its bilinear weight: the head is linear in
the pooled features, so the class scores are on average those of the mix, for a window-mode
step's cost. Validation and every prediction use the mix itself.

This follows the patch-free recipe of Zheng et al., "FPGA: Fast Patch-Free Global Learning
Framework for Fully End-to-End Hyperspectral Image Classification", IEEE TGRS 58(8), 2020: train on
what inference computes, with the loss on the labelled pixels alone.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def crop_window_size(window_size: int, step: int) -> int:
    """Side of the windows to read around each labelled pixel so that every grid window a pixel
    can fall between lies inside: the window plus ``step`` on each side."""
    return int(window_size) + 2 * int(step)


def grid_crops(windows: np.ndarray, rows, cols, window_size: int, step: int) -> np.ndarray:
    """Crops (N, C + 1, window + step, window + step) float32 that hold the four grid windows
    around each pixel, the last channel 1 at the pixel and 0 elsewhere.

    Args:
        windows: (N, C, window + 2 step, window + 2 step) centred on the pixels
            (``crop_window_size``).
        rows, cols: the pixels' raster row and column, which place them on the grid (grid
            points at multiples of ``step``, as tile mode classifies).
    """
    count, channels, side = windows.shape[0], windows.shape[1], windows.shape[-1]
    if side != crop_window_size(window_size, step):
        raise ValueError(f"windows of side {crop_window_size(window_size, step)} are needed, "
                         f"got {side}")
    radius, crop = window_size // 2, window_size + step
    # The pixel's offset past the grid point above and left of it; the crop starts a radius
    # before that grid point.
    off_r = np.asarray(rows, dtype=np.int64) % step
    off_c = np.asarray(cols, dtype=np.int64) % step
    out = np.zeros((count, channels + 1, crop, crop), dtype=np.float32)
    for i in range(count):
        top, left = step - off_r[i], step - off_c[i]
        out[i, :channels] = windows[i, :, top:top + crop, left:left + crop]
        out[i, channels, radius + off_r[i], radius + off_c[i]] = 1.0
    return out


class TileView(nn.Module):
    """The model as tile mode applies it, for crops made by ``grid_crops``: class scores of each
    crop's marked pixel from the bilinear mix of the four corner windows' pooled features and the
    pixel's own inputs (``SpectralGPT.classify_pooled``, context dropout and two views included).

    With a ``sampler`` (a torch.Generator), while the model trains, each crop sends one corner
    window, drawn with its bilinear weight, instead of mixing all four.
    """

    def __init__(self, model: nn.Module, window_size: int,
                 sampler: torch.Generator | None = None):
        super().__init__()
        self.model = model
        self.window_size = int(window_size)
        self.sampler = sampler

    def forward(self, crops: torch.Tensor, context_keep: torch.Tensor | None = None) -> torch.Tensor:
        bands, marker = crops[:, :-1], crops[:, -1]
        count, side, w = crops.shape[0], crops.shape[-1], self.window_size
        step = side - w
        where = marker.flatten(1).argmax(dim=1)
        pr, pc = where // side, where % side
        frac_r = ((pr - w // 2).float() / step)[:, None]
        frac_c = ((pc - w // 2).float() / step)[:, None]
        if self.sampler is not None and self.model.training:
            pooled = self.model.pooled_features(self._sampled_corners(bands, frac_r, frac_c))
        else:
            corners = torch.cat([bands[:, :, r:r + w, c:c + w]
                                 for r in (0, step) for c in (0, step)])
            f00, f01, f10, f11 = self.model.pooled_features(corners).reshape(4, count, -1)
            pooled = ((1 - frac_r) * (1 - frac_c) * f00 + (1 - frac_r) * frac_c * f01
                      + frac_r * (1 - frac_c) * f10 + frac_r * frac_c * f11)
        pixel = bands[torch.arange(count, device=crops.device), :, pr, pc]
        return self.model.classify_pooled(pooled, pixel, context_keep)

    def _sampled_corners(self, bands: torch.Tensor, frac_r: torch.Tensor,
                         frac_c: torch.Tensor) -> torch.Tensor:
        """One corner window per crop: the lower row with probability frac_r and the right
        column with frac_c, each drawn apart, so a corner comes with its bilinear weight."""
        count, w = bands.shape[0], self.window_size
        step = bands.shape[-1] - w
        draws = torch.rand((2, count), generator=self.sampler).to(bands.device)
        lower, right = draws[0] < frac_r[:, 0], draws[1] < frac_c[:, 0]
        windows = bands.new_empty((count, bands.shape[1], w, w))
        for r in (0, step):
            for c in (0, step):
                chosen = (lower == bool(r)) & (right == bool(c))
                windows[chosen] = bands[chosen, :, r:r + w, c:c + w]
        return windows
