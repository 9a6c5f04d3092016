"""The ``raw_plant_images`` asset (one partition per upload batch) and ``ingest_job``, the job the
upload sensor requests for each batch.

The archive is not part of this job: each field camera's archive asset (defs/archive/assets.py) is
partitioned by that camera's batches, and a job holds assets of one partitions definition only, so
the upload sensor requests the camera's ``archive_<camera>_job`` for the batch in a run of its own once
this asset's partition is materialised.
"""

import base64
import hashlib
import io

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
)

from sr_pipeline.storage import store
from sr_pipeline.defs.plant.partitions import add_field_camera_partitions, upload_batches
from sr_pipeline.common.cameras import CameraRole
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.intake.ingest import IngestSummary, ingest_batch
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.sr.judge.wording import count

THUMBNAILS = 8
THUMB_HEIGHT = 64
MAX_TABLE_ROWS = 50


def outcomes_markdown(summary: IngestSummary, limit: int = MAX_TABLE_ROWS) -> str:
    """A markdown table of each file's outcome (quarantined files first)."""
    order = {store.QUARANTINED: 0, store.DUPLICATE: 1, store.ACCEPTED: 2}
    files = sorted(summary.files, key=lambda f: (order.get(f.outcome, 3), f.camera, f.source_name))
    lines = ["| camera | file | role | outcome | reason |", "|---|---|---|---|---|"]
    for f in files[:limit]:
        name = f.source_name.replace("|", "\\|")
        reason = (f.reason or "").replace("|", "\\|")
        lines.append(f"| {f.camera} | {name} | {f.role} | {f.outcome} | {reason} |")
    if len(files) > limit:
        lines.append(f"| | ... {len(files) - limit} more in the catalog | | | |")
    return "\n".join(lines)


def thumbnail_strip_markdown(layout: DataLayout, summary: IngestSummary, count: int = THUMBNAILS) -> "str | None":
    """The first accepted images as one PNG strip embedded in markdown (Dagster has no image type)."""
    from PIL import Image

    paths = [store.resolve_path(layout, f.stored_path) for f in summary.files if f.outcome == store.ACCEPTED][:count]
    thumbs = []
    for path in paths:
        with Image.open(path) as im:
            w = max(1, round(im.width * THUMB_HEIGHT / im.height))
            thumbs.append(im.convert("RGB").resize((w, THUMB_HEIGHT), Image.Resampling.BILINEAR))
    if not thumbs:
        return None
    strip = Image.new("RGB", (sum(t.width for t in thumbs) + 2 * (len(thumbs) - 1), THUMB_HEIGHT), (255, 255, 255))
    x = 0
    for t in thumbs:
        strip.paste(t, (x, 0))
        x += t.width + 2
    buf = io.BytesIO()
    strip.save(buf, format="PNG", optimize=True)
    return f"![accepted images](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


def _data_version(summary: IngestSummary) -> DataVersion:
    ids = sorted(f"{f.outcome}:{f.image_id or f.source_name}" for f in summary.files)
    return DataVersion(hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16])


@asset(
    partitions_def=upload_batches,
    group_name="ingest",
    kinds={"parquet"},
    # Exactly-once accounting does not rest on this pool (ingest_batch takes the catalog lock); the
    # pool (limit 1 in dagster.yaml) keeps concurrent batches from competing for the same CPUs and
    # from queueing on that lock.
    pool="ingest",
    description=(
        "Camera uploads of one batch, validated, decoded (EXIF orientation applied), normalised to "
        "8-bit RGB, stored once by content hash and catalogued (catalog/images/<batch>.parquet). "
        "Bad files are quarantined with a JSON reason; duplicates are recorded, not stored twice. A field "
        "camera's first accepted images add its field_cameras partition."
    ),
)
def raw_plant_images(context: AssetExecutionContext, storage: PlantStorage) -> MaterializeResult:
    layout = storage.layout()
    registry = storage.registry()
    summary = ingest_batch(layout, registry, context.partition_key)
    field = {f.camera for f in summary.files if f.outcome != store.QUARANTINED and f.role == CameraRole.field_lr}
    for camera in add_field_camera_partitions(context.instance, field):
        context.log.info(f"new field camera {camera}: added its field_cameras partition (its own camera model and "
                         "student)")
    context.log.info(
        f"batch {summary.batch}: {count(summary.files_in, 'file')}, {summary.accepted} accepted, "
        f"{summary.duplicate} duplicate, {summary.quarantined} quarantined"
        + (" (already ingested: read back from its catalog)" if summary.already_ingested else "")
    )
    if summary.left_in_incoming:
        context.log.warning(f"files in incoming/{summary.batch} that its catalog does not record: {summary.left_in_incoming}")
    roles: dict[str, int] = {}
    for f in summary.files:
        if f.outcome != store.QUARANTINED:
            roles[f.role] = roles.get(f.role, 0) + 1
    metadata = {
        "files_in": summary.files_in,
        "accepted": summary.accepted,
        "duplicate": summary.duplicate,
        "quarantined": summary.quarantined,
        "dagster/row_count": summary.files_in,
        "images_by_role": MetadataValue.json(roles),
        "catalog": MetadataValue.path(str(summary.catalog_path)),
        "quarantine_folder": MetadataValue.path(str(layout.quarantine / summary.batch)),
        "outcomes": MetadataValue.md(outcomes_markdown(summary)),
    }
    strip = thumbnail_strip_markdown(layout, summary)
    if strip is not None:
        metadata["thumbnails"] = MetadataValue.md(strip)
    return MaterializeResult(metadata=metadata, data_version=_data_version(summary))


# Partitioned by upload_batches, inferred from the assets (passing partitions_def is deprecated in 1.13).
ingest_job = define_asset_job(
    "ingest_job",
    selection=AssetSelection.assets(raw_plant_images),
    description="Ingests one upload batch (a field camera's batch is then archived by that camera's archive job).",
)
