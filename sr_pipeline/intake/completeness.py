"""When is a batch finished: every name its ``.names`` list holds has an outcome.

``sr-pipeline ingest`` records where a batch comes from (``incoming/.sources/<batch>.json``: source
folder, camera, copy or move) before it claims anything, so a claim stopped by a fault (full disk,
read-only root, ``kill -9``) is resumed from the source by the next ingestion of the batch. A name
that is in neither the batch folder nor the quarantine makes the batch :class:`IncompleteBatch`:
no catalog is written and the name list is kept, and the error says which files and where they are.
A camera upload the sensor listed but did not move (it changed meanwhile) is still in the landing
folder for a later batch: its name is dropped from this batch's list.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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
            if os.path.lexists(path):
                unclaimed.append(rel)
            else:
                where[rel] = f"neither in {layout.incoming / batch} nor in the landing folder (was {path})"
    if unclaimed:
        kept = {rel: h for rel, h in names.items() if rel not in set(unclaimed)}
        store.atomic_write(names_path(layout, batch), json.dumps(kept, indent=0, sort_keys=True).encode())
    return where
