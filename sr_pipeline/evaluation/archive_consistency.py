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

from sr_pipeline.evaluation.calibration import plant_timezone
from sr_pipeline.serving.archive import manifest_path
from sr_pipeline.sr.consistency_report import ArchiveConsistency
from sr_pipeline.storage import store
from sr_pipeline.storage.checked_parquet import read_checked
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
    """(every batch's manifest rows, {batch: why its manifest was skipped})."""
    rows, unread = [], {}
    for batch in archived_batches(layout):
        try:
            # Not through the current schema: an older manifest keeps the columns it has.
            path = manifest_path(layout, batch)
            table = read_checked(path, None)[0]  # checksum verified where one was written
            batch_rows = table.select([c for c in COLUMNS if c in table.schema.names]).to_pylist()
        except (OSError, pa.ArrowException, ValueError) as exc:
            unread[batch] = f"its manifest could not be read ({type(exc).__name__}: {exc})"
            continue
        for row in batch_rows:
            ref = row.get("consistency_map")
            row["consistency_map_file"] = str(store.resolve_path(layout, ref)) if isinstance(ref, str) and ref else None
            row.setdefault("batch", batch)
            rows.append(row)
    return rows, unread


def archive_consistency(layout: DataLayout, report_date: date, tz: str | None = None,
                        camera: str | None = None) -> ArchiveConsistency:
    """The archive's outputs (one field camera's when given) restored up to ``report_date``, days in the
    plant's time zone (``tz``, else ``$SR_PIPELINE_PLANT_TZ``, else UTC)."""
    read_at = datetime.now(timezone.utc)
    rows, unread = archive_rows(layout)
    if camera is not None:
        rows = [r for r in rows if r.get("camera") == camera]
    return ArchiveConsistency.from_rows(rows, report_date, plant_timezone(tz), unread, read_at)

