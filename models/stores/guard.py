"""One check of a job's files before any work: no output may replace an input or another output.

Every job (fine-tune, classify, evaluate, clean-up, cross-validation, pretraining) names its inputs
and its outputs, each output with the companion files written beside it (a classification's
``.qml`` and ``.aux.xml``, a report's ``.json``), each input with the files kept beside it (a
training layer's ``.qml`` style). Paths are compared after resolving links and ``..``. A clash, an
output that is a folder, a folder that cannot be written, or a disk too full is one sentence
before training starts, so no time is spent on a run that cannot save its results.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..data.raster import read_raster_info
from ..errors import HyperAdaptError


def file_of(path) -> Path | None:
    """The file behind a path as QGIS and OGR write it (``layers.gpkg|layername=fields``)."""
    if path is None or str(path) == "":
        return None
    return Path(str(path).split("|", 1)[0])


def raster_files(path) -> list[Path]:
    """A class raster HyperAdapt writes, with its QGIS style and GDAL's ``.aux.xml`` beside it."""
    main = file_of(path)
    return [] if main is None else [main, main.with_suffix(".qml"),
                                    Path(f"{main}.aux.xml")]


def report_files(html_path, json_path=None) -> list[Path]:
    """An HTML report and the JSON of its figures (``.json`` beside it unless named)."""
    main = file_of(html_path)
    if main is None:
        return []
    json_file = file_of(json_path) or main.with_suffix(".json")
    if same_file(json_file, main):
        json_file = json_file.with_name(f"{json_file.stem}_metrics.json")
    return [main, json_file]


def layer_files(path) -> list[Path]:
    """A vector layer and the ``.qml`` style QGIS keeps beside it."""
    main = file_of(path)
    return [] if main is None else [main, main.with_suffix(".qml")]


def same_file(a, b) -> bool:
    """Whether two paths name one file (links and ``..`` resolved; hard links where both exist)."""
    if a is None or b is None:
        return False
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_job_files(outputs: dict, inputs: dict | None = None, *, needed_bytes: int = 0) -> None:
    """Refuse, in one sentence, outputs that clash with inputs or each other, or cannot be written.

    Args:
        outputs: label -> list of files (the output, then its companions), or one path, or None.
        inputs: label -> list of files (the input, then the files kept beside it), or one path,
            or None.
        needed_bytes: about how much the outputs take; less free space in their folder is an
            error.
    """
    written = {label: _files(files) for label, files in outputs.items()}
    written = {label: files for label, files in written.items() if files}
    read = {label: _files(files) for label, files in (inputs or {}).items()}
    for label, files in written.items():
        main = files[0]
        if main.is_dir():
            raise HyperAdaptError(f"The {label} {main} is a folder; give a file name.")
        for companion in files:
            for in_label, in_files in read.items():
                for kept in in_files:
                    # A file kept beside an input counts where it exists: fields.tif may sit
                    # beside fields.gpkg, but its style must not replace the layer's fields.qml.
                    if (kept != in_files[0] and not kept.exists()) or not same_file(companion,
                                                                                    kept):
                        continue
                    what = (f"the {in_label}" if kept == in_files[0]
                            else f"{kept.name}, kept beside the {in_label}")
                    if companion == main:
                        raise HyperAdaptError(f"The {label} would overwrite {what}; choose "
                                              f"another file name.")
                    raise HyperAdaptError(f"The {label} writes {companion.name} beside it, which "
                                          f"would overwrite {what}; choose another file name.")
    labels = list(written)
    for i, first in enumerate(labels):
        for second in labels[i + 1:]:
            if any(same_file(a, b) for a in written[first] for b in written[second]):
                raise HyperAdaptError(f"The {first} and the {second} need different file names.")
    folders = {}
    for label, files in written.items():
        folders.setdefault(_existing_folder(files[0].parent), label)
    for folder, label in folders.items():
        if not os.access(folder, os.W_OK | os.X_OK):
            raise HyperAdaptError(f"HyperAdapt cannot write in the folder {folder} (for the "
                                  f"{label}); choose another folder.")
    if needed_bytes:
        for folder, label in folders.items():
            free = shutil.disk_usage(folder).free
            if free < needed_bytes:
                raise HyperAdaptError(
                    f"The disk holding {folder} has {_megabytes(free)} free, but the {label} "
                    f"needs about {_megabytes(needed_bytes)}; free some space or choose another "
                    f"folder.")


def _files(files) -> list[Path]:
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    return [Path(f) for f in files if f is not None and str(f) != ""]


def _existing_folder(folder: Path) -> Path:
    """The folder itself, or the nearest one above it that exists (the job creates the rest)."""
    folder = folder.resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.0f} MB" if size >= 2**20 else f"{size / 1024:,.0f} kB"


def map_bytes(raster_path, classification_path, confidence_path=None) -> int:
    """About what a class map (one byte a pixel) and a confidence raster (four) take on disk."""
    if not classification_path:
        return 0
    try:
        info = read_raster_info(raster_path)
    except HyperAdaptError:
        return 0          # the job says what is wrong with the raster when it reads it
    return info.width * info.height * (1 + (4 if confidence_path else 0))
