"""Every checkpoint under ``<data>/models/<kind>/<version>/``: the newest of a kind, and which
student is promoted.

Promotions are an append-only JSON log (``models/promotions.json``) written by the
``promoted_student`` asset once the promotion gate passed (or by ``sr-pipeline promote`` for a
rollback; :mod:`sr_pipeline.evaluation.promotion`); the newest entry is the promoted student. A
student the gate rejected is never served by default. ``sr-pipeline models`` prints this registry.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

from sr_pipeline.sr.checkpoints import INFO_FILE, is_model_dir, read_info
from sr_pipeline.storage.atomic import atomic_write
from sr_pipeline.storage.layout import DataLayout

PROMOTIONS_FILE = "promotions.json"


def list_models(layout: DataLayout, kind: str | None = None) -> list[dict]:
    """One dict per model folder (newest last): kind, version, path, created and recorded metrics."""
    rows = []
    if not layout.models.is_dir():
        return rows
    for info_file in sorted(layout.models.glob(f"*/*/{INFO_FILE}")):
        if not is_model_dir(info_file.parent):
            continue
        try:
            info = json.loads(info_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if kind and info.get("kind") != kind:
            continue
        rows.append({
            "kind": info.get("kind", info_file.parent.parent.name),
            "version": info.get("version", info_file.parent.name),
            "path": str(info_file.parent),
            "created": info.get("created"),
            "profile": (info.get("profile") or {}).get("name"),
            "steps": info.get("steps"),
            "final_loss": info.get("final_loss"),
            "metrics": info.get("metrics", {}),
        })
    rows.sort(key=lambda r: (r["created"] or "", r["version"]))
    return rows


def newest_model(layout: DataLayout, kind: str) -> dict | None:
    """The most recently created model of a kind (its ``list_models`` row), or None."""
    rows = list_models(layout, kind)
    return rows[-1] if rows else None


def newest_info(layout: DataLayout, kind: str) -> dict | None:
    """The training.json of the newest model of a kind, or None."""
    row = newest_model(layout, kind)
    return read_info(Path(row["path"])) if row else None


def newest_teacher(layout: DataLayout) -> Path | None:
    """The most recently created teacher folder, or None before the first teacher."""
    row = newest_model(layout, "teacher")
    return Path(row["path"]) if row else None


def promotions(layout: DataLayout) -> list[dict]:
    """The append-only promotion log, oldest first."""
    path = layout.models / PROMOTIONS_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def record_promotion(layout: DataLayout, version: str, path: str, reason: str) -> dict:
    """Append a promotion (atomically); the newest entry is the promoted student."""
    entries = promotions(layout)
    entry = {"version": version, "path": path, "reason": reason,
             "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    entries.append(entry)
    atomic_write(layout.models / PROMOTIONS_FILE, lambda fh: fh.write(json.dumps(entries, indent=2).encode()))
    return entry


def promoted_student_dir(layout: DataLayout) -> Path | None:
    """The promoted student's folder, or None while no student has passed the gate."""
    entries = promotions(layout)
    if entries and Path(entries[-1]["path"]).is_dir():
        return Path(entries[-1]["path"])
    return None


def run_cli(args: argparse.Namespace) -> int:
    layout = args.layout
    rows = list_models(layout)
    promoted = promoted_student_dir(layout)
    for r in rows:
        r["promoted"] = promoted is not None and Path(r["path"]) == promoted
    if args.json:
        print(json.dumps({"models": rows, "promotions": promotions(layout)}, indent=2))
        return 0
    if not rows:
        print(f"no models under {layout.models}")
        return 0
    print(f"{'kind':<12} {'version':<32} {'profile':<10} {'steps':>6}  {'created':<25} promoted")
    for r in rows:
        print(f"{r['kind']:<12} {r['version']:<32} {str(r['profile']):<10} {str(r['steps']):>6}  "
              f"{str(r['created']):<25} {'*' if r['promoted'] else ''}")
    return 0
