"""The plugin loads into real QGIS, adds its toolbar and menu, and unloads leaving nothing."""
from __future__ import annotations

import os
import sys

from qgis.PyQt import sip
from qgis.PyQt.QtWidgets import QApplication, QToolBar
from qgis.core import QgsApplication

import hyperadapt

ACTIONS = {"hyperadapt_fine_tune", "hyperadapt_classify", "hyperadapt_new_training_layer",
           "hyperadapt_library"}


def _hyperadapt_toolbars(iface):
    return [bar for bar in iface.mainWindow().findChildren(QToolBar)
            if not sip.isdeleted(bar) and bar.objectName() == "HyperAdaptToolbar"]


def _raster_menu_actions(iface):
    actions = []
    for sub in iface.rasterMenu().actions():
        if sub.menu() is not None:
            actions += [a.objectName() for a in sub.menu().actions()]
    return actions


def test_plugin_loads_adds_toolbar_and_unloads_cleanly(iface):
    plugin = hyperadapt.classFactory(iface)
    plugin.initGui()
    try:
        toolbars = _hyperadapt_toolbars(iface)
        assert len(toolbars) == 1
        names = {a.objectName() for a in toolbars[0].actions()}
        assert names == ACTIONS
        assert set(_raster_menu_actions(iface)) == ACTIONS
        assert QgsApplication.processingRegistry().providerById("hyperadapt") is not None

        fine_tune = next(a for a in toolbars[0].actions() if a.objectName() == "hyperadapt_fine_tune")
        fine_tune.trigger()
        QApplication.processEvents()
        dialog = plugin.windows["fine_tune"]
        assert dialog.isVisible()
        assert plugin.dependency_dialog is None
    finally:
        plugin.unload()
    QApplication.processEvents()
    QgsApplication.sendPostedEvents(None, 0)  # run deleteLater
    assert _hyperadapt_toolbars(iface) == []
    assert not (set(_raster_menu_actions(iface)) & ACTIONS)
    assert QgsApplication.processingRegistry().providerById("hyperadapt") is None
    assert plugin.windows == {}


def test_missing_torch_shows_install_dialog_instead_of_failing(iface, monkeypatch):
    # A None entry in sys.modules is how Python marks a module as unimportable.
    monkeypatch.setitem(sys.modules, "torch", None)
    plugin = hyperadapt.classFactory(iface)
    plugin.initGui()
    try:
        action = next(a for a in plugin.actions if a.objectName() == "hyperadapt_fine_tune")
        action.trigger()
        QApplication.processEvents()
        from hyperadapt.plugin.installer import InstallDialog

        box = plugin.dependency_dialog
        assert isinstance(box, InstallDialog) and box.isVisible()
        text = box.message_label.text()
        assert "torch" in text and "einops" not in text
        assert "-m pip install --upgrade --target" in text and "runtime.txt" in text
        assert box.install_button.isEnabled()       # nothing runs before the user asks
        assert "fine_tune" not in plugin.windows
    finally:
        plugin.unload()
    assert plugin.dependency_dialog is None


def test_dependency_check_reports_each_missing_module(monkeypatch):
    from hyperadapt.plugin import dependencies

    monkeypatch.setitem(sys.modules, "einops", None)
    assert dependencies.missing_modules() == ["einops"]
    assert dependencies.missing_modules(("json",)) == []
    assert dependencies.missing_modules(("no_such_module_hyperadapt",)) == ["no_such_module_hyperadapt"]


def test_loading_the_plugin_lets_idle_openmp_threads_sleep_unless_the_user_chose(iface,
                                                                                monkeypatch):
    # QGIS loads the plugin (classFactory) before anything imports torch, which reads the policy.
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    hyperadapt.classFactory(iface)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    hyperadapt.classFactory(iface)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
