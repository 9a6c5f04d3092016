"""Camera uploads: find landed files that have stopped changing and claim them into upload batches.

This is the sensor's logic without Dagster. A file is claimed only after its size and mtime have
been seen unchanged for ``stable_seconds`` (two observations at least, so a half-written file is
never read, even one copied with an old mtime). Temporary and hidden names are ignored. Claiming is
an atomic ``os.rename`` from ``landing/<camera>/<path>`` to ``incoming/<batch>/<camera>/<path>``;
symlinks and special files are moved as they are (never followed or opened) so ingestion can
quarantine them. The state (the sensor cursor) is a JSON-able dict.

Claimed names are cleaned (:func:`safe_relative_path`); names that clean alike get distinct
destinations, and before anything is moved the batch's name file ``incoming/.names/<batch>.json``
records each destination's original path as exact bytes (hex), so the catalog can keep it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from sr_pipeline.common.cameras import CameraRegistry
from sr_pipeline.common.atomic import atomic_write
from sr_pipeline.storage.layout import DataLayout

STABLE_SECONDS_ENV = "SR_PIPELINE_STABLE_SECONDS"
DEFAULT_STABLE_SECONDS = 10.0
DEFAULT_MAX_FILES_PER_BATCH = 2000
TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".filepart", ".swp", "~")
BATCH_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_COMPONENT = 120

FILE, SYMLINK, SPECIAL = "file", "symlink", "special"


def stable_seconds_from_env() -> float:
    """``$SR_PIPELINE_STABLE_SECONDS`` (default 10); empty, NaN, infinite or over a day is refused."""
    from sr_pipeline.common.env_settings import ENV_SETTINGS

    return ENV_SETTINGS[STABLE_SECONDS_ENV]()


# ---------------------------------------------------------------- names


def is_ignored_name(name: str) -> bool:
    """Hidden (dotfile) or temporary names that an uploader is still writing."""
    lowered = name.lower()
    return name.startswith(".") or lowered.endswith(TEMP_SUFFIXES)


def safe_component(name: str) -> str:
    """One path component reduced to ``[A-Za-z0-9._-]``, never empty, ``.`` or ``..``, never hidden."""
    cleaned = _UNSAFE_CHARS.sub("_", name).lstrip(".")
    if cleaned in ("", ".", ".."):
        cleaned = "_"
    if len(cleaned) > _MAX_COMPONENT:
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        stem, dot, ext = cleaned.rpartition(".")
        ext = ext if dot and len(ext) <= 10 else ""
        keep = _MAX_COMPONENT - len(ext) - 10
        cleaned = f"{(stem if ext else cleaned)[:keep]}-{digest}" + (f".{ext}" if ext else "")
    return cleaned


def safe_relative_path(rel: str | os.PathLike[str]) -> PurePosixPath:
    """An upload's relative path made safe to join under a folder: no absolute paths, no ``..``."""
    parts = [p for p in re.split(r"[\\/]+", os.fspath(rel)) if p not in ("", ".")]
    if not parts:
        raise ValueError(f"empty relative path: {rel!r}")
    return PurePosixPath(*(safe_component(p) for p in parts))


def check_batch_key(batch_key: str) -> str:
    """Batch keys become folder names and Dagster partition keys."""
    if not BATCH_KEY_RE.match(batch_key) or ".." in batch_key:
        raise ValueError(
            f"invalid batch key {batch_key!r}: use 1-128 letters, digits, '_', '-', '.', "
            "starting with a letter or digit, without '..'"
        )
    return batch_key


def make_batch_key(camera: str, relpaths: list[str], when: datetime) -> str:
    """``<camera>-<YYYYMMDDTHHMMSS>-<8 hex of the sorted file list>`` (UTC)."""
    digest = hashlib.sha256("\n".join(sorted(relpaths)).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    stamp = when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return check_batch_key(f"{camera}-{stamp}-{digest}")


def batch_key_camera(batch_key: str) -> str | None:
    """The camera a key made by :func:`make_batch_key` names; None for a key chosen by hand."""
    m = re.fullmatch(r"(.+)-\d{8}T\d{6}-[0-9a-f]{8}", batch_key)
    return m.group(1) if m else None


# ---------------------------------------------------------------- scanning


@dataclass(frozen=True)
class Upload:
    camera: str
    relpath: str
    """Posix path relative to the camera folder, exactly as found."""
    path: Path
    size: int
    mtime_ns: int
    kind: str = FILE

    @property
    def key(self) -> str:
        return f"{self.camera}/{self.relpath}"


def scan_tree(root: Path, camera: str) -> list[Upload]:
    """Every non-ignored entry under ``root`` without following symlinks, sorted by path.

    Regular files are ``file``; symlinks (to files or folders) are ``symlink`` and not descended;
    FIFOs, sockets and devices are ``special``. Ignored names hide whole folders too.
    """
    found: list[Upload] = []

    def walk(folder: Path, prefix: PurePosixPath | None) -> None:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        for entry in entries:
            if is_ignored_name(entry.name):
                continue
            rel = prefix / entry.name if prefix else PurePosixPath(entry.name)
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # gone between listing and stat
                continue
            if stat.S_ISDIR(st.st_mode):
                walk(Path(entry.path), rel)
                continue
            kind = FILE if stat.S_ISREG(st.st_mode) else SYMLINK if stat.S_ISLNK(st.st_mode) else SPECIAL
            found.append(Upload(camera, rel.as_posix(), Path(entry.path), st.st_size, st.st_mtime_ns, kind))

    walk(Path(root), None)
    return sorted(found, key=lambda u: u.relpath)


def observe(state: dict, uploads: list[Upload], now: float, stable_seconds: float) -> tuple[dict, list[Upload]]:
    """Record each upload's (size, mtime) and return ``(new_state, stable uploads)``.

    ``state["seen"]`` maps ``camera/relpath`` to ``{"sig": [size, mtime_ns], "since": t}``, the time
    the current signature was first seen. Paths no longer present are dropped.
    """
    seen = dict(state.get("seen", {}))
    new_seen: dict[str, dict] = {}
    stable: list[Upload] = []
    for upload in uploads:
        sig = [upload.size, upload.mtime_ns]
        prev = seen.get(upload.key)
        unchanged = prev is not None and list(prev.get("sig", [])) == sig
        since = float(prev["since"]) if unchanged else now
        new_seen[upload.key] = {"sig": sig, "since": since}
        if stable_seconds <= 0 or (unchanged and now - since >= stable_seconds):
            stable.append(upload)
    return {**state, "seen": new_seen}, stable


# ---------------------------------------------------------------- claiming


@contextmanager
def batch_lock(layout: DataLayout, batch_key: str) -> Iterator[None]:
    """Exclusive, non-blocking lock on one batch (two ingests of a batch never run at once).

    The lock file is removed on release; a locker that opened the file just before it was
    removed notices that its inode is no longer the path's and tries again.
    """
    lock_dir = layout.incoming / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{check_batch_key(batch_key)}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise BatchBusyError(f"batch {batch_key!r} is being ingested by another process") from None
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)
        finally:
            os.close(fd)


def is_batch_locked(layout: DataLayout, batch_key: str) -> bool:
    """Whether a process holds the batch's lock; creates nothing, so it works on a read-only root.

    A holder always has the lock file; a file without a holder (left by ``kill -9``) is free.
    """
    path = layout.incoming / ".locks" / f"{check_batch_key(batch_key)}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)  # closing releases the probe's shared lock
    return False


class BatchBusyError(RuntimeError):
    pass


def _free_destination(dest: Path, taken: set[Path], original: str) -> Path:
    if dest not in taken and not os.path.lexists(dest):
        return dest
    digest = hashlib.sha256(original.encode("utf-8", "surrogateescape")).hexdigest()[:6]
    name, dot, ext = dest.name.rpartition(".")
    candidate = dest.with_name(f"{name}-{digest}.{ext}" if dot and name else f"{dest.name}-{digest}")
    n = 2
    while candidate in taken or os.path.lexists(candidate):
        candidate = candidate.with_name(f"{candidate.stem}-{n}{candidate.suffix}")
        n += 1
    return candidate


# ---------------------------------------------------------------- original names


def names_path(layout: DataLayout, batch_key: str) -> Path:
    return layout.incoming / ".names" / f"{check_batch_key(batch_key)}.json"


def original_hex(relpath: str) -> str:
    """The exact bytes of a path as found on disk (``os.fsencode`` undoes surrogateescape), as hex."""
    return os.fsencode(relpath).hex()


def display_name(hex_name: str) -> str:
    """A stored original name for humans: UTF-8, with U+FFFD for bytes that are not."""
    return bytes.fromhex(hex_name).decode("utf-8", "replace")


def read_names(layout: DataLayout, batch_key: str) -> dict[str, str]:
    """``{claimed path relative to the batch folder: original path as hex}`` ({} if none recorded)."""
    try:
        return json.loads(names_path(layout, batch_key).read_text())
    except FileNotFoundError:
        return {}


def record_names(layout: DataLayout, batch_key: str, names: dict[str, str]) -> None:
    """Add ``names`` to the batch's name file (written atomically, before the files are moved)."""
    merged = {**read_names(layout, batch_key), **names}
    atomic_write(names_path(layout, batch_key), lambda fh: fh.write(json.dumps(merged, indent=0, sort_keys=True).encode()))


def drop_names(layout: DataLayout, batch_key: str) -> None:
    try:
        os.unlink(names_path(layout, batch_key))
    except FileNotFoundError:
        pass


def plan_destinations(layout: DataLayout, batch_key: str, uploads: list[Upload]) -> list[Path]:
    """Each upload's destination in ``incoming/<batch>/<camera>/<safe path>``, recorded in the name file.

    An upload the name file already maps (an earlier attempt) keeps its destination; names that
    clean alike get distinct ones, so no upload is taken for another.
    """
    batch_dir = layout.incoming / check_batch_key(batch_key)
    known = read_names(layout, batch_key)
    by_original = {(rel.split("/", 1)[0], hex_name): rel for rel, hex_name in known.items()}
    taken = {batch_dir / rel for rel in known}
    dests: dict[int, Path] = {}
    new: dict[str, str] = {}
    # Names that need no cleaning are placed first, so they keep their name whatever the order.
    order = sorted(range(len(uploads)), key=lambda i: safe_relative_path(uploads[i].relpath).as_posix() != uploads[i].relpath)
    for i in order:
        upload = uploads[i]
        hex_name = original_hex(upload.relpath)
        rel = by_original.get((upload.camera, hex_name))
        if rel is None:
            dest = _free_destination(batch_dir / upload.camera / safe_relative_path(upload.relpath), taken, upload.relpath)
            rel = dest.relative_to(batch_dir).as_posix()
            new[rel] = hex_name
            by_original[(upload.camera, hex_name)] = rel
        dests[i] = batch_dir / rel
        taken.add(dests[i])
    if new:
        record_names(layout, batch_key, new)
    return [dests[i] for i in range(len(uploads))]


def claim_by_rename(layout: DataLayout, batch_key: str, uploads: list[Upload]) -> list[str]:
    """Move uploads into ``incoming/<batch>/<camera>/<safe path>``; returns the claimed paths
    (relative to the batch folder). An upload that changed or vanished since it was observed
    stays where it is; its name is taken off the batch's list, which ends holding exactly the
    claimed files (also when a fault stops the claim half-way, where the disk still allows it)."""
    batch_dir = layout.incoming / check_batch_key(batch_key)
    claimed: list[str] = []
    try:
        for upload, dest in zip(uploads, plan_destinations(layout, batch_key, uploads)):
            try:
                st = os.lstat(upload.path)
            except FileNotFoundError:
                continue
            if (st.st_size, st.st_mtime_ns) != (upload.size, upload.mtime_ns):
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(upload.path, dest)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    raise OSError(f"landing and incoming must be on one filesystem to claim atomically: {exc}") from exc
                raise
            claimed.append(dest.relative_to(batch_dir).as_posix())
    finally:
        _keep_only_claimed(layout, batch_key, claimed)
    return claimed


def _keep_only_claimed(layout: DataLayout, batch_key: str, claimed: list[str]) -> None:
    try:
        if not claimed:
            drop_names(layout, batch_key)
            return
        names = read_names(layout, batch_key)
        if set(names) != set(claimed):
            kept = {rel: names[rel] for rel in claimed if rel in names}
            atomic_write(names_path(layout, batch_key), json.dumps(kept, indent=0, sort_keys=True).encode())
    except OSError:
        pass  # a disk that refuses this too: ingestion drops the names still in landing (completeness.py)


def unique_batch_key(layout: DataLayout, camera: str, relpaths: list[str], when: datetime) -> str:
    key = make_batch_key(camera, relpaths, when)
    n = 2
    while (layout.incoming / key).exists() or (layout.catalog / "images" / f"{key}.parquet").exists():
        key = make_batch_key(camera, [*relpaths, f"#{n}"], when)
        n += 1
    return key


def reserve_batch_key(layout: DataLayout, camera: str, relpaths: list[str], when: datetime) -> str:
    """A new batch key whose incoming folder this call created (``os.mkdir`` fails if it exists),
    so two ingestions started in the same second with the same file list never share a batch."""
    layout.incoming.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        key = make_batch_key(camera, relpaths if n == 1 else [*relpaths, f"#{n}"], when)
        n += 1
        if (layout.catalog / "images" / f"{key}.parquet").exists():
            continue
        try:
            os.mkdir(layout.incoming / key)
        except FileExistsError:
            continue
        return key


# ---------------------------------------------------------------- one poll (one sensor tick)


@dataclass
class ClaimedBatch:
    batch_key: str
    camera: str
    files: list[str]
    recovered: bool = False
    """True for a batch found in incoming without a request (a tick that claimed it crashed)."""


@dataclass
class PollResult:
    batches: list[ClaimedBatch]
    state: dict
    waiting: int = 0
    """Files seen but not yet stable."""
    unknown_folders: list[str] = field(default_factory=list)
    """Landing folders that no registered camera owns (left untouched)."""


def _orphan_batches(layout: DataLayout, requested: set[str], min_age_s: float, now: float) -> list[ClaimedBatch]:
    found = []
    if not layout.incoming.is_dir():
        return found
    for entry in sorted(os.scandir(layout.incoming), key=lambda e: e.name):
        name = entry.name
        if name.startswith(".") or name in requested or not entry.is_dir(follow_symlinks=False):
            continue
        if not BATCH_KEY_RE.match(name) or (layout.catalog / "images" / f"{name}.parquet").exists():
            continue
        if now - entry.stat(follow_symlinks=False).st_mtime < min_age_s or is_batch_locked(layout, name):
            continue
        if not any(os.scandir(entry.path)):  # reserved by an ingest that died before claiming anything
            try:
                os.rmdir(entry.path)
            except OSError:
                pass
            continue
        cameras = sorted(e.name for e in os.scandir(entry.path) if not e.name.startswith("."))
        found.append(ClaimedBatch(name, cameras[0] if cameras else "", [], recovered=True))
    return found


def poll_landing(
    layout: DataLayout,
    registry: CameraRegistry,
    state: dict | None,
    *,
    now: float,
    stable_seconds: float,
    max_files_per_batch: int = DEFAULT_MAX_FILES_PER_BATCH,
    recover_after_s: float = 300.0,
) -> PollResult:
    """Scan every registered camera's landing folder, claim its stable files (one batch per
    camera), and return the batches with the next state.

    Batch folders in incoming that no earlier poll returned and that nobody is ingesting (a tick
    that crashed after claiming, a crashed ``sr-pipeline ingest``) are returned again after
    ``recover_after_s`` so nothing claimed is forgotten.
    """
    state = dict(state or {})
    uploads: list[Upload] = []
    for camera in registry.ids():
        uploads.extend(scan_tree(layout.landing / camera, camera))
    state, stable = observe(state, uploads, now, stable_seconds)

    when = datetime.fromtimestamp(now, tz=timezone.utc)
    batches: list[ClaimedBatch] = []
    seen = state["seen"]
    for camera in registry.ids():
        mine = [u for u in stable if u.camera == camera][:max_files_per_batch]
        if not mine:
            continue
        key = unique_batch_key(layout, camera, [u.relpath for u in mine], when)
        claimed = claim_by_rename(layout, key, mine)
        for upload in mine:
            if not os.path.lexists(upload.path):
                seen.pop(upload.key, None)
        if claimed:
            batches.append(ClaimedBatch(key, camera, claimed))

    requested = {key for key in state.get("requested", []) if (layout.incoming / key).is_dir()}
    batches.extend(_orphan_batches(layout, requested | {b.batch_key for b in batches}, recover_after_s, now))
    state["requested"] = sorted(requested | {b.batch_key for b in batches})

    unknown = []
    if layout.landing.is_dir():
        unknown = sorted(
            e.name
            for e in os.scandir(layout.landing)
            if e.is_dir(follow_symlinks=False) and not is_ignored_name(e.name) and e.name not in registry
        )
    waiting = sum(1 for u in uploads if u.key in seen)
    return PollResult(batches=batches, state=state, waiting=waiting, unknown_folders=unknown)
