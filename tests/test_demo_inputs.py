"""The Indian Pines demo inputs look like what a QGIS user brings: georeferenced, drawn, styled."""
from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from hyperadapt.bench.indian_pines import CLASS_NAMES, load_indian_pines, make_indian_pines_inputs

gdal.UseExceptions()
ogr.UseExceptions()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_indian_pines_inputs(tmp_path_factory.mktemp("indian_pines"))


def _rasterize(vector_path: str, like_raster: str, **options) -> np.ndarray:
    like = gdal.Open(like_raster)
    target = gdal.GetDriverByName("MEM").Create("", like.RasterXSize, like.RasterYSize, 1, gdal.GDT_Int32)
    target.SetGeoTransform(like.GetGeoTransform())
    target.SetProjection(like.GetProjection())
    source = ogr.Open(vector_path)
    gdal.RasterizeLayer(target, [1], source.GetLayer(0), **options)
    return target.ReadAsArray()


def _rasterize_by_class(vector_path: str, like_raster: str) -> tuple[np.ndarray, np.ndarray]:
    """(class value per pixel from `class_id`, number of features covering each pixel)."""
    classes = _rasterize(vector_path, like_raster, options=["ATTRIBUTE=class_id"])
    coverage = _rasterize(vector_path, like_raster, burn_values=[1], options=["MERGE_ALG=ADD"])
    return classes, coverage


def test_raster_is_georeferenced_with_200_bands_and_wavelengths(inputs):
    dataset = gdal.Open(inputs["raster"])
    assert (dataset.RasterXSize, dataset.RasterYSize, dataset.RasterCount) == (145, 145, 200)
    srs = osr.SpatialReference(wkt=dataset.GetProjection())
    assert srs.GetAuthorityCode(None) == "32616"
    geotransform = dataset.GetGeoTransform()
    assert geotransform[1] == 20.0 and geotransform[5] == -20.0
    _, _, wavelengths = load_indian_pines()
    read = [float(dataset.GetRasterBand(i + 1).GetMetadataItem("wavelength")) for i in range(200)]
    units = {dataset.GetRasterBand(i + 1).GetMetadataItem("wavelength_units") for i in range(200)}
    assert read == pytest.approx(wavelengths, abs=0.005) and units == {"nm"}
    assert 395 < read[0] < 405 and read[-1] > 2490

    from hyperadapt.models.data.raster import read_raster_info

    info = read_raster_info(inputs["raster"])
    assert info.wavelengths_nm == pytest.approx(wavelengths, abs=0.005)
    assert info.sensor == "AVIRIS"


def test_training_polygons_cover_10_to_30_homogeneous_pixels_per_class(inputs):
    labels = gdal.Open(inputs["ground_truth"]).ReadAsArray()
    classes, coverage = _rasterize_by_class(inputs["training"], inputs["raster"])
    assert coverage.max() == 1, "training polygons overlap"
    counts = np.bincount(classes.ravel(), minlength=17)[1:]
    assert counts.min() >= 10 and counts.max() <= 30, counts
    # Every pixel under a polygon has that polygon's class in the ground truth.
    drawn = classes > 0
    assert np.array_equal(labels[drawn], classes[drawn])

    source = ogr.Open(inputs["training"])  # kept: the layer dies with its data source
    layer = source.GetLayerByName("training")
    names_by_id = {}
    for feature in layer:
        names_by_id.setdefault(feature.GetField("class_id"), set()).add(feature.GetField("class_name"))
    assert {k: v.pop() for k, v in names_by_id.items()} == dict(enumerate(CLASS_NAMES, start=1))
    assert layer.GetFeatureCount() >= 2 * 16  # a few small polygons per class, not one block


def test_training_layer_opens_in_qgis_with_the_categorized_default_style(inputs, qgis_new_project):
    from qgis.core import QgsCategorizedSymbolRenderer, QgsVectorLayer

    from hyperadapt.plugin.styling import class_style_from_layer

    layer = QgsVectorLayer(inputs["training"] + "|layername=training", "training", "ogr")
    assert layer.isValid()
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert renderer.classAttribute() == "class_name"
    assert [c.value() for c in renderer.categories()] == CLASS_NAMES
    assert class_style_from_layer(layer, "class_name") == (inputs["class_colors"], {})
    assert len(set(inputs["class_colors"].values())) == 16


def test_reference_is_the_rest_of_the_ground_truth_disjoint_from_training(inputs):
    labels = gdal.Open(inputs["ground_truth"]).ReadAsArray()
    training, _ = _rasterize_by_class(inputs["training"], inputs["raster"])
    reference, coverage = _rasterize_by_class(inputs["reference"], inputs["raster"])
    assert coverage.max() == 1
    assert not np.any((reference > 0) & (training > 0))
    expected = np.where(training > 0, 0, labels)
    assert np.array_equal(reference, expected)
    dataset = gdal.Open(inputs["reference_raster"])
    assert np.array_equal(dataset.ReadAsArray(), expected)
    band = dataset.GetRasterBand(1)
    band.GetMetadata()  # GDAL 3.6's GeoTIFF driver reads the .aux.xml (category names) only then
    assert band.GetRasterCategoryNames()[1:] == CLASS_NAMES
    assert band.GetNoDataValue() == 0


def test_same_seed_same_polygons_other_seed_other_polygons(inputs, tmp_path):
    def drawn(path):
        return _rasterize_by_class(path, inputs["raster"])[0]

    again = make_indian_pines_inputs(tmp_path / "again")
    other = make_indian_pines_inputs(tmp_path / "other", seed=1)
    assert np.array_equal(drawn(again["training"]), drawn(inputs["training"]))
    assert not np.array_equal(drawn(other["training"]), drawn(inputs["training"]))


def test_scattered_sampling_draws_single_pixels_over_the_whole_class(inputs, tmp_path):
    labels = gdal.Open(inputs["ground_truth"]).ReadAsArray()
    scattered = make_indian_pines_inputs(tmp_path / "scattered", pixels_per_class=(10, 10),
                                         sampling="scattered")
    classes, coverage = _rasterize_by_class(scattered["training"], inputs["raster"])
    assert coverage.max() == 1
    drawn = classes > 0
    assert np.array_equal(labels[drawn], classes[drawn])
    assert np.array_equal(np.bincount(classes.ravel(), minlength=17)[1:], [10] * 16)
    source = ogr.Open(scattered["training"])
    assert source.GetLayerByName("training").GetFeatureCount() == 160  # one polygon per pixel
    reference = gdal.Open(scattered["reference_raster"]).ReadAsArray()
    assert np.array_equal(reference, np.where(drawn, 0, labels))
    # Spread over the scene, not in one field: the largest class's pixels lie far apart.
    rows, cols = np.nonzero(classes == CLASS_NAMES.index("Soybean-mintill") + 1)
    assert rows.max() - rows.min() > 40 and cols.max() - cols.min() > 40
    with pytest.raises(ValueError, match="sampling"):
        make_indian_pines_inputs(tmp_path / "bad", sampling="grid")
    assert not (tmp_path / "bad").exists()
