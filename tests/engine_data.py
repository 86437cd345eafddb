"""Test data for the engine: small synthetic rasters and layers, Indian Pines crops, EnMAP Potsdam.

Every builder writes real files (GeoTIFF, ENVI, GeoPackage, VRT) with GDAL/OGR, so the engine is
tested through the same readers a user's data goes through. Indian Pines (Baumgardner, Biehl and
Landgrebe, Purdue University Research Repository 2015, doi:10.4231/R7RX991C, CC BY 3.0) comes
from tensorly; the EnMAP Potsdam tiles (EnMAP-Box test data, data (c) DLR) from the shared folder.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

gdal.UseExceptions()
ogr.UseExceptions()

SHARED = Path(__file__).resolve().parents[2] / "shared"
POTSDAM = SHARED / "datasets" / "enmap_potsdam"
POTSDAM_POINTS = POTSDAM / "landcover_potsdam_point.gpkg"
UTM33N = 32633
UTM16N = 32616

INDIAN_PINES_CLASSES = (
    "Alfalfa", "Corn-notill", "Corn-mintill", "Corn", "Grass-pasture", "Grass-trees",
    "Grass-pasture-mowed", "Hay-windrowed", "Oats", "Soybean-notill", "Soybean-mintill",
    "Soybean-clean", "Wheat", "Woods", "Buildings-Grass-Trees-Drives", "Stone-Steel-Towers")


@dataclass
class TestRaster:
    """What a builder wrote: the file, its grid and the true class of every pixel."""

    path: Path
    labels: np.ndarray                 # (height, width) class ids, 0 = none
    geotransform: tuple
    epsg: int
    wavelengths_nm: list[float] | None
    nodata: float | None
    class_names: tuple[str, ...] = ()

    @property
    def height(self) -> int:
        return self.labels.shape[0]

    @property
    def width(self) -> int:
        return self.labels.shape[1]


def _srs(epsg: int) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def write_raster(path, data: np.ndarray, *, geotransform, epsg: int | None = UTM33N,
                 driver: str = "GTiff", nodata: float | None = None, scale: float | None = None,
                 offset: float | None = None, wavelengths_nm=None, fwhm_nm=None, bbl=None,
                 wavelength_units: str = "Nanometers", envi_header: bool = False,
                 data_type: int = gdal.GDT_Float32) -> Path:
    """Write (bands, height, width) data with GDAL, with optional spectral metadata.

    For GeoTIFF the wavelengths go into band metadata (as EnMAP products carry them); with
    ``envi_header`` (ENVI driver) into the header's wavelength/fwhm/bbl lists.
    """
    path = Path(path)
    bands, height, width = data.shape
    dataset = gdal.GetDriverByName(driver).Create(str(path), width, height, bands, data_type)
    dataset.SetGeoTransform(tuple(geotransform))
    if epsg is not None:
        dataset.SetProjection(_srs(epsg).ExportToWkt())
    for index in range(bands):
        band = dataset.GetRasterBand(index + 1)
        band.WriteArray(data[index])
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if scale is not None:
            band.SetScale(scale)
        if offset is not None:
            band.SetOffset(offset)
        if wavelengths_nm is not None and not envi_header:
            band.SetMetadataItem("wavelength", f"{wavelengths_nm[index]:.3f}")
            band.SetMetadataItem("wavelength_units", wavelength_units)
            if fwhm_nm is not None:
                band.SetMetadataItem("fwhm", f"{fwhm_nm[index]:.3f}")
        if bbl is not None and not envi_header:
            band.SetMetadataItem("bbl", str(int(bbl[index])))
    if envi_header:
        def listed(values, fmt="{:.4f}"):
            return "{" + ",".join(fmt.format(v) for v in values) + "}"
        if wavelengths_nm is not None:
            dataset.SetMetadataItem("wavelength", listed(np.asarray(wavelengths_nm) / 1000.0), "ENVI")
            dataset.SetMetadataItem("wavelength_units", "Micrometers", "ENVI")
            if fwhm_nm is not None:
                dataset.SetMetadataItem("fwhm", listed(np.asarray(fwhm_nm) / 1000.0), "ENVI")
        if bbl is not None:
            dataset.SetMetadataItem("bbl", listed(bbl, "{:d}"), "ENVI")
    dataset.FlushCache()
    dataset = None
    return path


def class_spectra(num_classes: int, wavelengths_nm: np.ndarray) -> np.ndarray:
    """(num_classes, bands) smooth, clearly different reflectance curves."""
    span = wavelengths_nm.max() - wavelengths_nm.min()
    curves = []
    for k in range(num_classes):
        centre = wavelengths_nm.min() + span * (k + 0.5) / num_classes
        bump = np.exp(-0.5 * ((wavelengths_nm - centre) / (0.12 * span)) ** 2)
        curves.append(0.15 + 0.05 * k + 0.4 * bump)
    return np.array(curves)


def stripe_labels(height: int, width: int, num_classes: int) -> np.ndarray:
    """Classes in vertical stripes, 1..num_classes from left to right."""
    return (np.arange(width)[None, :] * num_classes // width + 1).repeat(height, axis=0)


def make_test_raster(path, *, width: int = 36, height: int = 30, num_bands: int = 20,
                     num_classes: int = 3, driver: str = "GTiff", nodata: float | None = -9999.0,
                     nodata_box: tuple[int, int, int, int] | None = (0, 0, 4, 4),
                     scale: float | None = None, bbl=None, with_wavelengths: bool = True,
                     epsg: int | None = UTM33N, origin=(500000.0, 5800000.0),
                     pixel_size: float = 30.0, all_nodata: bool = False, noise=0.01,
                     seed: int = 0) -> TestRaster:
    """A small raster whose classes (vertical stripes) have distinct spectra plus noise.

    Args:
        nodata_box: (row, col, height, width) set to nodata in every band.
        scale: stored values are reflectance / scale (an integer-like product with a GDAL scale).
        bbl: bad-band flags written with the wavelengths.
        all_nodata: every pixel is nodata.
        noise: the noise's standard deviation, one for every band or one per band.
    """
    rng = np.random.default_rng(seed)
    wavelengths = np.linspace(420.0, 2400.0, num_bands)
    labels = stripe_labels(height, width, num_classes)
    spectra = class_spectra(num_classes, wavelengths)
    cube = spectra[labels - 1].transpose(2, 0, 1) + np.reshape(noise, (-1, 1, 1)) * (
        rng.standard_normal((num_bands, height, width)))
    if scale is not None:
        cube = np.round(cube / scale)
    cube = cube.astype(np.float32)
    if nodata is not None and nodata_box is not None:
        r, c, h, w = nodata_box
        cube[:, r:r + h, c:c + w] = nodata
    if all_nodata:
        cube[:] = nodata
    geotransform = (origin[0], pixel_size, 0.0, origin[1], 0.0, -pixel_size)
    envi = driver == "ENVI"
    write_raster(path, cube, geotransform=geotransform, epsg=epsg, driver=driver, nodata=nodata,
                 scale=scale, wavelengths_nm=wavelengths if with_wavelengths else None,
                 fwhm_nm=np.full(num_bands, 12.0) if with_wavelengths else None, bbl=bbl,
                 envi_header=envi)
    return TestRaster(path=Path(path), labels=labels, geotransform=geotransform, epsg=epsg or 0,
                      wavelengths_nm=list(wavelengths) if with_wavelengths else None,
                      nodata=nodata, class_names=tuple(f"class {k}" for k in range(1, num_classes + 1)))


def pixel_box_polygon(geotransform, row0: float, col0: float, row1: float,
                      col1: float) -> ogr.Geometry:
    """A rectangle covering pixel rows row0..row1-1 and cols col0..col1-1 (edges on pixel edges)."""
    x0, dx, _, y0, _, dy = geotransform
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for r, c in ((row0, col0), (row0, col1), (row1, col1), (row1, col0), (row0, col0)):
        ring.AddPoint_2D(x0 + c * dx, y0 + r * dy)
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(ring)
    return polygon


def write_layer(path, features: list[tuple[ogr.Geometry, object]], *, field_name: str = "class",
                field_type: int = ogr.OFTString, epsg: int | None = UTM33N,
                source_epsg: int | None = None, driver: str = "GPKG",
                layer_name: str = "training") -> Path:
    """Write (geometry, class value) features; geometries in ``source_epsg`` are reprojected to ``epsg``."""
    path = Path(path)
    if path.exists():
        gdal.GetDriverByName(driver).Delete(str(path)) if driver != "GPKG" else path.unlink()
    source = ogr.GetDriverByName(driver).CreateDataSource(str(path))
    srs = _srs(epsg) if epsg is not None else None
    types = {geometry.GetGeometryType() for geometry, _ in features}
    geom_type = types.pop() if len(types) == 1 else ogr.wkbUnknown
    layer = source.CreateLayer(layer_name, srs=srs, geom_type=geom_type)
    layer.CreateField(ogr.FieldDefn(field_name, field_type))
    transform = None
    if source_epsg is not None and epsg is not None and source_epsg != epsg:
        transform = osr.CoordinateTransformation(_srs(source_epsg), _srs(epsg))
    for geometry, value in features:
        feature = ogr.Feature(layer.GetLayerDefn())
        if value is not None:
            feature.SetField(field_name, value)
        geometry = geometry.Clone()
        if transform is not None:
            geometry.Transform(transform)
        feature.SetGeometry(geometry)
        layer.CreateFeature(feature)
    source = None
    return path


def make_polygons(path, raster: TestRaster, *, field_type: str = "text", epsg: int | None = None,
                  rows_per_polygon: int = 5, gap: int = 3, field_name: str = "class",
                  classes: list[int] | None = None, driver: str = "GPKG",
                  integer_values: dict[int, int] | None = None) -> Path:
    """Rectangles inside each stripe class of ``raster``, several per class, stacked down the stripe.

    Args:
        field_type: "text" (names "class k") or "integer" (k).
        epsg: CRS of the written layer (reprojected from the raster's); the raster's by default.
        classes: only these class ids.
        integer_values: class id -> the integer written (field_type "integer"); the id by default.
    """
    features = []
    height, width = raster.labels.shape
    for k in classes or sorted(set(np.unique(raster.labels)) - {0}):
        cols = np.flatnonzero(raster.labels[0] == k)
        c0, c1 = cols.min() + 1, cols.max()
        for r0 in range(1, height - rows_per_polygon, rows_per_polygon + gap):
            polygon = pixel_box_polygon(raster.geotransform, r0, c0, r0 + rows_per_polygon, c1)
            value = f"class {k}" if field_type == "text" else int((integer_values or {}).get(k, k))
            features.append((polygon, value))
    ogr_type = ogr.OFTString if field_type == "text" else ogr.OFTInteger
    return write_layer(path, features, field_name=field_name, field_type=ogr_type,
                       epsg=epsg or raster.epsg, source_epsg=raster.epsg, driver=driver)


def aviris_fwhm_nm() -> list[float] | None:
    """FWHM of the 200 corrected Indian Pines bands from the shared AVIRIS band table."""
    table = SHARED / "sensors" / "aviris_1992_indian_pines_bands.csv"
    if not table.exists():
        return None
    with open(table, newline="") as stream:
        rows = [row for row in csv.DictReader(stream) if row["in_corrected_200"] == "1"]
    return [float(row["fwhm_nm"]) for row in rows]


def indian_pines_crop(path, *, row: int = 0, col: int = 0, size: int = 48,
                      driver: str = "GTiff", pixel_size: float = 20.0,
                      origin=(500000.0, 4480000.0)) -> TestRaster:
    """A georeferenced crop of Indian Pines (UTM 16N, 20 m) with its 200 wavelengths (and FWHM)."""
    import tensorly.datasets

    data = tensorly.datasets.load_indian_pines()
    labels_full, wavelengths = data["ticks"][0], data["ticks"][1]
    cube = np.asarray(data["tensor"][row:row + size, col:col + size, :], dtype=np.float32)
    labels = np.asarray(labels_full[row:row + size, col:col + size], dtype=np.int64)
    geotransform = (origin[0] + col * pixel_size, pixel_size, 0.0,
                    origin[1] - row * pixel_size, 0.0, -pixel_size)
    write_raster(path, cube.transpose(2, 0, 1), geotransform=geotransform, epsg=UTM16N,
                 driver=driver, wavelengths_nm=list(wavelengths), fwhm_nm=aviris_fwhm_nm(),
                 data_type=gdal.GDT_Int16, envi_header=driver == "ENVI")
    return TestRaster(path=Path(path), labels=labels, geotransform=geotransform, epsg=UTM16N,
                      wavelengths_nm=list(wavelengths), nodata=None,
                      class_names=INDIAN_PINES_CLASSES)


def labels_to_polygons(path, raster: TestRaster, *, block: int = 8, field_name: str = "class_id",
                       name_field: str | None = "class_name") -> Path:
    """Polygons of the raster's label map, cut by a grid of ``block`` pixels so each class has
    several features (like a user's separate polygons). Integer field plus optional name field."""
    height, width = raster.labels.shape
    blocks = (np.arange(height)[:, None] // block) * ((width + block - 1) // block) + (
        np.arange(width)[None, :] // block)
    composite = np.where(raster.labels > 0, raster.labels * 100000 + blocks + 1, 0).astype(np.int32)
    memory = gdal.GetDriverByName("MEM").Create("", width, height, 1, gdal.GDT_Int32)
    memory.SetGeoTransform(raster.geotransform)
    memory.SetProjection(_srs(raster.epsg).ExportToWkt())
    memory.GetRasterBand(1).WriteArray(composite)
    path = Path(path)
    if path.exists():
        path.unlink()
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("labels", srs=_srs(raster.epsg), geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("composite", ogr.OFTInteger))
    band = memory.GetRasterBand(1)
    gdal.Polygonize(band, band, layer, 0)
    layer.CreateField(ogr.FieldDefn(field_name, ogr.OFTInteger))
    if name_field:
        layer.CreateField(ogr.FieldDefn(name_field, ogr.OFTString))
    layer.ResetReading()
    updates = []
    for feature in layer:
        updates.append((feature.GetFID(), feature.GetField("composite") // 100000))
    for fid, class_id in updates:
        feature = layer.GetFeature(fid)
        feature.SetField(field_name, int(class_id))
        if name_field:
            names = raster.class_names
            feature.SetField(name_field, names[class_id - 1] if class_id <= len(names)
                             else str(class_id))
        layer.SetFeature(feature)
    source = None
    return path


def write_label_raster(path, raster: TestRaster) -> Path:
    """The raster's label map as a Byte GeoTIFF on its grid (0 = unlabelled), a reference raster."""
    return write_raster(path, raster.labels[None].astype(np.uint8),
                        geotransform=raster.geotransform, epsg=raster.epsg, nodata=0,
                        data_type=gdal.GDT_Byte)


def enmap_potsdam_vrt(path) -> Path:
    """The 18 EnMAP Potsdam tiles mosaicked as a VRT (gdal.BuildVRT), gaps left as nodata.

    BuildVRT keeps nodata, scale and offset but drops the per-band wavelength metadata, as it
    does for a user's mosaic.
    """
    tiles = sorted(str(p) for p in (POTSDAM / "images").glob("*.tif"))
    if not tiles:
        raise FileNotFoundError(f"no EnMAP Potsdam tiles under {POTSDAM / 'images'}")
    vrt = gdal.BuildVRT(str(path), tiles)
    vrt.FlushCache()
    vrt = None
    return Path(path)


def potsdam_class_colors(path=POTSDAM_POINTS) -> dict[str, tuple[int, int, int]]:
    """Class name -> RGB from the categorized QGIS style stored in the GeoPackage's layer_styles."""
    source = ogr.Open(str(path))
    result = source.ExecuteSQL("SELECT styleQML FROM layer_styles")
    qml = result.GetNextFeature().GetField(0)
    source.ReleaseResultSet(result)
    categories = re.findall(r'<category[^>]*\blabel="([^"]*)"[^>]*\bsymbol="(\d+)"', qml)
    colors = {}
    for label, symbol in categories:
        match = re.search(rf'<symbol[^>]*\bname="{symbol}"[^>]*>.*?name="color"[^>]*'
                          rf'value="(\d+),(\d+),(\d+)', qml, re.S)
        if label and match:
            colors[label] = tuple(int(v) for v in match.groups())
    return colors


TINY_BACKBONE = {"depth": 2, "embed_dim": 32, "num_heads": 4}


def spectralgpt_small(**overrides):
    """SpectralGPT's architecture at the size the unit tests assert on (2 blocks of width 64,
    4 heads, 32 px input): smaller than the tiny backbone, so shapes and counts stay readable."""
    from hyperadapt.models.network.spectralgpt import BASE_CONFIG, build_backbone

    return build_backbone({**BASE_CONFIG, "img_size": 32, "embed_dim": 64, "depth": 2,
                           "num_heads": 4, **overrides})


def read_band(path) -> np.ndarray:
    """The first band of a raster file (a class map, a confidence raster)."""
    dataset = gdal.Open(str(path))   # kept while its band is read (GDAL frees bands with it)
    return dataset.GetRasterBand(1).ReadAsArray()


def valid_mask(raster_path) -> np.ndarray:
    """Where the raster has data, as the engine reads it."""
    from hyperadapt.models.data.raster import RasterReader, read_raster_info

    info = read_raster_info(raster_path)
    with RasterReader(info) as reader:
        return reader.read(0, 0, info.width, info.height)[1]


def class_changes(values: np.ndarray) -> int:
    """Neighbouring pixel pairs (across and down) of a map whose classes differ: fewer is
    smoother."""
    return int((values[:, 1:] != values[:, :-1]).sum() + (values[1:] != values[:-1]).sum())


def tiny_settings(**overrides):
    """FineTuneSettings for tests: the tiny backbone from a seeded random start, 16 px input,
    5 px windows, a few epochs."""
    from hyperadapt.models.jobs import FineTuneSettings

    values = dict(backbone="tiny", random_start=True, epochs=4, input_size=16, window_size=5,
                  batch_size=32, backbone_overrides=dict(TINY_BACKBONE), seed=0)
    values.update(overrides)
    return FineTuneSettings(**values)
