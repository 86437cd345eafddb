"""A worker for the archive tests that fails once on the scenes named in a file (fault injection).

Imported by Ray's worker processes, so it lives in a module of its own on their PYTHONPATH.
"""
from __future__ import annotations

import os
from pathlib import Path

from hyperadapt.archive import _Classifier

FAIL_ONCE_FILE = "HYPERADAPT_TEST_FAIL_ONCE"


class FlakyClassifier(_Classifier):
    def classify(self, raster: str, output: str, batch_size: int) -> dict:
        marker = Path(os.environ[FAIL_ONCE_FILE])
        names = marker.read_text().split()
        if Path(raster).name in names:
            names.remove(Path(raster).name)
            marker.write_text(" ".join(names))
            raise RuntimeError(f"injected failure for {Path(raster).name}")
        return super().classify(raster, output, batch_size)
