"""Where HyperAdapt's Python dependencies live, and whether they can be imported.

QGIS (desktop and ``qgis_process``) runs the system Python, not a virtual environment, so torch,
einops and appdirs are installed with ``pip --target`` into one dependency folder per Python
version, which the plugin puts on ``sys.path`` when QGIS loads it. This module is stdlib-only: it
runs before any dependency is importable, and ``scripts/dev.sh`` calls it as a script.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

REQUIRED_MODULES = ("torch", "einops", "appdirs")
REQUIREMENTS_FILE = "requirements.txt"
# PyTorch's own package indexes: the CPU build (a few hundred MB instead of several GB of CUDA
# libraries on Linux and Windows) and CUDA builds for NVIDIA GPUs.
TORCH_INDEXES = {
    "cpu": "https://download.pytorch.org/whl/cpu",
    "cu126": "https://download.pytorch.org/whl/cu126",
    "cu128": "https://download.pytorch.org/whl/cu128",
}
TORCH_BUILDS = {"cpu": "CPU (any computer)", "cu126": "NVIDIA GPU, CUDA 12.6",
                "cu128": "NVIDIA GPU, CUDA 12.8"}


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


def quiet_openmp_threads() -> None:
    """Let PyTorch's idle OpenMP threads sleep instead of spinning, unless the user chose.

    OpenMP reads the policy once, when PyTorch loads it, so this runs before torch is imported.
    Spinning threads compete with QGIS's own threads for the cores: on a 2-core machine,
    pretraining through qgis_process took 155 and 159 steps in 30 s with the default policy, and
    419 to 531 (four runs) once the plugin set PASSIVE, about 3 times as many.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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


def python_executable(platform: str = sys.platform, exec_prefix: str = sys.exec_prefix,
                      executable: str = sys.executable) -> str:
    """The Python that this QGIS runs. Inside QGIS ``sys.executable`` is the QGIS program, so the
    interpreter is looked for where each platform's QGIS keeps it: OSGeo4W and the Windows
    installers in ``<prefix>\\python.exe``, QGIS.app and Linux in ``<prefix>/bin/python3``."""
    prefix = Path(exec_prefix)
    if platform.startswith("win"):
        candidates = [prefix / "python.exe", prefix / "python3.exe"]
    else:
        candidates = [prefix / "bin" / "python3", prefix / "bin" / "python"]
    candidates.append(Path(executable))
    for candidate in candidates:
        if candidate.exists() and "qgis" not in candidate.name.lower():
            return str(candidate)
    return "python" if platform.startswith("win") else "python3"


def requirements_path(plugin_dir: Path | None = None) -> Path:
    """The runtime requirements: ``requirements.txt`` of an installed plugin, else the checkout's."""
    plugin_dir = plugin_dir or Path(__file__).resolve().parent.parent
    requirements = plugin_dir / REQUIREMENTS_FILE
    return requirements if requirements.exists() else plugin_dir / "requirements" / "runtime.txt"


def install_arguments(*, python: str, target, requirements, build: str = "cpu",
                      platform: str = sys.platform) -> list[str]:
    """The pip command that installs the dependencies into ``target`` for ``python``.

    ``build`` is a key of TORCH_INDEXES. On Linux and Windows, PyPI's torch is the CUDA build
    (several GB); PyTorch's index is added so pip takes the build asked for. macOS wheels on PyPI
    are CPU builds (with Apple's GPU), and CUDA does not exist there.
    """
    if build not in TORCH_INDEXES:
        raise ValueError(f"unknown PyTorch build {build!r}")
    arguments = [str(python), "-m", "pip", "install", "--upgrade", "--target", str(target),
                 "-r", str(requirements)]
    if not platform.startswith("darwin"):
        arguments += ["--extra-index-url", TORCH_INDEXES[build]]
    return arguments


def import_check_arguments(*, python: str, target) -> list[str]:
    """A command that imports the dependencies from ``target`` with ``python`` and prints torch's
    version: pip can succeed and still leave a torch this Python cannot load."""
    code = (f"import sys; sys.path.insert(0, {str(target)!r}); "
            f"import {', '.join(REQUIRED_MODULES)}; print('torch', torch.__version__)")
    return [str(python), "-c", code]


def quoted(arguments: list[str], platform: str = sys.platform) -> str:
    """The command as one line to paste into a terminal (cmd.exe quoting on Windows)."""
    if platform.startswith("win"):
        return subprocess.list2cmdline(arguments)
    return shlex.join(arguments)


def install_command(plugin_dir: Path | None = None, build: str = "cpu") -> str:
    """The exact command that installs the missing dependencies for this QGIS's Python."""
    return quoted(install_arguments(python=python_executable(), target=deps_dir(),
                                    requirements=requirements_path(plugin_dir), build=build))


def missing_message(missing: list[str]) -> str:
    """One paragraph for the user: what is missing and how to install it."""
    return (f"HyperAdapt needs the Python package{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}, which this QGIS's Python cannot import. Install "
            f"{'them' if len(missing) > 1 else 'it'} with the Install button, or with this "
            f"command in a terminal (the OSGeo4W Shell on Windows), then restart QGIS:\n\n"
            f"{install_command()}\n\n"
            "For an NVIDIA GPU, choose a CUDA build (or put its PyTorch index, such as "
            f"{TORCH_INDEXES['cu126']}, in place of the CPU one).")


if __name__ == "__main__":
    if sys.argv[1:] == ["--print-dir"]:
        print(deps_dir())
    else:
        print(missing_message(missing_modules()) if missing_modules() else "all dependencies found")
