"""Rebuild damaged batch catalogs from what survives: the image store, the quarantine records and
the healthy catalogs.

A damaged catalog (:class:`store.CatalogDamaged`) is moved to ``catalog/damaged/`` (kept, never
read). Its batch gets a new catalog holding the rows its quarantine JSON files still describe, and
every stored image that no healthy catalog accepts gets an ``accepted`` row in a new batch
``recovered-<UTC time>`` (camera and role ``unknown``: the store keeps pixels, not names). The
duplicate rows of a damaged batch cannot be recovered; the result says how many files were rebuilt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from sr_pipeline.intake.cameras import CameraRegistry
from sr_pipeline.sr.decode import DecodeLimits
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


def _store_row(layout: DataLayout, path: Path, batch: str, now: datetime, was: str) -> dict:
    with Image.open(path) as im:
        width, height = im.size
    return dict(
        image_id=path.stem, batch=batch, camera=UNKNOWN, role=UNKNOWN, pair_name=None,
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
        for exc in damaged:
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
            store.write_batch_catalog(layout, batch, [_store_row(layout, p, batch, now, was) for p in orphans])
            result.recovered_batch, result.recovered_images = batch, len(orphans)
    return result
