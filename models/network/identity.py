"""Which weights a backbone holds, as one small typed value: the official SpectralGPT weights, a
backbone file pretrained on the user's scenes (models.jobs.pretraining), or a seeded random start.

Fine-tuning records it in the adapter file; classifying compares it with the weights at hand, so an
adapter is only ever applied on the backbone it was trained on. In files it stays the plain dict
adapter files have always carried (``to_dict``/``from_dict``), so older files read unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

OFFICIAL = "official"
BACKBONE_FILE = "backbone-file"
RANDOM = "random"
# The dict key that holds each kind's ``key``, as adapter files write it.
_KEY_FIELD = {OFFICIAL: "sha256", BACKBONE_FILE: "id", RANDOM: "fingerprint"}


@dataclass(frozen=True)
class BackboneIdentity:
    """A backbone's weights: ``kind`` (OFFICIAL, BACKBONE_FILE or RANDOM) and the ``key`` that
    tells two of a kind apart (the official file's sha256, the backbone file's id, the random
    start's weights fingerprint).

    ``name`` (the file's name), ``seed`` (a random start's) and ``sensor`` (a backbone file's)
    describe it; ``path`` says where this machine found it and is never compared.
    """

    kind: str
    key: str = ""
    name: str = ""
    seed: int | None = None
    sensor: str | None = None
    path: str | None = None

    @classmethod
    def official(cls, name: str, sha256: str, path=None) -> BackboneIdentity:
        return cls(OFFICIAL, key=sha256, name=name, path=None if path is None else str(path))

    @classmethod
    def backbone_file(cls, name: str, backbone_id: str, sensor: str | None = None,
                      path=None) -> BackboneIdentity:
        return cls(BACKBONE_FILE, key=backbone_id, name=name, sensor=sensor,
                   path=None if path is None else str(path))

    @classmethod
    def random_start(cls, seed: int, fingerprint: str) -> BackboneIdentity:
        return cls(RANDOM, key=fingerprint, seed=int(seed))

    @classmethod
    def from_dict(cls, data: dict | None) -> BackboneIdentity:
        """The identity an adapter file records (kind "" where it records none)."""
        data = dict(data or {})
        kind = str(data.get("kind") or "")
        seed = data.get("seed")
        return cls(kind, key=str(data.get(_KEY_FIELD.get(kind, ""), "") or ""),
                   name=str(data.get("name") or ""),
                   seed=None if seed is None else int(seed),
                   sensor=data.get("sensor"), path=data.get("path"))

    def to_dict(self) -> dict:
        """The plain dict an adapter file records (the keys it has always had)."""
        if self.kind == RANDOM:
            return {"kind": RANDOM, "seed": self.seed, "fingerprint": self.key,
                    "random_start": True}
        data = {"kind": self.kind, "name": self.name, _KEY_FIELD.get(self.kind, "key"): self.key}
        if self.kind == BACKBONE_FILE:
            data["sensor"] = self.sensor
        if self.path is not None:
            data["path"] = self.path
        return data

    @property
    def is_random_start(self) -> bool:
        """A seeded random start rather than pretrained weights (for testing only)."""
        return self.kind == RANDOM

    def describe(self) -> str:
        """A short description for people: which weights these are."""
        if self.kind == RANDOM:
            return f"a random start (seed {self.seed}), not pretrained weights"
        if self.kind == BACKBONE_FILE:
            return f"the backbone file {self.name} (id {self.key[:12]}…)"
        return f"the weights {self.name} (sha256 {self.key[:12]}…)"

    def mismatch(self, given: BackboneIdentity) -> str | None:
        """One sentence when the ``given`` weights are not these (an adapter's recorded ones)."""
        if self.kind != given.kind:
            return (f"This adapter was trained on {self.describe()}, but {given.describe()} was "
                    f"given.")
        if self.kind == OFFICIAL and self.key != given.key:
            return (f"This adapter was trained on {self.describe()}, but the given weights file "
                    f"{given.name} has sha256 {given.key[:12]}….")
        if self.kind == BACKBONE_FILE and self.key != given.key:
            return (f"This adapter was trained on {self.describe()}, but the given backbone file "
                    f"has id {given.key[:12]}….")
        if self.kind == RANDOM and (self.seed, self.key) != (given.seed, given.key):
            return ("The random-start backbone this adapter was trained on could not be rebuilt "
                    "identically (another PyTorch version may initialise it differently).")
        return None
