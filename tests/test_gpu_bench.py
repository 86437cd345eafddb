"""bench/gpu.py, the run prepared for a GPU machine, checked here on the CPU at its small sizes.

The GPU machines have PyTorch but no GDAL, so the modules it times must load without a raster
library; a fresh process with osgeo made unimportable shows that they do.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from hyperadapt.bench import gpu
from hyperadapt.models import options

GDAL_FREE = ("hyperadapt.models.network.spectralgpt", "hyperadapt.models.network.adapters",
             "hyperadapt.models.learning.training", "hyperadapt.models.learning.inference",
             "hyperadapt.models.data.windows", "hyperadapt.bench.gpu")


def test_the_modules_a_gpu_machine_runs_load_without_gdal():
    code = ("import importlib, sys\n"
            "class NoGdal:\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] == 'osgeo':\n"
            "            raise ImportError('no GDAL here')\n"
            "sys.meta_path.insert(0, NoGdal())\n"
            f"for m in {GDAL_FREE!r}: importlib.import_module(m)\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] == 'osgeo'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_gpu_run_times_training_and_both_modes_and_writes_its_report(tmp_path):
    report = gpu.main(["--quick", "--device", "cpu", "--backbones", "tiny", "--out",
                       str(tmp_path)])
    (row,) = report["rows"]
    num_windows, window_side, tile_side = gpu.SIZES["quick"]
    assert row["training"]["windows"] == num_windows and row["training"]["windows_per_s"] > 0
    assert row["window"]["pixels"] == window_side ** 2 and row["window"]["pixels_per_s"] > 0
    # Classifying and training at the engine's own grid step.
    assert row["tile"]["pixels"] == tile_side ** 2
    assert row["tile"]["step"] == row["training"]["step"] == options.classify_step("tile", 15)
    assert row["training"]["mode"] == options.DEFAULT_TRAINING_MODE
    assert row["training"]["peak_mib"] is None            # GPU memory only where there is a GPU
    text = (tmp_path / "gpu.md").read_text()
    assert "tiny, window 15, input 16: tile mode" in text and "| tiny | 15 / 16 |" in text
    assert (tmp_path / "gpu.json").exists()


def test_asking_for_a_gpu_where_there_is_none_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="No CUDA GPU is visible to PyTorch"):
        gpu.main(["--device", "cuda", "--out", str(tmp_path)])
