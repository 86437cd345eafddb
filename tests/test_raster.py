"""Reading rasters: wavelengths from every place products keep them, scale/offset, nodata, masks, blocks."""
from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal

from engine_data import POTSDAM, enmap_potsdam_vrt, make_test_raster, write_raster
from hyperadapt.models.data.raster import (RasterReader, group_pixels_by_tile, iter_tiles,
                                           read_raster_info, sample_valid_pixels)
from hyperadapt.models.errors import HyperAdaptError

GT = (500000.0, 30.0, 0.0, 5800000.0, 0.0, -30.0)


def test_geotiff_band_metadata_gives_wavelengths_fwhm_bbl_and_nodata(tmp_path):
    bbl = [1] * 20
    bbl[3] = 0
    raster = make_test_raster(tmp_path / "r.tif", bbl=bbl)
    info = read_raster_info(raster.path)
    assert (info.width, info.height, info.band_count) == (36, 30, 20)
    assert info.geotransform == pytest.approx(raster.geotransform)
    assert "UTM zone 33N" in info.crs_wkt
    assert info.wavelengths_nm == pytest.approx(raster.wavelengths_nm, abs=1e-3)
    assert info.fwhm_nm == pytest.approx([12.0] * 20)
    assert info.good_bands == [b for b in range(20) if b != 3]
    assert info.nodata == [-9999.0] * 20


def test_envi_header_wavelengths_in_micrometres_become_nanometres(tmp_path):
    raster = make_test_raster(tmp_path / "r.img", driver="ENVI", bbl=[1, 0] * 10)
    assert (tmp_path / "r.hdr").exists()
    info = read_raster_info(raster.path)
    assert info.driver == "ENVI"
    assert info.wavelengths_nm == pytest.approx(raster.wavelengths_nm, abs=0.1)
    assert info.fwhm_nm == pytest.approx([12.0] * 20, abs=0.1)
    assert info.good_bands == list(range(0, 20, 2))


def test_imagery_domain_central_wavelength_is_read(tmp_path):
    path = write_raster(tmp_path / "i.tif", np.ones((3, 4, 4), np.float32), geotransform=GT)
    dataset = gdal.Open(str(path), gdal.GA_Update)
    for index, centre in enumerate((0.49, 0.56, 0.665)):
        band = dataset.GetRasterBand(index + 1)
        band.SetMetadataItem("CENTRAL_WAVELENGTH_UM", str(centre), "IMAGERY")
        band.SetMetadataItem("FWHM_UM", "0.03", "IMAGERY")
    dataset = None
    info = read_raster_info(path)
    assert info.wavelengths_nm == pytest.approx([490.0, 560.0, 665.0])
    assert info.fwhm_nm == pytest.approx([30.0] * 3)


def test_raster_without_wavelengths_has_none_and_a_generic_sensor(tmp_path):
    raster = make_test_raster(tmp_path / "plain.tif", with_wavelengths=False)
    info = read_raster_info(raster.path)
    assert info.wavelengths_nm is None and info.fwhm_nm is None
    assert info.sensor == "generic-20-bands"


def test_sensor_named_in_metadata_wins(tmp_path):
    path = write_raster(tmp_path / "s.tif", np.ones((2, 3, 3), np.float32), geotransform=GT)
    dataset = gdal.Open(str(path), gdal.GA_Update)
    dataset.SetMetadataItem("SENSOR", "MyCamera")
    dataset = None
    assert read_raster_info(path).sensor == "MyCamera"


def test_enmap_tile_and_vrt_mosaic_keep_wavelengths_scale_and_nodata(tmp_path):
    tile = read_raster_info(POTSDAM / "images" / "enmap_potsdam_tile_128_0.tif")
    assert tile.sensor == "EnMAP" and tile.band_count == 224
    assert tile.wavelengths_nm[0] == pytest.approx(418.24)
    assert 0 < len(tile.good_bands) < 224
    mosaic = read_raster_info(enmap_potsdam_vrt(tmp_path / "potsdam.vrt"))
    assert (mosaic.width, mosaic.height) == (160, 192)
    # BuildVRT drops band metadata; the source tiles still have it.
    assert mosaic.wavelengths_nm == pytest.approx(tile.wavelengths_nm)
    assert mosaic.good_bands == tile.good_bands
    assert mosaic.scales[0] == pytest.approx(1e-4) and mosaic.nodata[0] == -32768


def test_read_applies_scale_and_offset_and_masks_nodata(tmp_path):
    data = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    data[0, 1, 2] = -1  # nodata in one band only: the pixel is invalid
    data[1, 4, 5] = -1
    path = write_raster(tmp_path / "s.tif", data, geotransform=GT, nodata=-1, scale=0.5,
                        offset=10.0, data_type=gdal.GDT_Int16)
    with RasterReader(path) as reader:
        values, valid = reader.read(1, 1, 5, 4)
    assert values.dtype == np.float32 and values.shape == (2, 4, 5)
    assert values[1, 0, 0] == pytest.approx(data[1, 1, 1] * 0.5 + 10.0)
    expected = np.ones((4, 5), bool)
    expected[0, 1] = False
    expected[3, 4] = False
    np.testing.assert_array_equal(valid, expected)


def test_nan_nodata_and_dataset_mask_are_respected(tmp_path):
    data = np.ones((2, 4, 4), np.float32)
    data[:, 0, 0] = np.nan
    path = write_raster(tmp_path / "m.tif", data, geotransform=GT, nodata=float("nan"))
    with RasterReader(path) as reader:
        _, valid = reader.read(0, 0, 4, 4)
    assert not valid[0, 0] and valid.sum() == 15

    masked = tmp_path / "masked.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(str(masked), 4, 4, 2, gdal.GDT_Float32)
    dataset.SetGeoTransform(GT)
    dataset.CreateMaskBand(gdal.GMF_PER_DATASET)
    mask = np.full((4, 4), 255, np.uint8)
    mask[2, 3] = 0
    dataset.GetRasterBand(1).GetMaskBand().WriteArray(mask)
    dataset = None
    with RasterReader(masked) as reader:
        _, valid = reader.read(0, 0, 4, 4)
    assert not valid[2, 3] and valid.sum() == 15


def test_reads_pixels_tile_by_tile_and_samples_only_valid_pixels(tmp_path):
    raster = make_test_raster(tmp_path / "r.tif", width=50, height=40, nodata_box=(0, 0, 20, 25))
    rows = np.array([0, 39, 10, 25, 39])
    cols = np.array([0, 49, 30, 5, 0])
    with RasterReader(raster.path) as reader:
        spectra, valid = reader.read_pixels(rows, cols, tile=16)
        whole, whole_valid = reader.read(0, 0, 50, 40)
        sample = sample_valid_pixels(reader, max_pixels=300, seed=1, tile=16)
        again = sample_valid_pixels(reader, max_pixels=300, seed=1, tile=16)
    np.testing.assert_allclose(spectra, whole[:, rows, cols].T)
    np.testing.assert_array_equal(valid, whole_valid[rows, cols])
    assert valid.tolist() == [False, True, True, True, True]
    assert sample.shape == (300, 20)
    assert not np.isclose(sample, -9999.0).any()
    np.testing.assert_array_equal(sample, again)


def test_group_pixels_by_tile_and_iter_tiles_cover_everything():
    rows = np.array([0, 5, 17, 33, 33])
    cols = np.array([0, 20, 3, 40, 41])
    groups = list(group_pixels_by_tile(rows, cols, 16, 45, 34))
    indices = np.sort(np.concatenate([g for g, _ in groups]))
    np.testing.assert_array_equal(indices, np.arange(5))
    for index, (x, y, w, h) in groups:
        assert ((rows[index] >= y) & (rows[index] < y + h)).all()
        assert ((cols[index] >= x) & (cols[index] < x + w)).all()
    tiles = list(iter_tiles(45, 34, 16))
    assert sum(w * h for _, _, w, h in tiles) == 45 * 34


def test_all_nodata_raster_is_refused_with_a_sentence(tmp_path):
    raster = make_test_raster(tmp_path / "empty.tif", all_nodata=True)
    with RasterReader(raster.path) as reader, pytest.raises(HyperAdaptError) as caught:
        sample_valid_pixels(reader, max_pixels=100)
    assert str(caught.value) == ("The raster empty.tif has no valid pixels: every pixel is "
                                 "nodata or masked.")


def test_missing_or_unreadable_raster_is_a_sentence(tmp_path):
    with pytest.raises(HyperAdaptError, match="does not exist"):
        read_raster_info(tmp_path / "nothing.tif")
    (tmp_path / "junk.tif").write_text("not a raster")
    with pytest.raises(HyperAdaptError, match="cannot read junk.tif"):
        read_raster_info(tmp_path / "junk.tif")
