"""The house rules: models/ is Qt-free, and the packaged plugin installs into a QGIS profile."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QT_MODULES = ("qgis", "PyQt5", "PyQt6", "PySide2", "PySide6", "sip")


def _imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_models_source_imports_no_qt_or_qgis():
    files = sorted((REPO / "models").rglob("*.py"))
    assert files, "models/ has no Python files"
    offenders = {str(f.relative_to(REPO)): sorted(_imported_roots(f.read_text()) & set(QT_MODULES))
                 for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_engine_module_loads_no_qt():
    modules = sorted("hyperadapt." + ".".join(f.relative_to(REPO).with_suffix("").parts)
                     for f in (REPO / "models").rglob("*.py") if f.name != "__init__.py")
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"print(sorted(n for n in sys.modules if n.split('.')[0] in {QT_MODULES!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_packaged_zip_installs_and_qgis_process_lists_it_enabled(tmp_path):
    zip_path = Path(subprocess.run(["bash", str(REPO / "scripts" / "dev.sh"), "package"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    names = zipfile.ZipFile(zip_path).namelist()
    assert "hyperadapt/metadata.txt" in names and "hyperadapt/__init__.py" in names
    assert "hyperadapt/requirements.txt" in names
    assert not [n for n in names if n.startswith(("hyperadapt/tests/", "hyperadapt/bench/"))]

    profile = tmp_path / "config" / "profiles" / "default"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    subprocess.run(["bash", str(REPO / "scripts" / "dev.sh"), "install", str(profile)],
                   check=True, env=env, capture_output=True)
    assert (profile / "python" / "plugins" / "hyperadapt" / "metadata.txt").exists()
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(tmp_path / "config")
    listing = subprocess.run(["qgis_process.bin", "plugins"], env=env, capture_output=True,
                             text=True, check=True).stdout
    # qgis_process marks enabled plugins that bring a Processing provider with a star.
    assert "* hyperadapt" in listing.splitlines()
    # Installing again (an upgrade) over the enabled plugin works too.
    again = subprocess.run(["bash", str(REPO / "scripts" / "dev.sh"), "install", str(profile)],
                           env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
