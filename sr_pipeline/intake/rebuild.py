"""Rebuild damaged batch catalogs from what survives: the image store, the quarantine records and
the healthy catalogs.

A damaged catalog (:class:`store.CatalogDamaged`) is moved to ``catalog/damaged/`` (kept, never
read). Its batch gets a new catalog holding the rows its quarantine JSON files still describe, and
every stored image that no healthy catalog accepts gets an ``accepted`` row in a new batch
``recovered-<UTC time>``. Its camera and role come from the damaged catalog's own row where that
file still parses and the row names a registered camera in a role that camera can have (the store
vouches for the image id: it is the hash of the pixels), else from the damaged batch's key when
only one batch was damaged and its key names a registered camera; otherwise they are ``unknown``
(kept out of training until re-catalogued by hand). The duplicate rows of a damaged batch cannot be
recovered; the result says how many files were rebuilt and how many kept their camera.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from sr_pipeline.common.cameras import CameraRegistry, CameraRole
from sr_pipeline.intake.uploads import batch_key_camera
from sr_pipeline.sr.images.decode import DecodeLimits
from sr_pipeline.storage import store
from sr_pipeline.storage.layout import DataLayout

UNKNOWN = "unknown"


@dataclass
class RebuildResult:
    damaged: list[str] = field(default_factory=list)
    """The damaged files, as moved aside (``catalog/damaged/...``)."""
    rebuilt: dict[str, int] = field(default_factory=dict)
    """Batch -> rows rebuilt from its quarantine records."""
    recovered_batch: str | None = None
    recovered_images: int = 0
    recovered_unknown: int = 0
    """Recovered images whose camera could not be told (camera and role ``unknown``)."""


def _salvaged_rows(path: Path) -> dict[str, dict]:
    """image id -> the accepted row of a damaged catalog that still parses (its values unverified)."""
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception:  # pyarrow raises many kinds for a broken file: nothing to salvage
        return {}
    return {r["image_id"]: r for r in rows if r.get("outcome") == store.ACCEPTED and isinstance(r.get("image_id"), str)}


def _roles_of(registry: CameraRegistry, camera: object) -> tuple[str, ...]:
    """The catalog roles a registered camera's images can have (none for an unknown camera)."""
    if not isinstance(camera, str) or camera not in registry.cameras:
        return ()
    role = str(registry.get(camera).role)
    return (role,) if role == CameraRole.hr_reference else (role, store.CALIB_HR, store.CALIB_LR)


def _owner(registry: CameraRegistry, row: dict | None, only_batch: str | None) -> tuple[str, str, str | None]:
    """(camera, role, pair name) of a recovered image: its salvaged row's when that fits the registry,
    else the one damaged batch's camera in its plain role, else unknown."""
    if row is not None and row.get("role") in _roles_of(registry, row.get("camera")):
        return row["camera"], row["role"], row.get("pair_name") if row["role"] in (store.CALIB_HR, store.CALIB_LR) else None
    camera = batch_key_camera(only_batch) if only_batch else None
    roles = _roles_of(registry, camera)
    return (camera, roles[0], None) if roles else (UNKNOWN, UNKNOWN, None)


def _store_row(layout: DataLayout, path: Path, batch: str, now: datetime, was: str,
               owner: tuple[str, str, str | None] = (UNKNOWN, UNKNOWN, None)) -> dict:
    with Image.open(path) as im:
        width, height = im.size
    camera, role, pair = owner
    return dict(
        image_id=path.stem, batch=batch, camera=camera, role=role, pair_name=pair,
        source_name=f"store/{path.name}", original_name=None, original_name_hex=None, width=width, height=height,
        orig_format="PNG", orig_mode="RGB", bytes=path.stat().st_size, received_at=now,
        stored_path=store.relative_to_root(layout, path), outcome=store.ACCEPTED, reason=None,
        notes=f"recovered from the image store: the catalog that named it ({was}) was damaged", jpeg=None,
    )  # fmt: skip


def _stored_images(layout: DataLayout) -> list[Path]:
    if not layout.image_store.is_dir():
        return []
    return sorted(p for p in layout.image_store.glob("*/*.png") if not p.name.startswith("."))


def rebuild_catalogs(layout: DataLayout, registry: CameraRegistry, now: datetime | None = None) -> RebuildResult:
    """Move damaged catalogs aside and rebuild them (see the module docstring); nothing to do if none is damaged."""
    from sr_pipeline.intake.ingest import _BatchRun  # the quarantine-record reader ingestion uses

    now = now or datetime.now(timezone.utc)
    result = RebuildResult()
    with store.catalog_lock(layout):
        damaged, _ = store.damaged_catalogs(layout)
        if not damaged:
            return result
        aside = layout.catalog / "damaged"
        aside.mkdir(parents=True, exist_ok=True)
        stamp = now.strftime("%Y%m%dT%H%M%S")
        salvaged: dict[str, dict] = {}
        for exc in damaged:
            salvaged.update(_salvaged_rows(exc.path))
            kept = aside / f"{exc.path.stem}.{stamp}.parquet"
            os.replace(exc.path, kept)
            result.damaged.append(str(kept))
        healthy = store.read_catalog(layout, columns=["image_id", "outcome"])
        accepted = set(healthy.loc[healthy["outcome"] == store.ACCEPTED, "image_id"].dropna())
        for exc in damaged:
            batch = exc.path.stem
            run = _BatchRun(layout, registry, batch, DecodeLimits(), now, True)
            rows = run.earlier_quarantine_rows(set())
            store.write_batch_catalog(layout, batch, rows)
            result.rebuilt[batch] = len(rows)
        was = ", ".join(exc.path.name for exc in damaged)
        orphans = [p for p in _stored_images(layout) if p.stem not in accepted]
        if orphans:
            batch = f"recovered-{stamp}"
            only = damaged[0].path.stem if len(damaged) == 1 else None
            rows = [_store_row(layout, p, batch, now, was, _owner(registry, salvaged.get(p.stem), only))
                    for p in orphans]
            store.write_batch_catalog(layout, batch, rows)
            result.recovered_batch, result.recovered_images = batch, len(orphans)
            result.recovered_unknown = sum(1 for r in rows if r["camera"] == UNKNOWN)
    return result
