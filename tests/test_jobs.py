"""End to end: fine-tune -> adapter file -> classify -> evaluate, on real files, and bad input.

Every run uses the tiny backbone from a seeded random start, so it checks the machinery (grids,
classes, names, colours, nodata, reproducibility, files left behind), not SpectralGPT's accuracy.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal, osr

from engine_data import (POTSDAM, POTSDAM_POINTS, TINY_BACKBONE, enmap_potsdam_vrt,
                         indian_pines_crop, labels_to_polygons, make_polygons, make_test_raster,
                         pixel_box_polygon, potsdam_class_colors, read_band, spectralgpt_small,
                         tiny_settings, valid_mask, write_label_raster, write_layer)
from hyperadapt.models.data.neighbourhood import box_means
from hyperadapt.models.data.raster import RasterReader, read_raster_info
from hyperadapt.models.errors import HyperAdaptError, JobCancelled
from hyperadapt.models.jobs import classify, evaluate, fine_tune, read_class_raster_classes
from hyperadapt.models.stores.adapter_file import load_adapter_file



def check_classification(path, raster_path, classes, *, confidence_path=None) -> np.ndarray:
    """Grid, CRS, type, nodata, names, colours and the .qml of a class raster; returns its array."""
    info = read_raster_info(raster_path)
    dataset = gdal.Open(str(path))
    band = dataset.GetRasterBand(1)
    assert (dataset.RasterXSize, dataset.RasterYSize) == (info.width, info.height)
    assert dataset.GetGeoTransform() == pytest.approx(info.geotransform)
    assert osr.SpatialReference(dataset.GetProjection()).IsSame(
        osr.SpatialReference(info.crs_wkt))
    assert band.DataType == gdal.GDT_Byte
    assert band.GetNoDataValue() == 0
    names = band.GetCategoryNames()
    table = band.GetColorTable()
    for info_class in classes:
        assert names[info_class.value] == info_class.name
        assert table.GetColorEntry(info_class.value)[:3] == tuple(info_class.color)
    values = band.ReadAsArray()
    valid = valid_mask(raster_path)
    assert (values[~valid] == 0).all()
    assert set(np.unique(values[valid])) <= {c.value for c in classes}
    assert (values[valid] > 0).all()
    style = Path(path).with_suffix(".qml").read_text()
    assert 'type="paletted"' in style
    assert all(f'label="{c.name}"' in style for c in classes)
    if confidence_path is not None:
        confidence = gdal.Open(str(confidence_path))
        assert confidence.GetGeoTransform() == pytest.approx(info.geotransform)
        conf = confidence.GetRasterBand(1).ReadAsArray()
        assert confidence.GetRasterBand(1).DataType == gdal.GDT_Float32
        assert (conf[~valid] == 0).all()
        assert (conf[valid] >= 1.0 / len(classes) - 1e-6).all() and (conf[valid] <= 1.0).all()
    return values


@pytest.fixture(scope="module")
def geotiff_run(tmp_path_factory):
    """One fine-tune on the synthetic GeoTIFF, shared by the tests that only read its outputs."""
    folder = tmp_path_factory.mktemp("geotiff")
    raster = make_test_raster(folder / "scene.tif")
    layer = make_polygons(folder / "training.gpkg", raster)
    epochs = []
    result = fine_tune(str(raster.path), str(layer), "class", str(folder / "adapter.pt"),
                       settings=tiny_settings(), classification_path=str(folder / "classes.tif"),
                       confidence_path=str(folder / "confidence.tif"),
                       report_path=str(folder / "report.html"), on_epoch=epochs.append)
    return raster, layer, result, epochs


def test_geotiff_fine_tune_writes_adapter_classification_and_report(geotiff_run):
    raster, layer, result, epochs = geotiff_run
    folder = raster.path.parent
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter.pt", "classes.qml", "classes.tif", "classes.tif.aux.xml", "confidence.tif",
        "report.html", "report.json", "scene.tif", "training.gpkg"]
    assert [c.name for c in result.classes] == ["class 1", "class 2", "class 3"]
    values = check_classification(result.classification_path, raster.path, result.classes,
                                  confidence_path=result.confidence_path)
    # Windows at the raster's edge are padded, so edge pixels are classified too.
    assert values[-1, -1] > 0 and values[4, 0] > 0
    valid = valid_mask(raster.path)
    assert (values[valid] == raster.labels[valid]).mean() > 0.6
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert all(e["val_accuracy"] is not None for e in epochs)
    metrics = result.metrics
    assert metrics["split"]["validation_features"] == 3 and metrics["random_start"] is True
    assert any("labelled pixel(s) on nodata were left out" in n for n in metrics["notes"])
    assert result.adapter_bytes == Path(result.adapter_path).stat().st_size
    assert result.backbone.kind == "random"
    # 5-pixel windows: tile mode steps 3 pixels, and the report says how the scene was classified
    # and how the training pixels were seen
    report = (folder / "report.html").read_text()
    assert "tile mode (a window every 3 pixels" in report
    assert "each pixel between the windows of a grid every 3 pixels" in report


def test_adapter_file_records_what_classify_needs(geotiff_run):
    raster, _, result, _ = geotiff_run
    payload = torch.load(result.adapter_path, weights_only=True)
    record = load_adapter_file(result.adapter_path)
    assert payload["format_version"] == 1
    assert record.sensor["band_count"] == 20 and len(record.sensor["wavelengths_nm"]) == 20
    assert record.band_adaptation["method"] == "pca"
    assert (record.window_size, record.input_size) == (5, 16)
    assert record.backbone["weights"] == result.backbone.to_dict()
    assert record.backbone["config"]["depth"] == 2 and record.backbone["config"]["num_classes"] == 3
    assert record.adapter_config["method"] == "krona_plus"
    assert all(name.startswith("head.") or ".adapter_" in name for name in record.trainable_state)
    assert record.metrics["overall_accuracy"] == result.metrics["overall_accuracy"]


def test_reloaded_adapter_reproduces_the_classification(geotiff_run, tmp_path):
    raster, _, result, _ = geotiff_run
    progress = []
    again = classify(str(raster.path), result.adapter_path, str(tmp_path / "again.tif"),
                     confidence_path=str(tmp_path / "again_conf.tif"),
                     progress=lambda f, m: progress.append(f))
    np.testing.assert_array_equal(read_band(again.output_path),
                                  read_band(result.classification_path))
    np.testing.assert_allclose(read_band(again.confidence_path),
                               read_band(result.confidence_path), atol=1e-5)
    assert progress[-1] == pytest.approx(1.0) and progress == sorted(progress)
    assert sum(again.pixels_per_class.values()) == int(valid_mask(raster.path).sum())


def test_evaluate_against_polygons_and_a_reference_raster(geotiff_run, tmp_path):
    raster, layer, result, _ = geotiff_run
    by_layer = evaluate(result.classification_path, str(layer), class_field="class",
                        html_path=str(tmp_path / "e.html"), json_path=str(tmp_path / "e.json"))
    reference = write_label_raster(tmp_path / "truth.tif", raster)
    by_raster = evaluate(result.classification_path, str(reference))
    values = read_band(result.classification_path)
    valid = valid_mask(raster.path)
    assert by_raster["overall_accuracy"] == pytest.approx(
        (values[valid] == raster.labels[valid]).mean())
    assert by_raster["num_samples"] == int(valid.sum())
    assert by_layer["num_samples"] == 450 - 9   # nine polygon pixels lie on nodata
    assert any("no data" in note for note in by_layer["notes"])
    assert (tmp_path / "e.html").read_text().count("data:image/png;base64,") == 1
    assert (tmp_path / "e.json").exists()
    # Area-weighted estimates beside the pixel counts: the map's classes weigh by their area.
    adjusted = by_raster["area_adjusted"]
    map_counts = np.bincount(values[valid], minlength=4)[1:]
    assert adjusted["area_unit"] == "ha"
    assert [c["map_area"] for c in adjusted["classes"]] == pytest.approx(map_counts * 0.09)
    assert sum(c["area"] for c in adjusted["classes"]) == pytest.approx(valid.sum() * 0.09)
    assert 0.0 <= adjusted["overall_accuracy"] <= 1.0
    assert "Area-adjusted accuracy and class areas" in (tmp_path / "e.html").read_text()
    # A reference raster with category names is matched by name: itself agrees everywhere.
    itself = evaluate(result.classification_path, result.classification_path)
    assert itself["overall_accuracy"] == 1.0 and itself["num_samples"] == int(valid.sum())


def test_a_classification_copied_without_its_aux_xml_keeps_its_class_names(geotiff_run,
                                                                           tmp_path):
    import shutil

    _, layer, result, _ = geotiff_run
    copy = tmp_path / "copied.tif"
    shutil.copyfile(result.classification_path, copy)        # the .tif alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copied.tif"]
    assert read_class_raster_classes(copy) == result.classes
    assert evaluate(str(copy), str(layer), class_field="class")["overall_accuracy"] == \
        evaluate(result.classification_path, str(layer), class_field="class")["overall_accuracy"]


def test_envi_copy_with_integer_classes_and_sentinel2_resampling(tmp_path):
    raster = make_test_raster(tmp_path / "scene.img", driver="ENVI")
    layer = make_polygons(tmp_path / "t.gpkg", raster, field_type="integer",
                          integer_values={1: 10, 2: 20, 3: 30})
    result = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "a.pt"),
                       settings=tiny_settings(band_adaptation="s2"),
                       classification_path=str(tmp_path / "c.tif"))
    assert [(c.value, c.name) for c in result.classes] == [(10, "10"), (20, "20"), (30, "30")]
    check_classification(result.classification_path, raster.path, result.classes)
    assert load_adapter_file(result.adapter_path).band_adaptation["method"] == "s2"
    again = classify(str(raster.path), result.adapter_path, str(tmp_path / "c2.tif"))
    np.testing.assert_array_equal(read_band(again.output_path),
                                  read_band(result.classification_path))
    metrics = evaluate(result.classification_path, str(layer), class_field="class")
    assert metrics["num_samples"] > 0 and [c["value"] for c in metrics["classes"]] == [10, 20, 30]


def test_indian_pines_crop_end_to_end(tmp_path, capsys):
    started = time.perf_counter()
    raster = indian_pines_crop(tmp_path / "indian_pines.tif", size=48)
    layer = labels_to_polygons(tmp_path / "labels.gpkg", raster, block=12)
    result = fine_tune(str(raster.path), str(layer), "class_id", str(tmp_path / "ip.pt"),
                       settings=tiny_settings(epochs=3, max_pixels_per_class=200),
                       classification_path=str(tmp_path / "ip.tif"))
    present = sorted(set(np.unique(raster.labels)) - {0})
    assert [c.value for c in result.classes] == present
    assert read_raster_info(raster.path).sensor == "AVIRIS"
    values = check_classification(result.classification_path, raster.path, result.classes)
    assert values.shape == (48, 48) and (values > 0).all()
    again = classify(str(raster.path), result.adapter_path, str(tmp_path / "ip2.tif"))
    np.testing.assert_array_equal(read_band(again.output_path), values)
    reference = write_label_raster(tmp_path / "truth.tif", raster)
    metrics = evaluate(result.classification_path, str(reference))
    assert metrics["num_samples"] == int((raster.labels > 0).sum())
    seconds = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nIndian Pines 48 x 48 crop, fine-tune + classify twice + evaluate: "
              f"{seconds:.1f} s (OA vs. reference {100 * metrics['overall_accuracy']:.1f} %)")


def test_enmap_potsdam_vrt_mosaic_from_styled_points(tmp_path):
    vrt = enmap_potsdam_vrt(tmp_path / "potsdam.vrt")
    colors = potsdam_class_colors()
    result = fine_tune(str(vrt), str(POTSDAM_POINTS), "level_2", str(tmp_path / "potsdam.pt"),
                       settings=tiny_settings(epochs=3), class_colors=colors,
                       classification_path=str(tmp_path / "potsdam.tif"))
    assert {c.name: c.color for c in result.classes} == colors
    values = check_classification(result.classification_path, vrt, result.classes)
    assert values.shape == (192, 160)
    assert (values == 0).mean() == pytest.approx(0.4, abs=0.01)   # the mosaic's gaps
    record = load_adapter_file(result.adapter_path)
    assert record.sensor["name"] == "EnMAP" and record.sensor["band_count"] == 224
    assert len(record.band_adaptation["band_indices"]) < 224      # bad bands (bbl) left out
    again = classify(str(vrt), result.adapter_path, str(tmp_path / "again.tif"))
    np.testing.assert_array_equal(read_band(again.output_path), values)
    metrics = evaluate(result.classification_path, str(POTSDAM_POINTS), class_field="level_2")
    assert 50 <= metrics["num_samples"] <= 60
    # A reference raster on another grid (the whole scene's labels, 330 x 200 on the same 30 m
    # grid, 64 columns further west) is read onto the classification's grid.
    scene = gdal.Open(str(POTSDAM / "enmap_landcover_unstyled.tif"))
    crop = scene.GetRasterBand(1).ReadAsArray()[:192, 64:224]
    # The points have no water, the scene's labels do: 6 % of them, refused at the default 5 %.
    with pytest.raises(HyperAdaptError, match=r"^6 % of the reference pixels \(\d+ of \d+\) belong "
                                              r"to classes the classification does not have: 6 "):
        evaluate(result.classification_path, str(POTSDAM / "enmap_landcover_unstyled.tif"))
    on_grid = evaluate(result.classification_path, str(POTSDAM / "enmap_landcover_unstyled.tif"),
                       max_unmatched_share=0.1)
    usable = np.isin(crop, [c.value for c in result.classes]) & (values > 0)
    assert on_grid["num_samples"] == int(usable.sum()) > 1000
    assert on_grid["unmatched_reference_share"] == pytest.approx(0.063, abs=0.002)
    # The EnMAP adapter (224 bands) on an AVIRIS scene (200 bands) is refused, nothing written.
    aviris = indian_pines_crop(tmp_path / "aviris.tif", size=16)
    with pytest.raises(HyperAdaptError) as caught:
        classify(str(aviris.path), result.adapter_path, str(tmp_path / "aviris_classes.tif"))
    assert str(caught.value) == "This adapter was trained on 224 bands, but the raster has 200."
    assert not list(tmp_path.glob("aviris_classes*"))


def test_cancel_during_training_or_classification_leaves_no_files(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif")
    layer = make_polygons(tmp_path / "t.gpkg", raster)
    before = sorted(p.name for p in tmp_path.iterdir())
    outputs = dict(classification_path=str(tmp_path / "c.tif"),
                   confidence_path=str(tmp_path / "conf.tif"),
                   report_path=str(tmp_path / "r.html"))
    calls = []
    with pytest.raises(JobCancelled):
        fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "a.pt"),
                  settings=tiny_settings(), cancel=lambda: calls.append(1) or len(calls) > 25,
                  **outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == before

    classifying = []
    with pytest.raises(JobCancelled):
        fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "a.pt"),
                  settings=tiny_settings(epochs=1),
                  progress=lambda f, m: classifying.append(m.startswith("Classifying")),
                  cancel=lambda: bool(classifying) and classifying[-1], **outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cancelled_classify_leaves_no_output(geotiff_run, tmp_path):
    raster, _, result, _ = geotiff_run
    with pytest.raises(JobCancelled):
        classify(str(raster.path), result.adapter_path, str(tmp_path / "c.tif"),
                 confidence_path=str(tmp_path / "conf.tif"), cancel=lambda: True)
    assert list(tmp_path.iterdir()) == []


# -- bad input: one sentence, nothing written ----------------------------------------------------
def run_fine_tune(tmp_path, raster_path, layer, field="class", **settings):
    outputs = tmp_path / "out"
    outputs.mkdir()
    with pytest.raises(HyperAdaptError) as caught:
        fine_tune(str(raster_path), str(layer), field, str(outputs / "a.pt"),
                  settings=tiny_settings(**settings), classification_path=str(outputs / "c.tif"),
                  report_path=str(outputs / "r.html"))
    assert list(outputs.iterdir()) == []
    return str(caught.value)


def test_no_overlap_between_vector_and_raster(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif")
    far = write_layer(tmp_path / "far.gpkg", [
        (pixel_box_polygon(raster.geotransform, 900, 900, 905, 905), "a"),
        (pixel_box_polygon(raster.geotransform, 900, 910, 905, 915), "b")])
    assert run_fine_tune(tmp_path, raster.path, far) == (
        "The training layer 'training' does not overlap the raster scene.tif.")


def test_vector_without_crs(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif")
    layer = write_layer(tmp_path / "nocrs.gpkg", [
        (pixel_box_polygon(raster.geotransform, 1, 1, 5, 5), "a"),
        (pixel_box_polygon(raster.geotransform, 1, 20, 5, 25), "b")], epsg=None)
    assert run_fine_tune(tmp_path, raster.path, layer) == (
        "The training layer 'training' has no coordinate reference system; set one and save the "
        "layer.")


def test_missing_or_empty_class_field(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif")
    layer = make_polygons(tmp_path / "t.gpkg", raster)
    assert run_fine_tune(tmp_path, raster.path, layer, field="landuse") == (
        "The layer 'training' has no field named 'landuse'.")
    empty = write_layer(tmp_path / "empty.gpkg",
                        [(pixel_box_polygon(raster.geotransform, 1, 1, 5, 5), None)] * 3)
    (tmp_path / "out").rmdir()
    assert run_fine_tune(tmp_path, raster.path, empty) == (
        "The class field 'class' is empty in every feature of the layer 'training'.")


def test_class_with_too_few_usable_pixels_is_named(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif", nodata_box=(0, 24, 30, 12))
    layer = make_polygons(tmp_path / "t.gpkg", raster)
    # Class 3's stripe is all nodata, so its polygons give no usable pixel.
    assert run_fine_tune(tmp_path, raster.path, layer) == (
        "The class 'class 3' has no usable pixels on the raster (its features lie outside it or "
        "on nodata); at least 1 is needed.")
    fine = make_test_raster(tmp_path / "fine.tif")
    layer = make_polygons(tmp_path / "t2.gpkg", fine)
    (tmp_path / "out").rmdir()
    assert run_fine_tune(tmp_path, fine.path, layer, min_pixels_per_class=145) == (
        "The class 'class 1' has only 141 usable pixels on the raster; at least 145 are needed.")


def test_fewer_than_twelve_usable_bands_for_pca(tmp_path):
    bbl = [1] * 11 + [0] * 9
    raster = make_test_raster(tmp_path / "scene.tif", bbl=bbl)
    layer = make_polygons(tmp_path / "t.gpkg", raster)
    assert run_fine_tune(tmp_path, raster.path, layer) == (
        "PCA to 12 components needs at least 12 usable bands, but the raster has 11 (9 more are "
        "flagged bad).")


def test_raster_that_is_all_nodata(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif", all_nodata=True)
    layer = make_polygons(tmp_path / "t.gpkg", raster)
    assert run_fine_tune(tmp_path, raster.path, layer) == (
        "The raster scene.tif has no valid pixels: every pixel is nodata or masked.")


def test_no_weights_and_no_random_start(tmp_path, no_cached_weights):
    raster = make_test_raster(tmp_path / "scene.tif")
    layer = make_polygons(tmp_path / "t.gpkg", raster)
    assert run_fine_tune(tmp_path, raster.path, layer, random_start=False) == (
        "No SpectralGPT weights were given or downloaded; download the official weights, choose "
        "a backbone file, or allow a random start.")


def test_adapter_for_other_band_count_is_refused(geotiff_run, tmp_path):
    _, _, result, _ = geotiff_run
    other = make_test_raster(tmp_path / "other.tif", num_bands=24)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(HyperAdaptError) as caught:
        classify(str(other.path), result.adapter_path, str(out / "c.tif"))
    assert str(caught.value) == "This adapter was trained on 20 bands, but the raster has 24."
    assert list(out.iterdir()) == []


def _fake_official_checkpoint(path, seed):
    """A file shaped like the official checkpoints ({"model": encoder + decoder tensors}) for the
    tiny backbone."""
    torch.manual_seed(seed)
    state = spectralgpt_small(img_size=16, **TINY_BACKBONE).state_dict()
    state["decoder_embed.weight"] = torch.zeros(2, 2)
    torch.save({"model": state, "epoch": 1}, path)
    return path


def test_official_weights_are_recorded_and_other_weights_refused(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif")
    layer = make_polygons(tmp_path / "t.gpkg", raster)
    weights = _fake_official_checkpoint(tmp_path / "SpectralGPT+.pth", 1)
    result = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "a.pt"),
                       settings=tiny_settings(random_start=False, weights=str(weights), epochs=2),
                       classification_path=str(tmp_path / "c.tif"))
    assert result.backbone.kind == "official" and result.backbone.name == "SpectralGPT+.pth"
    assert result.metrics["random_start"] is False
    again = classify(str(raster.path), result.adapter_path, str(tmp_path / "c2.tif"),
                     weights=str(weights))
    np.testing.assert_array_equal(read_band(again.output_path), read_band(tmp_path / "c.tif"))
    (tmp_path / "other").mkdir()
    other = _fake_official_checkpoint(tmp_path / "other" / "SpectralGPT+.pth", 2)
    with pytest.raises(HyperAdaptError) as caught:
        classify(str(raster.path), result.adapter_path, str(tmp_path / "c3.tif"),
                 weights=str(other))
    assert str(caught.value).startswith("This adapter was trained on the weights SpectralGPT+.pth "
                                        f"(sha256 {result.backbone.key[:12]}…), but the given")
    assert not (tmp_path / "c3.tif").exists()


def test_backbone_file_brings_its_band_adaptation(tmp_path):
    from hyperadapt.models.data.bands import fit_pca_reduction
    from hyperadapt.models.data.raster import sample_valid_pixels
    from hyperadapt.models.stores.backbone_file import save_backbone_file

    raster = make_test_raster(tmp_path / "scene.tif")
    layer = make_polygons(tmp_path / "t.gpkg", raster)
    info = read_raster_info(raster.path)
    with RasterReader(info) as reader:
        adaptation = fit_pca_reduction(sample_valid_pixels(reader, max_pixels=500), info.good_bands)
    torch.manual_seed(3)
    encoder = spectralgpt_small(img_size=16, **TINY_BACKBONE)
    backbone = tmp_path / "backbone.pt"
    backbone_id, _ = save_backbone_file(backbone, model=encoder, band_adaptation=adaptation,
                                        window_size=7, input_size=16,
                                        sensor={"name": "Test", "band_count": 20}, pretraining={})
    result = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "a.pt"),
                       settings=tiny_settings(random_start=False, weights=str(backbone), epochs=2,
                                              band_adaptation="s2"),
                       classification_path=str(tmp_path / "c.tif"))
    record = load_adapter_file(result.adapter_path)
    assert record.backbone["weights"]["id"] == backbone_id
    assert record.band_adaptation == adaptation.to_state()
    assert record.window_size == 7
    again = classify(str(raster.path), result.adapter_path, str(tmp_path / "c2.tif"))
    np.testing.assert_array_equal(read_band(again.output_path), read_band(tmp_path / "c.tif"))


# -- training and prediction details -------------------------------------------------------------
def test_the_kept_epoch_is_the_best_after_the_warm_up(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif", noise=0.05)
    layer = make_polygons(tmp_path / "t.gpkg", raster)
    epochs = []
    result = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "a.pt"),
                       settings=tiny_settings(epochs=12, patience=2, learning_rate=3e-3),
                       on_epoch=epochs.append)
    # The warm-up is the first 10 % of the samples: epoch 1 of 12 cannot be the one kept, even
    # where its validation accuracy (the other field of the class) beats the next few epochs.
    keys = [(e["val_accuracy"], -e["val_loss"]) for e in epochs]
    best = keys.index(max(keys[1:])) + 1
    assert result.metrics["best_epoch"] == best > 1
    # Validation improved again within every two epochs after the first half: no early stop.
    assert result.metrics["epochs_run"] == len(epochs) == 12
    assert result.metrics["stopped_early"] is False
    # The saved adapter is the best epoch's state: its validation accuracy is that epoch's.
    assert result.metrics["overall_accuracy"] == pytest.approx(epochs[best - 1]["val_accuracy"])
    assert load_adapter_file(result.adapter_path).training["best_epoch"] == best


def test_refit_trains_again_on_every_pixel_for_the_epochs_validation_chose(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif", noise=0.05)
    layer = make_polygons(tmp_path / "t.gpkg", raster)
    settings = tiny_settings(epochs=12, patience=2, learning_rate=3e-3)
    plain = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "plain.pt"),
                      settings=settings)
    epochs, messages = [], []
    refit = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "refit.pt"),
                      settings=dataclasses.replace(settings, refit=True), on_epoch=epochs.append,
                      progress=lambda fraction, message: messages.append(message))
    best = plain.metrics["best_epoch"]
    # The validation figures are the first training's: the same as without the refit.
    assert refit.metrics["overall_accuracy"] == plain.metrics["overall_accuracy"]
    assert refit.metrics["best_epoch"] == best
    split = refit.metrics["split"]
    assert split["validation_pixels"] > 0
    assert refit.metrics["refit"]["pixels"] == split["train_pixels"] + split["validation_pixels"]
    assert refit.metrics["refit"]["epochs"] == best
    # The live curve is the validated training's; the second training's messages say what it is.
    assert len(epochs) == plain.metrics["epochs_run"]
    assert any(m.startswith(f"Training on every pixel: Epoch 1/{best}") for m in messages)
    assert any("trained again on all" in note for note in refit.metrics["notes"])
    # The saved adapter is the model trained again, not the validated one.
    first, again = load_adapter_file(plain.adapter_path), load_adapter_file(refit.adapter_path)
    assert again.training["refit"] == refit.metrics["refit"]
    assert first.training["refit"] is None
    assert any(not torch.equal(first.trainable_state[k], again.trainable_state[k])
               for k in first.trainable_state)
    # With nothing held out there is nothing to train again.
    whole = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "whole.pt"),
                      settings=dataclasses.replace(settings, refit=True, val_fraction=0.0))
    assert "refit" not in whole.metrics
    assert not any("trained again" in note for note in whole.notes)


# The noise of 16 bands, well under their classes' differences, then of 4 bands where noise
# drowns them (water absorption's edges).
LOUD_LAST_BANDS = np.r_[np.full(16, 0.05), np.full(4, 1.0)]


@pytest.mark.parametrize("loud_bands", [False, True])
def test_the_map_mixes_in_the_spectral_classifier_the_adapter_keeps(tmp_path, loud_bands):
    from hyperadapt.models.data.bands import BandAdaptation

    # Noisy spectra, so that the classifier sees each pixel's neighbourhood too; or four bands
    # far noisier than the rest, which the classifier's noise whitening weighs down.
    raster = make_test_raster(tmp_path / "scene.tif",
                              noise=LOUD_LAST_BANDS if loud_bands else 1.0)
    layer = make_polygons(tmp_path / "t.gpkg", raster)
    # Weight 1 and no vote: the map is the spectral classifier's alone, pixel for pixel.
    result = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "spectral.pt"),
                       settings=tiny_settings(spectral_weight=1.0, segment_size=0),
                       classification_path=str(tmp_path / "spectral.tif"))
    record = load_adapter_file(result.adapter_path)
    kernel = record.spectral_kernel
    assert kernel.weight == 1.0
    if not loud_bands:
        assert kernel.inputs != "spectrum" and kernel.context_size == 9
    assert kernel.band_indices == BandAdaptation.from_state(record.band_adaptation).band_indices
    split = result.metrics["split"]
    assert split["validation_pixels"] > 0
    # Fitted on every labelled pixel, the held-out ones included.
    assert len(kernel.support) == split["train_pixels"] + split["validation_pixels"]
    if loud_bands:
        # Spectra compared in units of the scene's noise, the whitening kept with the classifier.
        assert kernel.whitening.shape == (len(kernel.band_indices),) * 2
        assert any("units of the scene's noise" in note for note in result.notes)
    else:
        assert any("9 x 9 neighbourhood" in note for note in result.notes)
        assert kernel.whitening is None
    with RasterReader(str(raster.path)) as reader:
        data, valid = reader.read(0, 0, reader.width, reader.height, kernel.band_indices)
    means = box_means(data, valid, kernel.context_size) if kernel.context_size else None
    values = np.array([c.value for c in record.classes])
    expected = values[kernel.probabilities(kernel.features(
        data[:, valid].T, None if means is None else means[:, valid].T)).argmax(axis=1)]
    assert (read_band(tmp_path / "spectral.tif")[valid] == expected).all()
    # The adapter file classifies a scene the same way later.
    classify(str(raster.path), result.adapter_path, str(tmp_path / "again.tif"))
    assert (read_band(tmp_path / "again.tif") == read_band(tmp_path / "spectral.tif")).all()
    if loud_bands:
        return
    # Weight 0: no spectral classifier in the file, and a map that differs from the spectra's.
    alone = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "alone.pt"),
                      settings=tiny_settings(spectral_weight=0.0, segment_size=0),
                      classification_path=str(tmp_path / "alone.tif"))
    assert load_adapter_file(alone.adapter_path).spectral_kernel is None
    assert not any("The map mixes" in note for note in alone.notes)
    assert (read_band(tmp_path / "alone.tif")[valid] != expected).any()


def test_the_spectral_classifier_standardises_bands_where_noise_looks_like_the_scene(tmp_path):
    """Where every band is as noisy as the others, neighbour differences cannot tell noise from
    texture: no whitening, each band standardised, and a note that says why."""
    from hyperadapt.models.jobs.fine_tuning import _training_samples

    raster = make_test_raster(tmp_path / "scene.tif", noise=1.0)
    layer = make_polygons(tmp_path / "t.gpkg", raster)
    samples = _training_samples(str(raster.path), str(layer), "class",
                                tiny_settings(spectral_weight=1.0).resolved())
    assert samples.whitening is None
    assert any("noise cannot be told from its texture" in note for note in samples.notes)
    loud = make_test_raster(tmp_path / "loud.tif", noise=LOUD_LAST_BANDS)
    samples = _training_samples(str(loud.path), str(layer), "class",
                                tiny_settings(spectral_weight=1.0).resolved())
    assert samples.whitening.shape == (20, 20)
    # The loud bands weigh a fifth of the others, or less.
    size = np.abs(samples.whitening).sum(axis=1)
    assert size[16:].max() < 0.2 * size[:16].min()


def test_held_out_pixels_are_classified_with_a_spectral_classifier_fitted_without_them(tmp_path):
    from hyperadapt.models.jobs.fine_tuning import (_training_samples, held_out_predictions,
                                                    spectral_classifier)

    raster = make_test_raster(tmp_path / "scene.tif", noise=LOUD_LAST_BANDS)
    layer = make_polygons(tmp_path / "t.gpkg", raster)
    # Windows centred on the pixels, which the stand-in model below reads.
    settings = tiny_settings(spectral_weight=1.0, training_mode="window").resolved()
    samples = _training_samples(str(raster.path), str(layer), "class", settings)
    features = samples.pixels.feature_index
    held = np.flatnonzero(np.isin(features, np.unique(features)[::3]))
    kept = np.setdiff1d(np.arange(len(features)), held)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))
    model(samples.windows[:1])
    predicted = held_out_predictions(model, samples, settings, kept, held, torch.device("cpu"),
                                     None)
    fitted_without = spectral_classifier(samples, settings, kept)
    assert len(fitted_without.support) == len(kept)
    assert samples.means.shape == samples.spectra.shape
    expected = fitted_without.probabilities(fitted_without.features(
        samples.spectra[held], samples.means[held])).argmax(axis=1)
    assert (predicted == expected).all()
    assert spectral_classifier(samples, dataclasses.replace(settings, spectral_weight=0.0),
                               kept) is None
    # The scene's noise whitening, read once with the samples; off, each band is standardised.
    assert np.array_equal(fitted_without.whitening, samples.whitening)
    plain_settings = dataclasses.replace(settings, spectral_whitening=False)
    plain = _training_samples(str(raster.path), str(layer), "class", plain_settings)
    assert plain.whitening is None
    standardised = spectral_classifier(plain, plain_settings, kept)
    assert standardised.whitening is None and "standardised" in standardised.describe()
    assert not np.array_equal(standardised.probabilities(standardised.features(
        plain.spectra[held], plain.means[held])), fitted_without.probabilities(
        fitted_without.features(samples.spectra[held], samples.means[held])))


def test_early_stopping_waits_for_the_warm_up_and_half_the_epochs():
    """A validation set that only gets worse as training learns (here: wrong labels) scores best
    by chance in epoch 1, while the head has barely started; that epoch must not end training."""
    from hyperadapt.models.learning.training import train_classifier

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(16)
    windows = (torch.rand(48, 12, 5, 5, generator=generator) * 0.2
               + labels.view(-1, 1, 1, 1) * 0.4)
    outcome = train_classifier(_tiny_adapted_model(), windows, labels, windows, (labels + 1) % 3,
                               epochs=20, learning_rate=3e-3, batch_size=16,
                               patience=2, device=torch.device("cpu"))
    accuracies = [record["val_accuracy"] for record in outcome.history]
    assert accuracies[0] > accuracies[-1]              # validation really does only worsen
    assert outcome.best_epoch >= 2          # the warm-up (10 % of 20 epochs) ends with epoch 2
    # Never before half of the epochs, then after ``patience`` epochs without a better result.
    assert outcome.stopped_early
    assert outcome.epochs_run == max(10, outcome.best_epoch + 2) < 20


def test_balanced_class_weights_make_every_class_weigh_the_same():
    from hyperadapt.models.learning.class_balance import class_weights

    labels = np.array([0] * 30 + [1] * 6 + [3] * 4)
    weights = class_weights(labels, "balanced")
    # 40 pixels, 3 classes present: each class's pixels weigh 40 / 3 in all; class 2 has none.
    assert np.allclose(weights, [40 / 90, 40 / 18, 0.0, 40 / 12])
    assert np.isclose(weights[labels].sum(), 40.0)        # the loss keeps its scale
    assert np.array_equal(class_weights(np.tile(np.arange(4), 5), "balanced"), np.ones(4))
    # Sized for every class a model outputs, also where the last has no pixels.
    assert np.allclose(class_weights(labels, "balanced", num_classes=6), [*weights, 0.0, 0.0])
    assert class_weights(labels, "none") is None
    with pytest.raises(ValueError, match="unknown class weighting 'focal'"):
        class_weights(labels, "focal")


def _imbalanced_windows():
    """60 windows of class 0 and 6 of class 1, their values overlapping."""
    generator = torch.Generator().manual_seed(3)
    labels = torch.tensor([0] * 60 + [1] * 6)
    windows = (torch.rand(66, 12, 5, 5, generator=generator) * 0.5
               + labels.view(-1, 1, 1, 1) * 0.15)
    return windows, labels


def test_balanced_weighting_is_the_plain_loss_when_classes_are_even_and_lifts_a_rare_class():
    from hyperadapt.models.learning.inference import predict_windows
    from hyperadapt.models.learning.training import train_classifier

    def train(windows, labels, weighting):
        model = _tiny_adapted_model(num_classes=2)
        outcome = train_classifier(model, windows, labels, None, None, epochs=6,
                                   learning_rate=3e-3, batch_size=16, device=torch.device("cpu"),
                                   class_weighting=weighting)
        return model, outcome

    even = torch.arange(2).repeat_interleave(20)
    windows = torch.rand(40, 12, 5, 5, generator=torch.Generator().manual_seed(2))
    _, plain = train(windows, even, "none")
    _, balanced = train(windows, even, "balanced")
    assert all(torch.equal(plain.best_state[name], balanced.best_state[name])
               for name in plain.best_state)

    windows, labels = _imbalanced_windows()
    recall = {}
    for weighting in ("none", "balanced"):
        model, _ = train(windows, labels, weighting)
        predicted, _ = predict_windows(model, windows, device=torch.device("cpu"), batch_size=64)
        recall[weighting] = float((predicted[labels.numpy() == 1] == 1).mean())
    assert recall["balanced"] > recall["none"]


def _tiny_adapted_model(num_classes=3):
    from hyperadapt.models.network.adapters import AdapterConfig, apply_adapter

    torch.manual_seed(0)
    model = spectralgpt_small(img_size=16, num_classes=num_classes, **TINY_BACKBONE)
    return apply_adapter(model, AdapterConfig(init_weights=False))


def _fail_batches_larger_than(model, limit):
    """Make the model raise CUDA's out-of-memory error for batches above ``limit``."""
    forward = model.forward
    sizes = []

    def limited(x):
        sizes.append(len(x))
        if len(x) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(x)

    model.forward = limited
    return sizes


def test_out_of_memory_halves_the_training_batch_and_carries_on():
    from hyperadapt.models.learning.training import train_classifier

    generator = torch.Generator().manual_seed(0)
    windows = torch.rand(40, 12, 5, 5, generator=generator)
    labels = torch.randint(0, 3, (40,), generator=generator)
    model = _tiny_adapted_model()
    sizes = _fail_batches_larger_than(model, 8)
    outcome = train_classifier(model, windows, labels, None, None, epochs=2,
                               learning_rate=1e-3, batch_size=32, device=torch.device("cpu"))
    assert outcome.batch_size == 8 and outcome.epochs_run == 2
    assert sum(size for size in sizes if size <= 8) == 2 * 40   # every window trained, twice
    with pytest.raises(HyperAdaptError, match="ran out of memory even for a single window"):
        _fail_batches_larger_than(model, 0)
        train_classifier(model, windows, labels, None, None, epochs=1,
                         learning_rate=1e-3, batch_size=4, device=torch.device("cpu"))


def test_out_of_memory_halves_the_prediction_batch_with_the_same_result():
    from hyperadapt.models.learning.inference import predict_windows

    windows = torch.rand(50, 12, 5, 5, generator=torch.Generator().manual_seed(1))
    model = _tiny_adapted_model()
    expected, expected_conf = predict_windows(model, windows, device=torch.device("cpu"),
                                              batch_size=64)
    sizes = _fail_batches_larger_than(model, 10)
    labels, confidence = predict_windows(model, windows, device=torch.device("cpu"),
                                         batch_size=64)
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_allclose(confidence, expected_conf, atol=1e-6)
    # 50 windows fail, then 25 and 12, and 6 at a time succeed.
    assert sizes[:4] == [50, 25, 12, 6] and sum(sizes[3:]) == 50


def test_classifying_reports_progress_within_a_tile_and_the_time_left(geotiff_run, tmp_path):
    from hyperadapt.models.learning.predict import _time_left

    raster, _, result, _ = geotiff_run
    heard = []
    # batch 4: one tile of 36 x 30 pixels is classified in chunks of 64 windows
    classify(str(raster.path), result.adapter_path, str(tmp_path / "c.tif"), batch_size=4,
             progress=lambda fraction, message: heard.append((fraction, message)))
    within = [f for f, m in heard if m.startswith("Classifying the raster") and 0 < f < 0.99]
    assert len(within) >= 10 and within == sorted(within)
    assert _time_left(5.0, 0.01) == ""                       # too early to say
    assert _time_left(30.0, 0.5) == " (under a minute left)"
    assert _time_left(600.0, 0.1) == " (about 1 h 30 min left)"
    assert _time_left(120.0, 0.5) == " (about 2 min left)"


def test_classifying_estimates_the_whole_time_from_the_first_windows(geotiff_run, tmp_path):
    from hyperadapt.models.learning.predict import _estimate

    raster, _, result, _ = geotiff_run
    heard = []
    classify(str(raster.path), result.adapter_path, str(tmp_path / "c.tif"), batch_size=4,
             progress=lambda fraction, message: heard.append((fraction, message)))
    estimates = [(f, m) for f, m in heard if m.startswith("Estimate:")]
    assert len(estimates) == 1
    fraction, message = estimates[0]
    # heard after the first chunk of 64 windows, long before the end
    assert 0 < fraction < 0.5 and heard.index(estimates[0]) < len(heard) // 2
    assert f"{raster.width} x {raster.height} pixels" in message
    # 100 of 10,000 pixels took 30 s: the whole raster takes 100 times that
    assert _estimate(30.0, 100, 100, 100).startswith("Estimate: about 50 min for the raster's "
                                                      "100 x 100 pixels, from the first 100")
    assert _estimate(36.0, 100, 1000, 100).startswith("Estimate: about 10 h 0 min")
    assert _estimate(0.1, 100, 100, 100).startswith("Estimate: under a minute")


def test_cpu_fine_tunes_and_classifies_in_bfloat16_only_where_it_computes_it(monkeypatch):
    from hyperadapt.models.learning import device as devices
    from hyperadapt.models.learning.inference import predict_probabilities
    from hyperadapt.models.learning.steps import Optimization
    from hyperadapt.models.learning.training import train_classifier

    cpu = torch.device("cpu")
    monkeypatch.setenv(devices.CPU_PRECISION_ENV, "auto")
    monkeypatch.setattr(devices, "cpu_computes_bf16", lambda: False)
    assert devices.autocast_dtype(cpu, cpu_bf16=True) is None
    monkeypatch.setattr(devices, "cpu_computes_bf16", lambda: True)
    assert devices.autocast_dtype(cpu, cpu_bf16=True) is torch.bfloat16
    assert devices.autocast_dtype(cpu) is None           # pretraining stays in float32 on a CPU
    model = _tiny_adapted_model()
    assert Optimization(model, learning_rate=1e-3, weight_decay=0.0, device=cpu,
                        cpu_bf16=True).dtype is torch.bfloat16
    # Fine-tuning asks for it with a ViT-Base-wide backbone only, unless it is forced.
    assert not devices.cpu_bf16_training(model)
    assert devices.cpu_bf16_training(spectralgpt_small(img_size=16, embed_dim=768, depth=1,
                                                      num_heads=12))
    monkeypatch.setenv(devices.CPU_PRECISION_ENV, "bf16")
    assert devices.cpu_bf16_training(model)
    monkeypatch.setenv(devices.CPU_PRECISION_ENV, "fp32")
    assert devices.autocast_dtype(cpu, cpu_bf16=True) is None

    windows = torch.rand(40, 12, 5, 5, generator=torch.Generator().manual_seed(3))
    model = _tiny_adapted_model()
    full = predict_probabilities(model, windows, device=cpu)
    monkeypatch.setenv(devices.CPU_PRECISION_ENV, "bf16")
    half = predict_probabilities(model, windows, device=cpu)
    assert np.abs(half - full).max() < 0.05 and not np.array_equal(half, full)

    labels = torch.arange(40) % 3
    losses = {}
    for precision in ("fp32", "bf16"):
        monkeypatch.setenv(devices.CPU_PRECISION_ENV, precision)
        outcome = train_classifier(_tiny_adapted_model(), windows, labels, None, None, epochs=3,
                                   learning_rate=1e-2, batch_size=8, device=cpu)
        losses[precision] = [record["loss"] for record in outcome.history]
    assert all(np.isfinite(losses["bf16"])) and losses["bf16"] != losses["fp32"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], abs=0.05)


def test_device_choice():
    from hyperadapt.models.learning.device import choose_device, describe_devices

    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert describe_devices()[0].startswith("CPU (")
    with pytest.raises(HyperAdaptError, match="The device 'tpu' is unknown"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(HyperAdaptError, match="A CUDA GPU was asked for"):
            choose_device("cuda")


def test_classifying_an_all_nodata_raster_is_an_error_and_leaves_no_file(geotiff_run, tmp_path):
    raster, _, result, _ = geotiff_run
    empty = make_test_raster(tmp_path / "empty.tif", all_nodata=True)
    output = tmp_path / "out" / "classes.tif"
    with pytest.raises(HyperAdaptError) as caught:
        classify(str(empty.path), result.adapter_path, str(output))
    assert str(caught.value) == "The raster empty.tif has no valid pixels: every pixel is nodata " \
                                "or masked."
    assert not output.parent.exists() or list(output.parent.iterdir()) == []


def test_two_random_start_jobs_in_two_threads_give_the_maps_they_give_alone(geotiff_run,
                                                                           tmp_path):
    import threading

    raster, layer, result, _ = geotiff_run
    second = tmp_path / "second.pt"
    fine_tune(str(raster.path), str(layer), "class", str(second),
              settings=tiny_settings(seed=7))
    alone = {}
    for name, adapter in (("first", result.adapter_path), ("second", str(second))):
        classify(str(raster.path), adapter, str(tmp_path / f"alone_{name}.tif"))
        alone[name] = read_band(tmp_path / f"alone_{name}.tif")
    errors, threads = [], []

    def run(name, adapter):
        try:
            for turn in range(3):
                classify(str(raster.path), adapter, str(tmp_path / f"{name}_{turn}.tif"))
        except Exception as error:          # collected: an exception in a thread is lost
            errors.append(error)

    for name, adapter in (("first", result.adapter_path), ("second", str(second))):
        threads.append(threading.Thread(target=run, args=(name, adapter)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for name in ("first", "second"):
        for turn in range(3):
            np.testing.assert_array_equal(read_band(tmp_path / f"{name}_{turn}.tif"),
                                          alone[name])


def test_an_empty_map_is_an_error_without_the_vote_too(geotiff_run, tmp_path):
    from hyperadapt.models.data.bands import BandAdaptation
    from hyperadapt.models.jobs import rebuild_model
    from hyperadapt.models.learning.predict import classify_raster

    _, _, result, _ = geotiff_run
    record = load_adapter_file(result.adapter_path)
    model, _ = rebuild_model(record)
    empty = make_test_raster(tmp_path / "empty.tif", all_nodata=True)
    output = tmp_path / "classes.tif"
    with RasterReader(read_raster_info(empty.path)) as reader:
        with pytest.raises(HyperAdaptError) as caught:
            classify_raster(reader=reader, model=model,
                            adaptation=BandAdaptation.from_state(record.band_adaptation),
                            classes=record.classes, output_path=output,
                            window_size=record.window_size, device=torch.device("cpu"))
    assert str(caught.value) == ("The raster empty.tif has no valid pixels: every pixel is "
                                 "nodata or masked.")
    assert list(tmp_path.iterdir()) == [empty.path]


def test_evaluate_refuses_a_reference_mostly_of_unknown_classes_unless_accepted(geotiff_run,
                                                                              tmp_path):
    from engine_data import write_raster

    raster, _, result, _ = geotiff_run
    labels = raster.labels.copy()
    labels[:, labels.shape[1] // 3:] = 7           # two thirds of the reference: a class 7
    labels[:5] = 9
    reference = write_raster(tmp_path / "other.tif", labels[None].astype(np.uint8),
                             geotransform=raster.geotransform, epsg=raster.epsg, nodata=0,
                             data_type=gdal.GDT_Byte)
    html, table = tmp_path / "report.html", tmp_path / "report.json"
    with pytest.raises(HyperAdaptError) as caught:
        evaluate(result.classification_path, str(reference), html_path=str(html),
                 json_path=str(table))
    # Every reference pixel counts, also where the classification has no data.
    unknown, labelled = labels > 3, labels > 0
    share = unknown.sum() / labelled.sum()
    assert str(caught.value) == (
        f"{100 * share:.0f} % of the reference pixels ({unknown.sum()} of {labelled.sum()}) "
        f"belong to classes the classification does not have: 7 ({(labels == 7).sum()} px), "
        f"9 ({(labels == 9).sum()} px); match the reference's codes or names to the "
        f"classification's, or accept a larger unmatched share (now 5 %).")
    assert not html.exists() and not table.exists()
    accepted = evaluate(result.classification_path, str(reference), max_unmatched_share=0.9)
    valid = valid_mask(raster.path)
    assert accepted["unmatched_reference_pixels"] == int(unknown.sum())
    assert accepted["unmatched_reference_share"] == pytest.approx(share)
    assert accepted["num_samples"] == int((valid & ~unknown).sum())


def test_evaluate_refuses_decimal_references_and_rasters_that_are_not_classifications(
        geotiff_run, tmp_path):
    from engine_data import write_raster

    raster, _, result, _ = geotiff_run
    decimal = write_raster(tmp_path / "decimal.tif",
                           (raster.labels[None] + 0.7).astype(np.float32),
                           geotransform=raster.geotransform, epsg=raster.epsg, nodata=0)
    with pytest.raises(HyperAdaptError, match=r"holds values that are not whole class values, "
                                              r"such as 1\.7"):
        evaluate(result.classification_path, str(decimal))
    with pytest.raises(HyperAdaptError) as caught:
        evaluate(str(raster.path), result.classification_path)
    assert str(caught.value) == ("scene.tif is not a classification: a classification has one "
                                 "band of whole class values from 1 to 255, as HyperAdapt writes "
                                 "them (it has 20 bands).")


def test_cross_validation_of_a_class_drawn_once_holds_it_out_and_says_so(tmp_path):
    """The last class has one polygon: the fold holding it out trains without the class, with
    the default class weights (sized by every class the model outputs)."""
    from osgeo import ogr

    from hyperadapt.models.jobs import cross_validate

    raster = make_test_raster(tmp_path / "scene.tif")
    features = []
    last = int(raster.labels.max())
    for k in range(1, last + 1):
        cols = np.flatnonzero(raster.labels[0] == k)
        for r0 in (1, 9, 17)[:1 if k == last else 3]:
            features.append((pixel_box_polygon(raster.geotransform, r0, cols.min() + 1, r0 + 5,
                                               cols.max()), f"class {k}"))
    layer = write_layer(tmp_path / "t.gpkg", features, field_name="class",
                        field_type=ogr.OFTString, epsg=raster.epsg, source_epsg=raster.epsg)
    metrics = cross_validate(str(raster.path), str(layer), "class", folds=3,
                             settings=tiny_settings(epochs=2))
    assert tiny_settings().resolved().class_weighting == "balanced"
    assert sum(f["pixels"] for f in metrics["folds"]) == metrics["num_samples"]
    assert any(f"'class {last}' cannot be learnt" in note for note in metrics["notes"])
    assert not any("class 1'" in note for note in metrics["notes"])


def test_cross_validation_by_polygon_pools_every_labelled_pixel(tmp_path):
    from hyperadapt.models.jobs import cross_validate

    raster = make_test_raster(tmp_path / "scene.tif")
    layer = make_polygons(tmp_path / "training.gpkg", raster)
    html, figures = tmp_path / "cv.html", tmp_path / "cv.json"
    metrics = cross_validate(str(raster.path), str(layer), "class", folds=3,
                             settings=tiny_settings(epochs=2), html_path=str(html),
                             json_path=str(figures))
    folds = metrics["folds"]
    assert [f["fold"] for f in folds] == [1, 2, 3]
    assert sum(f["pixels"] for f in folds) == metrics["num_samples"] == 450 - 9   # 9 on nodata
    assert all(0.0 <= f["overall_accuracy"] <= 1.0 for f in folds)
    assert html.exists() and "fold 1" in html.read_text() and figures.exists()
    with pytest.raises(HyperAdaptError, match=r"from 2 to 20 folds \(got 1\)"):
        cross_validate(str(raster.path), str(layer), "class", folds=1, settings=tiny_settings())
