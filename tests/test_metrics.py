"""Accuracy metrics against hand-worked numbers, and the JSON/HTML reports."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest

from hyperadapt.models.data.samples import ClassInfo
from hyperadapt.models.learning.metrics import (classification_metrics, confusion_matrix,
                                                metrics_from_labels)
from hyperadapt.models.stores.report import (confusion_matrix_png, png_bytes, write_html_report,
                                             write_metrics_json)

CLASSES = [ClassInfo(1, "water", (0, 0, 255)), ClassInfo(2, "forest", (0, 128, 0)),
           ClassInfo(5, "urban <built>", (200, 0, 0))]
# Rows: reference; columns: predicted.
MATRIX = np.array([[50, 3, 2],
                   [5, 40, 5],
                   [0, 2, 43]])


def test_confusion_matrix_counts_reference_rows_and_predicted_columns():
    reference = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    np.testing.assert_array_equal(confusion_matrix(reference, predicted, 3),
                                  [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_overall_average_kappa_and_per_class_accuracies_match_hand_calculation():
    metrics = classification_metrics(MATRIX, CLASSES)
    assert metrics["num_samples"] == 150
    assert metrics["overall_accuracy"] == pytest.approx(133 / 150)
    assert metrics["average_accuracy"] == pytest.approx((50 / 55 + 40 / 50 + 43 / 45) / 3)
    # p_e = (55*55 + 50*45 + 45*50) / 150^2; kappa = (p_o - p_e) / (1 - p_e) = 12425 / 14975.
    assert metrics["kappa"] == pytest.approx(12425 / 14975)
    forest = metrics["classes"][1]
    assert forest["name"] == "forest" and forest["value"] == 2
    assert forest["producers_accuracy"] == pytest.approx(40 / 50)
    assert forest["users_accuracy"] == pytest.approx(40 / 45)
    assert forest["f1"] == pytest.approx(2 * 0.8 * (40 / 45) / (0.8 + 40 / 45))
    assert (forest["reference_pixels"], forest["predicted_pixels"]) == (50, 45)
    assert metrics["confusion_matrix"] == MATRIX.tolist()


def test_kappa_agrees_with_scikit_learn_on_random_labels():
    from sklearn.metrics import cohen_kappa_score, f1_score

    rng = np.random.default_rng(1)
    reference = rng.integers(0, 3, size=500)
    predicted = np.where(rng.random(500) < 0.7, reference, rng.integers(0, 3, size=500))
    metrics = metrics_from_labels(reference, predicted, CLASSES)
    assert metrics["kappa"] == pytest.approx(cohen_kappa_score(reference, predicted))
    assert [c["f1"] for c in metrics["classes"]] == pytest.approx(
        f1_score(reference, predicted, average=None))


def test_class_without_reference_pixels_is_left_out_of_the_average():
    matrix = np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]])
    metrics = classification_metrics(matrix, CLASSES)
    assert metrics["classes"][2]["producers_accuracy"] is None
    assert metrics["classes"][2]["users_accuracy"] is None
    assert metrics["average_accuracy"] == pytest.approx((0.8 + 0.9) / 2)
    empty = classification_metrics(np.zeros((3, 3), int), CLASSES)
    assert empty["overall_accuracy"] is None and empty["kappa"] is None


def test_png_writer_produces_an_image_matplotlib_reads():
    import matplotlib.image

    rgb = np.zeros((3, 5, 3), np.uint8)
    rgb[1, 2] = (255, 10, 20)
    decoded = matplotlib.image.imread(io.BytesIO(png_bytes(rgb)), format="png")
    np.testing.assert_allclose(decoded[..., :3] * 255, rgb, atol=0.5)


def test_reports_are_json_and_html_with_an_embedded_confusion_picture(tmp_path):
    import matplotlib.image

    metrics = {**classification_metrics(MATRIX, CLASSES), "notes": ["A note & more."]}
    write_metrics_json(metrics, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == metrics
    write_html_report(metrics, tmp_path / "m.html", details={"raster": "scene.tif"})
    page = (tmp_path / "m.html").read_text()
    assert "88.7 %" in page and "0.830" in page and "urban &lt;built&gt;" in page
    assert "A note &amp; more." in page and "scene.tif" in page
    encoded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1)
    picture = matplotlib.image.imread(io.BytesIO(base64.b64decode(encoded)), format="png")
    assert picture.shape[0] > 100 and picture.shape[1] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.html", "m.json"]
    assert confusion_matrix_png(MATRIX, [c.name for c in CLASSES]).startswith(b"\x89PNG")


def test_area_adjusted_estimates_match_olofssons_worked_example():
    """Olofsson et al. (2014), section 5: four classes, a 10,000,000-pixel map of 30 m pixels
    (0.09 ha), stratified sample by map class."""
    from hyperadapt.models.learning.metrics import area_adjusted_accuracy

    # Rows: map classes deforestation, forest gain, stable forest, stable non-forest.
    by_map = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
    map_pixels = np.array([200_000, 150_000, 3_200_000, 6_450_000])
    result = area_adjusted_accuracy(by_map.T, map_pixels, pixel_area=0.09)
    deforestation = result["classes"][0]
    assert round(deforestation["area"]) == 21_158          # ha
    assert round(deforestation["area_ci"]) == 6_158
    assert round(result["overall_accuracy"], 3) == 0.947
    assert round(deforestation["users_accuracy"], 3) == 0.880
    assert round(deforestation["producers_accuracy"], 3) == 0.749
    # The published 95 % intervals: OA 0.95 +- 0.02, deforestation UA 0.88 +- 0.07, PA 0.75 +- 0.21.
    assert round(result["overall_accuracy_ci"], 2) == 0.02
    assert round(deforestation["users_accuracy_ci"], 2) == 0.07
    assert round(deforestation["producers_accuracy_ci"], 2) == 0.21
    assert deforestation["map_area"] == pytest.approx(18_000.0)
    assert round(result["classes"][1]["users_accuracy"], 3) == 0.733
    # The proportions sum to one; every class's area is the whole map's share of it.
    proportions = np.array(result["error_matrix_proportions"])
    assert proportions.sum() == pytest.approx(1.0)
    assert sum(c["area"] for c in result["classes"]) == pytest.approx(900_000.0)
