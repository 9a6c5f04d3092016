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


def _publish_new(tmp: str, path: Path) -> None:
    """Rename ``tmp`` to ``path`` unless ``path`` exists, even one that appeared meanwhile."""
    try:
        os.link(tmp, path)  # atomic, and fails if the target exists
    except FileExistsError:
        raise FileExistsError(f"{path} exists") from None
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise FileExistsError(f"{path} exists") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], *, durable: bool = True, sync_dir: bool = True,
                 exclusive: bool = False) -> Path:
    """Write ``path`` through a temp file in the same folder and ``os.replace`` it into place.

    Temp names start with ``.`` and end with ``.tmp`` so scanners and globs skip them. With
    ``exclusive`` an existing ``path`` is never replaced (``FileExistsError``), even one that appears
    while ``write`` runs.
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
        if exclusive:
            _publish_new(tmp, path)
        else:
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
