"""Writing a file so that it is either complete or absent: never half-written."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path, write: Callable[[str], None]) -> Path:
    """Call ``write(temp_path)`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary file is in the target folder so the rename is atomic on the same file system;
    on any failure (or cancel) it is removed and the previous ``path``, if any, stays untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise
    return path


class StagedFiles:
    """A job's outputs written under temporary names beside their targets, renamed together at
    the end.

    Until ``commit()`` every earlier result under the final names stays exactly as it was, so a
    failure late in a job (a full disk while writing the report, a cancel) loses nothing;
    ``discard()`` removes the temporary files. Each output comes with its companion files (a
    raster's ``.qml`` and ``.aux.xml``): a companion the new output lacks is removed with the old
    output it described.
    """

    def __init__(self):
        self._groups: list[list[tuple[Path, Path]]] = []

    def stage(self, path, files_of=lambda main: [Path(main)]) -> Path:
        """The temporary name to write ``path`` under; ``files_of(main)`` lists a main file and
        its companions (e.g. models.stores.guard.raster_files)."""
        path = Path(path)
        temp = path.with_name(f".{path.stem}.{os.getpid()}.staged{path.suffix}")
        self._groups.append(list(zip(files_of(temp), files_of(path))))
        return temp

    def commit(self) -> None:
        for group in self._groups:
            # Companions first: a file under its final name always has the right ones beside it.
            for temp, final in reversed(group):
                if temp.exists():
                    os.replace(temp, final)
                elif final.exists() and (temp, final) != group[0]:
                    final.unlink()
        self._groups = []

    def discard(self) -> None:
        for group in self._groups:
            for temp, _ in group:
                try:
                    temp.unlink(missing_ok=True)
                except OSError:
                    pass
        self._groups = []
