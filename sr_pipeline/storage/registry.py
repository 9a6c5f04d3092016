"""Every checkpoint under ``<data>/models/<kind>/<version>/``: the newest of a kind, and which
student is promoted for each field camera.

Students and downsamplers are trained per field camera; their training.json names it
(``camera``). Promotions are an append-only JSON log (``models/promotions.json``) written by the
``promoted_student`` asset once the promotion gate passed (or by ``sr-pipeline promote`` for a
rollback; :mod:`sr_pipeline.evaluation.promotion`); the newest entry of a camera is that camera's
promoted student. Entries written before students were per camera carry no camera and stand for
every camera until that camera has its own. A student the gate rejected is never served by default.
``sr-pipeline models`` prints this registry.

Each entry's ``path`` is stored relative to the data root, so a copied or restored data root serves
its own students; older absolute entries are read through :meth:`DataLayout.resolve`. A log that
cannot be read (empty, cut off, not a list of promotions) is a :class:`PromotionLogError` naming the
file and the remedy, never an empty log: the next promotion would otherwise overwrite it.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from sr_pipeline.common.errors import UsageError
from sr_pipeline.sr.models.checkpoints import INFO_FILE, CorruptModelInfo, is_model_dir, read_info
from sr_pipeline.sr.judge.wording import count, readable_time
from sr_pipeline.common.atomic import atomic_write
from sr_pipeline.storage.layout import DataLayout

PROMOTIONS_FILE = "promotions.json"


class PromotionLogError(UsageError):
    """``models/promotions.json`` exists but is not a promotion log; the message names it and the remedy."""


def promotions_path(layout: DataLayout) -> Path:
    return layout.models / PROMOTIONS_FILE


def _read_log(layout: DataLayout) -> list[dict]:
    """The log's entries as stored (paths relative to the data root, or absolute in older entries)."""
    path = promotions_path(layout)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise _log_error(path, f"cannot be read ({type(exc).__name__}: {exc})") from None
    if not text.strip():
        raise _log_error(path, "is empty")
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _log_error(path, f"is cut off or not JSON ({exc})") from None
    if not isinstance(entries, list):
        raise _log_error(path, f"holds a JSON {type(entries).__name__}, not a list of promotions")
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("version"), str) and entry["version"]
                and isinstance(entry.get("path"), str) and entry["path"].strip()
                and isinstance(entry.get("camera"), (str, type(None)))):
            raise _log_error(path, f"entry {i + 1} is not a promotion (it needs a version and a path, and its camera "
                             "must be a name or null)")
    return entries


def _log_error(path: Path, what: str) -> PromotionLogError:
    return PromotionLogError(
        f"the promotion log {path} {what}: restore it from a backup of the data root (docs/deploy.md), or repair "
        "it by hand (a JSON list of promotions, oldest first, each with a version and a path); moving it aside "
        "forgets every promotion")


def list_models(layout: DataLayout, kind: str | None = None, camera: str | None = None) -> list[dict]:
    """One dict per model folder (newest last): kind, version, path, camera, created and recorded metrics;
    only the given field camera's when ``camera`` is set (models trained before cameras were recorded
    count for every camera)."""
    rows = []
    if not layout.models.is_dir():
        return rows
    for info_file in sorted(layout.models.glob(f"*/*/{INFO_FILE}")):
        if not is_model_dir(info_file.parent):
            continue
        info = read_info(info_file.parent)  # a corrupt one is named (CorruptModelInfo), never silently left out
        if kind and info.get("kind") != kind:
            continue
        # A camera's own models; the fixed-degradation challenger belongs to no camera's history.
        if camera is not None and (info.get("challenger") or info.get("camera") not in (camera, None)):
            continue
        rows.append({
            "kind": info.get("kind", info_file.parent.parent.name),
            "version": info.get("version", info_file.parent.name),
            "path": str(info_file.parent),
            "created": info.get("created"),
            "camera": info.get("camera"),
            "profile": (info.get("profile") or {}).get("name"),
            "steps": info.get("steps"),
            "final_loss": info.get("final_loss"),
            "metrics": info.get("metrics", {}),
        })
    rows.sort(key=lambda r: (r["created"] or "", r["version"]))
    return rows


def challenger_version(teacher_version: str) -> str:
    """The version of the fixed-degradation challenger distilled from a teacher (one per teacher, every camera's)."""
    return f"fixed-{teacher_version}"


def challenger_dir(layout: DataLayout, teacher_version: str) -> Path:
    return layout.model_dir("student", challenger_version(teacher_version))


def unpaired_twin_version(version: str) -> str:
    """The version of a co-learned student's unpaired twin: the same profile, seed and images without the
    camera's fit pairs, trained beside it for the promotion gate (only for a camera with fit pairs)."""
    return f"unpaired-{version}"


def unpaired_twin_dir(layout: DataLayout, version: str, kind: str = "student") -> Path:
    """The twin's student folder (``kind="downsampler"``: its camera model's)."""
    return layout.model_dir(kind, unpaired_twin_version(version))


def newest_model(layout: DataLayout, kind: str, camera: str | None = None) -> dict | None:
    """The most recently created model of a kind (of one field camera when given), or None."""
    rows = list_models(layout, kind, camera)
    return rows[-1] if rows else None


def newest_info(layout: DataLayout, kind: str, camera: str | None = None) -> dict | None:
    """The training.json of the newest model of a kind (of one field camera when given), or None."""
    row = newest_model(layout, kind, camera)
    return read_info(Path(row["path"])) if row else None


def newest_teacher(layout: DataLayout) -> Path | None:
    """The most recently created teacher folder, or None before the first teacher."""
    row = newest_model(layout, "teacher")
    return Path(row["path"]) if row else None


def promotions(layout: DataLayout, camera: str | None = None) -> list[dict]:
    """The append-only promotion log, oldest first; with ``camera``, the entries that apply to it
    (its own and the camera-less entries from before students were per camera)."""
    entries = [e | {"path": str(layout.resolve(e["path"]))} for e in _read_log(layout)]
    if camera is None:
        return entries
    own = [e for e in entries if e.get("camera") == camera]
    # A camera's own promotion replaces the camera-less ones, which only stand in until it has one.
    return own if own else [e for e in entries if e.get("camera") is None]


def record_promotion(layout: DataLayout, version: str, path: str, reason: str, camera: str | None = None) -> dict:
    """Append a promotion (atomically; ``path`` stored relative to the data root); the newest entry of a
    camera is its promoted student. Returns the entry with its path as this root resolves it."""
    entries = _read_log(layout)
    entry = {"version": version, "path": layout.relative(path), "reason": reason,
             "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if camera is not None:
        entry["camera"] = camera
    entries.append(entry)
    atomic_write(promotions_path(layout), lambda fh: fh.write(json.dumps(entries, indent=2).encode()))
    return entry | {"path": str(layout.resolve(entry["path"]))}


def promoted_student_dir(layout: DataLayout, camera: str | None = None) -> Path | None:
    """The field camera's promoted student's folder (any camera's newest without ``camera``), or None
    while none has passed the gate."""
    entries = promotions(layout, camera)
    if entries and Path(entries[-1]["path"]).is_dir():
        return Path(entries[-1]["path"])
    return None


def missing_promotions(layout: DataLayout, camera: str | None = None) -> list[dict]:
    """The newest promotion of each field camera (only ``camera``'s when given; the camera-less entries from
    before cameras count as one) whose model folder is missing: that camera has no served student until
    the folder is restored or a student is promoted again. Paths as this root resolves them."""
    entries = promotions(layout)
    if camera is not None:
        newest = promotions(layout, camera)[-1:]
    else:
        newest = list({e.get("camera"): e for e in entries}.values())
    return [e for e in newest if not Path(e["path"]).is_dir()]


def missing_folder_message(layout: DataLayout, entry: dict) -> str:
    """What is wrong with a promotion whose folder is missing, and the two ways out."""
    whose = f"for field camera {entry['camera']!r}" if entry.get("camera") else "for every field camera"
    return (f"student {entry['version']} is the promoted student {whose}, but its folder "
            f"{layout.relative(entry['path'])} under the data root {layout.root} is missing, so no student is served "
            f"{whose}: restore the folder from a backup of the data root (docs/deploy.md) or promote a student "
            "again with `sr-pipeline promote VERSION`")


def promoted_cameras(layout: DataLayout) -> dict[str, Path]:
    """Each field camera with a promoted student, and that student's folder."""
    cameras = sorted({e["camera"] for e in promotions(layout) if e.get("camera")})
    found = {c: promoted_student_dir(layout, c) for c in cameras}
    return {c: p for c, p in found.items() if p is not None}


def promoted_student_for(layout: DataLayout, camera: str | None) -> Path | None:
    """The promoted student of ``camera``, or, without one, of the only field camera that has one.

    Raises ``ValueError`` naming the cameras when several have one and ``camera`` is None."""
    if camera is not None:
        return promoted_student_dir(layout, camera)
    # Every camera with a promotion counts, its folder present or not: one whose folder is missing must not
    # make another camera's student the only one, and so the one served.
    named = sorted({e["camera"] for e in promotions(layout) if e.get("camera")})
    if len(named) > 1:
        raise ValueError(f"each field camera has its own promoted student ({', '.join(named)}): "
                         "say whose with --camera, or pass --model")
    cameras = promoted_cameras(layout)
    return next(iter(cameras.values())) if cameras else promoted_student_dir(layout)


def run_cli(args: argparse.Namespace) -> int:
    layout = args.layout
    try:
        rows = list_models(layout)
    except CorruptModelInfo as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    served: dict[Path, list[str]] = {}  # a student folder -> the field cameras it is promoted for
    for camera, path in promoted_cameras(layout).items():
        served.setdefault(path.resolve(), []).append(camera)
    legacy = [e for e in promotions(layout) if not e.get("camera")]  # stands for cameras without their own
    if legacy and Path(legacy[-1]["path"]).is_dir():
        served.setdefault(Path(legacy[-1]["path"]).resolve(), []).append("all")
    for r in rows:
        cams = served.get(Path(r["path"]).resolve(), []) if r["kind"] == "student" else []
        r["promoted"] = bool(cams)
        r["promoted_for"] = cams
    log = promotions(layout)
    if args.json:
        print(json.dumps({"models": rows, "promotions": log}, indent=2))
        return 0
    if not rows:
        print(f"no models under {layout.models}")
    else:
        print(f"{'kind':<12} {'version':<32} {'camera':<12} {'profile':<28} {'steps':>6}  {'created':<22} promoted for")
        for r in rows:
            print(f"{r['kind']:<12} {r['version']:<32} {str(r['camera'] or '-'):<12} {str(r['profile']):<28} "
                  f"{str(r['steps']):>6}  {readable_time(r['created']) if r['created'] else '-':<22} "
                  f"{', '.join(r['promoted_for'])}")
    print_promotions(layout, log)
    return 0


def print_promotions(layout: DataLayout, log: list[dict]) -> None:
    """The promotion log as ``sr-pipeline models`` prints it (the same entries as its ``--json``), oldest
    first, each folder under the data root, and what is wrong where a promoted folder is missing."""
    if not log:
        print("promotions: none yet (the promotion gate or `sr-pipeline promote` records them)")
        return
    print(f"\npromotions ({count(len(log), 'entry', 'entries')}, oldest first; the newest of a camera is served):")
    for e in log:
        whose = e.get("camera") or "every camera"
        when = readable_time(e["promoted_at"]) if e.get("promoted_at") else "at an unrecorded time"
        gone = "" if Path(e["path"]).is_dir() else "  [folder missing]"
        print(f"  {when}  {e['version']} for {whose} ({layout.relative(e['path'])}): {e.get('reason', '')}{gone}")
    for entry in missing_promotions(layout):
        print(f"warning: {missing_folder_message(layout, entry)}", file=sys.stderr)
