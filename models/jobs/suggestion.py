"""Where to draw next: the pixels a fine-tuned model is least sure of, spread over the scene.

Active learning as the remote-sensing literature recommends it (Tuia et al., "A survey of active
learning algorithms for supervised remote sensing image classification", IEEE JSTSP 2011):

1. uncertainty: the margin between the two most probable classes ("margin sampling"; a small
   margin is a pixel the model cannot decide), scored as ``1 - margin``;
2. diversity: suggestions at least ``min_spacing`` pixels from each other and from the existing
   training pixels, taken in turn from each best-guess class so that one confused class does not
   take them all.

The scene is scored tile by tile on a grid of every ``step``-th pixel (memory follows the tile,
time shrinks with the square of the step); each tile keeps only its most uncertain candidates.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import options
from ..data.bands import BandAdaptation
from ..data.raster import RasterReader, iter_tiles, tile_side_for
from ..data.regions import read_adapted_region
from ..data.samples import read_labelled_pixels
from ..data.windows import extract_windows
from ..errors import HyperAdaptError, raise_if_cancelled
from ..learning.inference import predict_probabilities
from ..learning.spectral_kernel import SpectralKernel
from ..progress import report as _report
from ..progress import scaled as _scaled
from ..settings import check_window_size
from ..stores.adapter_file import load_adapter_file
from ..stores.files import StagedFiles
from ..stores.guard import check_job_files, layer_files
from .classification import compatible_raster, load_adapter

# Candidates kept per tile for each suggestion asked for: enough for spacing and class turns to
# choose from, few enough that memory does not grow with the raster.
CANDIDATES_PER_SUGGESTION = 20


@dataclass
class Suggestion:
    """A pixel to label next: its place, the model's best guess (class index) and its score."""

    row: int
    col: int
    guess: int
    score: float        # 1 - (top probability - second probability): 1 = undecided
    top_probability: float


def score_candidates(probabilities: np.ndarray) -> np.ndarray:
    """1 - margin between the two most probable classes, per row of (N, K) probabilities."""
    if probabilities.shape[1] < 2:
        return np.zeros(len(probabilities), dtype=np.float32)
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return (1.0 - (top_two[:, 1] - top_two[:, 0])).astype(np.float32)


def scene_candidates(reader: RasterReader, model, adaptation: BandAdaptation, *,
                     window_size: int, device: torch.device, keep_per_tile: int, step: int = 1,
                     batch_size: int = 64, spectral: SpectralKernel | None = None,
                     progress=None, cancel=None) -> dict:
    """The most uncertain grid pixels of each tile: {"rows", "cols", "scores", "probabilities"}.

    With a ``spectral`` classifier, the probabilities are mixed with its as the map mixes them,
    so a suggestion's best guess is the map's class there (before the segment vote).

    Each candidate gets its own window, without the vote: scoring the map's own probabilities
    (tile mode, after the vote) led a simulated user's 3 x 3 squares to fewer pixels of one
    class (class edges, it seems) and gained less over random additions (+3.8 and +2.0 OA
    points against +6.0 and +4.3; bench/README.md, active).
    """
    window_size = check_window_size(window_size)
    halo = window_size // 2
    tile = tile_side_for(adaptation.num_inputs, halo=halo, maximum=256)
    tiles = list(iter_tiles(reader.width, reader.height, tile))
    found = {"rows": [], "cols": [], "scores": [], "probabilities": []}
    model.eval()
    for done, (x, y, w, h) in enumerate(tiles):
        raise_if_cancelled(cancel)
        region, valid = read_adapted_region(reader, adaptation, x, y, w, h, halo)
        grid = np.zeros_like(valid)
        # The grid is anchored to the raster, not the tile, so tiles agree on it.
        grid[(np.arange(y, y + h) % step == 0)[:, None] & (np.arange(x, x + w) % step == 0)] = True
        rows, cols = np.nonzero(valid & grid)
        if len(rows):
            windows = extract_windows(torch.from_numpy(region).to(device), rows, cols,
                                      window_size, halo)
            probs = predict_probabilities(model, windows, device=device, batch_size=batch_size,
                                          cancel=cancel)
            if spectral is not None:
                probs = spectral.mix_block(probs, reader, (x, y, w, h), rows, cols)
            scores = score_candidates(probs)
            keep = np.argsort(-scores, kind="stable")[:keep_per_tile]
            found["rows"].append(rows[keep] + y)
            found["cols"].append(cols[keep] + x)
            found["scores"].append(scores[keep])
            found["probabilities"].append(probs[keep])
        reader.release_cache()
        if progress is not None:
            progress((done + 1) / len(tiles), "Scoring the scene")
    if not found["rows"]:
        raise HyperAdaptError("The raster has no valid pixel to suggest: every pixel is nodata "
                              "or masked.")
    return {key: np.concatenate(parts) for key, parts in found.items()}


def choose_suggestions(rows: np.ndarray, cols: np.ndarray, scores: np.ndarray,
                       probabilities: np.ndarray, *, count: int, min_spacing: float,
                       avoid_rows=None, avoid_cols=None) -> list[Suggestion]:
    """Up to ``count`` candidates, most uncertain first, taken in turn from each best-guess class,
    each at least ``min_spacing`` pixels from the others and from the pixels to avoid."""
    guesses = probabilities.argmax(axis=1)
    order = np.argsort(-scores, kind="stable")
    usable = np.ones(len(rows), dtype=bool)
    if avoid_rows is not None and len(avoid_rows):
        usable = _far_from(rows, cols, np.asarray(avoid_rows), np.asarray(avoid_cols), min_spacing)
    queues = {int(k): [i for i in order if usable[i] and guesses[i] == k]
              for k in np.unique(guesses)}
    # Classes take turns, the class with the most uncertain candidate first.
    turn = sorted(queues, key=lambda k: -scores[queues[k][0]] if queues[k] else 0.0)
    chosen: list[int] = []
    while len(chosen) < count and any(queues.values()):
        for k in turn:
            queue = queues[k]
            while queue:
                i = queue.pop(0)
                if all((rows[i] - rows[j]) ** 2 + (cols[i] - cols[j]) ** 2 >= min_spacing ** 2
                       for j in chosen):
                    chosen.append(i)
                    break
            if len(chosen) == count:
                break
    chosen.sort(key=lambda i: -scores[i])
    return [Suggestion(row=int(rows[i]), col=int(cols[i]), guess=int(guesses[i]),
                       score=float(scores[i]), top_probability=float(probabilities[i].max()))
            for i in chosen]


def _far_from(rows, cols, avoid_rows, avoid_cols, distance: float) -> np.ndarray:
    """Whether each (row, col) is at least ``distance`` from every avoided pixel (in chunks)."""
    far = np.ones(len(rows), dtype=bool)
    for start in range(0, len(avoid_rows), 4096):
        ar, ac = avoid_rows[start:start + 4096], avoid_cols[start:start + 4096]
        d2 = (rows[:, None] - ar[None, :]) ** 2 + (cols[:, None] - ac[None, :]) ** 2
        far &= (d2 >= distance ** 2).all(axis=1)
    return far


def write_suggestions_layer(path, suggestions: list[Suggestion], *, info, classes) -> None:
    """A GeoPackage point layer 'suggestions' at the pixel centres, in the raster's CRS, with
    rank, score, the best guess's name and class value, and its probability."""
    from osgeo import ogr, osr

    srs = None
    if info.crs_wkt:
        srs = osr.SpatialReference()
        srs.ImportFromWkt(info.crs_wkt)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    try:
        layer = source.CreateLayer("suggestions", srs, ogr.wkbPoint)
        for name, kind in (("rank", ogr.OFTInteger), ("score", ogr.OFTReal),
                           ("guess", ogr.OFTString), ("guess_value", ogr.OFTInteger),
                           ("probability", ogr.OFTReal)):
            layer.CreateField(ogr.FieldDefn(name, kind))
        x0, dx, _, y0, _, dy = info.geotransform
        for rank, item in enumerate(suggestions, start=1):
            feature = ogr.Feature(layer.GetLayerDefn())
            feature.SetField("rank", rank)
            feature.SetField("score", round(item.score, 4))
            feature.SetField("guess", classes[item.guess].name)
            feature.SetField("guess_value", int(classes[item.guess].value))
            feature.SetField("probability", round(item.top_probability, 4))
            point = ogr.Geometry(ogr.wkbPoint)
            point.AddPoint_2D(x0 + (item.col + 0.5) * dx, y0 + (item.row + 0.5) * dy)
            feature.SetGeometry(point)
            layer.CreateFeature(feature)
            feature = None
        layer = None
    finally:
        source = None


# -- the job --------------------------------------------------------------------------------------
def suggest(raster_path: str, adapter_path: str, output_path: str, *, count: int = 20,
            min_spacing: int = 10, step: int | None = None, training_path: str | None = None,
            class_field: str | None = None, layer_name: str | None = None,
            weights: str | None = None, device: str = "auto", batch_size: int = 64,
            progress=None, cancel=None) -> dict:
    """The suggest job: ``count`` pixels to label next as a GeoPackage point layer.

    The most uncertain pixels (smallest margin between the two best classes), at least
    ``min_spacing`` pixels apart and from the training layer's pixels, taken in turn from each
    best-guess class. The scene is scored every ``step`` pixels (default: half the spacing).
    Returns {"suggestions": [Suggestion], "classes", "output_path", "scored_pixels", "seconds"}.
    """
    started = time.perf_counter()
    if not output_path:
        raise HyperAdaptError("No output file name was given.")
    problem = (options.whole_number_problem(count, "number of suggestions", 1, 10**6)
               or options.whole_number_problem(min_spacing, "spacing between suggestions", 0,
                                               10**6))
    if problem:
        raise HyperAdaptError(problem)
    if training_path and not class_field:
        raise HyperAdaptError("Name the training layer's class field, or leave the layer out.")
    check_job_files({"suggestions layer": output_path},
                    {"input raster": raster_path, "adapter file": adapter_path,
                     "training layer": layer_files(training_path), "weights file": weights})
    record = load_adapter_file(adapter_path)
    info = compatible_raster(record, raster_path)
    avoid = None
    if training_path:
        avoid = read_labelled_pixels(info, training_path, class_field, layer_name=layer_name,
                                     cancel=cancel, min_classes=1)
    loaded = load_adapter(adapter_path, weights=weights, device=device, record=record)
    step = max(1, int(step) if step else min_spacing // 2)
    with RasterReader(info) as reader:
        found = scene_candidates(reader, loaded.model, loaded.adaptation,
                                 window_size=record.window_size, device=loaded.device, step=step,
                                 batch_size=max(1, batch_size), spectral=loaded.spectral,
                                 keep_per_tile=count * CANDIDATES_PER_SUGGESTION,
                                 progress=_scaled(progress, 0.05, 0.95), cancel=cancel)
    chosen = choose_suggestions(found["rows"], found["cols"], found["scores"],
                                found["probabilities"], count=count, min_spacing=min_spacing,
                                avoid_rows=None if avoid is None else avoid.rows,
                                avoid_cols=None if avoid is None else avoid.cols)
    if not chosen:
        raise HyperAdaptError(f"No pixel lies {min_spacing} pixels or more from the training "
                              f"layer; choose a smaller spacing.")
    staged = StagedFiles()
    try:
        write_suggestions_layer(staged.stage(output_path), chosen, info=info,
                                classes=record.classes)
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    _report(progress, 1.0, "Done")
    return {"suggestions": chosen, "classes": record.classes, "output_path": str(output_path),
            "scored_pixels": int(len(found["rows"])), "seconds": time.perf_counter() - started}
