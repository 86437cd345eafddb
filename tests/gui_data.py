"""Small synthetic inputs for the plugin GUI tests: a hyperspectral GeoTIFF and training polygons.

The raster is 24 x 24 pixels x 20 bands (30 m, UTM 33N) with three regions whose spectra differ
clearly (a river, vegetation, bare soil) and whose borders wind, so a tiny model learns them in a
few epochs and the map looks like one. The polygons lie inside the regions and carry a text
class field with a categorized style. Also here: rendering layers to an image with a legend, for
the screenshots the tests save.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

EPSG = 32633
ORIGIN_X, ORIGIN_Y = 368000.0, 5808000.0
PIXEL_SIZE = 30.0
WIDTH = HEIGHT = 24
NUM_BANDS = 20
WAVELENGTHS_NM = np.linspace(450.0, 2400.0, NUM_BANDS)
SENSOR = "GUITESTSENSOR"

# class name -> (colour, (first, last) pixel column of its training boxes)
CLASSES = {
    "water": ((31, 120, 180), (1, 4)),
    "vegetation": ((51, 160, 44), (10, 13)),
    "soil": ((177, 89, 40), (19, 22)),
}
BOX_ROWS = ((1, 6), (9, 14), (17, 22))   # each class gets one 3 x 5 pixel box per row band
PIXELS_PER_BOX = 15


def class_of(row: int, col: int) -> str:
    """The class of a pixel: a river on the left, vegetation in the middle, soil on the right."""
    river_edge = 7.0 + 2.0 * np.sin(row / 4.0)
    field_edge = 16.0 + 2.0 * np.cos(row / 5.0)
    if col < river_edge:
        return "water"
    return "vegetation" if col < field_edge else "soil"


def class_spectrum(name: str) -> np.ndarray:
    """Reflectance (0-1) per band: dark water, a red edge for vegetation, rising soil."""
    w = WAVELENGTHS_NM
    if name == "water":
        return 0.08 * np.exp(-(w - 450.0) / 300.0) + 0.01
    if name == "vegetation":
        return np.where(w < 700.0, 0.05, 0.45) - 0.0001 * np.clip(w - 1300.0, 0, None)
    return 0.15 + 0.00015 * (w - 450.0)


def write_test_raster(path: Path, *, seed: int = 0) -> Path:
    """The 24 x 24 x 20 GeoTIFF (int16 reflectance x 10000, scale 1e-4, wavelengths in nm)."""
    rng = np.random.default_rng(seed)
    cube = np.zeros((NUM_BANDS, HEIGHT, WIDTH), dtype=np.float64)
    for row in range(HEIGHT):
        for col in range(WIDTH):
            cube[:, row, col] = class_spectrum(class_of(row, col))
    cube += rng.normal(0.0, 0.01, cube.shape)
    data = np.clip(cube * 10000.0, 0, 10000).astype(np.int16)

    dataset = gdal.GetDriverByName("GTiff").Create(str(path), WIDTH, HEIGHT, NUM_BANDS,
                                                   gdal.GDT_Int16)
    dataset.SetGeoTransform((ORIGIN_X, PIXEL_SIZE, 0.0, ORIGIN_Y, 0.0, -PIXEL_SIZE))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    dataset.SetProjection(srs.ExportToWkt())
    dataset.SetMetadataItem("SENSOR", SENSOR)
    for index in range(NUM_BANDS):
        band = dataset.GetRasterBand(index + 1)
        band.WriteArray(data[index])
        band.SetScale(1e-4)
        band.SetOffset(0.0)
        band.SetDescription(f"band {index + 1} ({WAVELENGTHS_NM[index]:.1f} nm)")
        band.SetMetadataItem("wavelength", f"{WAVELENGTHS_NM[index]:.2f}")
        band.SetMetadataItem("wavelength_units", "Nanometers")
    dataset.FlushCache()
    dataset = None
    return path


def pixel_box(col0: float, row0: float, col1: float, row1: float) -> ogr.Geometry:
    """A polygon covering pixel columns col0..col1 and rows row0..row1 (edges, map units)."""
    x0, x1 = ORIGIN_X + col0 * PIXEL_SIZE, ORIGIN_X + col1 * PIXEL_SIZE
    y0, y1 = ORIGIN_Y - row0 * PIXEL_SIZE, ORIGIN_Y - row1 * PIXEL_SIZE
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)):
        ring.AddPoint_2D(x, y)
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(ring)
    return polygon


def write_training_polygons(path: Path, *, field: str = "landcover", layer_name: str = "training",
                            shift_x: float = 0.0) -> Path:
    """Three 3 x 5 pixel boxes per class inside its region (``shift_x`` moves them, e.g. off the
    raster)."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    dataset = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = dataset.CreateLayer(layer_name, srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn(field, ogr.OFTString))
    layer.CreateField(ogr.FieldDefn("note", ogr.OFTString))
    for name, (_, (col0, col1)) in CLASSES.items():
        for row0, row1 in BOX_ROWS:
            geometry = pixel_box(col0, row0, col1, row1)
            if shift_x:
                geometry = _shifted(geometry, shift_x)
            feature = ogr.Feature(layer.GetLayerDefn())
            feature.SetField(field, name)
            feature.SetField("note", "drawn for the tests")
            feature.SetGeometry(geometry)
            layer.CreateFeature(feature)
    dataset = None
    return path


def _shifted(geometry: ogr.Geometry, shift_x: float) -> ogr.Geometry:
    ring = geometry.GetGeometryRef(0)
    moved = ogr.Geometry(ogr.wkbLinearRing)
    for index in range(ring.GetPointCount()):
        x, y = ring.GetPoint_2D(index)
        moved.AddPoint_2D(x + shift_x, y)
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(moved)
    return polygon


def style_by_class(layer, field: str = "landcover") -> None:
    """Gives a QgsVectorLayer the categorized style of CLASSES (labels are the class names)."""
    from qgis.core import QgsCategorizedSymbolRenderer, QgsRendererCategory, QgsSymbol
    from qgis.PyQt.QtGui import QColor

    categories = []
    for name, (rgb, _) in CLASSES.items():
        symbol = QgsSymbol.defaultSymbol(layer.geometryType())
        symbol.setColor(QColor(*rgb))
        categories.append(QgsRendererCategory(name, symbol, name))
    layer.setRenderer(QgsCategorizedSymbolRenderer(field, categories))


def screenshot_paths(tmp_path: Path, name: str) -> list[Path]:
    """Where a screenshot goes: the test's tmp dir, and HYPERADAPT_SCREENSHOTS when it is set."""
    import os

    paths = [tmp_path / name]
    folder = os.environ.get("HYPERADAPT_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        paths.append(Path(folder) / name)
    return paths


def render_layers(layers, extent, crs, size: int = 420):
    """The layers (first on top) rendered as QGIS draws them, on white."""
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(crs)
    settings.setExtent(extent)
    settings.setOutputSize(QSize(size, size))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    return job.renderedImage()


def side_by_side(*images, gap: int = 10):
    """One white image holding ``images`` left to right."""
    from qgis.PyQt.QtGui import QImage, QPainter

    image = QImage(sum(i.width() for i in images) + gap * (len(images) - 1),
                   max(i.height() for i in images), QImage.Format_ARGB32)
    image.fill(0xFFFFFFFF)
    painter = QPainter(image)
    left = 0
    for part in images:
        painter.drawImage(left, 0, part)
        left += part.width() + gap
    painter.end()
    return image


def render_map_with_legend(layers, extent, crs, title: str, *, map_size: int = 420):
    """The layers rendered (first on top) beside a legend of the top layer's paletted classes."""
    from qgis.PyQt.QtCore import QRect, Qt
    from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter, QPen

    rendered = render_layers(layers, extent, crs, map_size)

    classes = layers[0].renderer().classes()
    legend_width, margin, row = 210, 14, 26
    image = QImage(map_size + legend_width + 2 * margin, map_size + 2 * margin,
                   QImage.Format_ARGB32)
    image.fill(QColor(255, 255, 255))
    painter = QPainter(image)
    painter.drawImage(margin, margin, rendered)
    painter.setPen(QPen(QColor(90, 90, 90)))
    painter.drawRect(margin, margin, rendered.width() - 1, rendered.height() - 1)
    left = map_size + 2 * margin
    font = QFont()
    font.setPixelSize(15)
    font.setBold(True)
    painter.setFont(font)
    painter.setPen(QColor(30, 30, 30))
    painter.drawText(QRect(left, margin, legend_width - margin, row), Qt.AlignVCenter, title)
    font.setBold(False)
    font.setPixelSize(14)
    painter.setFont(font)
    for index, entry in enumerate(classes):
        top = margin + row * (index + 1) + 8
        painter.fillRect(left, top + 4, 22, 16, entry.color)
        painter.setPen(QColor(60, 60, 60))
        painter.drawRect(left, top + 4, 22, 16)
        painter.drawText(QRect(left + 32, top, legend_width - 40, row), Qt.AlignVCenter,
                         entry.label)
    painter.end()
    return image
