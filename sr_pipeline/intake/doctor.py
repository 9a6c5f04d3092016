"""``sr-pipeline doctor``: find, and on request clear, what interrupted work leaves in the data root.

* Stale temporary files: the hidden ``.<name>.<random>.tmp`` files of atomic writes and claim
  copies, and the hidden temp folders of model and report writes (``models/<kind>/.<name>.<random>``,
  ``reports/.<date>.<random>``), older than ``--min-age``, under the store, catalog, models, runs,
  archive, reports, incoming and quarantine folders. The landing folder is the cameras' and is
  never touched. ``--clean`` removes them; anything younger may still be written by a live process.
* Unfinished batches: ``incoming/<batch>/`` (or ``quarantine/<batch>/``) without a catalog (a
  crashed ``sr-pipeline ingest`` or a sensor batch whose run has not finished), or catalogued with
  files still in incoming. Each comes with the command that finishes it; ``--finish`` runs
  :func:`ingest_batch` on those nobody is ingesting now (idempotent, so finishing a batch that
  its Dagster run will ingest later is harmless: the run reads the catalog back).
* Leftover name files ``incoming/.names/<batch>.json`` of catalogued batches that have no incoming
  folder, older than ``--min-age``. A name file without a catalog is an unfinished batch: its list is
  never removed while a name lacks an outcome.
* Damaged catalogs (content unlike their checksum, unreadable, or naming an accepted image the
  store does not hold; the last is the only check a catalog older than checksums gets): listed with the remedy;
  ``--rebuild-catalog`` moves them aside and rebuilds them (:mod:`rebuild`).
* Stale temp files in output folders named with ``--out`` (an upscale ``--out`` after ``kill -9``).

A full disk, a read-only root or a refused permission is one sentence (exit 1). On a root it cannot
write, ``doctor`` only looks (it takes no lock, creates nothing) and says that it cannot act.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sr_pipeline.common.atomic import is_temp_name
from sr_pipeline.common.errors import EXIT_USAGE, UsageError, check_input_file, one_sentence
from sr_pipeline.common.cameras import CameraRegistryError, load_registry
from sr_pipeline.intake.completeness import IncompleteBatch, read_source
from sr_pipeline.intake.ingest import ingest_batch
from sr_pipeline.intake.uploads import BATCH_KEY_RE, BatchBusyError, check_batch_key, is_batch_locked, names_path, read_names
from sr_pipeline.storage import store
from sr_pipeline.storage.faults import DiskFault, at_step
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.sr.judge.wording import count

DEFAULT_MIN_AGE_S = 3600.0


@dataclass
class StaleTemp:
    path: str
    age_s: float
    bytes: int
    folder: bool = False
    removed: bool = False


@dataclass
class UnfinishedBatch:
    batch: str
    state: str
    """``claimed`` (no catalog yet), ``catalogued`` (files still in incoming), ``empty`` (a folder
    reserved by an ingest that died before claiming anything) or ``busy`` (locked now)."""
    files: int
    age_s: float
    command: str
    listed: int = 0
    """Names in the batch's list (every one must get an outcome before the batch is finished)."""
    finished: dict | None = None
    """After ``--finish``: files_in, accepted, duplicate, quarantined."""
    error: str | None = None


@dataclass
class DoctorReport:
    root: str
    min_age_s: float
    stale_temps: list[StaleTemp] = field(default_factory=list)
    unfinished: list[UnfinishedBatch] = field(default_factory=list)
    leftover_name_files: list[str] = field(default_factory=list)
    names_removed: bool = False
    damaged_catalogs: list[dict] = field(default_factory=list)
    """``{"path", "why", "remedy"}`` of each catalog that fails its check."""
    rebuilt: dict | None = None
    """After ``--rebuild-catalog``: what was moved aside and rebuilt."""
    cannot_act: str | None = None
    """Why the asked-for repairs were not made (a read-only root, a disk fault)."""
    unverified_catalogs: list[str] = field(default_factory=list)
    """Catalogs written before checksums: only checked against the store (not a problem by itself)."""

    def problems_left(self) -> int:
        temps = sum(1 for t in self.stale_temps if not t.removed)
        batches = sum(1 for b in self.unfinished if b.finished is None)
        names = 0 if self.names_removed else len(self.leftover_name_files)
        return temps + batches + names + len(self.damaged_catalogs) + (1 if self.cannot_act else 0)


# ---------------------------------------------------------------- stale temp files


def _temp_folder_parents(layout: DataLayout) -> set[Path]:
    """Folders where hidden sub-folders are temp folders of atomic folder writes."""
    parents = {layout.reports}
    if layout.reports.is_dir():  # each field camera's reports: reports/<camera>/.<date>.<tmp>/
        parents |= {Path(e.path) for e in os.scandir(layout.reports)
                    if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")}
    if layout.models.is_dir():
        parents |= {Path(e.path) for e in os.scandir(layout.models) if e.is_dir(follow_symlinks=False)}
    return parents


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def find_stale_temps(layout: DataLayout, min_age_s: float, now: float, out_dirs: list[Path] = ()) -> list[StaleTemp]:
    roots = [layout.image_store.parent, layout.catalog, layout.models, layout.runs, layout.archive, layout.reports,
             layout.incoming, layout.quarantine, *out_dirs]  # fmt: skip
    folder_parents = _temp_folder_parents(layout)
    outside = {Path(d) for d in out_dirs}
    found = []
    for root in roots:
        for folder, dirs, files in os.walk(root):  # never follows links
            here = Path(folder)
            if root in outside:  # an output folder: our outputs never sit in hidden folders, other programs' do
                dirs[:] = [d for d in dirs if not d.startswith(".")]
            if here in folder_parents:
                for name in [d for d in dirs if d.startswith(".")]:
                    dirs.remove(name)  # a temp folder is reported whole, not walked
                    path = here / name
                    age = now - path.lstat().st_mtime
                    if age >= min_age_s:
                        found.append(StaleTemp(str(path), round(age, 1), _tree_size(path), folder=True))
            for name in files:
                path = here / name
                # an output folder named with --out is shared with other programs: only our exact temp names
                if not is_temp_name(name, exact=root in outside):
                    continue
                try:
                    st = path.lstat()
                except FileNotFoundError:  # finished meanwhile
                    continue
                if now - st.st_mtime >= min_age_s:
                    found.append(StaleTemp(str(path), round(now - st.st_mtime, 1), st.st_size))
    return sorted(found, key=lambda t: t.path)


def remove_temps(temps: list[StaleTemp]) -> None:
    for temp in temps:
        path = Path(temp.path)
        try:
            shutil.rmtree(path) if temp.folder else os.unlink(path)
        except FileNotFoundError:
            pass
        temp.removed = True


# ---------------------------------------------------------------- unfinished batches


def finish_command(layout: DataLayout, batch: str) -> str:
    return f"sr-pipeline --data {layout.root} doctor --finish --batch {batch}"


def _batch_folders(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {e.name: Path(e.path) for e in os.scandir(folder)
            if e.is_dir(follow_symlinks=False) and not e.name.startswith(".") and BATCH_KEY_RE.match(e.name)}  # fmt: skip


def find_unfinished(layout: DataLayout, now: float) -> list[UnfinishedBatch]:
    incoming, quarantined = _batch_folders(layout.incoming), _batch_folders(layout.quarantine)
    listed = _listed_batches(layout)
    found = []
    for batch in sorted(set(incoming) | set(quarantined) | set(listed)):
        catalogued = store.batch_catalog_path(layout, batch).exists()
        if catalogued and batch not in incoming:
            continue  # finished; its quarantine folder is its record
        folder = incoming.get(batch) or quarantined.get(batch) or listed[batch]
        files = sum(1 for p in folder.rglob("*") if not p.is_dir()) if batch in incoming else 0
        empty = (batch in incoming and batch not in quarantined and batch not in listed
                 and read_source(layout, batch) is None and not any(folder.iterdir()))
        state = "busy" if is_batch_locked(layout, batch) else "catalogued" if catalogued else "empty" if empty else "claimed"
        age = round(now - folder.stat().st_mtime, 1)
        found.append(UnfinishedBatch(batch, state, files, age, finish_command(layout, batch), len(read_names(layout, batch))))
    return found


def _listed_batches(layout: DataLayout) -> dict[str, Path]:
    """Batches with a name file (and so a list of files that must each get an outcome)."""
    folder = names_path(layout, "x").parent
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in folder.glob("*.json") if BATCH_KEY_RE.match(p.stem) and ".." not in p.stem}


def finish(layout: DataLayout, batches: list[UnfinishedBatch], cameras_file: Path | None) -> None:
    """Ingest each batch; a fault or a missing file is that batch's one-sentence error (it stays listed)."""
    registry = load_registry(cameras_file)
    for batch in batches:
        if batch.state == "busy":
            batch.error = "being ingested by another process"
            continue
        try:
            if batch.state == "empty":
                with at_step(f"removing the empty batch folder {layout.incoming / batch.batch}"):
                    (layout.incoming / batch.batch).rmdir()
                batch.finished = {"files_in": 0, "accepted": 0, "duplicate": 0, "quarantined": 0}
                continue
            summary = ingest_batch(layout, registry, batch.batch)
        except (BatchBusyError, DiskFault, IncompleteBatch, store.CatalogDamaged, FileNotFoundError) as exc:
            batch.error = one_sentence(exc)
            continue
        batch.finished = {k: getattr(summary, k) for k in ("files_in", "accepted", "duplicate", "quarantined")}


def leftover_name_files(layout: DataLayout, min_age_s: float, now: float) -> list[str]:
    """Name files of batches without an incoming folder (finished, or nothing was claimed).

    A young one may belong to a claim in progress (written before its files are moved): kept.
    """
    folder = names_path(layout, "x").parent
    if not folder.is_dir():
        return []
    left = []
    for path in sorted(folder.glob("*.json")):
        if (layout.incoming / path.stem).exists() or not store.batch_catalog_path(layout, path.stem).exists():
            continue  # without a catalog, the list is the only record of what the batch must hold
        if now - path.stat().st_mtime >= min_age_s:
            left.append(str(path))
    return left


def known_batch(layout: DataLayout, batch: str) -> bool:
    return any(p.exists() for p in (layout.incoming / batch, layout.quarantine / batch, names_path(layout, batch),
                                     store.batch_catalog_path(layout, batch)))  # fmt: skip


def writable(layout: DataLayout) -> str | None:
    """None if the data root can be written; else the sentence saying why not (nothing is created to find out)."""
    probe = layout.root if layout.root.exists() else next(p for p in layout.root.parents if p.exists())
    if os.access(probe, os.W_OK):
        return None
    try:
        read_only = os.statvfs(probe).f_flag & os.ST_RDONLY
    except OSError:
        read_only = False
    why = "is on a read-only file system" if read_only else "cannot be written by this user"
    return f"the data root {layout.root} {why}: reported only, nothing was finished, cleaned or rebuilt"


# ---------------------------------------------------------------- the whole check


def examine(
    layout: DataLayout,
    *,
    min_age_s: float = DEFAULT_MIN_AGE_S,
    clean: bool = False,
    finish_batches: bool = False,
    only: list[str] | None = None,
    cameras_file: Path | None = None,
    now: float | None = None,
    out_dirs: list[Path] = (),
    rebuild: bool = False,
) -> DoctorReport:
    """Look (and with ``clean`` / ``finish_batches`` / ``rebuild`` act); ``only`` limits the batches
    finished and listed; ``out_dirs`` are output folders searched for stale temp files too."""
    now = time.time() if now is None else now
    report = DoctorReport(root=str(layout.root), min_age_s=min_age_s)
    acting = clean or finish_batches or rebuild
    if acting:
        report.cannot_act = writable(layout)
        if report.cannot_act:
            clean = finish_batches = rebuild = False
    try:
        if rebuild:
            from sr_pipeline.intake.rebuild import rebuild_catalogs

            with at_step("rebuilding the damaged catalogs"):
                report.rebuilt = asdict(rebuild_catalogs(layout, load_registry(cameras_file)))
        report.unfinished = [b for b in find_unfinished(layout, now) if not only or b.batch in only]
        if finish_batches:
            finish(layout, report.unfinished, cameras_file)
        report.stale_temps = find_stale_temps(layout, min_age_s, now, list(out_dirs))  # after finishing: it may leave none
        report.leftover_name_files = leftover_name_files(layout, min_age_s, now)
        if clean:
            with at_step("removing stale temp files and name files of finished batches"):
                remove_temps(report.stale_temps)
                for path in report.leftover_name_files:
                    Path(path).unlink(missing_ok=True)
                report.names_removed = True
    except DiskFault as exc:
        report.cannot_act = str(exc)
    damaged, unverified = store.damaged_catalogs(layout)
    remedy = f"sr-pipeline --data {layout.root} doctor --rebuild-catalog"
    report.damaged_catalogs = [{"path": str(d.path), "why": d.why, "remedy": remedy} for d in damaged]
    report.unverified_catalogs = [str(p) for p in unverified]
    return report


def finished_sentence(finished: dict) -> str:
    """What finishing a batch did, as a sentence (``finished now: 3 files, 2 accepted, ...``)."""
    n = int(finished.get("files_in", 0))
    parts = [f"{finished.get(k, 0)} {k}" for k in ("accepted", "duplicate", "quarantined")]
    return f"finished now: {count(n, 'file')}, {', '.join(parts[:-1])} and {parts[-1]}"


def _print_human(report: DoctorReport, clean: bool) -> None:
    print(f"data root {report.root}")
    removed = sum(1 for t in report.stale_temps if t.removed)
    done = "stale" if not clean else ("removed" if removed == len(report.stale_temps) else f"{removed} removed")
    print(f"{len(report.stale_temps)} temporary file(s)/folder(s) older than {report.min_age_s:g} s ({done})")
    for t in report.stale_temps:
        print(f"  {'removed ' if t.removed else ''}{t.path} ({t.bytes} bytes, {t.age_s:.0f} s old)")
    print(count(len(report.unfinished), "unfinished batch", "unfinished batches"))
    for b in report.unfinished:
        if b.finished is not None:
            print(f"  {b.batch}: {finished_sentence(b.finished)}")
        else:
            listed = f" of {b.listed} listed" if b.listed else ""
            print(f"  {b.batch}: {b.state}, {b.files} file(s) in incoming{listed}, {b.age_s:.0f} s old"
                  + (f" ({b.error})" if b.error else f"; finish with: {b.command}"))  # fmt: skip
    if report.leftover_name_files:
        print(f"{len(report.leftover_name_files)} name file(s) of finished batches ({'removed' if report.names_removed else 'left'})")
    if report.rebuilt and report.rebuilt["damaged"]:
        r = report.rebuilt
        rows = ", ".join(f"{b}: {n}" for b, n in r["rebuilt"].items())
        print(f"rebuilt {len(r['damaged'])} damaged catalog(s) (moved to {Path(r['damaged'][0]).parent}); "
              f"quarantine rows rebuilt per batch: {rows}")
        if r["recovered_images"]:
            unknown = r.get("recovered_unknown", 0)
            print(f"  {r['recovered_images']} stored image(s) that no healthy catalog accepted are catalogued again "
                  f"in batch {r['recovered_batch']}"
                  + (f"; {unknown} of them with camera and role unknown, so training leaves them out: re-catalogue "
                     "them by hand (their rows are in that batch's catalog)" if unknown else
                     ", each with the camera and role it had"))
    if report.unverified_catalogs:
        print(f"{len(report.unverified_catalogs)} catalog(s) written before catalogs carried a checksum "
              "(checked against the image store only)")
    for d in report.damaged_catalogs:
        print(f"damaged catalog {d['path']} ({d['why']}): not counted; rebuild with: {d['remedy']}")
    if report.cannot_act:
        print(f"cannot act: {report.cannot_act}")


def run_cli(args: argparse.Namespace) -> int:
    """``sr-pipeline doctor [--clean] [--finish] [--rebuild-catalog] [--batch KEY ...] [--out DIR ...]
    [--min-age S] [--cameras FILE] [--json]``.

    Exit status 0 when nothing is left to fix, 1 when something is (stale files without
    ``--clean``, unfinished batches without ``--finish``), 2 on a usage error.
    """
    if not (math.isfinite(args.min_age) and args.min_age >= 0):
        print(f"error: --min-age {args.min_age:g} is out of range; it must be a number of seconds >= 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.cameras is not None:
            check_input_file("--cameras", args.cameras, "camera registry file (like configs/cameras.yaml)")
        for batch in args.batch:
            try:
                check_batch_key(batch)
            except ValueError as exc:
                raise UsageError(f"--batch: {exc}") from None
            if not known_batch(args.layout, batch):
                raise UsageError(f"--batch {batch} is not a batch of {args.layout.root} "
                                 "(no incoming folder, quarantine folder, name file or catalog)")
        out_dirs = [Path(d) for d in getattr(args, "out", None) or []]
        for d in out_dirs:
            if d.resolve() in (Path(d.anchor or "/").resolve(), Path.home().resolve()):
                raise UsageError(f"--out {d} is a whole file system or home folder; pass the output folder of an "
                                 "upscale run (doctor only removes its own temp files, but will not search that widely)")
            if not d.is_dir():
                raise UsageError(f"--out {d} is not a folder; pass an output folder to search for stale temp files")
        report = examine(args.layout, min_age_s=args.min_age, clean=args.clean, finish_batches=args.finish,
                         only=args.batch or None, cameras_file=args.cameras, out_dirs=out_dirs,
                         rebuild=getattr(args, "rebuild_catalog", False))  # fmt: skip
    except (CameraRegistryError, UsageError) as exc:
        print(f"error: {one_sentence(exc)}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        _print_human(report, args.clean)
    return 1 if report.problems_left() else 0
