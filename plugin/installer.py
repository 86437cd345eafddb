"""The dialog that installs HyperAdapt's Python packages from inside QGIS.

Most QGIS users run Windows (OSGeo4W) or macOS and never open a terminal. When torch, einops or
appdirs are missing, this dialog says which, shows the exact pip command for the Python this QGIS
runs (plugin.dependencies), and runs it on Install in a separate process: the log streams in, Cancel
stops it, and afterwards the packages are imported by that Python to check they load. Nothing is
installed unless the user clicks Install.
"""
from __future__ import annotations

from qgis.PyQt.QtCore import QProcess, Qt, pyqtSlot
from qgis.PyQt.QtWidgets import (QComboBox, QDialog, QHBoxLayout, QLabel, QPlainTextEdit,
                                 QPushButton, QVBoxLayout)

from . import dependencies

FAILED_PIP = ("pip failed (exit code {code}); the log above says why. Check the internet "
              "connection (or the proxy QGIS uses), then try again, or run the command in a "
              "terminal (the OSGeo4W Shell on Windows).")


class InstallDialog(QDialog):
    """Install the missing packages with pip, with a live log, cancel and an import check.

    ``install_arguments()`` and ``check_arguments()`` build the two commands; tests replace them.
    ``status`` holds the last outcome sentence.
    """

    def __init__(self, missing: list[str], parent=None):
        """Args:
            missing: the modules that do not import.
            parent: QGIS's main window.
        """
        super().__init__(parent)
        self.setObjectName("hyperadapt_dependency_dialog")
        self.setWindowTitle("HyperAdapt: missing Python packages")
        self.missing = list(missing)
        self.process: QProcess | None = None
        self.stage = ""
        self.status = ""
        layout = QVBoxLayout(self)
        self.message_label = QLabel(dependencies.missing_message(self.missing), self)
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.message_label)
        row = QHBoxLayout()
        row.addWidget(QLabel("PyTorch build:", self))
        self.build_combo = QComboBox(self)
        for key, label in dependencies.TORCH_BUILDS.items():
            self.build_combo.addItem(label, key)
        self.build_combo.currentIndexChanged.connect(self._show_command)
        row.addWidget(self.build_combo, 1)
        layout.addLayout(row)
        self.command_edit = QPlainTextEdit(self)
        self.command_edit.setReadOnly(True)
        self.command_edit.setMaximumHeight(70)
        layout.addWidget(self.command_edit)
        self.log = QPlainTextEdit(self)
        self.log.setObjectName("hyperadapt_install_log")
        self.log.setReadOnly(True)
        layout.addWidget(self.log, 1)
        self.status_label = QLabel("", self)
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        buttons = QHBoxLayout()
        self.install_button = QPushButton("Install", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.close_button = QPushButton("Close", self)
        for button in (self.install_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.install_button.clicked.connect(self.install)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)
        self.cancel_button.setEnabled(False)
        self.resize(720, 480)
        self._show_command()

    # -- the commands ---------------------------------------------------------------------------
    def build(self) -> str:
        return self.build_combo.currentData()

    def install_arguments(self) -> list[str]:
        return dependencies.install_arguments(
            python=dependencies.python_executable(), target=dependencies.deps_dir(),
            requirements=dependencies.requirements_path(), build=self.build())

    def check_arguments(self) -> list[str]:
        return dependencies.import_check_arguments(python=dependencies.python_executable(),
                                                   target=dependencies.deps_dir())

    @pyqtSlot()
    def _show_command(self, *args) -> None:
        self.command_edit.setPlainText(dependencies.quoted(self.install_arguments()))

    # -- running them ---------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.NotRunning

    @pyqtSlot()
    def install(self) -> None:
        if self.is_running():
            return
        dependencies.deps_dir().mkdir(parents=True, exist_ok=True)
        self.log.clear()
        self._start("install", self.install_arguments(), "Installing…")

    def _start(self, stage: str, arguments: list[str], text: str) -> None:
        self.stage = stage
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._read_output)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self._set_status(text)
        self.install_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.log.appendPlainText("$ " + dependencies.quoted(arguments))
        self.process.start(arguments[0], arguments[1:])

    @pyqtSlot()
    def cancel(self) -> None:
        if self.is_running():
            self.stage = "cancelled"
            self.process.kill()

    @pyqtSlot()
    def _read_output(self) -> None:
        text = bytes(self.process.readAllStandardOutput()).decode(errors="replace")
        for line in text.splitlines():
            self.log.appendPlainText(line)

    @pyqtSlot(QProcess.ProcessError)
    def _error(self, error) -> None:
        if error == QProcess.FailedToStart:
            self._done(f"{self.process.program()} could not be started; run the command in a "
                       f"terminal instead.")

    @pyqtSlot(int, QProcess.ExitStatus)
    def _finished(self, code: int, status) -> None:
        self._read_output()
        if self.stage == "cancelled":
            self._done("Cancelled; the packages are not complete. Install again to finish.")
        elif self.stage == "install" and code == 0:
            self._start("check", self.check_arguments(), "Checking that the packages load…")
        elif self.stage == "install":
            self._done(FAILED_PIP.format(code=code))
        elif self.stage == "check" and code == 0:
            self._done(f"Installed into {dependencies.deps_dir()}. Restart QGIS to use "
                       f"HyperAdapt.")
        else:
            self._done("pip finished, but the packages do not load in this QGIS's Python; the "
                       "log above says why. A CPU build is the safe choice.")

    def _done(self, text: str) -> None:
        self._set_status(text)
        self.install_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _set_status(self, text: str) -> None:
        self.status = text
        self.status_label.setText(text)

    def closeEvent(self, event):  # noqa: N802 (Qt's name)
        self.cancel()
        if self.process is not None:
            self.process.waitForFinished(3000)
        super().closeEvent(event)
