"""Atomic files: write a temp file beside the target, then rename it into place.

Readers never see a half-written file, and a crash leaves the old file (or none) in place. Temp
names start with ``.`` and end with ``.tmp`` so scanners and globs skip them.

``mkstemp`` and ``mkdtemp`` create private files (0600) and folders (0700); what is published gets
the permissions a plain ``open``/``mkdir`` would give under the process umask (:func:`umask_mode`).
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO


_umask_lock = threading.Lock()
_fallback_umask: int | None = None


def current_umask() -> int:
    """The process umask, read without changing it where the system allows.

    Linux shows it in /proc/self/status. Elsewhere the only way is to set it and put it back, which
    another thread could observe mid-way, so that is done once (under a lock) and remembered.
    """
    global _fallback_umask
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            match = re.search(r"^Umask:\s*([0-7]+)\s*$", fh.read(), re.MULTILINE)
        if match:
            return int(match.group(1), 8)
    except OSError:
        pass
    with _umask_lock:
        if _fallback_umask is None:
            _fallback_umask = os.umask(0o077)
            os.umask(_fallback_umask)
        return _fallback_umask


def umask_mode(folder: bool = False) -> int:
    """The mode ``open`` (0666) or ``mkdir`` (0777) would give a new file or folder under the umask."""
    return (0o777 if folder else 0o666) & ~current_umask()


def temp_dir(parent: Path, prefix: str) -> Path:
    """A new hidden folder in ``parent`` to fill and then rename into place, with the permissions a
    plain ``mkdir`` gives under the umask (``mkdtemp`` alone would make it 0700)."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(tmp, umask_mode(folder=True))
    return tmp


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


NAME_MAX = 255  # bytes in one file name on the usual file systems
_TEMP_EXTRA = len(".") + len(".") + 8 + len(".tmp")  # mkstemp adds 8 random characters


# The exact shape atomic_write's mkstemp gives: ``.<name>.<8 random characters>.tmp``.
_MKSTEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$", re.S)


def is_temp_name(name: str, exact: bool = False) -> bool:
    """Whether ``name`` is one of the project's temp files: hidden and ending ``.tmp`` (every atomic write
    and claim), or with ``exact`` only the shape of :func:`atomic_write`'s own, for folders that other
    programs share (an upscale's output folder), where a looser rule would take their files for ours."""
    if exact:
        return bool(_MKSTEMP_NAME.match(name))
    return name.startswith(".") and name.endswith(".tmp")


def temp_prefix(name: str) -> str:
    """``.<name>.`` cut (on a character boundary) so the temp file's whole name stays within
    :data:`NAME_MAX` bytes whenever ``name`` itself does."""
    room = NAME_MAX - _TEMP_EXTRA
    cut = os.fsencode(name)[:room].decode("utf-8", errors="ignore") if len(os.fsencode(name)) > room else name
    return f".{cut}."


def atomic_write(path: Path, write: Callable[[IO[bytes]], None] | bytes, *, durable: bool = True,
                 sync_dir: bool = True, exclusive: bool = False) -> Path:
    """Write ``path`` through a temp file in the same folder and ``os.replace`` it into place.

    ``write`` is the content (bytes) or a function that writes it to the open file. Temp names start
    with ``.`` and end with ``.tmp`` so scanners and globs skip them. The published file has the
    umask's permissions (:func:`umask_mode`), not mkstemp's 0600. With ``exclusive`` an existing
    ``path`` is never replaced (``FileExistsError``), even one that appears while ``write`` runs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(write, (bytes, bytearray, memoryview)):
                fh.write(write)
            else:
                write(fh)
            os.fchmod(fh.fileno(), umask_mode())
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
