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
