"""Installing the Python packages from inside QGIS: the pip command per platform, and the dialog
that runs it (a real QProcess) and reports a failing pip or a successful install."""
from __future__ import annotations

import sys
import time

import pytest
from qgis.PyQt.QtWidgets import QApplication

from hyperadapt.plugin import dependencies
from hyperadapt.plugin.installer import InstallDialog


@pytest.mark.parametrize("platform, build, index", [
    ("linux", "cpu", "https://download.pytorch.org/whl/cpu"),
    ("win32", "cpu", "https://download.pytorch.org/whl/cpu"),
    ("win32", "cu126", "https://download.pytorch.org/whl/cu126"),
    ("darwin", "cpu", None),
])
def test_the_pip_command_for_each_platform(platform, build, index):
    arguments = dependencies.install_arguments(python="PY", target="DEPS", requirements="REQ",
                                               build=build, platform=platform)
    assert arguments[:8] == ["PY", "-m", "pip", "install", "--upgrade", "--target", "DEPS", "-r"]
    assert arguments[8] == "REQ"
    if index is None:                  # PyPI's macOS wheels are the CPU (and Apple GPU) build
        assert "--extra-index-url" not in arguments
    else:
        assert arguments[9:] == ["--extra-index-url", index]
    with pytest.raises(ValueError):
        dependencies.install_arguments(python="PY", target="D", requirements="R", build="rocm")


def test_the_python_qgis_runs_is_found_where_each_platform_keeps_it(tmp_path):
    windows = tmp_path / "OSGeo4W" / "apps" / "Python312"
    windows.mkdir(parents=True)
    (windows / "python.exe").write_text("")
    assert dependencies.python_executable("win32", str(windows),
                                          str(tmp_path / "bin" / "qgis-bin.exe")) == \
        str(windows / "python.exe")
    mac = tmp_path / "QGIS.app" / "Contents" / "Frameworks" / "Python.framework"
    (mac / "bin").mkdir(parents=True)
    (mac / "bin" / "python3").write_text("")
    assert dependencies.python_executable("darwin", str(mac), str(tmp_path / "QGIS")) == \
        str(mac / "bin" / "python3")
    # Nothing found: the name the platform's shell knows, never the QGIS program itself.
    qgis_program = tmp_path / "qgis"
    qgis_program.write_text("")
    assert dependencies.python_executable("linux", str(tmp_path / "none"),
                                          str(qgis_program)) == "python3"


def test_commands_are_quoted_for_the_platforms_shell():
    arguments = ["C:\\Program Files\\QGIS\\apps\\Python312\\python.exe", "-m", "pip"]
    assert dependencies.quoted(arguments, "win32") == (
        '"C:\\Program Files\\QGIS\\apps\\Python312\\python.exe" -m pip')
    assert dependencies.quoted(["/opt/my python/bin/python3", "-m", "pip"], "linux") == (
        "'/opt/my python/bin/python3' -m pip")


def _wait_for(dialog, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        QApplication.processEvents()
        if not dialog.is_running() and dialog.install_button.isEnabled():
            return True
        time.sleep(0.02)
    return False


def _dialog(tmp_path, monkeypatch, install_code: str, check_code: str) -> InstallDialog:
    monkeypatch.setenv("HYPERADAPT_DEPS", str(tmp_path / "deps"))
    dialog = InstallDialog(["torch"])
    dialog.install_arguments = lambda: [sys.executable, "-c", install_code]
    dialog.check_arguments = lambda: [sys.executable, "-c", check_code]
    return dialog


def test_a_failing_pip_is_reported_with_its_log(qgis_app, tmp_path, monkeypatch):
    dialog = _dialog(tmp_path, monkeypatch,
                     "import sys; print('ERROR: Could not find a version that satisfies torch'); "
                     "sys.exit(1)", "print('never run')")
    assert dialog.status == "" and dialog.install_button.isEnabled()
    dialog.install_button.click()
    assert _wait_for(dialog)
    assert dialog.status.startswith("pip failed (exit code 1); the log above says why.")
    assert "Could not find a version that satisfies torch" in dialog.log.toPlainText()
    assert "never run" not in dialog.log.toPlainText()
    dialog.close()


def test_a_successful_install_is_checked_by_importing(qgis_app, tmp_path, monkeypatch):
    dialog = _dialog(tmp_path, monkeypatch, "print('Successfully installed torch')",
                     "print('torch 2.13.0')")
    dialog.install_button.click()
    assert _wait_for(dialog)
    assert dialog.status == (f"Installed into {tmp_path / 'deps'}. Restart QGIS to use "
                             f"HyperAdapt.")
    assert "torch 2.13.0" in dialog.log.toPlainText()
    # pip can succeed and leave packages that do not load: that is said, not hidden.
    broken = _dialog(tmp_path, monkeypatch, "print('ok')",
                     "import sys; print('ImportError: libtorch.so'); sys.exit(1)")
    broken.install_button.click()
    assert _wait_for(broken)
    assert broken.status.startswith("pip finished, but the packages do not load")
    for shown in (dialog, broken):
        shown.close()


def test_cancel_stops_pip(qgis_app, tmp_path, monkeypatch):
    dialog = _dialog(tmp_path, monkeypatch, "import time; print('Collecting torch', flush=True); "
                                            "time.sleep(60)", "print('never run')")
    dialog.install_button.click()
    deadline = time.monotonic() + 10
    while "Collecting torch" not in dialog.log.toPlainText() and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    started = time.monotonic()
    dialog.cancel_button.click()
    assert _wait_for(dialog, 10)
    assert time.monotonic() - started < 5
    assert dialog.status.startswith("Cancelled")
    dialog.close()


def _wheel(folder, name: str, version: str) -> None:
    """A minimal pure-Python wheel whose module prints nothing and knows its version."""
    import base64
    import hashlib
    import zipfile

    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"__version__ = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    lines = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        lines.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(lines + [f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


def test_install_runs_the_real_pip_command_and_the_packages_load(qgis_app, tmp_path,
                                                                 monkeypatch):
    """The dialog's own pip command, from a local folder of wheels instead of the indexes."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    pins = [line.split("==") for line in dependencies.requirements_path().read_text().splitlines()
            if "==" in line and not line.startswith("#")]
    for name, version in pins:
        _wheel(wheels, name, version)
    monkeypatch.setenv("HYPERADAPT_DEPS", str(tmp_path / "deps"))
    dialog = InstallDialog(["torch", "einops"])
    command = dialog.install_arguments()
    assert command[1:4] == ["-m", "pip", "install"] and "--target" in command
    dialog.install_arguments = lambda: command + ["--no-index", "--find-links", str(wheels)]
    dialog.install_button.click()
    assert _wait_for(dialog, 120), dialog.log.toPlainText()
    assert dialog.status == (f"Installed into {tmp_path / 'deps'}. Restart QGIS to use "
                             f"HyperAdapt."), dialog.log.toPlainText()
    assert "torch 2.13.0" in dialog.log.toPlainText()
    assert sorted(p.name for p in (tmp_path / "deps").iterdir() if "dist-info" not in p.name) \
        == ["appdirs", "einops", "torch"]
    dialog.close()
