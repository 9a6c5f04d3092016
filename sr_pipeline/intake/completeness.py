"""When is a batch finished: every name its ``.names`` list holds has an outcome.

``sr-pipeline ingest`` records where a batch comes from (``incoming/.sources/<batch>.json``: source
folder, camera, copy or move) before it claims anything, so a claim stopped by a fault (full disk,
read-only root, ``kill -9``) is resumed from the source by the next ingestion of the batch. A name
that is in neither the batch folder nor the quarantine makes the batch :class:`IncompleteBatch`:
no catalog is written and the name list is kept, and the error says which files and where they are.
A camera upload the sensor listed but did not move (a claim stopped half-way) is still in the
landing folder, or was claimed since by a later batch whose list holds it: its name is dropped from
this batch's list.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from sr_pipeline.intake.uploads import check_batch_key, names_path, read_names
from sr_pipeline.storage import store
from sr_pipeline.storage.layout import DataLayout


class IncompleteBatch(RuntimeError):
    """Names in a batch's list without an outcome; the batch is not catalogued."""

    def __init__(self, batch: str, missing: dict[str, str], listed: int):
        self.batch, self.missing, self.listed = batch, missing, listed
        shown = "; ".join(f"{rel}: {where}" for rel, where in list(missing.items())[:3])
        more = f"; and {len(missing) - 3} more" if len(missing) > 3 else ""
        super().__init__(f"batch {batch} is not finished: {len(missing)} of its {listed} listed file(s) "
                         f"have no outcome ({shown}{more})")


def source_path(layout: DataLayout, batch: str) -> Path:
    return layout.incoming / ".sources" / f"{check_batch_key(batch)}.json"


def record_source(layout: DataLayout, batch: str, src: Path, camera: str, move: bool) -> None:
    data = json.dumps({"source": str(Path(src).resolve()), "camera": camera, "move": move}, indent=1).encode()
    store.atomic_write(source_path(layout, batch), data)


def read_source(layout: DataLayout, batch: str) -> dict | None:
    try:
        return json.loads(source_path(layout, batch).read_text())
    except FileNotFoundError:
        return None


def drop_source(layout: DataLayout, batch: str) -> None:
    source_path(layout, batch).unlink(missing_ok=True)


def _original(hex_name: str) -> str:
    return os.fsdecode(bytes.fromhex(hex_name))


def _listed_elsewhere(layout: DataLayout, batch: str) -> set[tuple[str, str]]:
    """``(camera, original hex)`` of the files other batches claimed since this one: held in their
    incoming folder, or catalogued after this batch's list was written."""
    since = pd.Timestamp(names_path(layout, batch).stat().st_mtime, unit="s", tz="UTC")
    df = store.read_catalog(layout, columns=["camera", "original_name_hex", "batch", "received_at"], skip_damaged=True)
    df = df[(df["batch"] != batch) & (df["received_at"] >= since)]
    found = set(zip(df["camera"], df["original_name_hex"]))
    for path in names_path(layout, batch).parent.glob("*.json"):
        if path.stem == batch:
            continue
        try:
            names = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        found |= {(rel.split("/", 1)[0], h) for rel, h in names.items() if os.path.lexists(layout.incoming / path.stem / rel)}
    return found


def missing_names(layout: DataLayout, batch: str, rows: list[dict]) -> dict[str, str]:
    """``{claimed path: where the file is}`` for each listed name that no row records.

    Names of camera uploads still in the landing folder (listed, never moved) are dropped from the
    list first: a later batch claims them.
    """
    names = read_names(layout, batch)
    have = {f"{r['camera']}/{r['source_name']}" for r in rows}
    lacking = {rel: hex_name for rel, hex_name in names.items() if rel not in have}
    if not lacking:
        return {}
    source = read_source(layout, batch)
    where: dict[str, str] = {}
    unclaimed = []
    for rel, hex_name in sorted(lacking.items()):
        camera = rel.split("/", 1)[0]
        if source is not None:
            path = Path(source["source"]) / _original(hex_name)
            where[rel] = (f"still in the source folder at {path}" if os.path.lexists(path)
                          else f"gone from the source folder, it was {path}")
        else:
            path = layout.landing / camera / _original(hex_name)
            if os.path.lexists(path) or (camera, hex_name) in _listed_elsewhere(layout, batch):
                unclaimed.append(rel)
            else:
                where[rel] = f"neither in {layout.incoming / batch} nor in the landing folder (was {path})"
    if unclaimed:
        kept = {rel: h for rel, h in names.items() if rel not in set(unclaimed)}
        store.atomic_write(names_path(layout, batch), json.dumps(kept, indent=0, sort_keys=True).encode())
    return where
