"""Readable hyperspectral rasters: true colour (or colour infrared) from the band wavelengths.

QGIS opens a multiband raster as bands 1, 2 and 3, which on AVIRIS or EnMAP lie near 400-420 nm and
look like noise; people draw training polygons on what they can see. When a raster with band
wavelengths is chosen for training or classifying and still shows QGIS's first three bands, the
bands nearest 640, 550 and 460 nm are shown instead, each stretched between its 2nd and 98th
percentile, and the message bar offers colour infrared (860, 650, 550 nm) and undo.
"""
from __future__ import annotations

import weakref

from qgis.core import (Qgis, QgsContrastEnhancement, QgsMultiBandColorRenderer, QgsRasterLayer,
                       QgsRectangle)
from qgis.gui import QgsMessageBar
from qgis.PyQt.QtWidgets import QPushButton

TRUE_COLOUR_NM = (640.0, 550.0, 460.0)
COLOUR_INFRARED_NM = (860.0, 650.0, 550.0)
# A band further than this from the wanted wavelength does not stand for it.
MAX_DISTANCE_NM = 40.0
STRETCH = (0.02, 0.98)
SAMPLE_PIXELS = 250_000


def band_wavelengths(layer: QgsRasterLayer) -> list[float] | None:
    """Centre wavelength of every band in nm, from the metadata HyperAdapt's engine reads."""
    if layer is None or not layer.isValid() or layer.providerType() != "gdal":
        return None
    from ..models.data.raster import read_raster_info
    from ..models.errors import HyperAdaptError

    try:
        return read_raster_info(layer.source()).wavelengths_nm
    except HyperAdaptError:
        return None


def bands_for(wavelengths, targets_nm) -> list[int] | None:
    """1-based bands nearest each target wavelength, or None when one is not near any band."""
    if not wavelengths:
        return None
    chosen = []
    for target in targets_nm:
        index = min(range(len(wavelengths)), key=lambda i: abs(wavelengths[i] - target))
        if abs(wavelengths[index] - target) > MAX_DISTANCE_NM:
            return None
        chosen.append(index + 1)
    return chosen


def shows_first_bands(layer: QgsRasterLayer) -> bool:
    """Whether the layer is drawn as QGIS draws a new multiband raster: bands 1, 2, 3."""
    renderer = layer.renderer()
    return (isinstance(renderer, QgsMultiBandColorRenderer)
            and (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (1, 2, 3))


def render_bands(layer: QgsRasterLayer, bands: list[int]) -> None:
    """Draw ``bands`` as red, green and blue, each stretched between its 2nd and 98th percentile."""
    provider = layer.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, *bands)
    setters = (renderer.setRedContrastEnhancement, renderer.setGreenContrastEnhancement,
               renderer.setBlueContrastEnhancement)
    for band, setter in zip(bands, setters):
        low, high = provider.cumulativeCut(band, STRETCH[0], STRETCH[1], QgsRectangle(),
                                           SAMPLE_PIXELS)
        enhancement = QgsContrastEnhancement(provider.dataType(band))
        enhancement.setContrastEnhancementAlgorithm(
            QgsContrastEnhancement.StretchToMinimumMaximum)
        enhancement.setMinimumValue(low)
        enhancement.setMaximumValue(high)
        setter(enhancement)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def show_in_true_colour(layer: QgsRasterLayer, iface=None) -> bool:
    """True colour for a raster with wavelengths still showing bands 1-2-3; True when applied.

    With ``iface``, a message bar item says so and offers colour infrared and undo.
    """
    if layer is None or not isinstance(layer, QgsRasterLayer) or not shows_first_bands(layer):
        return False
    wavelengths = band_wavelengths(layer)
    bands = bands_for(wavelengths, TRUE_COLOUR_NM)
    if bands is None:
        return False
    previous = layer.renderer().clone()
    render_bands(layer, bands)
    if iface is not None:
        _offer_choices(iface, layer, wavelengths, previous)
    return True


def _offer_choices(iface, layer: QgsRasterLayer, wavelengths, previous) -> None:
    bar = iface.messageBar()
    text = f"'{layer.name()}' is shown in true colour (bands nearest 640, 550 and 460 nm)."
    if not isinstance(bar, QgsMessageBar):       # a bar that takes plain messages only
        bar.pushMessage("HyperAdapt", text, Qgis.Info, 15)
        return
    item = bar.createMessage("HyperAdapt", text)
    # The buttons may outlive the layer (removed from the project meanwhile): they hold it weakly.
    held = weakref.ref(layer)

    def colour_infrared():
        if held() is not None:
            render_bands(held(), infrared)

    def restore():
        if held() is not None:
            held().setRenderer(previous.clone())
            held().triggerRepaint()

    infrared = bands_for(wavelengths, COLOUR_INFRARED_NM)
    if infrared is not None:
        button = QPushButton("Colour infrared", item)
        button.setObjectName("hyperadapt_colour_infrared")
        button.clicked.connect(colour_infrared)
        item.layout().addWidget(button)
    undo = QPushButton("Undo", item)
    undo.setObjectName("hyperadapt_undo_rendering")
    undo.clicked.connect(restore)
    item.layout().addWidget(undo)
    bar.pushWidget(item, Qgis.Info, 15)
