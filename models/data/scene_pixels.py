"""A sensor's scenes read for pretraining: the band-adapted pixels held in memory, tile by tile,
and every valid pixel a window can be centred on (models.jobs.pretraining draws its windows here).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import HyperAdaptError, raise_if_cancelled
from .bands import BandAdaptation
from .raster import RasterReader, iter_tiles, read_raster_info
from .regions import read_adapted_region
from .windows import extract_windows

log = logging.getLogger(__name__)

# Adapted pixels kept in memory for sampling windows; larger scenes contribute random tiles.
MAX_SCENE_PIXELS = 16_000_000
SCENE_TILE = 256


@dataclass
class _SceneChunk:
    """A band-adapted tile with its halo, and the valid pixels in it that windows are centred on."""

    region: torch.Tensor          # (12, h + 2 halo, w + 2 halo) float32
    rows: np.ndarray              # valid centre pixels, tile coordinates
    cols: np.ndarray


@dataclass
class ScenePixels:
    """Band-adapted data of the rasters held in memory, and every valid pixel a window can centre on."""

    chunks: list[_SceneChunk]
    halo: int
    raster_names: list[str] = field(default_factory=list)
    offsets: np.ndarray = field(default=None)     # first pixel number of each chunk

    def __post_init__(self):
        counts = [len(chunk.rows) for chunk in self.chunks]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def num_pixels(self) -> int:
        return int(self.offsets[-1])

    def windows(self, pixel_numbers: np.ndarray, window_size: int) -> torch.Tensor:
        """Windows (N, 12, window_size, window_size) around the numbered valid pixels, in that order."""
        pixel_numbers = np.asarray(pixel_numbers, dtype=np.int64)
        chunk_of = np.searchsorted(self.offsets, pixel_numbers, side="right") - 1
        out = torch.empty(len(pixel_numbers), self.chunks[0].region.shape[0], window_size,
                          window_size)
        for index in np.unique(chunk_of):
            members = np.flatnonzero(chunk_of == index)
            chunk = self.chunks[index]
            local = pixel_numbers[members] - self.offsets[index]
            out[torch.from_numpy(members)] = extract_windows(
                chunk.region, chunk.rows[local], chunk.cols[local], window_size, self.halo)
        return out


def check_rasters(raster_paths) -> list:
    """RasterInfo of each raster; a HyperAdaptError unless they share one band layout (one sensor)."""
    paths = [str(path) for path in raster_paths if str(path)]
    if not paths:
        raise HyperAdaptError("Pretraining needs at least one raster of the sensor.")
    infos = [read_raster_info(path) for path in paths]
    first = infos[0]
    for info in infos[1:]:
        if info.band_count != first.band_count:
            raise HyperAdaptError(
                f"All rasters must come from one sensor, but {Path(info.path).name} has "
                f"{info.band_count} bands and {Path(first.path).name} has {first.band_count}.")
    if not set.intersection(*(set(info.good_bands) for info in infos)):
        raise HyperAdaptError("The rasters have no band that is good (not flagged by bbl) in all "
                              "of them.")
    return infos


def load_scene_pixels(infos, adaptation: BandAdaptation, window_size: int, *, seed: int = 0,
                      max_pixels: int = MAX_SCENE_PIXELS, tile: int = SCENE_TILE,
                      cancel=None, progress=None) -> ScenePixels:
    """Read and band-adapt the rasters tile by tile (all of them, or random tiles up to max_pixels)."""
    halo = window_size // 2
    tiles = [(number, box) for number, info in enumerate(infos)
             for box in iter_tiles(info.width, info.height, tile)]
    total = sum(info.width * info.height for info in infos)
    if total > max_pixels:
        rng = np.random.default_rng([seed, 7])
        order = rng.permutation(len(tiles))
        chosen, area = [], 0
        for position in order:
            if area >= max_pixels:
                break
            chosen.append(tiles[position])
            area += tiles[position][1][2] * tiles[position][1][3]
        tiles = sorted(chosen)
        log.info("The rasters hold %d pixels; %d random tiles (%d pixels) are used.", total,
                 len(tiles), area)
    readers = {}
    chunks = []
    try:
        for done, (number, (x, y, w, h)) in enumerate(tiles):
            raise_if_cancelled(cancel)
            reader = readers.get(number)
            if reader is None:
                reader = readers[number] = RasterReader(infos[number])
            region, valid = read_adapted_region(reader, adaptation, x, y, w, h, halo)
            rows, cols = np.nonzero(valid)
            if len(rows):
                chunks.append(_SceneChunk(region=torch.from_numpy(region), rows=rows.astype(np.int64),
                                          cols=cols.astype(np.int64)))
            if progress is not None:
                progress((done + 1) / len(tiles), "Reading the rasters")
    finally:
        for reader in readers.values():
            reader.close()
    if not chunks:
        raise HyperAdaptError("The rasters have no valid pixels to pretrain on: every pixel is "
                              "nodata or masked.")
    return ScenePixels(chunks=chunks, halo=halo, raster_names=[Path(i.path).name for i in infos])
