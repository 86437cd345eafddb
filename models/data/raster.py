"""Reading rasters through GDAL in blocks: scale and offset applied, nodata and masks respected.

Any format GDAL reads works (GeoTIFF, ENVI with its .hdr, VRT mosaics). Band centre wavelengths
come from wherever the product keeps them: GDAL band metadata ``wavelength``/``wavelength_units``
(as EnMAP L2A GeoTIFFs and GDAL's ENVI driver give them), the ENVI header (``wavelength``,
``fwhm``, ``bbl`` in the ENVI metadata domain), or the IMAGERY domain's ``CENTRAL_WAVELENGTH_UM``
and ``FWHM_UM``. Bands flagged bad (``bbl`` = 0) are left out of ``good_bands``.

The module is longer than this project's usually are (about 480 lines): the spectral metadata's
many homes and ``RasterReader`` (blocks, scale and offset, nodata and mask bands) are one
concern, reading a raster right, and every other room reads rasters only through them.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field

import numpy as np
from osgeo import gdal, osr

from ..errors import HyperAdaptError, raise_if_cancelled

gdal.UseExceptions()
osr.UseExceptions()

# Reads are sized so that one block of float32 data stays near this many bytes.
DEFAULT_BLOCK_BYTES = 64 * 2**20

_UNIT_TO_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometers": 1.0, "nanometre": 1.0, "nanometres": 1.0,
    "um": 1000.0, "µm": 1000.0, "μm": 1000.0, "micrometer": 1000.0, "micrometers": 1000.0,
    "micrometre": 1000.0, "micrometres": 1000.0, "micron": 1000.0, "microns": 1000.0,
    "mm": 1e6, "millimeter": 1e6, "millimeters": 1e6,
}


@dataclass
class RasterInfo:
    """What the engine needs to know about a raster, read once from its metadata."""

    path: str
    width: int
    height: int
    band_count: int
    geotransform: tuple[float, ...]
    crs_wkt: str
    wavelengths_nm: list[float] | None
    fwhm_nm: list[float] | None
    good_bands: list[int]                 # 0-based indices of bands not flagged bad (bbl)
    nodata: list[float | None]
    sensor: str
    scales: list[float] = field(default_factory=list)
    offsets: list[float] = field(default_factory=list)
    block_size: tuple[int, int] = (256, 256)
    driver: str = ""

    @property
    def pixel_count(self) -> int:
        return self.width * self.height

    def to_dict(self) -> dict:
        return asdict(self)


def open_raster(path) -> gdal.Dataset:
    """Open a raster read-only; a HyperAdaptError when it does not exist or GDAL cannot read it."""
    path = str(path)
    if not path:
        raise HyperAdaptError("No raster was given.")
    try:
        dataset = gdal.Open(path, gdal.GA_ReadOnly)
    except RuntimeError as error:
        if not os.path.exists(path):
            raise HyperAdaptError(f"The raster {path} does not exist.") from error
        raise HyperAdaptError(f"GDAL cannot read {os.path.basename(path)} as a raster.") from error
    if dataset is None or dataset.RasterCount == 0:
        raise HyperAdaptError(f"{os.path.basename(path)} holds no raster bands.")
    return dataset


def _parse_list(text: str | None) -> list[str]:
    if not text:
        return []
    return [item.strip() for item in text.strip().strip("{}").split(",") if item.strip()]


def _to_float(text) -> float | None:
    try:
        value = float(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _unit_factor(units: str | None, values: list[float]) -> float:
    """Nanometres per unit; without units, values below 30 are taken as micrometres."""
    if units:
        key = units.strip().lower()
        if key in _UNIT_TO_NM:
            return _UNIT_TO_NM[key]
    return 1000.0 if values and max(values) < 30.0 else 1.0


def _band_metadata(band: gdal.Band) -> dict[str, str]:
    return {key.lower(): value for key, value in (band.GetMetadata() or {}).items()}


def _read_spectral_metadata(dataset: gdal.Dataset):
    """(wavelengths_nm, fwhm_nm, bbl) from band metadata, the ENVI header or the IMAGERY domain."""
    count = dataset.RasterCount
    per_band = [_band_metadata(dataset.GetRasterBand(i + 1)) for i in range(count)]
    envi = {key.lower(): value for key, value in (dataset.GetMetadata("ENVI") or {}).items()}
    default = {key.lower(): value for key, value in (dataset.GetMetadata() or {}).items()}

    wavelengths = fwhm = None
    units = None
    band_waves = [_to_float(meta.get("wavelength")) for meta in per_band]
    if all(value is not None for value in band_waves):
        wavelengths = band_waves
        units = per_band[0].get("wavelength_units") or default.get("wavelength_units")
        band_fwhm = [_to_float(meta.get("fwhm")) for meta in per_band]
        if all(value is not None for value in band_fwhm):
            fwhm = band_fwhm
    if wavelengths is None:
        for source in (envi, default):
            listed = [_to_float(value) for value in _parse_list(source.get("wavelength"))]
            if len(listed) == count and all(value is not None for value in listed):
                wavelengths = listed
                units = source.get("wavelength_units") or envi.get("wavelength_units")
                listed_fwhm = [_to_float(value) for value in _parse_list(source.get("fwhm"))]
                if len(listed_fwhm) == count and all(v is not None for v in listed_fwhm):
                    fwhm = listed_fwhm
                break
    if wavelengths is None:
        imagery = [dataset.GetRasterBand(i + 1).GetMetadata("IMAGERY") or {} for i in range(count)]
        centres = [_to_float(meta.get("CENTRAL_WAVELENGTH_UM")) for meta in imagery]
        if all(value is not None for value in centres):
            wavelengths = [value * 1000.0 for value in centres]
            widths = [_to_float(meta.get("FWHM_UM")) for meta in imagery]
            if all(value is not None for value in widths):
                fwhm = [value * 1000.0 for value in widths]
            units = "nm"
    if wavelengths is not None and fwhm is None:
        for source in (envi, default):
            listed = [_to_float(value) for value in _parse_list(source.get("fwhm"))]
            if len(listed) == count and all(value is not None for value in listed):
                fwhm = listed
                break
    if wavelengths is not None:
        factor = _unit_factor(units, wavelengths)
        wavelengths = [value * factor for value in wavelengths]
        if fwhm is not None:
            fwhm = [value * factor for value in fwhm]

    bbl = [_to_float(meta.get("bbl")) for meta in per_band]
    if not all(value is not None for value in bbl):
        listed = [_to_float(value) for value in _parse_list(envi.get("bbl") or default.get("bbl"))]
        bbl = listed if len(listed) == count and all(v is not None for v in listed) else None
    return wavelengths, fwhm, bbl


def _vrt_source_spectral_metadata(dataset: gdal.Dataset):
    """A VRT mosaic (gdal.BuildVRT) drops band metadata; its first source file still has it."""
    files = dataset.GetFileList() or []
    for source in files[1:]:
        try:
            source_ds = gdal.Open(source, gdal.GA_ReadOnly)
        except RuntimeError:
            continue
        if source_ds is not None and source_ds.RasterCount == dataset.RasterCount:
            return _read_spectral_metadata(source_ds)
        return None, None, None
    return None, None, None


_SENSOR_KEYS = ("sensor", "sensor_type", "sensor_name", "instrument", "satellite", "mission",
                "platform", "satelliteid")
_KNOWN_SENSORS = (("ENMAP", "EnMAP"), ("PRISMA", "PRISMA"), ("PRS_L", "PRISMA"),
                  ("DESIS", "DESIS"), ("AVIRIS", "AVIRIS"), ("HYSPEX", "HySpex"),
                  ("HYPERION", "Hyperion"), ("EMIT", "EMIT"))


def _known_sensor(text: str) -> str | None:
    text = text.upper()
    for token, name in _KNOWN_SENSORS:
        if re.search(rf"(^|[^A-Z]){token}", text):
            return name
    return None


def guess_sensor(path: str, band_count: int, wavelengths_nm: list[float] | None,
                 metadata: dict[str, str] | None = None) -> str:
    """A sensor name for the adapter library.

    A sensor named in the metadata wins (known sensors get their usual spelling); then a known
    sensor in the file name; then the band layout (EnMAP, AVIRIS, PRISMA, DESIS); else
    "generic-<bands>-bands".
    """
    for key, value in (metadata or {}).items():
        if key.lower() in _SENSOR_KEYS and str(value).strip():
            return _known_sensor(str(value)) or str(value).strip()
    known = _known_sensor(os.path.basename(path))
    if known:
        return known
    if wavelengths_nm:
        first, last = min(wavelengths_nm), max(wavelengths_nm)
        if band_count in (224, 218, 242) and 415 <= first <= 425 and last > 2400:
            return "EnMAP"
        if band_count in (200, 220, 224) and 360 <= first <= 410 and last > 2400:
            return "AVIRIS"
        if 230 <= band_count <= 240 and 395 <= first <= 410 and last > 2400:
            return "PRISMA"
        if band_count == 235 and last < 1050:
            return "DESIS"
    return f"generic-{band_count}-bands"


def _block_size_for(dataset: gdal.Dataset) -> tuple[int, int]:
    block = dataset.GetRasterBand(1).GetBlockSize()
    return int(block[0]), int(block[1])


def read_raster_info(path) -> RasterInfo:
    """Read a raster's grid, CRS, nodata, scale/offset, wavelengths and bad-band flags."""
    dataset = open_raster(path)
    count = dataset.RasterCount
    wavelengths, fwhm, bbl = _read_spectral_metadata(dataset)
    driver = dataset.GetDriver().ShortName
    if wavelengths is None and driver == "VRT":
        wavelengths, fwhm, source_bbl = _vrt_source_spectral_metadata(dataset)
        bbl = bbl or source_bbl
    if bbl is not None:
        good = [index for index, flag in enumerate(bbl) if flag != 0]
    else:
        good = list(range(count))
    nodata, scales, offsets = [], [], []
    for index in range(count):
        band = dataset.GetRasterBand(index + 1)
        nodata.append(band.GetNoDataValue())
        scales.append(float(band.GetScale() or 1.0))
        offsets.append(float(band.GetOffset() or 0.0))
    metadata = {**(dataset.GetMetadata("ENVI") or {}), **(dataset.GetMetadata() or {})}
    return RasterInfo(
        path=str(path), width=dataset.RasterXSize, height=dataset.RasterYSize, band_count=count,
        geotransform=tuple(float(v) for v in dataset.GetGeoTransform()),
        crs_wkt=dataset.GetProjection() or "", wavelengths_nm=wavelengths, fwhm_nm=fwhm,
        good_bands=good, nodata=nodata,
        sensor=guess_sensor(str(path), count, wavelengths, metadata),
        scales=scales, offsets=offsets, block_size=_block_size_for(dataset), driver=driver)


def tile_side_for(num_bands: int, *, block_bytes: int = DEFAULT_BLOCK_BYTES, halo: int = 0,
                  minimum: int = 16, maximum: int = 1024) -> int:
    """Side of a square tile whose float32 data for ``num_bands`` bands stays near ``block_bytes``."""
    side = int(math.sqrt(block_bytes / (4.0 * max(num_bands, 1)))) - 2 * halo
    return max(minimum, min(maximum, side))


def iter_tiles(width: int, height: int, tile_width: int, tile_height: int | None = None):
    """(x, y, w, h) tiles covering a width x height grid row by row."""
    tile_height = tile_height or tile_width
    for y in range(0, height, tile_height):
        for x in range(0, width, tile_width):
            yield x, y, min(tile_width, width - x), min(tile_height, height - y)


class RasterReader:
    """Reads windows of a raster as float32 (scale and offset applied) with a validity mask.

    A pixel is valid when every band read is valid there: not nodata, not masked by the band's
    mask (or the dataset's), and finite after scaling. Use as a context manager or call close().
    """

    def __init__(self, info: RasterInfo | str):
        """Args:
            info: a RasterInfo (from read_raster_info) or the raster's path.
        """
        self.info = info if isinstance(info, RasterInfo) else read_raster_info(info)
        self.dataset = open_raster(self.info.path)
        self._mask_kind = []
        for index in range(self.info.band_count):
            flags = self.dataset.GetRasterBand(index + 1).GetMaskFlags()
            if flags & gdal.GMF_ALL_VALID:
                kind = "all"
            elif flags & gdal.GMF_NODATA:
                kind = "nodata"
            elif flags & gdal.GMF_PER_DATASET:
                kind = "dataset"
            else:
                kind = "band"
            self._mask_kind.append(kind)

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.dataset = None

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    def release_cache(self) -> None:
        """Drop the blocks GDAL cached for this raster.

        GDAL's block cache (5 % of RAM by default) would otherwise fill with every block read, so
        memory would grow with the raster however small the tiles are.
        """
        self.dataset.FlushCache()

    def read(self, x: int, y: int, width: int, height: int,
             bands: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(data float32 (bands, height, width), valid bool (height, width)) of a window inside the raster.

        Args:
            x, y: top-left pixel of the window.
            width, height: window size in pixels.
            bands: 0-based band indices to read; the good bands by default.
        """
        bands = list(self.info.good_bands if bands is None else bands)
        if not bands:
            raise HyperAdaptError("Every band of the raster is flagged as bad (bbl), so there is "
                                  "nothing to read.")
        raw = self.dataset.ReadAsArray(int(x), int(y), int(width), int(height),
                                       band_list=[b + 1 for b in bands])
        raw = raw.reshape(len(bands), int(height), int(width))
        valid = np.ones((int(height), int(width)), dtype=bool)
        nodata_bands = [i for i, b in enumerate(bands)
                        if self._mask_kind[b] == "nodata" and self.info.nodata[b] is not None]
        by_value: dict[float, list[int]] = {}
        for i in nodata_bands:
            value = float(self.info.nodata[bands[i]])
            by_value.setdefault(value if not math.isnan(value) else math.nan, []).append(i)
        for value, members in by_value.items():
            # Bands sharing a nodata value (the usual case: all of them) are compared at once,
            # in the data type, without copying the block.
            subset = raw if len(members) == len(bands) else raw[members]
            if math.isnan(value):
                if np.issubdtype(raw.dtype, np.floating):
                    valid &= ~np.isnan(subset).any(axis=0)
                continue
            cast = np.array(value).astype(raw.dtype)
            if float(cast) == value:   # a value the data type cannot hold matches no pixel
                valid &= ~(subset == cast).any(axis=0)
        dataset_mask_read = False
        for band in bands:
            kind = self._mask_kind[band]
            if kind == "band" or (kind == "dataset" and not dataset_mask_read):
                mask = self.dataset.GetRasterBand(band + 1).GetMaskBand()
                valid &= mask.ReadAsArray(int(x), int(y), int(width), int(height)) > 0
                dataset_mask_read = dataset_mask_read or kind == "dataset"
        data = raw.astype(np.float32, copy=False)
        scales = np.array([self.info.scales[b] for b in bands], dtype=np.float32)
        offsets = np.array([self.info.offsets[b] for b in bands], dtype=np.float32)
        if np.any(scales != 1.0) or np.any(offsets != 0.0):
            # ``raw`` is this call's own array, so scaling in place is safe.
            data *= scales[:, None, None]
            data += offsets[:, None, None]
        valid &= np.isfinite(data).all(axis=0)
        return data, valid

    def _tiles_at(self, rows, cols, bands: list[int], tile: int | None, cancel):
        """(index, data, mask, r, c) per tile holding some of the pixels: their positions in
        ``rows``/``cols``, the tile's read, and their rows and columns inside it."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        tile = tile or tile_side_for(len(bands))
        for index, (tx, ty, tw, th) in group_pixels_by_tile(rows, cols, tile, self.width,
                                                              self.height):
            raise_if_cancelled(cancel)
            data, mask = self.read(tx, ty, tw, th, bands)
            yield index, data, mask, rows[index] - ty, cols[index] - tx

    def read_pixels(self, rows: np.ndarray, cols: np.ndarray, bands: list[int] | None = None,
                    *, tile: int | None = None, cancel=None) -> tuple[np.ndarray, np.ndarray]:
        """Spectra (N, bands) and validity (N,) at the given pixels, reading only the tiles that hold them."""
        bands = list(self.info.good_bands if bands is None else bands)
        spectra = np.zeros((len(rows), len(bands)), dtype=np.float32)
        valid = np.zeros(len(rows), dtype=bool)
        for index, data, mask, r, c in self._tiles_at(rows, cols, bands, tile, cancel):
            spectra[index] = data[:, r, c].T
            valid[index] = mask[r, c]
        return spectra, valid

    def valid_at(self, rows: np.ndarray, cols: np.ndarray, bands: list[int] | None = None,
                 *, tile: int | None = None, cancel=None) -> np.ndarray:
        """Validity (N,) of the given pixels, reading only the tiles that hold them."""
        bands = list(self.info.good_bands if bands is None else bands)
        valid = np.zeros(len(rows), dtype=bool)
        for index, _, mask, r, c in self._tiles_at(rows, cols, bands, tile, cancel):
            valid[index] = mask[r, c]
        return valid


def group_pixels_by_tile(rows: np.ndarray, cols: np.ndarray, tile: int, width: int, height: int):
    """Yield (pixel indices, (x, y, w, h)) for each tile of side ``tile`` that holds any of the pixels."""
    tiles_x = (width + tile - 1) // tile
    keys = (rows // tile) * tiles_x + cols // tile
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts, ends):
        key = int(sorted_keys[start])
        ty, tx = divmod(key, tiles_x)
        x, y = tx * tile, ty * tile
        yield order[start:end], (x, y, min(tile, width - x), min(tile, height - y))


def sample_valid_pixels(reader: RasterReader, *, max_pixels: int = 20000, seed: int = 0,
                        bands: list[int] | None = None, tile: int = 128, cancel=None) -> np.ndarray:
    """Up to ``max_pixels`` valid spectra (N, bands) drawn from random tiles across the raster.

    Only as many tiles are read as needed to collect about four times ``max_pixels`` pixels, so
    the cost does not grow with the raster's size. A HyperAdaptError when no pixel is valid.
    """
    rng = np.random.default_rng(seed)
    collected = _from_random_tiles(reader, bands, rng, tile, max_pixels, cancel,
                                   lambda data, valid: [data[:, valid].T])
    if not collected:
        raise HyperAdaptError(f"The raster {os.path.basename(reader.info.path)} has no valid "
                              f"pixels: every pixel is nodata or masked.")
    return _subsample(np.concatenate(collected, axis=0), max_pixels, rng)


def sample_neighbour_differences(reader: RasterReader, *, max_pairs: int = 20000, seed: int = 0,
                                 bands: list[int] | None = None, tile: int = 128,
                                 cancel=None) -> np.ndarray:
    """Up to ``max_pairs`` differences (N, bands) between horizontally or vertically neighbouring
    valid pixels, from random tiles across the raster: the noise estimate of the MNF.

    A HyperAdaptError when no two neighbouring pixels are valid.
    """
    def neighbour_differences(data, valid):
        across = valid[:, 1:] & valid[:, :-1]
        down = valid[1:, :] & valid[:-1, :]
        return [(data[:, :, 1:] - data[:, :, :-1])[:, across].T,
                (data[:, 1:, :] - data[:, :-1, :])[:, down].T]

    rng = np.random.default_rng([seed, 2])
    collected = _from_random_tiles(reader, bands, rng, tile, max_pairs, cancel,
                                   neighbour_differences)
    if not collected:
        raise HyperAdaptError(f"The raster {os.path.basename(reader.info.path)} has no two "
                              f"neighbouring valid pixels to estimate its noise from.")
    return _subsample(np.concatenate(collected, axis=0), max_pairs, rng)


def _from_random_tiles(reader: RasterReader, bands, rng, tile: int, wanted: int, cancel,
                       take) -> list[np.ndarray]:
    """The non-empty row arrays ``take(data, valid)`` gives for tiles in random order, until
    about four times ``wanted`` rows: the cost does not grow with the raster."""
    bands = list(reader.info.good_bands if bands is None else bands)
    tiles = list(iter_tiles(reader.width, reader.height, tile))
    collected, seen = [], 0
    for position in rng.permutation(len(tiles)):
        raise_if_cancelled(cancel)
        x, y, w, h = tiles[position]
        data, valid = reader.read(x, y, w, h, bands)
        for rows in take(data, valid):
            if len(rows):
                collected.append(rows)
                seen += len(rows)
        if seen >= 4 * wanted:
            break
    return collected


def _subsample(rows: np.ndarray, most: int, rng) -> np.ndarray:
    if len(rows) > most:
        rows = rows[np.sort(rng.choice(len(rows), size=most, replace=False))]
    return rows
