"""A kernel classifier on each pixel's own spectrum, whose probabilities are mixed with the
network's when a scene is classified.

Why: the network sees the scene through the band adaptation's 12 components and a window of
context. Where neighbouring pixels often belong to other classes (EnMAP Potsdam: 30 m pixels over
a city), an RBF SVM on the standardised spectra beat the default path by 2.5 to 5 OA points at 10
to 100 pixels per class (bench/results/accuracy*.md). The kernel classifier sees every band the
band adaptation reads, one pixel at a time; the mix keeps the network's lead where context
matters (Indian Pines) and takes the spectra's where it does not.

The classifier is kernel ridge regression on the classes' one-hot codes with an RBF kernel on
standardised spectra, a least-squares SVM (Suykens and Vandewalle, Neural Processing Letters
1999). Its leave-out residuals have a closed form, so the kernel width and the ridge are chosen on
the training pixels alone, leaving out one polygon at a time (pixels of one polygon are neighbours
and would flatter each other; points are their own group), and the temperature that turns its
scores into probabilities is fitted to the same left-out scores. Only the saved state uses torch
(tensors in the adapter file).

Where the scene's classes are fields or stands larger than a pixel, the mean spectrum of the
pixel's neighbourhood separates them better than its own noisy spectrum (on Indian Pines, an SVM
on window means beat one on spectra by 5 to 15 points, bench/results/accuracy.md): the classifier
may see the neighbourhood's mean spectrum instead of, or beside, the pixel's (the stacked features
of Camps-Valls et al., "Composite kernels for hyperspectral image classification", IEEE GRSL
2006). Which of the three it sees is chosen with the width and the ridge, by the same grouped
leave-out accuracy.

Standardising every band gives a noisy band (water absorption, a detector's edge, which a scene
without a bad-band list keeps) the weight of a clean one. With the scene's noise whitening
(models.data.bands.noise_whitening: the MNF's coordinates, all of its components) the spectra are
compared in units of their noise, at one common scale, as Green et al.'s minimum noise fraction
orders them. At 10 pixels per class the classifier alone scored 63.9 % instead of 53.3 % on
Indian Pines' polygons and 84.9 instead of 77.5 on its scattered pixels (5 draws each;
bench/README.md, accuracy). Where neighbouring pixels differ like the scene itself in every band
(a city at 30 m), noise cannot be told from texture, and the bands stay standardised
(models.jobs.fine_tuning decides, from the scene's own pixels).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import options
from ..data.neighbourhood import read_with_means
from ..data.samples import cap_per_class
from .class_balance import class_weights

# Kernel widths as multiples of 1 / bands (the spectra are standardised, so squared distances grow
# with the band count) and ridges tried by the leave-out selection.
WIDTH_FACTORS = (0.1, 0.3, 1.0, 3.0)
RIDGES = (1e-3, 1e-2, 1e-1, 1.0)
TEMPERATURES = np.geomspace(0.5, 50.0, 30)
# Pixels scored per block when classifying: bounds the (block x support) kernel matrix.
_BLOCK = 8192
# What the classifier may see, in the order a tie is settled (the pixel's spectrum first): the
# pixel's spectrum, both, or its neighbourhood's mean spectrum alone.
INPUTS = ("spectrum", "both", "context")


@dataclass
class SpectralKernel:
    """A fitted kernel classifier: probabilities(spectra) for the bands ``band_indices``."""

    band_indices: list[int]
    mean: np.ndarray          # (B,) of the support's spectra
    scale: np.ndarray         # (B,); infinite for a band constant over the training pixels
    support: np.ndarray       # (N, B) standardised training spectra, float32
    coefficients: np.ndarray  # (N, K) dual coefficients
    gamma: float              # RBF width on standardised spectra
    ridge: float
    temperature: float
    weight: float             # share of these probabilities in the map
    left_out_accuracy: float  # balanced accuracy of the leave-out predictions that chose it
    inputs: str = "spectrum"  # one of INPUTS
    context_size: int = 0     # side of the neighbourhood square; 0 where inputs is "spectrum"
    # (B, B): spectra and means are compared as spectra @ whitening (noise units, one common
    # scale); None: each band standardised on its own.
    whitening: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return int(self.coefficients.shape[1])

    def features(self, spectra: np.ndarray, means: np.ndarray | None) -> np.ndarray:
        """(M, F) inputs of this classifier from the pixels' spectra and neighbourhood means
        (M, B) of the bands ``band_indices`` (``means`` unused, and may be None, for "spectrum")."""
        if self.whitening is not None:
            spectra = np.asarray(spectra, dtype=np.float32) @ self.whitening
            means = None if means is None else np.asarray(means, dtype=np.float32) @ self.whitening
        return stack_inputs(self.inputs, spectra, means)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(M, F) features (``features()``) -> (M, K) class probabilities, float32."""
        features = np.asarray(features, dtype=np.float32)
        out = np.empty((len(features), self.num_classes), dtype=np.float32)
        for start in range(0, len(features), _BLOCK):
            block = (features[start:start + _BLOCK] - self.mean) / self.scale
            kernel = np.exp(-self.gamma * _squared_distances(block, self.support))
            out[start:start + _BLOCK] = _softmax(self.temperature * (kernel @ self.coefficients))
        return out

    def mix(self, network: np.ndarray, features: np.ndarray) -> np.ndarray:
        """(M, K) network probabilities mixed with this classifier's on the same pixels."""
        return ((1.0 - self.weight) * network
                + self.weight * self.probabilities(features)).astype(np.float32)

    def mix_block(self, network: np.ndarray, reader, box: tuple[int, int, int, int],
                  rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``mix`` for the pixels (rows, cols) of the block ``box`` (x, y, w, h) of a raster:
        reads their spectra, and their neighbours where the classifier sees a neighbourhood."""
        x, y, w, h = box
        spectra, means = read_with_means(reader, x, y, w, h, self.band_indices,
                                         self.context_size)
        return self.mix(network, self.features(
            spectra[:, rows, cols].T, None if means is None else means[:, rows, cols].T))

    def describe(self) -> str:
        seen = {"spectrum": "the pixel's spectrum",
                "both": f"the pixel's spectrum and its {self.context_size} x "
                        f"{self.context_size} neighbourhood's mean",
                "context": f"the {self.context_size} x {self.context_size} neighbourhood's mean "
                           f"spectrum"}[self.inputs]
        width = self.gamma * self.support.shape[1]
        scale = ("in units of the scene's noise" if self.whitening is not None
                 else "standardised")
        return (f"kernel ridge on {seen} ({len(self.band_indices)} bands, {scale}) of "
                f"{len(self.support)} pixels, weight {self.weight:g} (width {width:g} / "
                f"features, ridge {self.ridge:g}, left-out balanced accuracy "
                f"{100 * self.left_out_accuracy:.1f} %)")

    def to_state(self) -> dict:
        """Numbers, lists and tensors only (an adapter file is read with ``weights_only``). The
        support is kept in float16: standardised spectra need no more, and it halves the file."""
        return {"band_indices": [int(b) for b in self.band_indices],
                "mean": torch.from_numpy(self.mean.astype(np.float32)),
                "scale": torch.from_numpy(self.scale.astype(np.float32)),
                "support": torch.from_numpy(self.support.astype(np.float16)),
                "coefficients": torch.from_numpy(self.coefficients.astype(np.float32)),
                "gamma": float(self.gamma), "ridge": float(self.ridge),
                "temperature": float(self.temperature), "weight": float(self.weight),
                "left_out_accuracy": float(self.left_out_accuracy),
                "inputs": self.inputs, "context_size": int(self.context_size),
                "whitening": (None if self.whitening is None
                              else torch.from_numpy(self.whitening.astype(np.float32)))}

    @classmethod
    def from_state(cls, state: dict) -> SpectralKernel:
        def array(name):
            value = state[name]
            value = value.float().numpy() if isinstance(value, torch.Tensor) else value
            return np.asarray(value, dtype=np.float32)

        kernel = cls(band_indices=[int(b) for b in state["band_indices"]], mean=array("mean"),
                     scale=array("scale"), support=array("support"),
                     coefficients=array("coefficients"),
                     gamma=float(state["gamma"]), ridge=float(state["ridge"]),
                     temperature=float(state["temperature"]), weight=float(state["weight"]),
                     left_out_accuracy=float(state["left_out_accuracy"]),
                     # Files from before the neighbourhood inputs saw the spectrum alone.
                     inputs=str(state.get("inputs", "spectrum")),
                     context_size=int(state.get("context_size", 0)),
                     # Files from before the whitening standardised every band.
                     whitening=(None if state.get("whitening") is None else array("whitening")))
        bands = len(kernel.band_indices)
        inputs = bands * (2 if kernel.inputs == "both" else 1)
        sees_context = kernel.inputs != "spectrum"
        if (kernel.inputs not in INPUTS or sees_context != (kernel.context_size > 0)
                or kernel.mean.shape != (inputs,) or kernel.scale.shape != (inputs,)
                or kernel.support.ndim != 2 or kernel.support.shape[1] != inputs
                or kernel.coefficients.shape[0] != len(kernel.support)
                or (kernel.whitening is not None and kernel.whitening.shape != (bands, bands))):
            raise ValueError("the spectral classifier's arrays do not fit together")
        return kernel


def stack_inputs(inputs: str, spectra: np.ndarray, means: np.ndarray | None) -> np.ndarray:
    """The (M, F) features a classifier seeing ``inputs`` (one of INPUTS) takes."""
    if inputs == "spectrum":
        return spectra
    if means is None:
        raise ValueError(f"a spectral classifier on {inputs!r} needs the neighbourhood means")
    return means if inputs == "context" else np.concatenate([spectra, means], axis=1)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0, out=d)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(axis=1, keepdims=True)


def _balanced_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([np.mean(predicted[truth == c] == c) for c in np.unique(truth)]))


def left_out_scores(eigenvalues, eigenvectors, targets, ridge: float, groups_index) -> np.ndarray:
    """Kernel ridge scores of every training pixel from a fit without its group.

    With H = (K + ridge I)^-1 and dual coefficients A = H Y, leaving out group G changes its
    scores by H_GG^-1 A_G (the grouped form of the leave-one-out identity), so each group costs
    one |G| x |G| solve instead of a new fit.
    """
    inverse = 1.0 / (eigenvalues + ridge)
    coefficients = eigenvectors @ (inverse[:, None] * (eigenvectors.T @ targets))
    scores = np.empty_like(targets)
    for index in groups_index:
        block = (eigenvectors[index] * inverse) @ eigenvectors[index].T
        scores[index] = targets[index] - np.linalg.solve(block, coefficients[index])
    return scores


def fit_spectral_kernel(spectra: np.ndarray, class_index: np.ndarray, groups: np.ndarray,
                        num_classes: int, band_indices, *, means: np.ndarray | None = None,
                        context_size: int = 0, whitening: np.ndarray | None = None,
                        weight: float = options.DEFAULT_SPECTRAL_WEIGHT,
                        class_weighting: str = options.DEFAULT_CLASS_WEIGHTING,
                        max_pixels: int = options.SPECTRAL_MAX_PIXELS,
                        seed: int = 0) -> SpectralKernel:
    """Fit the classifier on labelled spectra (N, B); ``groups`` (N,) names each pixel's polygon.

    With ``class_weighting`` "balanced", each pixel's squared error weighs the inverse of its
    class's share (class_balance.class_weights), as the network's loss does.

    With ``means`` (N, B), the pixels' ``context_size`` neighbourhood means, the classifier may
    see them instead of or beside the spectra (INPUTS): all three are fitted and the best by
    grouped leave-out balanced accuracy is kept. With ``whitening`` (B, B), the scene's noise
    whitening, the classifier compares spectra @ whitening at one common scale instead of each
    band standardised on its own. At most ``max_pixels`` pixels (a seeded,
    class-balanced subsample) form the support: the selection costs a cube of that count per
    input tried, and classifying a pixel a multiple of it.
    """
    if means is not None and int(context_size) < 2:
        raise ValueError("neighbourhood means need the side of their square (context_size)")
    class_index = np.asarray(class_index, dtype=np.int64)
    groups = np.asarray(groups)
    keep = _balanced_subsample(class_index, max_pixels, np.random.default_rng([seed, 7]))
    class_index, groups = class_index[keep], groups[keep]
    spectra = np.asarray(spectra, dtype=np.float64)[keep]
    means = None if means is None else np.asarray(means, dtype=np.float64)[keep]
    if whitening is not None:
        whitening = np.asarray(whitening, dtype=np.float32)
        # The whitening is applied as classifying applies it (SpectralKernel.features).
        spectra = (spectra.astype(np.float32) @ whitening).astype(np.float64)
        means = None if means is None else (means.astype(np.float32) @ whitening).astype(np.float64)
    targets = np.eye(num_classes)[class_index]
    per_class = class_weights(class_index, class_weighting)
    pixel_weights = np.ones(len(class_index)) if per_class is None else per_class[class_index]
    _, group_ids = np.unique(groups, return_inverse=True)
    groups_index = [np.flatnonzero(group_ids == g) for g in range(group_ids.max() + 1)]
    best = None
    for inputs in INPUTS if means is not None else ("spectrum",):
        features = stack_inputs(inputs, spectra, means)
        found = _fit_inputs(features, targets, class_index, groups_index, pixel_weights,
                            common_scale=whitening is not None)
        # A tie keeps the earlier inputs (the pixel's own spectrum first).
        if best is None or found["accuracy"] > best["accuracy"]:
            best = {**found, "inputs": inputs}
    return SpectralKernel(band_indices=[int(b) for b in band_indices],
                          mean=best["mean"].astype(np.float32),
                          scale=best["scale"].astype(np.float32),
                          support=best["support"].astype(np.float32),
                          coefficients=best["coefficients"].astype(np.float32),
                          gamma=float(best["gamma"]), ridge=float(best["ridge"]),
                          temperature=_fit_temperature(best["scores"], class_index),
                          weight=float(weight), left_out_accuracy=float(best["accuracy"]),
                          inputs=best["inputs"],
                          context_size=int(context_size) if best["inputs"] != "spectrum" else 0,
                          whitening=whitening)


def _fit_inputs(features: np.ndarray, targets: np.ndarray, class_index: np.ndarray,
                groups_index: list, pixel_weights: np.ndarray, *,
                common_scale: bool = False) -> dict:
    """Standardise the features (each on its own, or with ``common_scale`` all by the root of
    their mean variance, which keeps whitened features' sizes comparable), then choose the width
    and the ridge by grouped leave-out balanced accuracy; the dual coefficients and left-out
    scores of the choice.

    Weighted kernel ridge regression (each pixel's squared error times its weight w) is the plain
    one on the kernel S K S and targets S Y, S = diag(sqrt(w)): its dual coefficients are S times
    the plain ones' and its scores S^-1 times theirs, so one eigendecomposition per width still
    serves every ridge and every left-out group."""
    mean = features.mean(axis=0)
    variance = features.var(axis=0)
    if common_scale:
        scale = np.full(features.shape[1], max(float(np.sqrt(np.mean(variance))), 1e-12))
    else:
        spread = np.sqrt(variance)    # features.std, to the bit
        # A band constant over the training pixels carries nothing: an infinite scale zeroes it
        # in every spectrum, rather than dividing by zero.
        scale = np.where(spread > 1e-6 * max(float(spread.max(initial=0.0)), 1e-12), spread,
                         np.inf)
    support = (features - mean) / scale
    distances = _squared_distances(support, support)
    root = np.sqrt(pixel_weights)[:, None]
    targets = root * targets
    best = None
    for factor in WIDTH_FACTORS:
        gamma = factor / support.shape[1]
        eigenvalues, eigenvectors = np.linalg.eigh(root * np.exp(-gamma * distances) * root.T)
        eigenvalues = np.maximum(eigenvalues, 0.0)
        for ridge in RIDGES:
            scores = left_out_scores(eigenvalues, eigenvectors, targets, ridge,
                                     groups_index) / root
            accuracy = _balanced_accuracy(scores.argmax(axis=1), class_index)
            # Ties go to the stronger ridge and the wider kernel: the smoother classifier.
            key = (accuracy, ridge, -factor)
            if best is None or key > best[0]:
                best = (key, gamma, ridge, eigenvalues, eigenvectors, scores)
    (accuracy, ridge, _), gamma, ridge, eigenvalues, eigenvectors, scores = best
    coefficients = root * (eigenvectors @ ((eigenvectors.T @ targets)
                                           / (eigenvalues + ridge)[:, None]))
    return {"mean": mean, "scale": scale, "support": support, "coefficients": coefficients,
            "gamma": gamma, "ridge": ridge, "scores": scores, "accuracy": accuracy}


def _fit_temperature(scores: np.ndarray, class_index: np.ndarray) -> float:
    """The temperature whose softmax of the left-out scores has the least log loss."""
    rows = np.arange(len(class_index))

    def log_loss(temperature):
        z = temperature * scores
        z = z - z.max(axis=1, keepdims=True)
        return -np.mean(z[rows, class_index] - np.log(np.exp(z).sum(axis=1)))

    return float(min(TEMPERATURES, key=log_loss))


def _balanced_subsample(class_index: np.ndarray, max_pixels: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``max_pixels`` pixels, each class keeping an equal share where it can."""
    indices = np.arange(len(class_index))
    if len(class_index) <= max_pixels:
        return indices
    # Classes under the quota keep all theirs; what they leave is shared by the others.
    remaining, quota = max_pixels, max_pixels
    sizes = np.sort(np.bincount(class_index)[np.unique(class_index)])
    for left, size in zip(range(len(sizes), 0, -1), sizes):
        quota = remaining // left
        if size > quota:
            break
        remaining -= size
    # Every class keeps a pixel, even with more classes than ``max_pixels``.
    return cap_per_class(indices, class_index, max(quota, 1), rng)
