"""Atomic files: write a temp file beside the target, then rename it into place.

Readers never see a half-written file, and a crash leaves the old file (or none) in place. Temp
names start with ``.`` and end with ``.tmp`` so scanners and globs skip them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], *, durable: bool = True, sync_dir: bool = True) -> Path:
    """Write ``path`` through a temp file in the same folder and ``os.replace`` it into place.

    Temp names start with ``.`` and end with ``.tmp`` so scanners and globs skip them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable and sync_dir:
        fsync_dir(path.parent)
    return path
