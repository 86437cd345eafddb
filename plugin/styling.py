"""Class colours from a QGIS style, and classification layers shown with the style the engine wrote."""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsCategorizedSymbolRenderer, QgsPalettedRasterRenderer, QgsProject,
                       QgsRasterLayer, QgsVectorLayer)

from ..models.errors import HyperAdaptError


def _category_key(value) -> str | None:
    """The class name the engine uses for a category value: text as is, whole numbers without '.0'."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    # QVariant NULL arrives as the string 'NULL'; it is the "all other values" category.
    return text if text and text != "NULL" else None


def _categorized_renderer(layer, field: str):
    renderer = layer.renderer()
    if isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == field:
        return renderer
    return None


def styled_class_field(layer) -> str | None:
    """The field the layer's categorized style colours by, when the layer has that field."""
    renderer = layer.renderer()
    if isinstance(renderer, QgsCategorizedSymbolRenderer) and \
            layer.fields().indexOf(renderer.classAttribute()) >= 0:
        return renderer.classAttribute()
    return None


def _default_style_renderer(layer, field: str):
    """The categorized renderer of the layer's default style (e.g. a GeoPackage's layer_styles).

    Processing opens layers given as paths (qgis_process, batch rows) without their default style;
    a second, private copy of the layer opened the normal way has it.
    """
    if not layer.source():
        return None
    copy = QgsVectorLayer(layer.source(), "style", layer.providerType())
    if not copy.isValid():
        return None
    renderer = _categorized_renderer(copy, field)
    return renderer.clone() if renderer is not None else None


def class_style_from_layer(layer, field: str) -> tuple[dict[str, tuple[int, int, int]],
                                                       dict[str, str]]:
    """(class value -> RGB, class value -> label) from a categorized renderer on `field`.

    Values are given as text (whole numbers without '.0'); both are empty without such a renderer.
    Only labels that differ from their value are listed: the label a person typed for a class code
    ("Corn" for 3) is its name. The layer's own renderer wins; otherwise the default style stored
    with its data (a GeoPackage's ``layer_styles`` table, a ``.qml`` beside a file) is used, so the
    colours and names chosen once by the person who drew the polygons follow the classes into
    every run.
    """
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid() or not field:
        return {}, {}
    renderer = _categorized_renderer(layer, field) or _default_style_renderer(layer, field)
    if renderer is None:
        return {}, {}
    colors, labels = {}, {}
    for category in renderer.categories():
        key = _category_key(category.value())
        symbol = category.symbol()
        if key is None:
            continue
        if symbol is not None:
            color = symbol.color()
            colors[key] = (color.red(), color.green(), color.blue())
        label = (category.label() or "").strip()
        if label and label != key:
            labels[key] = label
    return colors, labels


def style_path_for(path: str) -> Path:
    """The ``.qml`` beside a data file that QGIS reads as its layers' default style."""
    return Path(path).with_suffix(".qml")


def apply_classification_style(layer: QgsRasterLayer) -> bool:
    """Gives `layer` the paletted style stored beside its file, or one from its colour table.

    Returns True when the layer ends with a paletted renderer.
    """
    qml = style_path_for(layer.source())
    # Loaded even over a paletted renderer: QGIS builds one from the colour table alone, with
    # all 256 entries and without the class names the .qml carries.
    if qml.exists():
        layer.loadNamedStyle(str(qml))
    styled = qml.exists() and isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    if not styled and layer.dataProvider() is not None:
        classes = QgsPalettedRasterRenderer.colorTableToClassData(layer.dataProvider().colorTable(1))
        # The classes are the entries GDAL gives a category name; the rest are padding.
        named = [c for c in classes if c.label and c.label != str(int(c.value))]
        if named or classes:
            layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, named or classes))
    layer.triggerRepaint()
    return isinstance(layer.renderer(), QgsPalettedRasterRenderer)


def add_classification_layer(path: str, name: str | None = None, project=None) -> QgsRasterLayer:
    """Adds a class raster written by the engine to `project` (default: the current one), styled.

    Raises:
        HyperAdaptError: the file is not a readable raster, or it has no class colours.
    """
    layer = QgsRasterLayer(str(path), name or Path(path).stem, "gdal")
    if not layer.isValid():
        raise HyperAdaptError(f"QGIS cannot open the classification {Path(path).name}.")
    if not apply_classification_style(layer):
        raise HyperAdaptError(f"The raster {Path(path).name} has no class colours, so it is not a "
                              f"HyperAdapt classification.")
    (project or QgsProject.instance()).addMapLayer(layer)
    return layer
