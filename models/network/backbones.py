"""The backbone a job starts from or an adapter file needs: the official SpectralGPT weights, a
backbone file pretrained on the user's scenes (models.jobs.pretraining), or a seeded random start;
built for fine-tuning, and rebuilt with an adapter file's adapter for classifying.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import HyperAdaptError
from ..learning.seeding import seeded
from ..settings import FineTuneSettings
from ..stores.adapter_file import AdapterRecord, state_fingerprint
from . import adapters
from .checkpoint import load_pretrained
from .identity import BACKBONE_FILE, OFFICIAL, RANDOM, BackboneIdentity
from .spectralgpt import BASE_CONFIG, TINY_CONFIG, build_backbone
from .weights import recorded_weights

BACKBONE_PRESETS = {"base": BASE_CONFIG, "tiny": {**BASE_CONFIG, **TINY_CONFIG}}


@dataclass(frozen=True)
class BackboneSource:
    """Which weights fine-tuning starts from: ``kind`` (as models.network.identity names them),
    their file, and a backbone file's contents, read and checked once however many models a job
    builds from them (self-training rounds, folds)."""

    kind: str
    path: Path | None = None
    payload: dict | None = None


def backbone_source(settings: FineTuneSettings) -> BackboneSource:
    """The weights the settings name, the downloaded official weights, or a random start where
    allowed."""
    if settings.weights:
        path = Path(settings.weights)
        if not path.is_file():
            raise HyperAdaptError(f"The weights file {path} does not exist.")
        from ..stores.backbone_file import is_backbone_file, read_backbone_file
        if is_backbone_file(path):
            return BackboneSource(BACKBONE_FILE, path, read_backbone_file(path))
        return BackboneSource(OFFICIAL, path)
    if settings.random_start:
        return BackboneSource(RANDOM)
    from .weights import find_cached_weights
    cached = find_cached_weights()
    if cached is not None:
        return BackboneSource(OFFICIAL, cached)
    raise HyperAdaptError("No SpectralGPT weights were given or downloaded; download the official "
                          "weights, choose a backbone file, or allow a random start.")


def encoder_state(model) -> dict:
    return {name: tensor for name, tensor in model.state_dict().items()
            if not name.startswith("head.")}


def build_backbone_for_training(source: BackboneSource, settings: FineTuneSettings,
                                num_classes: int, input_size: int
                                ) -> tuple[torch.nn.Module, BackboneIdentity]:
    """(model with a fresh head, weights identity) for fine-tuning."""
    if source.kind == BACKBONE_FILE:
        from ..stores.backbone_file import backbone_from_payload, backbone_identity
        model, _, info = backbone_from_payload(source.payload, source.path)
        seeded(settings.seed, lambda: model.reset_classifier(
            num_classes, pixel_dim=settings.pixel_dim, two_views=settings.two_views()))
        return model, backbone_identity(info, source.path)
    config = {**BACKBONE_PRESETS[settings.backbone], **(settings.backbone_overrides or {}),
              "img_size": input_size, "num_classes": num_classes, "pixel_dim": settings.pixel_dim,
              "two_views": settings.two_views()}
    model = seeded(settings.seed, lambda: build_backbone(config))
    if source.kind == OFFICIAL:
        return model, load_pretrained(model, source.path)
    return model, BackboneIdentity.random_start(settings.seed,
                                                state_fingerprint(encoder_state(model)))


def _weights_path_for(identity: BackboneIdentity, weights) -> Path | None:
    """The file to rebuild a backbone from: the given one, the recorded one, or the download cache."""
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise HyperAdaptError(f"The weights file {path} does not exist.")
        return path
    return recorded_weights(identity)


def rebuild_model(record: AdapterRecord, *, weights=None) -> tuple[torch.nn.Module, list[str]]:
    """The fine-tuned model of an adapter file (adapter loaded, not merged), and notes.

    The backbone is rebuilt from the recorded config and weights identity; a HyperAdaptError says
    so when the given weights are not the ones the adapter was trained on.
    """
    identity = record.weights_identity
    config = dict(record.backbone.get("config") or {})
    num_classes = len(record.classes)
    notes = []
    if identity.kind == RANDOM:
        if weights:
            notes.append("The adapter was trained from a random start, so the given weights were "
                         "not used.")
        model = seeded(identity.seed or 0, lambda: build_backbone(config))
        given = BackboneIdentity.random_start(identity.seed or 0,
                                              state_fingerprint(encoder_state(model)))
    elif identity.kind == OFFICIAL:
        path = _weights_path_for(identity, weights)
        if path is None:
            raise HyperAdaptError(f"This adapter needs the SpectralGPT weights "
                                  f"{identity.name}; download them or give their file.")
        from ..stores.backbone_file import is_backbone_file
        if is_backbone_file(path):
            from ..stores.backbone_file import backbone_identity, read_backbone_file
            given = backbone_identity({**read_backbone_file(path), "name": path.name})
            model = None
        else:
            # Every build draws from torch's generator: under the lock, so that a random start
            # rebuilt in another thread meanwhile draws its own numbers (models.learning.seeding).
            model = seeded(0, lambda: build_backbone(config))
            given = load_pretrained(model, path)
    elif identity.kind == BACKBONE_FILE:
        path = _weights_path_for(identity, weights)
        if path is None:
            raise HyperAdaptError(f"This adapter needs the backbone file {identity.name}; "
                                  f"give its path as the weights.")
        from ..stores.backbone_file import backbone_identity, is_backbone_file, load_backbone_file
        if not is_backbone_file(path):
            model, given = None, BackboneIdentity(OFFICIAL, name=path.name)
        else:
            model, _, info = load_backbone_file(path)
            given = backbone_identity(info)
            seeded(0, lambda: model.reset_classifier(
                num_classes, pixel_dim=int(config.get("pixel_dim", 0)),
                two_views=bool(config.get("two_views", False))))
    else:
        raise HyperAdaptError("The adapter file does not say which backbone it was trained on.")
    problem = identity.mismatch(given)
    if problem:
        raise HyperAdaptError(problem)
    seeded(0, lambda: adapters.apply_adapter(
        model, adapters.AdapterConfig.from_dict(record.adapter_config)))
    adapters.load_trainable_state_dict(model, record.trainable_state)
    model.eval()
    return model, notes
