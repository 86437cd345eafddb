"""Peak resident memory while classifying ever larger rasters: it must not grow with the raster.

Synthetic 200-band Int16 rasters of 0.25, 1 and 4 million pixels (linear mixtures of a few smooth
spectra plus noise, written block by block with GDAL, so writing them is memory-bounded too) are
classified by ``models.jobs.classify`` with an adapter fine-tuned on the tiny backbone (so the run
finishes on a CPU; the tiling, band adaptation, window cutting and writing are the product's). Each
raster is classified in a fresh subprocess; its peak resident set size is the kernel's high-water
mark of that process (``VmHWM``; ``ru_maxrss`` is not used, because Linux carries the parent's peak
into it across fork and exec), checked by the parent polling the child's RSS every 0.2 s. The child
also samples its own resident memory and GDAL's block cache as each tile and each chunk of a tile
finishes, which shows whether memory stays flat from tile to tile.

When a full run of the largest raster would take longer than ``--max-minutes`` (estimated from
the speed of the smallest), it is classified only for its first tiles and then cancelled; the
report says so and the per-tile curve shows whether memory is flat by then.

    python -m bench.memory [--quick] [--megapixels 0.25 1 4] [--max-minutes 20]

Writes bench/results/memory.json, memory.md and memory.png.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .common import (RESULTS, current_rss_bytes, log, machine_info, markdown_table, peak_rss_bytes,
                     proc_memory_bytes, publish, pyplot, run_in_work_folder, save_figure,
                     set_threads, write_markdown, write_point_layer)

if TYPE_CHECKING:                      # numpy is imported where the work starts
    import numpy as np

NUM_BANDS = 200
NUM_ENDMEMBERS = 5
MIB = 2 ** 20
POLL_S = 0.2
LABEL_SQUARE = 9       # pixels averaged to label a training point
TIMELINE_POINTS = 200  # samples of each run's memory curve kept in the report


# -- synthetic rasters ----------------------------------------------------------------------------
def endmember_spectra(num_bands: int, rng) -> np.ndarray:
    """(NUM_ENDMEMBERS, bands) smooth reflectance-like curves in 0..6000 (Int16 scaled)."""
    import numpy as np

    x = np.linspace(0.0, 1.0, num_bands)
    curves = []
    for _ in range(NUM_ENDMEMBERS):
        centres = rng.uniform(0, 1, 3)
        widths = rng.uniform(0.05, 0.3, 3)
        heights = rng.uniform(500, 2500, 3)
        curve = 800 + sum(h * np.exp(-0.5 * ((x - c) / w) ** 2)
                          for c, w, h in zip(centres, widths, heights))
        curves.append(curve)
    return np.asarray(curves, dtype=np.float32)


def write_synthetic_raster(path: Path, side: int, *, seed: int = 0,
                           rows_per_block: int = 64) -> Path:
    """A side x side x 200 Int16 GeoTIFF (tiled, pixel-interleaved), written in row blocks.

    Abundances vary smoothly across the scene (a few sine waves), so neighbouring pixels look
    alike as in a real scene and the classes form patches.
    """
    import numpy as np
    from osgeo import gdal, osr

    gdal.UseExceptions()
    rng = np.random.default_rng(seed)
    spectra = endmember_spectra(NUM_BANDS, rng)
    frequencies = rng.uniform(2, 12, (NUM_ENDMEMBERS, 2)) * 2 * math.pi / side
    phases = rng.uniform(0, 2 * math.pi, (NUM_ENDMEMBERS, 2))
    temp = path.with_name(path.name + ".part")
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(temp), side, side, NUM_BANDS, gdal.GDT_Int16,
        options=["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "INTERLEAVE=PIXEL",
                 "BIGTIFF=IF_SAFER"])
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    dataset.SetProjection(srs.ExportToWkt())
    dataset.SetGeoTransform((360000.0, 30.0, 0.0, 5800000.0, 0.0, -30.0))
    cols = np.arange(side, dtype=np.float32)
    for y in range(0, side, rows_per_block):
        height = min(rows_per_block, side - y)
        rows = np.arange(y, y + height, dtype=np.float32)
        logits = np.stack([np.sin(f[0] * rows[:, None] + p[0]) + np.sin(f[1] * cols[None, :] + p[1])
                           for f, p in zip(frequencies, phases)])          # (E, h, w)
        abundance = np.exp(3.0 * logits)
        abundance /= abundance.sum(axis=0, keepdims=True)
        block = np.einsum("ehw,eb->bhw", abundance, spectra)
        block += rng.normal(0.0, 40.0, block.shape).astype(np.float32)
        dataset.WriteArray(np.clip(block, 0, 32767).astype(np.int16), 0, y)
    dataset.FlushCache()
    dataset = None
    os.replace(temp, path)
    return path


def write_training_points(path: Path, raster: Path, *, num_classes: int = 4, per_class: int = 15,
                          seed: int = 0) -> Path:
    """Points labelled by brightness, for a throwaway adapter (its accuracy is not the point)."""
    import numpy as np
    from osgeo import gdal

    dataset = gdal.Open(str(raster))
    side = dataset.RasterXSize
    rng = np.random.default_rng(seed)
    half = LABEL_SQUARE // 2
    rows, cols = rng.integers(half, side - half, (2, num_classes * per_class))
    # Classes by the brightness rank of the square around each point: cheap, separable enough to
    # train on, and following the scene's patches as land cover does, so that the spectral
    # classifier sees the neighbourhood's mean (the path whose reads are measured).
    brightness = np.array([dataset.ReadAsArray(int(c) - half, int(r) - half, LABEL_SQUARE,
                                               LABEL_SQUARE).astype(np.float32).mean()
                           for r, c in zip(rows, cols)])
    ranks = np.argsort(np.argsort(brightness))
    return write_point_layer(path, raster, rows, cols, 1 + ranks * num_classes // len(ranks))


def make_tiny_adapter(raster: Path, work: Path, *, seed: int = 0) -> dict:
    """An adapter on the tiny random-start backbone, through ``models.jobs.fine_tune``."""
    from hyperadapt.models.jobs import FineTuneSettings, fine_tune
    from hyperadapt.models.network.backbones import BACKBONE_PRESETS
    from hyperadapt.models.stores.adapter_file import load_adapter_file

    tiny = BACKBONE_PRESETS["tiny"]
    adapter = work / "tiny_adapter.pt"
    settings = FineTuneSettings(method="krona_plus", backbone="tiny", random_start=True,
                                preset="fast", epochs=2, val_fraction=0.0, seed=seed,
                                device="cpu", fit_pixels=5000)
    about = {"path": str(adapter),
             "backbone": (f"tiny (SpectralGPT code, embed_dim {tiny['embed_dim']}, depth "
                          f"{tiny['depth']}), random start"),
             "window_size": settings.window_size, "input_size": 16}
    if adapter.exists():
        # Measurements kept in the work folder were made with this adapter.
        found = {"bytes": adapter.stat().st_size, "seconds": None}
    else:
        points = write_training_points(work / "training.gpkg", raster, seed=seed)
        result = fine_tune(str(raster), str(points), "class_id", str(adapter),
                           settings=settings, layer_name="training")
        found = {"bytes": result.adapter_bytes, "seconds": result.seconds}
    kernel = load_adapter_file(str(adapter)).spectral_kernel
    return {**about, **found, "spectral": kernel.describe() if kernel is not None else "off"}


# -- the measured child ---------------------------------------------------------------------------
def run_child(args) -> None:
    """Classify one raster and write what memory did to ``args.child_json``."""
    set_threads(args.threads)
    from osgeo import gdal

    from hyperadapt.models.errors import JobCancelled
    from hyperadapt.models.jobs import classify

    import_rss = current_rss_bytes()

    started = time.perf_counter()
    timeline = [{"tiles": 0, "fraction": 0.0, "seconds": 0.0, "rss_bytes": current_rss_bytes()}]
    total_tiles = tile_count(gdal.Open(args.child_raster).RasterXSize, args.child_adapter,
                             args.mode)
    tiles_done = [0.0]

    def progress(fraction, message):
        # Sampled as each tile and each chunk of a tile finishes ("Classifying the raster",
        # past the first estimate followed by the time left).
        if message.startswith("Classifying the raster"):
            tiles_done[0] = fraction * total_tiles
            timeline.append({"tiles": round(tiles_done[0], 3), "fraction": float(fraction),
                             "seconds": time.perf_counter() - started,
                             "rss_bytes": current_rss_bytes(),
                             "gdal_cache_bytes": int(gdal.GetCacheUsed())})
            if len(timeline) % 32 == 0:
                print(f"  tile {tiles_done[0]:.1f} of {total_tiles} ({100 * fraction:.0f} %), "
                      f"{current_rss_bytes() / MIB:.0f} MiB", flush=True)

    def cancel():
        return bool(args.max_tiles) and tiles_done[0] >= args.max_tiles

    completed = True
    try:
        classify(args.child_raster, args.child_adapter, args.child_output, device="cpu",
                 batch_size=args.batch_size, mode=args.mode, progress=progress, cancel=cancel)
    except JobCancelled:
        completed = False
    report = {"completed": completed, "tiles_done": int(round(tiles_done[0])),
              "gdal_cache_max_bytes": int(gdal.GetCacheMax()),
              "fraction_done": timeline[-1]["fraction"],
              "seconds": time.perf_counter() - started, "rss_after_imports_bytes": import_rss,
              "peak_rss_self_bytes": peak_rss_bytes(), "timeline": timeline}
    Path(args.child_json).write_text(json.dumps(report))


def measure(raster: Path, adapter: str, work: Path, args, *, cache: str,
            max_tiles: int | None) -> dict:
    """Run the child on one raster with GDAL's block cache at ``cache`` MB ("default": GDAL's own
    default, 5 % of the RAM); a result kept in the work folder from an earlier run is reused."""
    child_json = work / f"{raster.stem}_cache-{cache}_{args.mode}_memory.json"
    if child_json.exists():
        log("  (reusing the measurement kept in the work folder)")
        return json.loads(child_json.read_text())
    command = [sys.executable, "-m", "bench.memory", "--child-raster", str(raster),
               "--child-adapter", adapter,
               "--child-output", str(work / f"{raster.stem}_classes.tif"),
               "--child-json", str(child_json), "--threads", str(args.threads),
               "--batch-size", str(args.batch_size), "--mode", args.mode]
    if max_tiles:
        command += ["--max-tiles", str(max_tiles)]
    env = dict(os.environ)
    env.pop("GDAL_CACHEMAX", None)
    if cache != "default":
        env["GDAL_CACHEMAX"] = str(int(cache))
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], env=env)
    # The parent's own sampling of the child's RSS: a check on the child's report.
    polled = 0
    while process.poll() is None:
        polled = max(polled, proc_memory_bytes("VmRSS", process.pid))
        time.sleep(POLL_S)
    if process.returncode != 0:
        raise RuntimeError(f"classifying {raster.name} failed (exit {process.returncode})")
    found = json.loads(child_json.read_text())
    found["peak_rss_bytes"] = found["peak_rss_self_bytes"]
    found["peak_rss_polled_bytes"] = polled
    child_json.write_text(json.dumps(found))
    return found


# -- report ---------------------------------------------------------------------------------------
def write_report(report: dict, out: Path) -> None:
    rows = []
    for entry in report["sizes"]:
        cache = entry.get("gdal_cache", "default")
        done = "full raster" if entry["completed"] else (
            f"first {entry['tiles_done']} of {entry['tiles_total']} tiles")
        rows.append([cache if cache == "default" else f"{cache} MB",
                     f"{entry['megapixels']:g} ({entry['side']} x {entry['side']})",
                     f"{entry['file_bytes'] / MIB:.0f} MiB", done,
                     f"{entry['seconds']:.0f}", f"{entry['pixels_per_s']:.0f}",
                     f"{entry['rss_after_imports_bytes'] / MIB:.0f}",
                     f"{entry['peak_rss_bytes'] / MIB:.0f}",
                     f"{entry['peak_rss_polled_bytes'] / MIB:.0f}",
                     f"{entry['late_tile_rss_spread_bytes'] / MIB:.0f}"])
    machine = report["machine"]
    lines = [
        "# Peak memory while classifying",
        "",
        f"`models.jobs.classify` in {report.get('mode', 'window')} mode on synthetic "
        f"{NUM_BANDS}-band Int16 rasters (uncompressed, tiled "
        f"256 x 256), one fresh process per raster, CPU, {report['threads']} threads, batch "
        f"{report['batch_size']}. Adapter: KronA+ on {report['adapter']['backbone']}, window "
        f"{report['adapter']['window_size']}, input {report['adapter']['input_size']} "
        f"({report['adapter']['bytes'] / 1e3:.0f} kB); its spectral classifier: "
        f"{report['adapter'].get('spectral', 'not recorded')}. Peak RSS is the child's own "
        f"high-water mark (`VmHWM`), checked by the parent polling its RSS every {POLL_S:g} s; "
        f"the child also samples its RSS as each tile and each chunk of a tile finishes. "
        f"Machine: {machine['device']}, {machine['cores']} cores, torch {machine['torch']}.",
        "",
        *markdown_table(["GDAL cache", "Megapixels", "File", "Classified", "Seconds", "Pixels/s",
                         "RSS after imports (MiB)", "Peak RSS (MiB)", "Polled max (MiB)",
                         "RSS spread over the 2nd half of the tiles (MiB)"], rows,
                        align="lllrrrrrrr"),
        "",
        "## Verdict",
        "",
        *[f"- {line}" for line in report["verdict"]],
        "",
        "![memory](memory.png)",
        "",
    ]
    write_markdown(out / "memory.md", lines)


def plot(report: dict, path: Path) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = ["-", "--", ":", "-."]
    colors = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee"]
    caches = list(dict.fromkeys(s.get("gdal_cache", "default") for s in report["sizes"]))
    top = 0.0
    for index, cache in enumerate(caches):
        sizes = [s for s in report["sizes"] if s.get("gdal_cache", "default") == cache]
        mpx = [s["megapixels"] for s in sizes]
        peaks = [s["peak_rss_bytes"] / MIB for s in sizes]
        top = max(top, *peaks)
        left.plot(mpx, peaks, "o" + styles[index % 4], color=colors[index % 5],
                  label=f"peak RSS, {cache_label(cache)}")
        for s in sizes:
            if not s["completed"]:
                left.annotate(f"first {s['tiles_done']} tiles",
                              (s["megapixels"], s["peak_rss_bytes"] / MIB),
                              textcoords="offset points", xytext=(-40, 8), fontsize=8)
            line = s["timeline"]
            right.plot([p["tiles"] for p in line], [p["rss_bytes"] / MIB for p in line],
                       styles[index % 4], color=colors[sizes.index(s) % 5],
                       label=f"{s['megapixels']:g} Mpx, "
                             f"{cache if cache == 'default' else cache + ' MB'}")
    first = [s for s in report["sizes"] if s.get("gdal_cache", "default") == caches[0]]
    mpx = [s["megapixels"] for s in first]
    left.plot(mpx, [s["rss_after_imports_bytes"] / MIB for s in first], "s:", color="grey",
              label="RSS after imports")
    left.set_xscale("log")
    left.xaxis.set_minor_formatter(plt.NullFormatter())
    left.set_xticks(mpx)
    left.set_xticklabels([f"{m:g}" for m in mpx])
    left.set_xlabel(f"raster size (million pixels, {NUM_BANDS} bands)")
    left.set_ylabel("MiB")
    left.set_ylim(0, top * 1.3)
    left.legend(fontsize=7)
    left.set_title("peak resident memory per raster")
    right.set_xlabel("tiles classified (256 x 256 pixels each)")
    right.set_ylabel("RSS (MiB)")
    right.set_ylim(bottom=0)
    right.legend(fontsize=7, title="GDAL cache", title_fontsize=7)
    right.set_title("resident memory while classifying")
    figure.suptitle("models.jobs.classify memory, tiny backbone, CPU", fontsize=10)
    save_figure(figure, path)


def cache_label(cache: str) -> str:
    return "GDAL default block cache (5 % of RAM)" if cache == "default" else (
        f"GDAL_CACHEMAX={cache} MB")


def flat_for(sizes: list[dict]) -> bool:
    """Flat: no larger raster's peak is more than 15 % above the smallest's."""
    return max(s["peak_rss_bytes"] for s in sizes) / sizes[0]["peak_rss_bytes"] < 1.15


def verdict_lines(sizes: list[dict], cache: str, max_minutes: float) -> list[str]:
    smallest, largest = sizes[0], sizes[-1]
    growth = largest["peak_rss_bytes"] - smallest["peak_rss_bytes"]
    highest = max(sizes, key=lambda s: s["peak_rss_bytes"])
    lines = [
        f"{cache_label(cache)}: peak RSS {smallest['peak_rss_bytes'] / MIB:.0f} MiB at "
        f"{smallest['megapixels']:g} Mpx and {largest['peak_rss_bytes'] / MIB:.0f} MiB at "
        f"{largest['megapixels']:g} Mpx: {growth / MIB:+.0f} MiB "
        f"({largest['peak_rss_bytes'] / smallest['peak_rss_bytes']:.2f} x) for "
        f"{largest['megapixels'] / smallest['megapixels']:g} x the pixels"
        + (f"; the highest, {highest['peak_rss_bytes'] / MIB:.0f} MiB, at "
           f"{highest['megapixels']:g} Mpx" if highest is not largest else "")
        + " -- " + ("flat." if flat_for(sizes) else "NOT flat."),
        f"{cache_label(cache)}: {smallest['rss_after_imports_bytes'] / MIB:.0f} MiB of it is the "
        f"interpreter with torch, GDAL, numpy and the engine loaded, before any work.",
    ]
    # The engine drops the reader's cached blocks after each tile (RasterReader.release_cache):
    # what GDAL's cache held at the samples says whether that worked.
    held = max(e.get("gdal_cache_held_bytes", 0) for e in sizes)
    lines.append(
        f"{cache_label(cache)}: GDAL's block cache held at most {held / MIB:.0f} MiB at any "
        f"sample (a tile's blocks, dropped once the tile is written), against its cap of "
        f"{max(e.get('gdal_cache_max_bytes') or 0 for e in sizes) / MIB:.0f} MiB.")
    for entry in sizes:
        if not entry["completed"]:
            lines.append(
                f"{cache_label(cache)}: {entry['megapixels']:g} Mpx was classified for its first "
                f"{entry['tiles_done']} of {entry['tiles_total']} tiles only (a full run was "
                f"estimated above {max_minutes:g} min); over the second half of those tiles RSS "
                f"moved by {entry['late_tile_rss_spread_bytes'] / MIB:.0f} MiB.")
    return lines


def thin_timeline(timeline: list[dict], keep: int = TIMELINE_POINTS) -> list[dict]:
    """At most ``keep`` evenly spaced samples of a child's timeline, its highest RSS among them
    (the report's curve; the child's own file keeps every sample)."""
    import numpy as np

    if len(timeline) <= keep:
        return timeline
    picked = set(np.linspace(0, len(timeline) - 1, keep - 1).round().astype(int).tolist())
    picked.add(max(range(len(timeline)), key=lambda i: timeline[i]["rss_bytes"]))
    return [timeline[i] for i in sorted(picked)]


def tile_count(side: int, adapter: str, mode: str) -> int:
    from hyperadapt.models.data.bands import BandAdaptation
    from hyperadapt.models.data.raster import iter_tiles, tile_side_for
    from hyperadapt.models.learning.predict import classify_halo
    from hyperadapt.models.stores.adapter_file import load_adapter_file

    record = load_adapter_file(adapter)
    adaptation = BandAdaptation.from_state(record.band_adaptation)
    halo = classify_halo(record.window_size, record.classify_step(mode),
                         record.segment_size)
    tile = tile_side_for(adaptation.num_inputs, halo=halo, maximum=256)
    return len(list(iter_tiles(side, side, tile)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 0.02 and 0.05 Mpx")
    parser.add_argument("--megapixels", type=float, nargs="+", default=[0.25, 1.0, 4.0])
    parser.add_argument("--max-minutes", type=float, default=20.0,
                        help="longest full classification per raster; beyond it, first tiles only")
    parser.add_argument("--gdal-cache-mb", nargs="+", default=["default", "64"],
                        help="GDAL block cache sizes to measure with ('default': GDAL's own)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mode", choices=["tile", "window"], default="tile",
                        help="classification mode (models.options.CLASSIFY_MODES)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the rasters and measurements, kept and reused "
                             "(default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child-raster", help=argparse.SUPPRESS)
    parser.add_argument("--child-adapter", help=argparse.SUPPRESS)
    parser.add_argument("--child-output", help=argparse.SUPPRESS)
    parser.add_argument("--child-json", help=argparse.SUPPRESS)
    parser.add_argument("--max-tiles", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_raster:
        run_child(args)
        return {}
    if args.quick:
        args.megapixels = [0.02, 0.05]

    return run_in_work_folder(run_benchmark, args, "memory")


def run_benchmark(args, work: Path) -> dict:
    set_threads(args.threads)
    started = time.perf_counter()
    rasters = []
    for mpx in sorted(args.megapixels):
        side = int(round(math.sqrt(mpx * 1e6)))
        path = work / f"synthetic_{side}x{side}x{NUM_BANDS}.tif"
        if not path.exists():
            t0 = time.perf_counter()
            write_synthetic_raster(path, side)
            log(f"wrote {path.name} ({path.stat().st_size / 2**30:.2f} GiB) in "
                f"{time.perf_counter() - t0:.0f} s")
        rasters.append((mpx, side, path))

    log("a tiny adapter, fine-tuned on the smallest raster")
    adapter = make_tiny_adapter(rasters[0][2], work)
    report = {"machine": machine_info(), "threads": args.threads, "batch_size": args.batch_size,
              "mode": args.mode,
              "adapter": adapter, "max_minutes": args.max_minutes,
              "gdal_cache_configs": args.gdal_cache_mb, "sizes": [], "verdict": []}
    pixels_per_s = None
    for cache in args.gdal_cache_mb:
        log(f"GDAL block cache: {cache if cache == 'default' else cache + ' MB'}")
        for mpx, side, path in rasters:
            total_tiles = tile_count(side, adapter["path"], args.mode)
            max_tiles = None
            if pixels_per_s:
                estimate = side * side / pixels_per_s / 60
                log(f"{mpx:g} Mpx: a full run should take about {estimate:.1f} min")
                if estimate > args.max_minutes:
                    tiles_per_min = total_tiles / estimate
                    max_tiles = max(4, int(tiles_per_min * args.max_minutes))
                    log(f"  longer than {args.max_minutes:g} min: classifying the first "
                        f"{max_tiles} of {total_tiles} tiles only")
            log(f"classifying {path.name} ({total_tiles} tiles) in a fresh process")
            found = measure(path, adapter["path"], work, args, cache=cache, max_tiles=max_tiles)
            pixels_done = side * side * found["fraction_done"]
            found.update({"gdal_cache": cache, "megapixels": mpx, "side": side,
                          "file_bytes": path.stat().st_size, "tiles_total": total_tiles,
                          "pixels_per_s": pixels_done / max(found["seconds"], 1e-9)})
            late = [p["rss_bytes"] for p in found["timeline"][1:]]
            late = late[len(late) // 2:]
            found["late_tile_rss_spread_bytes"] = (max(late) - min(late)) if late else 0
            found["gdal_cache_held_bytes"] = max(p.get("gdal_cache_bytes", 0)
                                                 for p in found["timeline"])
            found["timeline"] = thin_timeline(found["timeline"])
            pixels_per_s = pixels_per_s or found["pixels_per_s"]
            report["sizes"].append(found)
            log(f"  peak RSS {found['peak_rss_bytes'] / MIB:.0f} MiB, "
                f"{found['pixels_per_s']:.0f} px/s, {found['seconds']:.0f} s"
                + ("" if found["completed"] else f" (first {found['tiles_done']} tiles)"))
            (work / f"{path.stem}_classes.tif").unlink(missing_ok=True)
        report["verdict"] += verdict_lines(
            [e for e in report["sizes"] if e["gdal_cache"] == cache], cache, args.max_minutes)
    report["flat"] = {cache: flat_for([e for e in report["sizes"] if e["gdal_cache"] == cache])
                      for cache in args.gdal_cache_mb}
    report["seconds"] = time.perf_counter() - started
    return publish(report, args.out, "memory", write_report, plot)


if __name__ == "__main__":
    main()
