"""The class map's files: a Byte GeoTIFF of class values (0 = no data) with a colour table, category
names and the classes embedded in its own metadata, a ``.qml`` default style beside it (QGIS
paletted renderer with the class names and colours), and optionally a Float32 confidence raster.

Classifying (models.learning.predict) and cleaning a map (models.jobs.postprocessing) write them
under temporary names (``temporary_name``) and rename them only once complete (``place_outputs``),
so a cancelled or failed run leaves none of them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from xml.sax.saxutils import quoteattr

from osgeo import gdal

from ..data.raster import RasterReader
from ..data.samples import ClassInfo

gdal.UseExceptions()

NODATA_CLASS = 0
NODATA_CONFIDENCE = 0.0
GTIFF_OPTIONS = ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]


def class_color_table(classes: list[ClassInfo]) -> gdal.ColorTable:
    table = gdal.ColorTable()
    table.SetColorEntry(NODATA_CLASS, (0, 0, 0, 0))
    for info in classes:
        r, g, b = info.color
        table.SetColorEntry(int(info.value), (int(r), int(g), int(b), 255))
    return table


def category_names(classes: list[ClassInfo]) -> list[str]:
    """Names indexed by pixel value (GDAL category names), '' for unused values."""
    names = [""] * (max(info.value for info in classes) + 1)
    for info in classes:
        names[info.value] = info.name
    return names


# GeoTIFF keeps category names only in the .aux.xml beside it, which a copy often leaves behind;
# the classes also travel in the file's own GDAL metadata tag, read where the names are missing.
CLASSES_METADATA = "HYPERADAPT_CLASSES"


def embed_classes(dataset, classes: list[ClassInfo]) -> None:
    """Write the classes (value, name, colour) into the GeoTIFF itself."""
    dataset.SetMetadataItem(CLASSES_METADATA, json.dumps([c.to_dict() for c in classes]))


def embedded_classes(dataset) -> list[ClassInfo]:
    """The classes embed_classes wrote, or [] (other rasters, unreadable metadata)."""
    text = dataset.GetMetadataItem(CLASSES_METADATA)
    try:
        return [ClassInfo.from_dict(item) for item in json.loads(text)] if text else []
    except (ValueError, KeyError, TypeError):
        return []


def paletted_style_qml(classes: list[ClassInfo]) -> str:
    """A QGIS layer style (.qml) drawing the class raster with the class names and colours."""
    entries = "\n".join(
        f"        <paletteEntry value=\"{info.value}\" "
        f"color=\"#{info.color[0]:02x}{info.color[1]:02x}{info.color[2]:02x}\" alpha=\"255\" "
        f"label={quoteattr(info.name)}/>" for info in classes)
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="AllStyleCategories">
  <pipe>
    <provider>
      <resampling enabled="false" maxOversampling="2" zoomedInResamplingMethod="nearestNeighbour" zoomedOutResamplingMethod="nearestNeighbour"/>
    </provider>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100" saturation="0" grayscaleMode="0" invertColors="0"/>
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


def style_path_for(raster_path) -> Path:
    """The .qml beside a raster that QGIS loads as its default style."""
    return Path(raster_path).with_suffix(".qml")


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix or '.tif'}")


def companions(path: Path) -> list[Path]:
    return [Path(f"{path}.aux.xml")]


def remove_quietly(*paths: Path) -> None:
    for path in paths:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError:
            pass


def create_map_outputs(reader: RasterReader, classes: list[ClassInfo], class_path: Path,
                    confidence_path: Path | None) -> tuple[gdal.Dataset, gdal.Dataset | None]:
    """The class GeoTIFF (paletted, its classes named and embedded) and the optional Float32
    confidence GeoTIFF, both empty, on the reader's grid."""
    out_ds = _create_geotiff(class_path, reader, gdal.GDT_Byte)
    band = out_ds.GetRasterBand(1)
    band.SetNoDataValue(NODATA_CLASS)
    band.SetColorTable(class_color_table(classes))
    band.SetCategoryNames(category_names(classes))
    embed_classes(out_ds, classes)
    band.SetColorInterpretation(gdal.GCI_PaletteIndex)
    conf_ds = None
    if confidence_path is not None:
        conf_ds = _create_geotiff(confidence_path, reader, gdal.GDT_Float32)
        conf_band = conf_ds.GetRasterBand(1)
        conf_band.SetNoDataValue(NODATA_CONFIDENCE)
        conf_band.SetDescription("top class probability")
    return out_ds, conf_ds


def place_outputs(moves: list[tuple[Path | None, Path | None]], placed: list[Path]) -> None:
    """Rename each (temporary, final) pair, a raster's companion files before the raster itself:
    a raster under its final name is complete. ``placed`` hears each final name as it lands."""
    ordered = []
    for temp, final in moves:
        if temp is None:
            continue
        ordered += [(c, f) for c, f in zip(companions(temp), companions(final)) if c.exists()]
        ordered.append((temp, final))
    for temp, final in ordered:
        os.replace(temp, final)
        placed.append(final)


def _create_geotiff(path: Path, reader: RasterReader, data_type: int) -> gdal.Dataset:
    info = reader.info
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), info.width, info.height, 1,
                                                   data_type, options=GTIFF_OPTIONS)
    dataset.SetGeoTransform(info.geotransform)
    if info.crs_wkt:
        dataset.SetProjection(info.crs_wkt)
    return dataset
