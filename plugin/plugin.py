"""The plugin object QGIS holds: toolbar, Raster-menu entries and the Processing provider."""
from __future__ import annotations

import importlib
from pathlib import Path

from qgis.core import QgsApplication, QgsMessageLog, Qgis
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from . import dependencies

PLUGIN_DIR = Path(__file__).resolve().parent.parent
MENU = "&HyperAdapt"
LOG_TAG = "HyperAdapt"


def icon(name: str) -> QIcon:
    return QIcon(str(PLUGIN_DIR / "resources" / name))


class HyperAdaptPlugin:
    """Adds the HyperAdapt toolbar and menu; every action checks the dependencies first."""

    def __init__(self, iface):
        self.iface = iface
        self.toolbar = None
        self.actions: list[QAction] = []
        self.provider = None
        self.dependency_dialog = None
        # Open windows and running jobs, kept so unload() can close and stop them.
        self.windows: dict[str, object] = {}

    # -- Processing -------------------------------------------------------------------------
    def initProcessing(self):  # noqa: N802 (QGIS's name)
        from .provider import HyperAdaptProvider
        self.provider = HyperAdaptProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    # -- GUI --------------------------------------------------------------------------------
    def initGui(self):  # noqa: N802 (QGIS's name)
        # QGIS 3.22 desktop calls only initGui, qgis_process only initProcessing.
        if self.provider is None:
            self.initProcessing()
        self.toolbar = self.iface.addToolBar("HyperAdapt")
        self.toolbar.setObjectName("HyperAdaptToolbar")
        self._add_action("fine_tune", "Fine-tune…", "fine_tune.png",
                         "Fine-tune SpectralGPT on training polygons and classify the raster",
                         self.show_fine_tune)
        self._add_action("classify", "Classify with adapter…", "classify.png",
                         "Classify a raster with an adapter from the library",
                         self.show_classify)
        self._add_action("new_training_layer", "New training layer…", "new_layer.png",
                         "Create a polygon layer with a class field and draw training areas",
                         self.show_new_training_layer)
        self._add_action("library", "Adapter library…", "library.png",
                         "Browse, rename, import and export trained adapters",
                         self.show_library)

    def _add_action(self, key, text, icon_name, tip, slot):
        action = QAction(icon(icon_name), text, self.iface.mainWindow())
        action.setObjectName(f"hyperadapt_{key}")
        action.setToolTip(tip)
        action.triggered.connect(slot)
        self.toolbar.addAction(action)
        self.iface.addPluginToRasterMenu(MENU, action)
        self.actions.append(action)
        return action

    def unload(self):
        for window in list(self.windows.values()):
            close = getattr(window, "shutdown", None) or getattr(window, "close", None)
            if close is not None:
                close()
        self.windows.clear()
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions = []
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            # Detached at once: deleteLater alone leaves it among the window's children until
            # the event loop runs again.
            self.toolbar.setParent(None)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.dependency_dialog is not None:
            self.dependency_dialog.close()
            self.dependency_dialog = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # -- Actions ----------------------------------------------------------------------------
    def dependencies_ready(self) -> bool:
        """True when torch, einops and appdirs import; otherwise shows how to install them."""
        missing = dependencies.missing_modules()
        if not missing:
            return True
        message = dependencies.missing_message(missing)
        QgsMessageLog.logMessage(message, LOG_TAG, Qgis.Warning)
        from .installer import InstallDialog

        dialog = InstallDialog(missing, self.iface.mainWindow())
        dialog.show()  # not exec_(): QGIS stays usable and tests can inspect the dialog
        self.dependency_dialog = dialog
        return False

    def _show_window(self, key: str, module: str, class_name: str):
        """Shows the plugin window `key`, importing its module only once the dependencies are there."""
        if not self.dependencies_ready():
            return None
        window = self.windows.get(key)
        if window is None:
            window_class = getattr(importlib.import_module(f".{module}", __package__), class_name)
            window = window_class(self.iface, self)
            self.windows[key] = window
        window.show()
        window.raise_()
        return window

    def show_fine_tune(self):
        return self._show_window("fine_tune", "fine_tune_dialog", "FineTuneDialog")

    def show_classify(self):
        return self._show_window("classify", "classify_dialog", "ClassifyDialog")

    def show_new_training_layer(self):
        panel = self._show_window("training_layer", "training_layer", "TrainingLayerPanel")
        if panel is not None:
            panel.start_new_layer()
        return panel

    def show_training_panel(self):
        return self._show_window("training_layer", "training_layer", "TrainingLayerPanel")

    def show_library(self):
        return self._show_window("library", "library_dialog", "LibraryDialog")
