"""Pixel-centred windows of band-adapted data, the samples the model sees.

A window of ``window_size`` x ``window_size`` pixels (odd, so one pixel is its centre) is cut
around each pixel and resized to the model's ``input_size``, as in Ligan et al. (2025), where
pixel-centred patches are resized to 32 x 32. Windows are cut from a region held in memory (read
from a raster by models.data.regions), so this module needs no raster library: the network,
training and inference run where GDAL is absent.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def extract_windows(region, rows, cols, window_size: int, halo: int):
    """Windows (N, C, window_size, window_size) centred on tile pixels (rows, cols).

    ``region`` is (C, H + 2 halo, W + 2 halo), a numpy array or a torch tensor (the result is of
    the same kind and device); rows and cols index the tile without its halo.
    """
    radius = window_size // 2
    if isinstance(region, torch.Tensor):
        offsets = torch.arange(-radius, radius + 1, device=region.device)
        r = torch.as_tensor(rows, device=region.device).long() + halo
        c = torch.as_tensor(cols, device=region.device).long() + halo
        row_index = (r[:, None] + offsets[None, :])[:, :, None]
        col_index = (c[:, None] + offsets[None, :])[:, None, :]
        return region[:, row_index, col_index].permute(1, 0, 2, 3)
    offsets = np.arange(-radius, radius + 1)
    r = np.asarray(rows, dtype=np.int64) + halo
    c = np.asarray(cols, dtype=np.int64) + halo
    windows = region[:, (r[:, None] + offsets)[:, :, None], (c[:, None] + offsets)[:, None, :]]
    return np.ascontiguousarray(windows.transpose(1, 0, 2, 3))


def resize_windows(windows: torch.Tensor, input_size: int) -> torch.Tensor:
    """Bilinear resize of (N, C, w, w) windows to (N, C, input_size, input_size)."""
    if windows.shape[-1] == input_size and windows.shape[-2] == input_size:
        return windows
    return F.interpolate(windows, size=(input_size, input_size), mode="bilinear",
                         align_corners=False)
