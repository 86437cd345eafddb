"""Pretraining under torchrun: two processes (gloo) take the steps one process takes."""
from __future__ import annotations

import subprocess
import sys

import pytest

from engine_data import make_polygons, make_test_raster
from hyperadapt.models.jobs import FineTuneSettings, fine_tune
from hyperadapt.models.pretrain import read_backbone_file

PRETRAIN = ["--epochs", "2", "--samples-per-epoch", "64", "--batch-size", "16",
            "--window-size", "5", "--band-adaptation", "pca"]


def _pretrain(launcher: list[str], backbone, raster) -> None:
    done = subprocess.run([sys.executable, *launcher, "-m", "hyperadapt.cli", "pretrain",
                           str(backbone), str(raster), *PRETRAIN],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_pretrain_as_one_and_the_file_is_a_backbone_like_any(tmp_path):
    raster = make_test_raster(tmp_path / "scene.tif", width=40, height=36)
    _pretrain([], tmp_path / "one.pt", raster.path)
    _pretrain(["-m", "torch.distributed.run", "--nproc_per_node", "2"], tmp_path / "two.pt",
              raster.path)
    one, two = read_backbone_file(tmp_path / "one.pt"), read_backbone_file(tmp_path / "two.pt")
    # DDP averages the two halves' gradients: the mean over the whole batch, up to the order
    # of float additions.
    assert two["pretraining"]["losses"] == pytest.approx(one["pretraining"]["losses"], rel=1e-5)
    assert two["pretraining"]["steps"] == one["pretraining"]["steps"] == 8
    for name, tensor in one["state_dict"].items():
        assert (two["state_dict"][name] - tensor).abs().max() < 1e-5, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.pt", "scene.tif", "two.pt"]
    layer = make_polygons(tmp_path / "fields.gpkg", raster)
    result = fine_tune(str(raster.path), str(layer), "class", str(tmp_path / "adapter.pt"),
                       settings=FineTuneSettings(weights=str(tmp_path / "two.pt"), epochs=1))
    assert result.backbone["kind"] == "backbone-file"
