"""Pretraining and fine-tuning under torchrun: two processes (gloo) take the steps one process
takes."""
from __future__ import annotations

import subprocess
import sys

import pytest

from engine_data import make_polygons, make_test_raster
from hyperadapt.models.jobs import FineTuneSettings, fine_tune
from hyperadapt.models.stores.backbone_file import read_backbone_file

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
    assert result.backbone.kind == "backbone-file"


def test_two_processes_fine_tune_as_one_and_only_one_writes(tmp_path):
    """Fine-tuning under torchrun: the same steps, so the same adapter, written once."""
    import json

    from engine_data import TINY_BACKBONE
    from hyperadapt.models.stores.adapter_file import load_adapter_file

    raster = make_test_raster(tmp_path / "scene.tif", width=40, height=36)
    layer = make_polygons(tmp_path / "fields.gpkg", raster)
    # 13 windows a batch: one process takes 7 rows, the other 6, and the last batch of an epoch
    # is smaller again; the loss is still the mean over each whole batch.
    settings = ["--backbone", "tiny", "--random-start", "true", "--epochs", "2",
                "--batch-size", "13", "--window-size", "5", "--input-size", "16",
                "--device", "cpu", "--backbone-overrides", json.dumps(TINY_BACKBONE)]

    def fine_tune_with(launcher, name):
        done = subprocess.run([sys.executable, *launcher, "-m", "hyperadapt.cli", "finetune",
                               str(raster.path), str(layer), "class", str(tmp_path / f"{name}.pt"),
                               "--classification", str(tmp_path / f"{name}.tif"), *settings],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return load_adapter_file(tmp_path / f"{name}.pt"), done.stdout

    one, said_once = fine_tune_with([], "one")
    two, said_twice = fine_tune_with(["-m", "torch.distributed.run", "--nproc_per_node", "2"],
                                     "two")
    assert said_twice.count("two.pt") == said_once.count("one.pt") == 1   # rank 0 speaks
    assert (one.training["processes"], two.training["processes"]) == (1, 2)
    losses = [epoch["loss"] for epoch in one.training["history"]]
    assert [epoch["loss"] for epoch in two.training["history"]] == pytest.approx(losses, rel=1e-5)
    for name, tensor in one.trainable_state.items():
        assert (two.trainable_state[name] - tensor).abs().max() < 1e-5, name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fields.gpkg", "one.pt", "one.qml", "one.tif", "one.tif.aux.xml", "scene.tif", "two.pt",
        "two.qml", "two.tif", "two.tif.aux.xml"]
