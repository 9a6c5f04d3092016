"""The archive's consistency verdicts for the evaluation report: every batch's manifest, read as written.

One row per archived output with its manifest columns, plus ``consistency_map_file``, the heat map's
absolute path. Each manifest is read with the columns it has (not through the current manifest
schema), so manifests written before the consistency check simply lack its columns and their outputs
count as "not measured"; a manifest that cannot be read is skipped with its reason, never failing
the report.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import pyarrow as pa

from sr_pipeline.common.clock import plant_timezone
from sr_pipeline.intake.uploads import batch_key_camera
from sr_pipeline.serving.archive import batch_field_cameras, manifest_path
from sr_pipeline.evaluation.consistency_page import ArchiveConsistency
from sr_pipeline.storage import store
from sr_pipeline.storage.checked_parquet import DamagedFile, read_checked
from sr_pipeline.storage.layout import DataLayout


# The manifest columns the report reads (older manifests have only some of them).
COLUMNS = ("source_image_id", "batch", "camera", "source_name", "output_path", "upscaled_at", "consistency_verdict",
           "consistency_psnr_y", "consistency_flagged_share", "consistency_peak", "consistency_camera",
           "consistency_reasons", "consistency_map")


def archived_batches(layout: DataLayout) -> list[str]:
    """The batches with a manifest under ``<data>/archive/`` (temp folders, named ``.*``, left out)."""
    if not layout.archive.is_dir():
        return []
    return sorted(p.name for p in layout.archive.iterdir()
                  if not p.name.startswith(".") and manifest_path(layout, p.name).is_file())


def archive_rows(layout: DataLayout) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(every batch's manifest rows, {batch: why its manifest was skipped}); the reasons name files
    under the data root, never the machine's path."""
    rows, unread = [], {}
    for batch in archived_batches(layout):
        path = manifest_path(layout, batch)
        try:
            # Not through the current schema: an older manifest keeps the columns it has.
            table = read_checked(path, None)[0]  # checksum verified where one was written
            batch_rows = table.select([c for c in COLUMNS if c in table.schema.names]).to_pylist()
        except DamagedFile as exc:
            unread[batch] = (f"its manifest could not be read: {layout.relative(path)} is damaged ({exc.why}); "
                             "re-materialise this batch's partition of its camera's upscaled_archive to rebuild it")
            continue
        except (OSError, pa.ArrowException, ValueError) as exc:
            why = str(exc).replace(str(layout.root), "<data>")
            unread[batch] = f"its manifest could not be read: {layout.relative(path)} ({type(exc).__name__}: {why})"
            continue
        for row in batch_rows:
            ref = row.get("consistency_map")
            row["consistency_map_file"] = str(store.resolve_path(layout, ref)) if isinstance(ref, str) and ref else None
            row.setdefault("batch", batch)
            rows.append(row)
    return rows, unread


def _batch_cameras(layout: DataLayout, batch: str) -> set[str | None]:
    """The field cameras of a batch, from its catalog, else from its key; {None} when neither says (an
    unread batch of unknown camera is shown on every camera's page rather than on none)."""
    try:
        return set(batch_field_cameras(layout, batch)) or {None}
    except (OSError, ValueError, pa.ArrowException):
        return {batch_key_camera(batch)}


def archive_consistency(layout: DataLayout, report_date: date, tz: str | None = None,
                        camera: str | None = None) -> ArchiveConsistency:
    """The archive's outputs (one field camera's when given) restored up to ``report_date``, days in the
    plant's time zone (``tz``, else ``$SR_PIPELINE_PLANT_TZ``, else UTC)."""
    read_at = datetime.now(timezone.utc)
    rows, unread = archive_rows(layout)
    if camera is not None:
        rows = [r for r in rows if r.get("camera") == camera]
        unread = {b: why for b, why in unread.items() if _batch_cameras(layout, b) & {camera, None}}
    return ArchiveConsistency.from_rows(rows, report_date, plant_timezone(tz), unread, read_at)

