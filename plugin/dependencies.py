"""Where HyperAdapt's Python dependencies live, and whether they can be imported.

QGIS (desktop and ``qgis_process``) runs the system Python, not a virtual environment, so torch,
einops and appdirs are installed with ``pip --target`` into one dependency folder per Python
version, which the plugin puts on ``sys.path`` when QGIS loads it. This module is stdlib-only: it
runs before any dependency is importable, and ``scripts/dev.sh`` calls it as a script.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REQUIRED_MODULES = ("torch", "einops", "appdirs")
REQUIREMENTS_FILE = "requirements.txt"


def user_data_root() -> Path:
    """The per-user data folder that appdirs would give for ``hyperadapt`` (appdirs may be missing)."""
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "hyperadapt"


def deps_dir() -> Path:
    """The dependency folder for this Python; ``HYPERADAPT_DEPS`` overrides it."""
    override = os.environ.get("HYPERADAPT_DEPS")
    if override:
        return Path(override)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return user_data_root() / "deps" / version


def add_deps_to_path() -> None:
    """Put the dependency folder first on ``sys.path``, so its torch wins over any other copy."""
    folder = str(deps_dir())
    if os.path.isdir(folder) and folder not in sys.path:
        sys.path.insert(0, folder)


def missing_modules(modules=REQUIRED_MODULES) -> list[str]:
    """Names of the required modules that cannot be imported, without importing them."""
    missing = []
    for name in modules:
        if name in sys.modules and sys.modules[name] is None:  # marked unimportable
            missing.append(name)
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def python_executable() -> str:
    """The Python that this QGIS runs (inside QGIS ``sys.executable`` is the QGIS binary)."""
    candidates = [Path(sys.exec_prefix) / "bin" / "python3", Path(sys.exec_prefix) / "python.exe",
                  Path(sys.executable)]
    for candidate in candidates:
        if candidate.exists() and "qgis" not in candidate.name.lower():
            return str(candidate)
    return "python3"


def install_command(plugin_dir: Path | None = None) -> str:
    """The exact command that installs the missing dependencies for this QGIS's Python."""
    plugin_dir = plugin_dir or Path(__file__).resolve().parent.parent
    requirements = plugin_dir / REQUIREMENTS_FILE
    if not requirements.exists():
        requirements = plugin_dir / "requirements" / "runtime.txt"
    return (f'"{python_executable()}" -m pip install --target "{deps_dir()}" '
            f'-r "{requirements}"')


def missing_message(missing: list[str]) -> str:
    """One paragraph for the user: what is missing and how to install it."""
    return (f"HyperAdapt needs the Python package{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}, which this QGIS's Python cannot import. Install "
            f"{'them' if len(missing) > 1 else 'it'} with this command, then restart QGIS:\n\n"
            f"{install_command()}\n\n"
            "For an NVIDIA GPU, add --extra-index-url with the PyTorch CUDA index that matches "
            "your driver (see pytorch.org).")


if __name__ == "__main__":
    if sys.argv[1:] == ["--print-dir"]:
        print(deps_dir())
    else:
        print(missing_message(missing_modules()) if missing_modules() else "all dependencies found")
