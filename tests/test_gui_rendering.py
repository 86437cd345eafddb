"""Hyperspectral rasters shown in true colour from their wavelengths, in real QGIS (offscreen)."""
from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsMultiBandColorRenderer, QgsRasterLayer
from qgis.gui import QgsMessageBar
from qgis.PyQt import sip
from qgis.PyQt.QtWidgets import QPushButton, QTextBrowser

from engine_data import make_test_raster, write_raster
from gui_data import render_layers, screenshot_paths, side_by_side
from hyperadapt.bench.indian_pines import load_indian_pines, write_image
from hyperadapt.models.jobs import evaluate
from hyperadapt.plugin.rendering import (COLOUR_INFRARED_NM, TRUE_COLOUR_NM, bands_for,
                                         show_in_true_colour)


class _Interface:
    """Just enough of QGIS's interface: a real message bar."""

    def __init__(self):
        self.bar = QgsMessageBar()

    def messageBar(self):  # noqa: N802 (QGIS's name)
        return self.bar


@pytest.fixture
def iface():
    interface = _Interface()
    yield interface
    sip.delete(interface.bar)


def _bands(layer) -> tuple[int, int, int]:
    renderer = layer.renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    return renderer.redBand(), renderer.greenBand(), renderer.blueBand()


def test_a_raster_with_wavelengths_is_shown_in_true_colour_with_undo(tmp_path, iface,
                                                                    qgis_new_project):
    raster = make_test_raster(tmp_path / "scene.tif", num_bands=60, nodata_box=None)
    wavelengths = list(np.linspace(420.0, 2400.0, 60))
    layer = QgsRasterLayer(str(raster.path), "scene", "gdal")
    assert _bands(layer) == (1, 2, 3)                    # what QGIS shows at first
    assert show_in_true_colour(layer, iface)
    expected = tuple(int(np.argmin(np.abs(np.array(wavelengths) - t))) + 1 for t in TRUE_COLOUR_NM)
    assert _bands(layer) == expected == (8, 5, 2)
    # Each band is stretched between its 2nd and 98th percentile.
    dataset = gdal.Open(str(raster.path))
    values = dataset.GetRasterBand(expected[0]).ReadAsArray()
    dataset = None
    low, high = np.percentile(values, (2, 98))
    red = layer.renderer().redContrastEnhancement()
    assert red.minimumValue() == pytest.approx(low, abs=0.05 * (high - low))
    assert red.maximumValue() == pytest.approx(high, abs=0.05 * (high - low))
    # The message bar offers colour infrared and undo.
    infrared = iface.bar.findChild(QPushButton, "hyperadapt_colour_infrared")
    infrared.click()
    assert _bands(layer) == tuple(bands_for(wavelengths, COLOUR_INFRARED_NM))
    iface.bar.findChild(QPushButton, "hyperadapt_undo_rendering").click()
    assert _bands(layer) == (1, 2, 3)
    # A raster the user styled already is left alone.
    styled = QgsRasterLayer(str(raster.path), "styled", "gdal")
    styled.setRenderer(QgsMultiBandColorRenderer(styled.dataProvider(), 30, 20, 10))
    assert not show_in_true_colour(styled, iface) and _bands(styled) == (30, 20, 10)


def test_a_raster_without_wavelengths_keeps_its_rendering(tmp_path, iface, qgis_new_project):
    raster = make_test_raster(tmp_path / "plain.tif", num_bands=12, with_wavelengths=False)
    layer = QgsRasterLayer(str(raster.path), "plain", "gdal")
    assert not show_in_true_colour(layer, iface)
    assert _bands(layer) == (1, 2, 3)
    assert bands_for([400.0, 410.0, 420.0], TRUE_COLOUR_NM) is None   # no band near 640 nm


def test_screenshots_of_a_true_colour_raster_and_an_accuracy_report(tmp_path, qgis_new_project):
    """Pictures for the README: Indian Pines as QGIS opens it and in true colour, and the
    accuracy report of an evaluation as a browser shows it."""
    def render(raster_layer):
        return render_layers([raster_layer], raster_layer.extent(), raster_layer.crs(), 300)

    image, labels, wavelengths = load_indian_pines()
    path = tmp_path / "indian_pines.tif"
    write_image(path, image, wavelengths)
    layer = QgsRasterLayer(str(path), "Indian Pines", "gdal")
    first = render(layer)
    assert show_in_true_colour(layer)
    assert _bands(layer) == tuple(bands_for(wavelengths, TRUE_COLOUR_NM))
    pair = side_by_side(first, render(layer))
    for shot in screenshot_paths(tmp_path, "true_colour_rendering.png"):
        assert pair.save(str(shot))

    # A report: a map that is the ground truth with a fifth of its pixels in a neighbouring
    # class, evaluated against the ground truth (areas in hectares on a 20 m UTM grid).
    rng = np.random.default_rng(0)
    mapped = labels.astype(np.uint8).copy()
    wrong = (mapped > 0) & (rng.random(mapped.shape) < 0.2)
    mapped[wrong] = mapped[wrong] % 16 + 1
    grid = dict(geotransform=(500_000.0, 20.0, 0.0, 4_480_000.0, 0.0, -20.0), epsg=32616,
                nodata=0, data_type=gdal.GDT_Byte)
    truth = write_raster(tmp_path / "truth.tif", labels[None].astype(np.uint8), **grid)
    classified = write_raster(tmp_path / "mapped.tif", mapped[None], **grid)
    html = tmp_path / "report.html"
    evaluate(str(classified), str(truth), html_path=str(html))
    document = QTextBrowser()
    document.setHtml(html.read_text())
    document.resize(900, 1700)
    shot = document.grab()
    assert "Area-adjusted accuracy and class areas" in document.toPlainText()
    for target in screenshot_paths(tmp_path, "accuracy_report.png"):
        assert shot.save(str(target))
    document.deleteLater()
