"""Keeping the segment vote only where the held-out polygons say it helps.

The segment vote (models.data.segments) suits scenes whose classes come in patches larger than
its superpixels, as Indian Pines' fields do; where neighbouring pixels often differ in class, as
in EnMAP Potsdam's 30-metre city, it smooths them away. Where polygons were held out for
validation, the map's classes at the held-out pixels are computed as the map computes them
(models.learning.predict.probabilities_at: the map's tiles, windows and mix, with a spectral
classifier fitted without the held-out pixels), with the vote and without it. The vote goes only
if leaving it out classifies more held-out pixels right than it gets wrong by more than chance
would: of the pixels whose class changes, those it puts right (b) outnumber those it puts wrong
(c) by more than one standard deviation of a fair coin, b - c > sqrt(b + c) (the sign test behind
McNemar's). A quarter of a class's polygons is few pixels: at 100 pixels per class one or two of
them decided no better than a coin (bench/README.md, accuracy). Without held-out pixels (a few
polygons per class) the vote stays as it is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.raster import RasterReader
from ..learning.predict import fit_segment_vote, probabilities_at
from ..learning.spectral_kernel import SpectralKernel


@dataclass
class VoteChoice:
    """What the held-out pixels said: how many leaving the vote out puts right and wrong, the
    accuracy with and without it, and the choice."""

    keep: bool
    pixels: int
    put_right: int
    put_wrong: int
    accuracy_with: float
    accuracy_without: float

    def to_dict(self) -> dict:
        return {"keep": self.keep, "pixels": self.pixels, "put_right": self.put_right,
                "put_wrong": self.put_wrong, "accuracy_with": self.accuracy_with,
                "accuracy_without": self.accuracy_without}

    def note(self, size: int) -> str:
        figures = (f"without it {self.put_right} would be classified right and {self.put_wrong} "
                   f"wrong that are not now (accuracy {self.accuracy_with:.1%} with it, "
                   f"{self.accuracy_without:.1%} without)")
        if self.keep:
            return (f"The segment vote ({size}-pixel superpixels) stays: of the {self.pixels} "
                    f"held-out pixels, {figures}.")
        return (f"The segment vote ({size}-pixel superpixels) was left out of the map and of the "
                f"adapter: of the {self.pixels} held-out pixels, {figures}.")


def compare_vote(without: np.ndarray, with_vote: np.ndarray, labels: np.ndarray) -> VoteChoice:
    """The choice from the held-out pixels' (N, K) probabilities without the vote and with it."""
    labels = np.asarray(labels, dtype=np.int64)
    right_with = np.asarray(with_vote).argmax(axis=1) == labels
    right_without = np.asarray(without).argmax(axis=1) == labels
    put_right = int((right_without & ~right_with).sum())
    put_wrong = int((right_with & ~right_without).sum())
    return VoteChoice(keep=not put_right - put_wrong > np.sqrt(put_right + put_wrong),
                      pixels=int(len(labels)), put_right=put_right, put_wrong=put_wrong,
                      accuracy_with=float(right_with.mean()),
                      accuracy_without=float(right_without.mean()))


def choose_segment_vote(model, samples, held_index: np.ndarray, *, segment_size: int, step: int,
                        spectral: SpectralKernel | None, device, batch_size: int,
                        cancel=None) -> VoteChoice:
    """Whether the map keeps its segment vote of ``segment_size`` (above 0), from the held-out
    pixels ``held_index`` (at least one) of ``samples`` (fine_tuning's labelled pixels and
    raster). ``spectral``: the spectral classifier fitted without the held-out pixels."""
    pixels = samples.pixels
    model.eval()
    with RasterReader(samples.info) as reader:
        vote = fit_segment_vote(reader, samples.adaptation, segment_size)
        without, with_vote = probabilities_at(
            reader, model, samples.adaptation, pixels.rows[held_index], pixels.cols[held_index],
            window_size=samples.window_size, num_classes=len(pixels.classes), device=device,
            batch_size=batch_size, vote=vote, step=step, spectral=spectral, cancel=cancel)
    return compare_vote(without, with_vote, pixels.class_index[held_index])
