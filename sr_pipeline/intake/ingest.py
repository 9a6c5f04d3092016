"""Ingest one upload batch: decode, normalise, store, catalogue; quarantine what is bad.

A batch is the folder ``incoming/<batch>/<camera>/...`` (filled by the sensor, or by
:func:`ingest_folder` for back-fills). Every file in it ends in exactly one place: a catalog row
``accepted`` or ``duplicate`` (the file's pixels are in the image store), or the quarantine folder
``quarantine/<batch>/<safe name>`` with ``<safe name>.json`` saying why (its catalog row is
``quarantined``). The batch catalog is written once, after every file has its outcome, and only
then are the incoming files deleted. A run that dies midway leaves the unprocessed and the stored
files in incoming and the quarantined ones (with their JSON) in quarantine; the retry rebuilds the
quarantined rows from the JSON files and processes the rest, so the accounting
``files in = accepted + duplicates + quarantined`` holds whatever happened before. A batch is
catalogued only when every name its ``.names`` list holds has an outcome (:mod:`completeness`): a
claim stopped by a fault is resumed from its source folder, and a file that cannot be found is named.
A full disk, a read-only root or a refused permission stops the step it hits as a
:class:`DiskFault`, told in one sentence with the command that finishes the batch.

Each row keeps the cleaned name the file was claimed as (``source_name``) and the name it arrived
with (``original_name``, exact bytes in ``original_name_hex``, from the batch's name file). Of two
ingestions of one image, concurrent or not, exactly one records it ``accepted``: the accepted ids
are read again and the batch catalog written under :func:`store.catalog_lock`.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import shutil
import stat
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import pandas as pd

from sr_pipeline.common.atomic import is_temp_name
from sr_pipeline.common.errors import EXIT_USAGE, UsageError, check_input_file, one_sentence
from sr_pipeline.storage import store
from sr_pipeline.storage.faults import DiskFault, at_step
from sr_pipeline.intake.completeness import IncompleteBatch, drop_source, missing_names, read_source, record_source
from sr_pipeline.common.cameras import Camera, CameraRegistry, CameraRegistryError, CameraRole, UnknownCameraError, load_registry
from sr_pipeline.sr.images.decode import DecodeLimits, ImageRejected, decode_file
from sr_pipeline.sr.judge.wording import count
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.intake.uploads import (
    FILE,
    SPECIAL,
    SYMLINK,
    BatchBusyError,
    Upload,
    batch_lock,
    check_batch_key,
    display_name,
    drop_names,
    original_hex,
    plan_destinations,
    read_names,
    reserve_batch_key,
    safe_component,
    safe_relative_path,
    scan_tree,
)

# Reason codes decided here (the decoding ones live in sr_pipeline.sr.images.decode).
SYMLINK_REASON = "symlink"
SPECIAL_FILE = "special_file"
UNKNOWN_CAMERA = "unknown_camera"
UNKNOWN_ROLE = "unknown"


@dataclass
class FileOutcome:
    camera: str
    source_name: str
    role: str
    pair_name: str | None
    outcome: str
    reason: str | None
    image_id: str | None
    stored_path: str | None
    message: str | None = None
    original_name: str | None = None
    """The name the file arrived with (``source_name`` is the cleaned one it was claimed as)."""


@dataclass
class IngestSummary:
    batch: str
    catalog_path: Path
    files: list[FileOutcome] = field(default_factory=list)
    already_ingested: bool = False
    """The batch catalog existed before this call; the summary is read back from it."""
    left_in_incoming: list[str] = field(default_factory=list)
    """Files found in the batch folder that its catalog does not record (left untouched)."""

    def count(self, outcome: str) -> int:
        return sum(1 for f in self.files if f.outcome == outcome)

    @property
    def accepted(self) -> int:
        return self.count(store.ACCEPTED)

    @property
    def duplicate(self) -> int:
        return self.count(store.DUPLICATE)

    @property
    def quarantined(self) -> int:
        return self.count(store.QUARANTINED)

    @property
    def files_in(self) -> int:
        return len(self.files)

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "catalog": str(self.catalog_path),
            "already_ingested": self.already_ingested,
            "files_in": self.files_in,
            "accepted": self.accepted,
            "duplicate": self.duplicate,
            "quarantined": self.quarantined,
            "left_in_incoming": self.left_in_incoming,
            "files": [asdict(f) for f in self.files],
        }


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def classify(camera: Camera | None, relpath: str) -> tuple[str, str | None]:
    """``(role, pair_name)`` of an upload from its camera and its path within the camera folder.

    Only field cameras carry calibration pairs: ``pairs/<name>/{hr,lr}/<file>`` gives pair
    ``<name>``; ``<dir>/HR/<file>`` + ``<dir>/LR/<file>`` gives pair ``<dir>/<file stem>``.
    """
    if camera is None:
        return UNKNOWN_ROLE, None
    if camera.role != CameraRole.field_lr:
        return camera.role.value, None
    parts = PurePosixPath(relpath).parts
    dirs = [p.lower() for p in parts[:-1]]
    for i, d in enumerate(dirs):
        if d == "pairs" and i + 2 < len(dirs) and dirs[i + 2] in ("hr", "lr"):
            return f"calib_{dirs[i + 2]}", "/".join([*parts[:i], parts[i + 1]])
    for j, d in enumerate(dirs):
        if d in ("hr", "lr"):
            return f"calib_{d}", "/".join([*parts[:j], *parts[j + 1 : -1], PurePosixPath(parts[-1]).stem])
    return camera.role.value, None


def quarantine_name(camera: str, relpath: str) -> str:
    """A flat, safe file name for a quarantined upload, unique per (camera, path).

    The short hash of the exact original path keeps apart names that sanitise alike
    (``a/b.png`` and ``a__b.png``); it is deterministic, so a retry reuses the name.
    """
    digest = hashlib.sha256(f"{camera}/{relpath}".encode("utf-8", "surrogateescape")).hexdigest()[:8]
    flat = "__".join([safe_component(camera or "_"), *safe_relative_path(relpath).parts])
    stem, dot, ext = flat.rpartition(".")
    if not dot or not stem or len(ext) > 10:
        stem, ext = flat, ""
    return f"{stem[:160]}-{digest}" + (f".{ext}" if ext else "")


def quarantine_record(batch: str, camera: str, relpath: str, incoming_path: str, reason: str, message: str,
                      size: int | None, now: datetime, file: str | None) -> dict:
    """What ``quarantine/<batch>/<file>.json`` says; ``file`` is None for a file left in its source folder."""
    return {
        "reason": reason,
        "message": message,
        "camera": camera,
        "batch": batch,
        "relative_path": relpath,
        "incoming_path": incoming_path,
        "file": file,
        "bytes": size,
        "quarantined_at": now.isoformat(),
    }


def write_quarantine_record(layout: DataLayout, record: dict, *, durable: bool = True) -> None:
    name = quarantine_name(record["camera"], record["relative_path"])
    data = json.dumps(record, indent=2).encode()
    store.atomic_write(layout.quarantine / record["batch"] / f"{name}.json", data, durable=durable)


# ---------------------------------------------------------------- one batch


@dataclass(frozen=True)
class _Item:
    camera: str
    relpath: str  # within the camera folder
    path: Path
    kind: str


def _walk(folder: Path, camera: str, prefix: PurePosixPath | None, items: list[_Item]) -> None:
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if is_temp_name(entry.name):  # claims never make hidden names
            continue
        rel = prefix / entry.name if prefix is not None else PurePosixPath(entry.name)
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            _walk(Path(entry.path), camera, rel, items)
            continue
        kind = FILE if stat.S_ISREG(st.st_mode) else SYMLINK if stat.S_ISLNK(st.st_mode) else SPECIAL
        items.append(_Item(camera, rel.as_posix(), Path(entry.path), kind))


def _batch_items(batch_dir: Path) -> list[_Item]:
    """Every entry of ``incoming/<batch>/<camera>/...``, sorted, without following links.

    Anything directly in the batch folder (a file, or a link instead of a camera folder) gets
    camera ``""``, so it is quarantined as ``unknown_camera`` or ``symlink``.
    """
    items: list[_Item] = []
    if not batch_dir.is_dir():
        return items
    for entry in sorted(os.scandir(batch_dir), key=lambda e: e.name):
        if is_temp_name(entry.name):  # claims never make hidden names
            continue
        if entry.is_dir(follow_symlinks=False):
            _walk(Path(entry.path), entry.name, None, items)
        else:
            kind = SYMLINK if entry.is_symlink() else FILE if entry.is_file(follow_symlinks=False) else SPECIAL
            items.append(_Item("", entry.name, Path(entry.path), kind))
    return items


class _BatchRun:
    """State of one ingest_batch call."""

    def __init__(self, layout: DataLayout, registry: CameraRegistry, batch: str, limits: DecodeLimits, now: datetime, durable: bool):
        self.layout, self.registry, self.batch, self.limits, self.now, self.durable = layout, registry, batch, limits, now, durable
        self.batch_dir = layout.incoming / batch
        self.quarantine_dir = layout.quarantine / batch
        self.known = store.accepted_ids(layout, exclude_batch=batch)
        self.names = read_names(layout, batch)

    def row(self, item: _Item, **values) -> dict:
        camera = self.registry.cameras.get(item.camera)
        role, pair_name = classify(camera, item.relpath)
        # the name the claim recorded; a file put into incoming by other means arrived as it is named
        in_batch = f"{item.camera}/{item.relpath}" if item.camera else item.relpath
        hex_name = self.names.get(in_batch) or original_hex(item.relpath)
        base = dict(
            image_id=None, batch=self.batch, camera=item.camera, role=role, pair_name=pair_name,
            source_name=item.relpath, original_name=display_name(hex_name), original_name_hex=hex_name,
            width=None, height=None, orig_format=None, orig_mode=None, bytes=None, received_at=self.now,
            stored_path=None, outcome=None, reason=None, notes=None, jpeg=None,
        )  # fmt: skip
        base.update(values)
        return base

    def quarantine(self, item: _Item, reason: str, message: str, size: int | None) -> dict:
        name = quarantine_name(item.camera, item.relpath)
        dest = self.quarantine_dir / name
        incoming_path = item.path.relative_to(self.batch_dir).as_posix()
        record = quarantine_record(self.batch, item.camera, item.relpath, incoming_path, reason, message, size, self.now, name)
        if item.kind == SYMLINK:
            record["link_target"] = os.readlink(item.path)  # recorded, never followed
        # The JSON goes first: a crash between the two steps leaves the file in incoming (it is
        # processed again); never a quarantined file without its reason.
        write_quarantine_record(self.layout, record, durable=self.durable)
        os.rename(item.path, dest)
        stored = store.relative_to_root(self.layout, dest)
        return self.row(item, outcome=store.QUARANTINED, reason=reason, bytes=size, stored_path=stored, notes=message)

    def process(self, item: _Item) -> dict:
        """Quarantine a bad file, or decode and store a good one (accepted until de-duplicated)."""
        try:
            st = os.lstat(item.path)
        except FileNotFoundError:
            raise RuntimeError(f"{item.path} vanished while batch {self.batch} was being ingested") from None
        if stat.S_ISLNK(st.st_mode):
            return self.quarantine(item, SYMLINK_REASON, "symbolic links are not followed", st.st_size)
        if not stat.S_ISREG(st.st_mode):
            return self.quarantine(item, SPECIAL_FILE, "not a regular file (FIFO, socket or device)", None)
        if item.camera not in self.registry:
            known = ", ".join(self.registry.ids())
            message = f"folder {item.camera or '(none)'!r} is not a registered camera ({known})"
            return self.quarantine(item, UNKNOWN_CAMERA, message, st.st_size)
        try:
            decoded = decode_file(item.path, self.limits)
        except ImageRejected as rejected:
            return self.quarantine(item, rejected.reason, rejected.message, st.st_size)
        image_id = store.image_id_for(decoded.array())
        if image_id in self.known:
            outcome, path = store.DUPLICATE, store.image_path(self.layout, image_id)
        else:
            _, path, _ = store.put_image(
                self.layout, decoded.image, image_id, png_bytes=decoded.canonical_png, durable=self.durable, sync_dir=False
            )
            outcome = store.ACCEPTED
        return self.row(
            item, image_id=image_id, width=decoded.width, height=decoded.height, orig_format=decoded.orig_format,
            orig_mode=decoded.orig_mode, bytes=st.st_size, stored_path=store.relative_to_root(self.layout, path),
            outcome=outcome, reason=store.DUPLICATE if outcome == store.DUPLICATE else None,
            notes=",".join(decoded.notes) or None, jpeg=decoded.jpeg,
        )  # fmt: skip

    def earlier_quarantine_rows(self, pending: set[str]) -> list[dict]:
        """Rows of files an earlier, failed attempt already quarantined (from their JSON)."""
        rows = []
        if not self.quarantine_dir.is_dir():
            return rows
        for json_path in sorted(self.quarantine_dir.glob("*.json")):
            if json_path.name.startswith("."):
                continue
            record = json.loads(json_path.read_text())
            if record.get("incoming_path") in pending:  # still in incoming: it is processed again now
                continue
            kept = self.quarantine_dir / record["file"] if record.get("file") else None
            item = _Item(record["camera"], record["relative_path"], kept or self.quarantine_dir, FILE)
            rows.append(
                self.row(
                    item, outcome=store.QUARANTINED, reason=record["reason"], bytes=record.get("bytes"),
                    stored_path=store.relative_to_root(self.layout, kept) if kept else None,
                    notes=record.get("message"), received_at=datetime.fromisoformat(record["quarantined_at"]),
                )
            )  # fmt: skip
        return rows


def _deduplicate(rows: list[dict]) -> None:
    """Within a batch the first accepted copy (in path order) wins; later ones become duplicates."""
    first: set[str] = set()
    for row in sorted(rows, key=lambda r: (r["camera"], r["source_name"])):
        if row["outcome"] != store.ACCEPTED:
            continue
        if row["image_id"] in first:
            row["outcome"], row["reason"] = store.DUPLICATE, store.DUPLICATE
        first.add(row["image_id"])


def _mark_accepted_elsewhere(rows: list[dict], accepted: set[str]) -> None:
    for row in rows:
        if row["outcome"] == store.ACCEPTED and row["image_id"] in accepted:
            row["outcome"], row["reason"] = store.DUPLICATE, store.DUPLICATE


def _remove_batch_folder(layout: DataLayout, batch: str, rows: list[dict], items: list[_Item]) -> list[str]:
    """Delete the incoming files that the catalog now records (and the batch's name file once
    the folder is gone); return anything left over."""
    batch_dir = layout.incoming / batch
    recorded = {(r["camera"], r["source_name"]) for r in rows if r["outcome"] in (store.ACCEPTED, store.DUPLICATE)}
    for item in items:
        if (item.camera, item.relpath) in recorded:
            try:
                os.unlink(item.path)
            except FileNotFoundError:
                pass
    leftovers = [f"{u.camera}/{u.relpath}" for u in (_batch_items(batch_dir) if batch_dir.is_dir() else [])]
    if not leftovers and batch_dir.is_dir():
        shutil.rmtree(batch_dir)  # only empty folders and our own temp files remain
    if not leftovers:
        drop_names(layout, batch)
        drop_source(layout, batch)
    return leftovers


def _summary(layout: DataLayout, batch: str, rows: list[dict], already: bool) -> IngestSummary:
    files = [
        FileOutcome(
            camera=r["camera"], source_name=r["source_name"], role=r["role"], pair_name=r["pair_name"],
            outcome=r["outcome"], reason=r["reason"], image_id=r["image_id"], stored_path=r["stored_path"],
            message=r["notes"] if r["outcome"] == store.QUARANTINED else None, original_name=r.get("original_name"),
        )
        for r in sorted(rows, key=lambda r: (r["camera"], r["source_name"]))
    ]  # fmt: skip
    return IngestSummary(batch=batch, catalog_path=store.batch_catalog_path(layout, batch), files=files, already_ingested=already)


def _clean(value):
    """pandas NA/NaT -> None, numpy scalars -> Python, so FileOutcome and JSON stay plain."""
    if value is None or (not isinstance(value, (str, bytes)) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def ingest_batch(
    layout: DataLayout,
    registry: CameraRegistry,
    batch_key: str,
    *,
    limits: DecodeLimits = DecodeLimits(),
    workers: int | None = None,
    clock: Callable[[], datetime] = utc_now,
    durable: bool = True,
) -> IngestSummary:
    """Ingest ``incoming/<batch_key>/``; idempotent (a catalogued batch returns its summary)."""
    check_batch_key(batch_key)
    with ExitStack() as held:
        with at_step(f"taking the lock of batch {batch_key}"):
            held.enter_context(batch_lock(layout, batch_key))
        _resume_claims(layout, batch_key, clock)
        return _ingest_locked(layout, registry, batch_key, limits=limits, workers=workers, clock=clock, durable=durable)


def _resume_claims(layout: DataLayout, batch_key: str, clock: Callable[[], datetime]) -> int:
    """Claim again, from the recorded source folder, the listed files a stopped claim did not reach
    (all of the folder if the claim stopped before it could list them)."""
    source = read_source(layout, batch_key)
    if source is None or store.batch_catalog_path(layout, batch_key).exists() or not Path(source["source"]).is_dir():
        return 0
    listed = {(rel.split("/", 1)[0], hex_name) for rel, hex_name in read_names(layout, batch_key).items()}
    everything = not listed
    quarantined = set()
    for json_path in (layout.quarantine / batch_key).glob("*.json") if (layout.quarantine / batch_key).is_dir() else ():
        record = json.loads(json_path.read_text())
        quarantined.add((record["camera"], record["relative_path"]))
    uploads = [u for u in scan_tree(Path(source["source"]), source["camera"])
               if everything or (u.camera, original_hex(u.relpath)) in listed]  # fmt: skip
    dests = plan_destinations(layout, batch_key, uploads)
    todo = [u for u, d in zip(uploads, dests)
            if not os.path.lexists(d) and (u.camera, d.relative_to(layout.incoming / batch_key / u.camera).as_posix()) not in quarantined]  # fmt: skip
    if todo:
        claim_files(layout, batch_key, source["camera"], todo, move=source["move"], now=clock())
    return len(todo)


def _ingest_locked(layout, registry, batch_key, *, limits, workers, clock, durable) -> IngestSummary:
    catalog_path = store.batch_catalog_path(layout, batch_key)
    batch_dir = layout.incoming / batch_key
    if catalog_path.exists():
        df = store.read_batch_catalog(layout, batch_key)
        rows = [{k: _clean(v) for k, v in rec.items()} for rec in df.to_dict("records")]
        summary = _summary(layout, batch_key, rows, already=True)
        with at_step(f"removing the ingested files of batch {batch_key} from {batch_dir}"):
            summary.left_in_incoming = _remove_batch_folder(layout, batch_key, rows, _batch_items(batch_dir))
        return summary

    items = _batch_items(batch_dir)
    run = _BatchRun(layout, registry, batch_key, limits, clock(), durable)
    if not items and not run.quarantine_dir.is_dir() and not read_names(layout, batch_key):
        raise FileNotFoundError(f"batch {batch_key!r} has no claimed files in {batch_dir} and no catalog")

    pending = {item.path.relative_to(batch_dir).as_posix() for item in items}
    rows = run.earlier_quarantine_rows(pending)
    workers = workers or min(4, os.cpu_count() or 1)
    with at_step(f"storing the images and quarantining the rejected files of batch {batch_key}"):
        if workers > 1 and len(items) > 1:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
                rows.extend(pool.map(run.process, items))
        else:
            rows.extend(run.process(item) for item in items)
        if durable:  # the stored images' folder entries reach the disk before the catalog names them
            for folder in sorted({(layout.root / r["stored_path"]).parent for r in rows if r["outcome"] == store.ACCEPTED}):
                store.fsync_dir(folder)
    with at_step(f"checking that every listed file of batch {batch_key} has an outcome"):
        missing = missing_names(layout, batch_key, rows)
    if missing:  # no catalog, and the name list stays: the batch is not finished
        raise IncompleteBatch(batch_key, missing, len(read_names(layout, batch_key)))
    with at_step("taking the catalog lock"), store.catalog_lock(layout):
        with at_step(f"writing the catalog of batch {batch_key}"):
            # Another ingestion may have catalogued some of these images since this run started.
            _mark_accepted_elsewhere(rows, store.accepted_ids(layout, exclude_batch=batch_key))
            _deduplicate(rows)
            store.write_batch_catalog(layout, batch_key, rows)
    summary = _summary(layout, batch_key, rows, already=False)
    with at_step(f"removing the ingested files of batch {batch_key} from {batch_dir}"):
        summary.left_in_incoming = _remove_batch_folder(layout, batch_key, rows, items)
    return summary


# ---------------------------------------------------------------- back-fill from disk


def claim_files(
    layout: DataLayout, batch_key: str, camera: str, uploads: list[Upload], *, move: bool = False, now: datetime | None = None
) -> list[str]:
    """Put files found under a source folder into ``incoming/<batch>/<camera>/<safe path>``.

    Copies (default) go through a hidden temp file and a rename, so a crash never leaves a partial
    file that looks claimed. Destinations come from :func:`plan_destinations`: names that clean
    alike get distinct ones, every original name is recorded, and a retry maps each file to the
    destination of the earlier attempt (a file already there is kept). Symlinks are re-created as
    links (never followed) so ingestion quarantines them; a special file (FIFO, socket, device)
    cannot be copied: it stays in the source folder and gets a quarantine record, so the batch
    reports it. Returns the claimed paths relative to the batch folder.
    """
    batch_dir = layout.incoming / check_batch_key(batch_key)
    claimed = []
    with at_step(f"recording the names of batch {batch_key}"):
        dests = plan_destinations(layout, batch_key, uploads)
    for upload, dest in zip(uploads, dests):
        rel = dest.relative_to(batch_dir).as_posix()
        if not move and upload.kind == SPECIAL:
            message = f"not a regular file (FIFO, socket or device): left in the source folder {upload.path.parent}"
            relpath = rel.split("/", 1)[1]
            record = quarantine_record(batch_key, camera, relpath, rel, SPECIAL_FILE, message, None, now or utc_now(), None)
            with at_step(f"recording the quarantine of {upload.path}"):
                write_quarantine_record(layout, record)
            continue
        with at_step(f"copying {upload.path} into {batch_dir}"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(dest):
                claimed.append(rel)
                continue
            if move:
                os.rename(upload.path, dest)
            elif upload.kind == SYMLINK:
                os.symlink(os.readlink(upload.path), dest)
            else:
                _copy_via_temp(upload.path, dest)
        claimed.append(rel)
    return claimed


def _copy_via_temp(src: Path, dest: Path) -> None:
    """Copy through a hidden temp file; a copy that fails (full disk) leaves no temp file behind."""
    tmp = dest.with_name(f".{dest.name}.claim.tmp")
    try:
        shutil.copy2(src, tmp, follow_symlinks=False)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def ingest_folder(
    layout: DataLayout,
    registry: CameraRegistry,
    src_dir: str | Path,
    camera: str,
    batch_key: str | None = None,
    *,
    move: bool = False,
    limits: DecodeLimits = DecodeLimits(),
    workers: int | None = None,
    clock: Callable[[], datetime] = utc_now,
    announce: Callable[[str], None] | None = None,
) -> IngestSummary:
    """Back-fill a folder from disk through the same path as camera uploads.

    Hidden and temporary names are skipped, as in the landing folder. With an explicit
    ``batch_key`` whose catalog exists, raises ``FileExistsError``. ``announce`` is called with
    the batch key before anything is claimed, so a run that dies leaves its batch named.
    """
    registry.get(camera)
    src = Path(src_dir)
    if not src.is_dir():
        raise NotADirectoryError(f"source folder {src} does not exist or is not a folder")
    uploads = scan_tree(src, camera)
    if batch_key is None:
        with at_step(f"reserving a batch folder in {layout.incoming}"):
            batch_key = reserve_batch_key(layout, camera, [u.relpath for u in uploads], clock())
    check_batch_key(batch_key)
    if store.batch_catalog_path(layout, batch_key).exists():
        raise FileExistsError(f"batch {batch_key!r} is already ingested ({store.batch_catalog_path(layout, batch_key)})")
    if announce is not None:
        announce(batch_key)
    with ExitStack() as held:
        with at_step(f"taking the lock of batch {batch_key}"):
            held.enter_context(batch_lock(layout, batch_key))
        with at_step(f"recording the source of batch {batch_key}"):
            record_source(layout, batch_key, src, camera, move)
        claim_files(layout, batch_key, camera, uploads, move=move, now=clock())
        batch_dir = layout.incoming / batch_key
        if batch_dir.is_dir() and not any(batch_dir.iterdir()):
            batch_dir.rmdir()  # reserved, but nothing was claimed into it
        if not batch_dir.is_dir() and not (layout.quarantine / batch_key).is_dir():
            # nothing to ingest: no catalog is written for an empty folder
            drop_source(layout, batch_key)
            return IngestSummary(batch=batch_key, catalog_path=store.batch_catalog_path(layout, batch_key))
        return _ingest_locked(layout, registry, batch_key, limits=limits, workers=workers, clock=clock, durable=True)


def _announce(layout: DataLayout, batch_key: str) -> None:
    # stderr, so --json output stays one document; printed first so a crash leaves the key named
    print(
        f"sr-pipeline ingest: batch {batch_key} (if this run dies, finish it with: "
        f"sr-pipeline --data {layout.root} doctor --finish --batch {batch_key})",
        file=sys.stderr, flush=True,
    )  # fmt: skip


def left_to_do(layout: DataLayout, exc: BaseException, batch_key: str | None) -> str:
    """One line after a fault: what to repair, then the command that finishes the batch."""
    if isinstance(exc, store.CatalogDamaged):
        first = f"rebuild the catalog with `sr-pipeline --data {layout.root} doctor --rebuild-catalog`, then "
    elif isinstance(exc, DiskFault):
        fix = {errno.ENOSPC: "free space on the disk of", errno.EDQUOT: "free space on the disk of",
               errno.EROFS: "make writable"}.get(exc.errno, "give this user write access to")  # fmt: skip
        first = f"{fix} {layout.root}, then "
    else:
        first = "put the missing files back where they were listed, then "
    if batch_key is None or (read_source(layout, batch_key) is None and not read_names(layout, batch_key)):
        return first + "run this command again (nothing was claimed)"
    return first + f"run: sr-pipeline --data {layout.root} doctor --finish --batch {batch_key}"


def _print_human(summary: IngestSummary) -> None:
    print(
        f"batch {summary.batch}: {count(summary.files_in, 'file')}: {summary.accepted} accepted, "
        f"{summary.duplicate} duplicate, {summary.quarantined} quarantined"
    )
    for f in summary.files:
        if f.outcome == store.QUARANTINED:
            name = f.original_name if f.original_name is not None else f.source_name
            print(f"  quarantined {f.camera}/{name}: {f.reason} ({f.message})")
    print(f"catalog: {summary.catalog_path}")


def run_cli(args: argparse.Namespace) -> int:
    """``sr-pipeline ingest SRC_DIR --camera ID [--batch KEY] [--cameras FILE] [--json]``
    (and ``--move``, if the parser defines it: move the files instead of copying them)."""
    layout = args.layout
    src = Path(args.src_dir)
    try:
        if not src.is_dir():
            raise UsageError(f"SRC_DIR {src} {'is a file' if src.exists() else 'does not exist'}; "
                             "pass a folder of images")
        if getattr(args, "cameras", None) is not None:
            check_input_file("--cameras", args.cameras, "camera registry file (like configs/cameras.yaml)")
        registry = load_registry(getattr(args, "cameras", None))
        named: list[str] = []

        def announce(key: str) -> None:
            named.append(key)
            _announce(layout, key)

        summary = ingest_folder(
            layout, registry, args.src_dir, args.camera, getattr(args, "batch", None), move=getattr(args, "move", False),
            announce=announce,
        )  # fmt: skip
    except (DiskFault, IncompleteBatch, store.CatalogDamaged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"left to do: {left_to_do(layout, exc, named[0] if named else None)}", file=sys.stderr)
        return 1
    except (CameraRegistryError, UnknownCameraError, NotADirectoryError, FileExistsError, BatchBusyError, ValueError) as exc:
        print(f"error: {one_sentence(exc)}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "json", False):
        print(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        _print_human(summary)
    return 0
