"""Faults of the disk told as one sentence: a full disk, a read-only file system, a refused permission.

Ingestion and ``doctor`` wrap each step that writes (claim, copy, store, catalog, lock) in
:func:`at_step`; an ``OSError`` of one of these kinds leaves it as a :class:`DiskFault` that names the
step and the path, so the command line prints one sentence and what is left to do (never a traceback).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

_KINDS = {
    errno.ENOSPC: "no space is left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission was refused",
    errno.EPERM: "the operation is not permitted",
}
DISK_ERRNOS = frozenset(_KINDS)


class DiskFault(OSError):
    """A write refused by the disk during one named step of the work."""

    def __init__(self, step: str, cause: OSError):
        self.step = step
        self.cause = cause
        self.path = cause.filename
        super().__init__(cause.errno, self.sentence())

    def sentence(self) -> str:
        where = f" ({self.path})" if self.path and str(self.path) not in self.step else ""
        return f"{_KINDS[self.cause.errno]} while {self.step}{where}"

    def __str__(self) -> str:
        return self.sentence()


def is_disk_fault(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


@contextmanager
def at_step(step: str) -> Iterator[None]:
    """Re-raise a disk fault inside the block as a :class:`DiskFault` of ``step`` (the first step named wins)."""
    try:
        yield
    except DiskFault:
        raise
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise DiskFault(step, exc) from exc
        raise
