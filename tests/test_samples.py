"""Training samples: rasterising polygons and points on the raster grid, and the split by feature."""
from __future__ import annotations

import numpy as np
import pytest
from osgeo import ogr

from engine_data import (POTSDAM_POINTS, make_polygons, make_test_raster, pixel_box_polygon,
                         potsdam_class_colors, write_layer)
from hyperadapt.models.data.raster import read_raster_info
from hyperadapt.models.data.samples import (DEFAULT_CLASS_COLORS, ClassInfo, check_class_pixels,
                                            read_labelled_pixels, split_by_feature)
from hyperadapt.models.errors import HyperAdaptError


@pytest.fixture()
def raster(tmp_path):
    return make_test_raster(tmp_path / "r.tif")


def test_text_polygons_burn_pixel_centres_with_class_and_feature(tmp_path, raster):
    layer = make_polygons(tmp_path / "p.gpkg", raster)
    info = read_raster_info(raster.path)
    pixels = read_labelled_pixels(info, layer, "class")
    assert [c.name for c in pixels.classes] == ["class 1", "class 2", "class 3"]
    assert [c.value for c in pixels.classes] == [1, 2, 3]
    # Each polygon covers 5 rows x 10 columns of pixel centres (pixel-edge rectangles).
    assert len(pixels.feature_class) == 9
    assert np.bincount(pixels.feature_index).tolist() == [50] * 9
    truth = raster.labels[pixels.rows, pixels.cols]
    np.testing.assert_array_equal(truth, pixels.class_index + 1)
    np.testing.assert_array_equal(pixels.feature_class[pixels.feature_index], pixels.class_index)


def test_integer_field_keeps_values_in_byte_range_and_renumbers_others(tmp_path, raster):
    info = read_raster_info(raster.path)
    layer = make_polygons(tmp_path / "int.gpkg", raster, field_type="integer")
    pixels = read_labelled_pixels(info, layer, "class")
    assert [(c.value, c.name) for c in pixels.classes] == [(1, "1"), (2, "2"), (3, "3")]

    g = raster.geotransform
    features = [(pixel_box_polygon(g, 1, 1, 4, 4), 300), (pixel_box_polygon(g, 1, 20, 4, 24), 7),
                (pixel_box_polygon(g, 10, 1, 14, 4), 300)]
    layer = write_layer(tmp_path / "big.gpkg", features, field_type=ogr.OFTInteger64)
    pixels = read_labelled_pixels(info, layer, "class")
    assert [(c.value, c.name) for c in pixels.classes] == [(1, "7"), (2, "300")]


def test_text_classes_follow_layer_order_and_take_given_colours(tmp_path, raster):
    g = raster.geotransform
    features = [(pixel_box_polygon(g, 1, 1, 4, 4), "water"), (pixel_box_polygon(g, 1, 20, 4, 24), "forest"),
                (pixel_box_polygon(g, 10, 1, 14, 4), "water"), (pixel_box_polygon(g, 9, 9, 11, 11), None)]
    layer = write_layer(tmp_path / "w.gpkg", features)
    pixels = read_labelled_pixels(read_raster_info(raster.path), layer, "class",
                                  class_colors={"forest": (1, 2, 3)})
    assert pixels.classes == [ClassInfo(1, "water", DEFAULT_CLASS_COLORS[0]),
                              ClassInfo(2, "forest", (1, 2, 3))]
    assert any("without a value" in note for note in pixels.notes)


def test_integer_codes_take_given_names_and_a_repeated_name_keeps_its_codes(tmp_path, raster):
    g = raster.geotransform
    features = [(pixel_box_polygon(g, 1, 1, 4, 4), 3), (pixel_box_polygon(g, 1, 20, 4, 24), 7),
                (pixel_box_polygon(g, 10, 1, 14, 4), 9), (pixel_box_polygon(g, 20, 20, 23, 23), 12)]
    layer = write_layer(tmp_path / "codes.gpkg", features, field_type=ogr.OFTInteger)
    names = {"3": "corn", "7": "soybean", "9": "soybean", "12": " "}
    pixels = read_labelled_pixels(read_raster_info(raster.path), layer, "class",
                                  class_colors={"7": (1, 2, 3)}, class_names=names)
    assert pixels.classes == [ClassInfo(3, "corn", DEFAULT_CLASS_COLORS[0]),
                              ClassInfo(7, "soybean (7)", (1, 2, 3)),
                              ClassInfo(9, "soybean (9)", DEFAULT_CLASS_COLORS[2]),
                              ClassInfo(12, "12", DEFAULT_CLASS_COLORS[3])]
    assert ("Class names from the labels of the layer's style: 3 = corn, 7 = soybean (7), "
            "9 = soybean (9).") in pixels.notes
    # A text value is a name already: it stays, so a reference with the same field still matches.
    text = write_layer(tmp_path / "text.gpkg", [(pixel_box_polygon(g, 1, 1, 4, 4), "water"),
                                                (pixel_box_polygon(g, 1, 20, 4, 24), "forest")])
    named = read_labelled_pixels(read_raster_info(raster.path), text, "class",
                                 class_names={"water": "open water"})
    assert [c.name for c in named.classes] == ["water", "forest"]
    assert not any("labels" in note for note in named.notes)


def test_polygons_in_another_crs_are_reprojected(tmp_path, raster):
    info = read_raster_info(raster.path)
    native = read_labelled_pixels(info, make_polygons(tmp_path / "utm.gpkg", raster), "class")
    # Stored in WGS 84 degrees, the rectangles come back on the same pixels.
    wgs84 = make_polygons(tmp_path / "wgs84.gpkg", raster, epsg=4326)
    moved = read_labelled_pixels(info, wgs84, "class")
    assert set(zip(native.rows, native.cols)) == set(zip(moved.rows, moved.cols))


def test_points_and_sub_pixel_polygons_mark_the_pixel_they_lie_in(tmp_path, raster):
    x0, dx, _, y0, _, dy = raster.geotransform
    point = ogr.Geometry(ogr.wkbPoint)
    point.AddPoint_2D(x0 + 5.5 * dx, y0 + 7.5 * dy)
    tiny = pixel_box_polygon(raster.geotransform, 20.3, 30.3, 20.6, 30.6)
    layer = write_layer(tmp_path / "pt.gpkg", [(point, "a"), (tiny, "b")])
    pixels = read_labelled_pixels(read_raster_info(raster.path), layer, "class")
    assert sorted(zip(pixels.rows.tolist(), pixels.cols.tolist(), pixels.class_index.tolist())) == [
        (7, 5, 0), (20, 30, 1)]


def test_potsdam_points_read_with_their_style_colours(tmp_path):
    from engine_data import enmap_potsdam_vrt
    info = read_raster_info(enmap_potsdam_vrt(tmp_path / "potsdam.vrt"))
    colors = potsdam_class_colors()
    pixels = read_labelled_pixels(info, POTSDAM_POINTS, "level_2", class_colors=colors)
    assert {c.name for c in pixels.classes} == set(colors)
    assert all(c.color == colors[c.name] for c in pixels.classes)
    # Points outside the mosaic are not on the grid; gaps (nodata) are dropped later.
    assert 0 < len(pixels) < 120
    assert len(set(pixels.feature_index.tolist())) == len(pixels)


def test_split_by_feature_is_stratified_seeded_and_never_splits_a_feature():
    rng = np.random.default_rng(0)
    feature_class = np.array([0] * 8 + [1] * 4 + [2] + [3] * 2)
    feature_index = np.repeat(np.arange(15), rng.integers(3, 9, size=15))
    class_index = feature_class[feature_index]
    split = split_by_feature(feature_index, class_index, val_fraction=0.25, seed=3)
    again = split_by_feature(feature_index, class_index, val_fraction=0.25, seed=3)
    np.testing.assert_array_equal(split.validation, again.validation)
    assert set(split.train) | set(split.validation) == set(range(len(feature_index)))
    assert not set(feature_index[split.train]) & set(feature_index[split.validation])
    val_features = set(feature_index[split.validation].tolist())
    per_class = [sum(feature_class[f] == c for f in val_features) for c in range(4)]
    assert per_class == [2, 1, 0, 0]
    # One or two features are too few to spare one: holding one of two out halves the class.
    assert split.training_only_classes == [2, 3]
    assert (split.train_features, split.validation_features) == (12, 3)
    other = split_by_feature(feature_index, class_index, val_fraction=0.25, seed=4)
    assert set(feature_index[other.validation].tolist()) != val_features


def test_small_classes_keep_every_pixel_for_training():
    # Ten one-pixel points per class (scattered training pixels), and a class of 12 polygons.
    feature_index = np.concatenate([np.arange(20), np.repeat(np.arange(20, 32), 10)])
    class_index = np.concatenate([np.repeat([0, 1], 10), np.full(120, 2)])
    split = split_by_feature(feature_index, class_index, val_fraction=0.25, seed=0,
                             min_class_pixels=100)
    assert split.training_only_classes == [0, 1]
    assert set(class_index[split.validation].tolist()) == {2}
    assert split.validation_features == 3 and len(split.validation) == 30
    everything = split_by_feature(feature_index, class_index, val_fraction=0.25, seed=0)
    assert set(class_index[everything.validation].tolist()) == {0, 1, 2}


def test_class_with_too_few_pixels_is_named(tmp_path, raster):
    pixels = read_labelled_pixels(read_raster_info(raster.path),
                                  make_polygons(tmp_path / "p.gpkg", raster), "class")
    check_class_pixels(pixels, 150)
    with pytest.raises(HyperAdaptError) as caught:
        check_class_pixels(pixels, 151)
    assert str(caught.value) == ("The class 'class 1' has only 150 usable pixels on the raster; "
                                 "at least 151 are needed.")
    keep = pixels.class_index != 1
    with pytest.raises(HyperAdaptError) as caught:
        check_class_pixels(pixels.subset(keep))
    assert str(caught.value) == ("The class 'class 2' has no usable pixels on the raster (its "
                                 "features lie outside it or on nodata); at least 1 is needed.")


def test_bad_vectors_get_one_sentence(tmp_path, raster):
    info = read_raster_info(raster.path)
    layer = make_polygons(tmp_path / "p.gpkg", raster)
    with pytest.raises(HyperAdaptError) as caught:
        read_labelled_pixels(info, layer, "kind")
    assert str(caught.value) == "The layer 'training' has no field named 'kind'."
    with pytest.raises(HyperAdaptError, match="^No class field was given.$"):
        read_labelled_pixels(info, layer, "")

    g = raster.geotransform
    empty = write_layer(tmp_path / "e.gpkg", [(pixel_box_polygon(g, 1, 1, 3, 3), None)] * 2)
    with pytest.raises(HyperAdaptError) as caught:
        read_labelled_pixels(info, empty, "class")
    assert str(caught.value) == "The class field 'class' is empty in every feature of the layer 'training'."

    no_crs = write_layer(tmp_path / "n.gpkg", [(pixel_box_polygon(g, 1, 1, 3, 3), "a")], epsg=None)
    with pytest.raises(HyperAdaptError) as caught:
        read_labelled_pixels(info, no_crs, "class")
    assert str(caught.value) == ("The training layer 'training' has no coordinate reference system; "
                                 "set one and save the layer.")

    far = write_layer(tmp_path / "far.gpkg", [(pixel_box_polygon(g, -500, -500, -490, -490), "a"),
                                              (pixel_box_polygon(g, -500, -480, -490, -470), "b")])
    with pytest.raises(HyperAdaptError) as caught:
        read_labelled_pixels(info, far, "class")
    assert str(caught.value) == "The training layer 'training' does not overlap the raster r.tif."

    one = write_layer(tmp_path / "one.gpkg", [(pixel_box_polygon(g, 1, 1, 3, 3), "a")])
    with pytest.raises(HyperAdaptError, match="at least two classes"):
        read_labelled_pixels(info, one, "class")
    with pytest.raises(HyperAdaptError, match="does not exist"):
        read_labelled_pixels(info, tmp_path / "missing.gpkg", "class")


def test_grouped_folds_never_split_a_polygon_and_spread_every_class():
    from hyperadapt.models.data.samples import grouped_folds

    rng = np.random.default_rng(1)
    feature_class = np.repeat([0, 1, 2], [10, 6, 3])
    feature_index = np.repeat(np.arange(19), rng.integers(1, 12, size=19))
    class_index = feature_class[feature_index]
    fold = grouped_folds(feature_index, class_index, 3, seed=0)
    for feature in range(19):
        assert len(set(fold[feature_index == feature].tolist())) == 1     # never split
    for cls, count in ((0, 10), (1, 6), (2, 3)):
        per_fold = [len(set(feature_index[(fold == k) & (class_index == cls)].tolist()))
                    for k in range(3)]
        assert sum(per_fold) == count and max(per_fold) - min(per_fold) <= 1
    np.testing.assert_array_equal(fold, grouped_folds(feature_index, class_index, 3, seed=0))


def test_pixels_under_features_of_two_classes_are_left_out_and_said(tmp_path, raster):
    info = read_raster_info(raster.path)
    g = raster.geotransform
    # a: rows 0-3 x cols 0-3 (16 px); b overlaps a on rows 2-3 x cols 2-3 (4 px); a second polygon
    # of a overlaps the first (same class: nothing contested); c lies entirely inside b.
    layer = write_layer(tmp_path / "o.gpkg", [
        (pixel_box_polygon(g, 0, 0, 4, 4), "a"), (pixel_box_polygon(g, 2, 2, 6, 6), "b"),
        (pixel_box_polygon(g, 0, 0, 2, 2), "a"), (pixel_box_polygon(g, 10, 10, 12, 12), "d")])
    pixels = read_labelled_pixels(info, layer, "class")
    counts = dict(zip([c.name for c in pixels.classes], pixels.pixels_per_class().tolist()))
    assert counts == {"a": 12, "b": 12, "d": 4}
    assert not {(r, c) for r, c in zip(pixels.rows, pixels.cols)} & {(2, 2), (2, 3), (3, 2), (3, 3)}
    assert pixels.notes == ["4 pixel(s) lie under features of more than one class and were left "
                            "out (a and b: 4)."]
    check_class_pixels(pixels)

    covered = write_layer(tmp_path / "c.gpkg", [
        (pixel_box_polygon(g, 0, 0, 6, 6), "a"), (pixel_box_polygon(g, 1, 1, 3, 3), "c"),
        (pixel_box_polygon(g, 10, 10, 12, 12), "d")])
    pixels = read_labelled_pixels(info, covered, "class")
    with pytest.raises(HyperAdaptError) as caught:
        check_class_pixels(pixels)
    assert str(caught.value) == ("The class 'c' has no usable pixels: its 4 pixel(s) all lie under "
                                 "features of another class too; fix the overlapping polygons and "
                                 "run again.")


def test_a_summary_names_each_class_with_its_pixels_and_a_class_never_mapped():
    from hyperadapt.models.data.samples import describe_class_pixels

    classes = [ClassInfo(1, "Corn", (1, 2, 3)), ClassInfo(4, "Wheat", (4, 5, 6))]
    assert describe_class_pixels(classes, {1: 1204}) == "Corn: 1,204 px, Wheat: none"
