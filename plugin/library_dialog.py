"""The adapter library window: adapters grouped by sensor, renamed, deleted, imported and exported.

Adapters are small files (a few hundred kilobytes) in ``<library>/<sensor>/<name>.pt``
(models.stores.library), so reading them for the list is quick enough for the GUI thread.
"""
from __future__ import annotations

import html
import shutil
from pathlib import Path

from qgis.PyQt import uic
from qgis.PyQt.QtCore import Qt, QUrl, pyqtSlot
from qgis.PyQt.QtGui import QDesktopServices, QFont
from qgis.PyQt.QtWidgets import (QDialog, QFileDialog, QInputDialog, QMessageBox,
                                 QTreeWidgetItem)

from ..models.errors import HyperAdaptError
from ..models.network.adapters import METHODS
from ..models.stores import library
from ..models.stores.adapter_file import load_adapter_file, save_adapter_file
from .widgets import classes_icon, format_bytes

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
FORM_CLASS, _ = uic.loadUiType(str(UI_DIR / "library_dialog.ui"))
ADAPTER_FILTER = "HyperAdapt adapters (*.pt);;All files (*)"
COLUMNS = ("Adapter", "Classes", "Method", "Accuracy", "Created", "Size")


def accuracy_text(metrics: dict) -> str:
    accuracy = (metrics or {}).get("overall_accuracy")
    return f"{100 * float(accuracy):.1f} %" if accuracy is not None else "–"


def method_label(method: str) -> str:
    return METHODS.get(method, method or "?")


class LibraryDialog(QDialog, FORM_CLASS):
    """The per-sensor adapter library.

    Buttons ask for names and files with standard dialogs; the same actions are public methods
    that take them as arguments: ``rename_adapter``, ``delete_adapter``, ``import_adapter``,
    ``export_adapter``, ``open_folder``.
    """

    def __init__(self, iface, plugin=None):
        """Args:
            iface: QGIS's interface.
            plugin: the HyperAdapt plugin object.
        """
        super().__init__(iface.mainWindow())
        self.iface = iface
        self.plugin = plugin
        self.setupUi(self)
        self.setObjectName("HyperAdaptLibraryDialog")
        self.entries: list[library.LibraryEntry] = []
        self.adapter_tree.setHeaderLabels(list(COLUMNS))
        self.adapter_tree.itemSelectionChanged.connect(self._selection_changed)
        self.rename_button.clicked.connect(self._rename_clicked)
        self.delete_button.clicked.connect(self._delete_clicked)
        self.import_button.clicked.connect(self._import_clicked)
        self.export_button.clicked.connect(self._export_clicked)
        self.open_folder_button.clicked.connect(self.open_folder)
        self.refresh_button.clicked.connect(self.refresh)
        self.close_button.clicked.connect(self.close)
        self.refresh()

    # -- listing ------------------------------------------------------------------------------
    def showEvent(self, event):  # noqa: N802 (Qt's name)
        self.refresh()
        super().showEvent(event)

    @pyqtSlot()
    def refresh(self) -> None:
        selected = self.selected_path()
        self.root_label.setText(f"Library folder: {library.library_root()}")
        self.entries = library.list_adapters()
        self.adapter_tree.clear()
        sensors: dict[str, QTreeWidgetItem] = {}
        bold = QFont(self.font())
        bold.setBold(True)
        for entry in self.entries:
            parent = sensors.get(entry.sensor)
            if parent is None:
                parent = QTreeWidgetItem(self.adapter_tree, [entry.sensor])
                parent.setFont(0, bold)
                parent.setFlags(Qt.ItemIsEnabled)
                parent.setExpanded(True)
                sensors[entry.sensor] = parent
            size = entry.path.stat().st_size if entry.path.exists() else 0
            name = entry.name + (" (random start)" if entry.backbone.is_random_start else "")
            item = QTreeWidgetItem(parent, [
                name, ", ".join(c["name"] for c in entry.classes), method_label(entry.method),
                accuracy_text(entry.metrics), entry.created[:10],
                format_bytes(size)])
            item.setData(0, Qt.UserRole, str(entry.path))
            item.setIcon(1, classes_icon(tuple(c["color"]) for c in entry.classes))
            item.setToolTip(1, "\n".join(c["name"] for c in entry.classes))
            if str(entry.path) == selected:
                item.setSelected(True)
        for parent in sensors.values():
            parent.setText(0, f"{parent.text(0)} ({parent.childCount()})")
            parent.setExpanded(True)
        for column in range(len(COLUMNS)):
            self.adapter_tree.resizeColumnToContents(column)
        if not self.entries:
            self.details_label.setText("The library is empty: fine-tune an adapter, or import one.")
        self._selection_changed()

    def sensors(self) -> dict[str, list[str]]:
        """Sensor -> names of its adapters, in the order the tree shows them."""
        by_path = {str(entry.path): entry for entry in self.entries}
        shown = {}
        for row in range(self.adapter_tree.topLevelItemCount()):
            parent = self.adapter_tree.topLevelItem(row)
            children = [by_path[parent.child(i).data(0, Qt.UserRole)]
                        for i in range(parent.childCount())]
            shown[children[0].sensor] = [entry.name for entry in children]
        return shown

    def item_for(self, path) -> QTreeWidgetItem | None:
        for row in range(self.adapter_tree.topLevelItemCount()):
            parent = self.adapter_tree.topLevelItem(row)
            for index in range(parent.childCount()):
                child = parent.child(index)
                if Path(child.data(0, Qt.UserRole)) == Path(path):
                    return child
        return None

    def select(self, path) -> None:
        item = self.item_for(path)
        if item is not None:
            self.adapter_tree.setCurrentItem(item)

    def selected_path(self) -> str | None:
        items = self.adapter_tree.selectedItems() if hasattr(self, "adapter_tree") else []
        for item in items:
            path = item.data(0, Qt.UserRole)
            if path:
                return path
        return None

    def selected_entry(self) -> library.LibraryEntry | None:
        path = self.selected_path()
        return next((e for e in self.entries if str(e.path) == path), None)

    @pyqtSlot()
    def _selection_changed(self) -> None:
        entry = self.selected_entry()
        for button in (self.rename_button, self.delete_button, self.export_button):
            button.setEnabled(entry is not None)
        if entry is None:
            if self.entries:
                self.details_label.setText("Select an adapter to see its details.")
            return
        swatches = " ".join(
            f'<span style="background-color: rgb({c["color"][0]},{c["color"][1]},{c["color"][2]})">'
            f"&nbsp;&nbsp;&nbsp;</span>&nbsp;{html.escape(c['name'])}" for c in entry.classes)
        kappa = entry.metrics.get("kappa")
        lines = [f"<b>{html.escape(entry.name)}</b> — {html.escape(method_label(entry.method))}, "
                 f"{entry.band_count} bands, band adaptation {html.escape(entry.band_adaptation)}",
                 f"Classes: {swatches}",
                 f"Validation: overall accuracy {accuracy_text(entry.metrics)}"
                 + (f", kappa {float(kappa):.3f}" if kappa is not None else ""),
                 f"Backbone: {html.escape(entry.backbone.describe())}",
                 f"File: {html.escape(str(entry.path))}"]
        self.details_label.setText("<br>".join(lines))

    # -- actions ------------------------------------------------------------------------------
    def rename_adapter(self, path, new_name: str) -> Path:
        """Gives the adapter a new name (inside the file too); returns its new path."""
        new_name = new_name.strip()
        if not new_name:
            raise HyperAdaptError("An adapter needs a name.")
        record = load_adapter_file(path)
        target = library.library_adapter_path(record.sensor_name, new_name)
        if target.exists() and target.resolve() != Path(path).resolve():
            raise HyperAdaptError(f"The library already holds an adapter named '{target.stem}' "
                                  f"for {record.sensor_name}.")
        record.name = new_name
        save_adapter_file(record, target)
        if target.resolve() != Path(path).resolve():
            library.remove_from_library(path)
        self.refresh()
        self.select(target)
        return target

    def delete_adapter(self, path, *, confirm: bool = True) -> bool:
        """Deletes the adapter file after the user confirms; True when it was deleted."""
        if confirm:
            answer = QMessageBox.question(
                self, "Delete adapter",
                f"Delete the adapter '{Path(path).stem}' from the library? This cannot be undone.",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
            if answer != QMessageBox.Yes:
                return False
        library.remove_from_library(path)
        self.refresh()
        return True

    def import_adapter(self, source) -> Path:
        """Copies an adapter file into its sensor's folder of the library."""
        target = library.add_to_library(source)
        self.refresh()
        self.select(target)
        return target

    def export_adapter(self, path, destination) -> Path:
        """Copies a library adapter to ``destination`` (a file or a folder)."""
        destination = Path(destination)
        if destination.is_dir():
            destination = destination / Path(path).name
        shutil.copyfile(path, destination)
        return destination

    @pyqtSlot()
    def open_folder(self) -> bool:
        entry = self.selected_entry()
        folder = entry.path.parent if entry is not None else library.library_root()
        folder.mkdir(parents=True, exist_ok=True)
        return QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    # -- buttons ------------------------------------------------------------------------------
    def _report(self, error: Exception) -> None:
        self.details_label.setText(f'<span style="color:#b00020">{html.escape(str(error))}</span>')

    @pyqtSlot()
    def _rename_clicked(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        name, accepted = QInputDialog.getText(self, "Rename adapter", "New name:", text=entry.name)
        if accepted and name.strip() and name.strip() != entry.name:
            try:
                self.rename_adapter(entry.path, name)
            except (HyperAdaptError, OSError) as error:
                self._report(error)

    @pyqtSlot()
    def _delete_clicked(self) -> None:
        path = self.selected_path()
        if path is not None:
            try:
                self.delete_adapter(path)
            except (HyperAdaptError, OSError) as error:
                self._report(error)

    @pyqtSlot()
    def _import_clicked(self) -> None:
        source, _ = QFileDialog.getOpenFileName(self, "Import an adapter", "", ADAPTER_FILTER)
        if source:
            try:
                self.import_adapter(source)
            except (HyperAdaptError, OSError) as error:
                self._report(error)

    @pyqtSlot()
    def _export_clicked(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        destination, _ = QFileDialog.getSaveFileName(self, "Export the adapter",
                                                     str(Path.home() / entry.path.name),
                                                     ADAPTER_FILTER)
        if destination:
            try:
                self.export_adapter(entry.path, destination)
            except OSError as error:
                self._report(error)
