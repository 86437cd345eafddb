"""The HyperAdapt Processing provider: the algorithms for the Toolbox, batch runs and qgis_process."""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

PLUGIN_DIR = Path(__file__).resolve().parent.parent


class HyperAdaptProvider(QgsProcessingProvider):
    def id(self):
        return "hyperadapt"

    def name(self):
        return "HyperAdapt"

    def longName(self):  # noqa: N802 (QGIS's name)
        return "HyperAdapt: SpectralGPT adapters for hyperspectral classification"

    def icon(self):
        return QIcon(str(PLUGIN_DIR / "resources" / "icon.png"))

    def loadAlgorithms(self):  # noqa: N802 (QGIS's name)
        from .algorithms import all_algorithms
        for algorithm in all_algorithms():
            self.addAlgorithm(algorithm)
