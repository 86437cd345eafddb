"""Shared fixtures. The plugin is imported as `hyperadapt` through the venv's link (scripts/dev.sh)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


# --- QGIS interface --------------------------------------------------------------------------
# pytest-qgis gives a real QgsApplication, project and canvas, with a small stand-in for QGIS's
# main window interface. The stand-in lacks the Raster menu and keeps toolbars off the window;
# these two additions make both behave as in QGIS so tests can see what the plugin adds and removes.
def _extend_qgis_interface():
    from pytest_qgis.qgis_interface import QgisInterface
    from qgis.PyQt.QtWidgets import QMenu

    if getattr(QgisInterface, "_hyperadapt_extended", False):
        return

    def raster_menu(self) -> QMenu:
        menu = getattr(self, "_raster_menu", None)
        if menu is None:
            menu = self._mainWindow.menuBar().addMenu("&Raster")
            menu.setObjectName("mRasterMenu")
            self._raster_menu = menu
        return menu

    def add_plugin_to_raster_menu(self, name, action):
        menu = raster_menu(self)
        sub = next((m for m in menu.findChildren(QMenu) if m.title() == name), None)
        if sub is None:
            sub = menu.addMenu(name)
        sub.addAction(action)

    def remove_plugin_raster_menu(self, name, action):
        menu = raster_menu(self)
        for sub in menu.findChildren(QMenu):
            if sub.title() == name:
                sub.removeAction(action)
                if not sub.actions():
                    menu.removeAction(sub.menuAction())
                    sub.setParent(None)  # gone from findChildren now, not at the next event loop
                    sub.deleteLater()

    original_add_toolbar = QgisInterface.addToolBar

    def add_toolbar(self, toolbar):
        bar = original_add_toolbar(self, toolbar)
        self._mainWindow.addToolBar(bar)
        return bar

    QgisInterface.rasterMenu = raster_menu
    QgisInterface.addPluginToRasterMenu = add_plugin_to_raster_menu
    QgisInterface.removePluginRasterMenu = remove_plugin_raster_menu
    QgisInterface.addToolBar = add_toolbar
    QgisInterface._hyperadapt_extended = True


@pytest.fixture()
def iface(qgis_iface, qgis_new_project):
    """QGIS's interface with a fresh, empty project."""
    _extend_qgis_interface()
    return qgis_iface


@pytest.fixture()
def library_dir(tmp_path, monkeypatch):
    """An empty adapter library, so tests never touch the user's own."""
    folder = tmp_path / "library"
    monkeypatch.setenv("HYPERADAPT_LIBRARY", str(folder))
    return folder


# --- Engine jobs (models/data, models/learning, models/jobs) -----------------------------------
@pytest.fixture(autouse=True, scope="session")
def torch_single_thread():
    """One PyTorch thread for the whole run.

    The tiny test models gain nothing from intra-op threads, and on a busy two-core machine the
    threads' spin-waiting makes every small operation many times slower.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture()
def no_cached_weights(tmp_path, monkeypatch):
    """An empty weights cache, so jobs cannot fall back to downloaded official weights."""
    folder = tmp_path / "weights-cache"
    monkeypatch.setenv("HYPERADAPT_CACHE_DIR", str(folder))
    return folder
