"""What the dialogs, the training panel and Processing work out about layers and files, once.

Where a layer can be read from (its OGR file, or a GeoPackage copy of what QGIS shows), which of
its fields holds the class, whether it lies on a raster, and safe, unused file names.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from qgis.core import (QgsCoordinateTransform, QgsCsException, QgsProviderRegistry,
                       QgsRasterLayer, QgsVectorFileWriter, QgsVectorLayer)
from qgis.PyQt.QtCore import QVariant

from ..models.errors import HyperAdaptError
from .styling import styled_class_field

# Field names that usually hold the class, in the order they are tried.
CLASS_FIELD_NAMES = ("class", "classname", "class_name", "label", "landcover", "lc")


def safe_file_stem(text: str) -> str:
    """``text`` as a file name stem: letters, digits, '.', '_' and '-' only."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._")
    return cleaned or "hyperadapt"


def unique_stem(folder: Path, stem: str, suffixes: tuple[str, ...]) -> str:
    """``stem``, or ``stem_2``, ``stem_3``... so that no ``stem + suffix`` exists in ``folder``."""
    candidate, number = stem, 2
    while any((folder / f"{candidate}{suffix}").exists() for suffix in suffixes):
        candidate, number = f"{stem}_{number}", number + 1
    return candidate


def vector_source(layer: QgsVectorLayer) -> tuple[str, str | None] | None:
    """(OGR path, layer name) when OGR reads exactly what QGIS shows, else None: a layer with
    unsaved edits or a filter, of another provider, or named by its index only is copied first
    (export_layer); the engine finds layers by name."""
    if layer.providerType() != "ogr" or layer.isModified() or layer.subsetString():
        return None
    parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
    path = parts.get("path")
    if not path or not os.path.exists(path):
        return None
    if parts.get("layerId") is not None and not parts.get("layerName"):
        return None
    return path, parts.get("layerName") or None


def export_layer(layer: QgsVectorLayer, path: Path, transform_context, *,
                 layer_name: str = "features", field_name: str | None = None) -> tuple[str, str]:
    """Writes what QGIS shows of the layer (unsaved edits, filter, any provider) to a GeoPackage
    at ``path``, with only ``field_name`` when given; returns (path, layer name)."""
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = layer_name
    if field_name is not None:
        options.attributes = [layer.fields().indexOf(field_name)]
    error, message = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, str(path), transform_context, options)[:2]
    if error != QgsVectorFileWriter.NoError:
        raise HyperAdaptError(f"The layer '{layer.name()}' could not be copied for reading: "
                              f"{message}")
    return str(path), layer_name


def guess_class_field(layer: QgsVectorLayer) -> str | None:
    """The field a categorized style colours by, else a field named like a class, else the first
    text field; None when there is none."""
    styled = styled_class_field(layer)
    if styled:
        return styled
    for name in CLASS_FIELD_NAMES:
        for field in layer.fields():
            if field.name().lower() == name:
                return field.name()
    for field in layer.fields():
        if field.type() == QVariant.String:
            return field.name()
    return None


def placement_problem(training: QgsVectorLayer, raster: QgsRasterLayer,
                      transform_context, role: str = "training layer") -> str | None:
    """The sentence that says why the layer cannot be placed on the raster (no CRS, or no
    overlap), or None."""
    crs = training.crs()
    # GeoPackages store "no CRS" as an undefined geographic or Cartesian SRS, which QGIS takes.
    if not crs.isValid() or crs.description().startswith("Undefined"):
        return (f"The {role} '{training.name()}' has no coordinate reference system; set one "
                f"and save the layer.")
    extent = training.extent()
    try:
        transform = QgsCoordinateTransform(training.crs(), raster.crs(), transform_context)
        extent = None if extent.isNull() else transform.transformBoundingBox(extent)
    except QgsCsException:  # the two CRSs share no area
        extent = None
    if extent is not None and (extent.width() == 0 or extent.height() == 0):
        # a single point, or points on a line
        extent.grow(max(raster.rasterUnitsPerPixelX(), raster.rasterUnitsPerPixelY()) * 0.01)
    if extent is None or not raster.extent().intersects(extent):
        return f"The {role} '{training.name()}' does not overlap the raster '{raster.name()}'."
    return None
