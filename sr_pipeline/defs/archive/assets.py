"""The archive assets: one per field camera, ``upscaled_archive/<camera>``, each upload batch of that
camera's field LR images through the student that serves the camera.

:func:`build_archive_definitions` makes them from the camera registry when the code location loads,
so a field camera added to cameras.yaml gets its archive asset at the next code-location reload
(until then the upload sensor ingests its batches and logs that the archive waits for the reload).
Each asset is partitioned by its camera's own batches (``upload_batches__<camera>``,
defs/plant/partitions.py), never by every batch: an HR reference camera's batch or another camera's batch
is no partition of it. It depends on ``raw_plant_images`` of the same batch key
(``IdentityPartitionMapping``) and on ``promoted_student`` of its camera and of the camera's
``fallback_camera`` when cameras.yaml sets one (``SpecificPartitionsPartitionMapping``; the promoted
student's data version is its model version). Both are Dagster's own mappings, so the webserver shows
the same lineage and staleness: promoting a camera's student marks that camera's archived batches
stale (and those of the cameras it is the fallback of), never another camera's.

The model used is the one the promotion log names now for the camera (``served_student``: the
camera's own promoted student, or its ``fallback_camera``'s while it has none and only if cameras.yaml
sets one; ``sr-pipeline promote`` may change it without a run), recorded per file. Each camera's
archive has its own job (``archive_<camera>_job``, which the upload sensor requests once a batch is
ingested): a job holds assets of one partitions definition only. The work is in
:mod:`sr_pipeline.serving.archive`; torch is imported only when a run upscales.

Each output's consistency verdict (``ok`` / ``check``) is in the manifest; a partition's
metadata shows how many outputs were flagged and which, and the ``archive_flagged_share`` check
(one per archive asset) warns (never blocks) when the flagged share of a batch exceeds ``max_flagged_share`` (default 5 %,
env ``SR_PIPELINE_ARCHIVE_MAX_FLAGGED_SHARE``).
"""

import re
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import Field

from sr_pipeline.common.env_settings import ENV_SETTINGS
from sr_pipeline.defs.intake.assets import raw_plant_images
from sr_pipeline.defs.plant.partitions import camera_batches
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.common.cameras import CameraRegistry, CameraRole
from sr_pipeline.sr.serve.tiles import TileSettings
from sr_pipeline.storage.versions import fingerprint

ARCHIVE = "upscaled_archive"
MAX_TABLE_ROWS = 20
MAX_FLAGGED_SHARE_ENV = "SR_PIPELINE_ARCHIVE_MAX_FLAGGED_SHARE"
DEFAULT_MAX_FLAGGED_SHARE = "0.05"


class ArchiveConfig(dg.Config):
    """Tiling and device of the archive's upscaling (run config of each ``upscaled_archive/<camera>``)."""

    tile: int = Field(TileSettings.tile, ge=8, description="LR tile side in pixels")
    overlap: int = Field(TileSettings.overlap, ge=0, description="LR pixels shared by neighbouring tiles")
    tile_batch: int = Field(TileSettings.batch, ge=1,
                            description="tiles per network call (lowered to fit the memory budget)")

    def tiles(self) -> TileSettings:
        return TileSettings(tile=self.tile, overlap=self.overlap, batch=self.tile_batch)
    device: str = Field("auto", description="auto, cpu or cuda")
    memory_budget_gib: float = Field(4.0, gt=0, description="peak memory budget per image")
    compress_level: int = Field(6, ge=0, le=9, description="PNG zlib level")


class FlaggedShareConfig(dg.Config):
    """When the ``archive_flagged_share`` check warns (run config of the check)."""

    max_flagged_share: float = Field(
        default_factory=lambda: float(ENV_SETTINGS[MAX_FLAGGED_SHARE_ENV]()), ge=0, le=1,
        description="the share of a batch's outputs (0-1) that may be flagged `check` by the consistency verdict "
        f"before the check warns; env {MAX_FLAGGED_SHARE_ENV}, default {DEFAULT_MAX_FLAGGED_SHARE}")


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _flagged_markdown(rows, limit: int = MAX_TABLE_ROWS) -> str:
    """The flagged outputs with their reasons and heat maps (a person's look list)."""
    if rows.empty:
        return "No output needs a person's look: every output is consistent with its input."
    lines = ["| source | camera | why | heat map |", "|---|---|---|---|"]
    for r in rows.head(limit).itertuples(index=False):
        lines.append(f"| {_cell(r.source_name)} | {_cell(r.camera)} | {_cell(r.consistency_reasons)} | "
                     f"{_cell(r.consistency_map if isinstance(r.consistency_map, str) else '')} |")
    if len(rows) > limit:
        lines.append(f"| ... {len(rows) - limit} more in the manifest (consistency_verdict = check) | | | |")
    return "\n".join(lines)


def _outputs_markdown(manifest, limit: int = MAX_TABLE_ROWS) -> str:
    lines = ["| source | output | model version | upscaled at |", "|---|---|---|---|"]
    for r in manifest.head(limit).itertuples(index=False):
        name = str(r.source_name).replace("|", "\\|")
        lines.append(f"| {name} | {r.output_path} | {r.model_version} | {r.upscaled_at} |")
    if len(manifest) > limit:
        lines.append(f"| ... {len(manifest) - limit} more in the manifest | | | |")
    return "\n".join(lines)


def archive_key(camera: str) -> dg.AssetKey:
    """The archive asset of one field camera: ``upscaled_archive/<camera>``."""
    return dg.AssetKey([ARCHIVE, camera])


def archive_job_name(camera: str) -> str:
    """``archive_<camera>_job`` (a camera id's ``-`` becomes ``_``: Dagster names are identifiers)."""
    return f"archive_{re.sub(r'[^A-Za-z0-9_]', '_', camera)}_job"


@dataclass(frozen=True)
class CameraArchive:
    """One field camera's archive: its asset, the asset's flagged-share check and the job that runs both."""

    camera: str
    asset: dg.AssetsDefinition
    check: dg.AssetChecksDefinition
    job: Any  # what dg.define_asset_job returns (its class is not part of Dagster's public API)

    @property
    def partitions_def(self) -> dg.DynamicPartitionsDefinition:
        return self.asset.partitions_def


def student_cameras(registry: CameraRegistry, camera: str) -> list[str]:
    """The field cameras whose promoted student may upscale ``camera``'s images: itself, and its
    ``fallback_camera`` when cameras.yaml sets one (``served_student``)."""
    fallback = registry.get(camera).fallback_camera
    return [camera] + ([fallback] if fallback else [])


def build_camera_archive(registry: CameraRegistry, camera: str) -> CameraArchive:
    """The archive asset, check and job of one field camera of ``registry``."""
    if registry.get(camera).role != CameraRole.field_lr:
        raise ValueError(f"camera {camera!r} is not a field_lr camera: it has no archive")
    key = archive_key(camera)
    partitions_def = camera_batches(camera)
    served_by = student_cameras(registry, camera)

    @dg.asset(
        key=key,
        partitions_def=partitions_def,
        group_name="archive",
        deps=[dg.AssetDep(raw_plant_images, partition_mapping=dg.IdentityPartitionMapping()),
              dg.AssetDep("promoted_student", partition_mapping=dg.SpecificPartitionsPartitionMapping(served_by))],
        kinds={"pytorch", "parquet"},
        # Its own pool (limit 1 by dagster.yaml's default), shared by every camera's archive: a backfill over many
        # batches upscales one batch at a time instead of loading a model and a tile band per run at once, without
        # waiting on training.
        pool="upscale",
        tags={"sr_pipeline/camera": camera},
        description=(
            f"Field camera {camera}'s upload batches (one partition per batch of this camera): the batch's accepted "
            "field LR images upscaled by the student promoted for the camera (or its configured fallback camera's; "
            "tiled, memory-bounded), as "
            "PNGs under archive/<batch>/ with the model version and source hash in their metadata, and a "
            "manifest (archive/<batch>/manifest.parquet). Each output's consistency with its input (verdict ok / "
            "check, heat maps of check outputs under archive/<batch>/consistency_maps/) is in the manifest and the "
            "metadata. Re-materialising with the same model skips what is done; after a promotion for "
            f"{' or '.join(served_by)}, backfill the stale partitions to re-upscale old batches (docs/archive.md)."
        ),
    )
    def _archive(context: dg.AssetExecutionContext, config: ArchiveConfig, storage: PlantStorage) -> dg.MaterializeResult:
        return _archive_batch(context, config, storage, camera)

    @dg.asset_check(
        asset=key,
        name="archive_flagged_share",
        blocking=False,
        description="Warns (never blocks) when more of the batch's outputs than max_flagged_share (default 5 %, env "
        f"{MAX_FLAGGED_SHARE_ENV}) have the consistency verdict `check`: the model disagreed with what the camera "
        "recorded more often than usual, so a person should look at the flagged images (listed in the metadata).",
    )
    def _check(context: dg.AssetCheckExecutionContext, config: FlaggedShareConfig,
               storage: PlantStorage) -> dg.AssetCheckResult:
        return _flagged_share_result(context, config, storage, key)

    # Partitioned like the asset, inferred from it (passing partitions_def is deprecated in 1.13).
    job = dg.define_asset_job(
        archive_job_name(camera),
        selection=dg.AssetSelection.assets(key),
        description=f"Upscales one upload batch of field camera {camera} into the archive (and runs its "
        "archive_flagged_share check); the upload sensor requests it once the batch is ingested.",
    )
    return CameraArchive(camera, _archive, _check, job)


def build_archive_definitions(registry: CameraRegistry) -> dict[str, CameraArchive]:
    """Every field camera's archive (by camera id), from the registry as it is when the code location loads."""
    archives = {camera: build_camera_archive(registry, camera) for camera in registry.ids(CameraRole.field_lr)}
    jobs: dict[str, str] = {}
    for camera in archives:
        other = jobs.setdefault(archive_job_name(camera), camera)
        if other != camera:
            raise ValueError(f"field cameras {other!r} and {camera!r} differ only by '-' and '_': their archive "
                             f"jobs would both be named {archive_job_name(camera)}; rename one in cameras.yaml")
    return archives


def _archive_batch(context: dg.AssetExecutionContext, config: ArchiveConfig, storage: PlantStorage,
                   camera: str) -> dg.MaterializeResult:
    from sr_pipeline.evaluation.promotion import no_student_message, served_student
    from sr_pipeline.serving.archive import archive_batch, batch_field_cameras, flagged, preview_strip
    from sr_pipeline.sr.images.figures import png_markdown

    layout = storage.layout()
    registry = storage.registry()
    batch = context.partition_key
    try:
        cameras = batch_field_cameras(layout, batch)
    except FileNotFoundError as exc:
        raise dg.Failure(str(exc)) from exc
    if len(cameras) > 1:
        raise dg.Failure(f"batch {batch} holds images of several field cameras ({', '.join(cameras)}); each camera "
                         "has its own student, so upload each camera's images in its own batch")
    if cameras and cameras[0] != camera:
        raise dg.Failure(f"batch {batch} holds field camera {cameras[0]}'s images, not {camera}'s: archive it with "
                         f"{archive_key(cameras[0]).to_user_string()} (a partition added by hand to the wrong camera's "
                         f"batches; remove it from {camera_batches(camera).name})")
    if not cameras:
        context.log.info(f"batch {batch} holds no field LR images: nothing to upscale")
        return dg.MaterializeResult(metadata={"images": 0, "upscaled": 0},
                                    data_version=dg.DataVersion(fingerprint([batch, "no field images"])))
    served = served_student(layout, registry, camera)
    if served is None:
        raise dg.Failure(no_student_message(registry, camera))
    model_dir = served.path
    if served.fallback:
        context.log.warning(f"field camera {camera} has no promoted student of its own: using its fallback camera "
                            f"{served.camera}'s student {served.version} (fallback_camera in cameras.yaml)")
    context.log.info(f"archiving batch {batch} of field camera {camera} with student {model_dir}")
    try:
        result = archive_batch(
            layout, batch, model_dir, tiles=config.tiles(),
            device=config.device, memory_budget=int(config.memory_budget_gib * 2**30),
            compress_level=config.compress_level, log=context.log.info,
        )
    except (FileNotFoundError, ValueError) as exc:  # no catalog; a broken model or thresholds file
        raise dg.Failure(str(exc)) from exc
    context.log.info(f"batch {batch}: {result.images} field LR images, {result.upscaled} upscaled, "
                     f"{result.skipped} already done with {result.model_version}, {len(result.failed)} failed")
    if result.failed:
        raise dg.Failure(
            description=f"{len(result.failed)} of {result.images} images could not be upscaled "
            "(the others are in the manifest; a retry redoes only the missing ones)",
            metadata={"failed": dg.MetadataValue.json(result.failed)},
        )
    manifest = result.manifest
    if result.flagged:
        context.log.warning(f"batch {batch}: {result.flagged} of {len(manifest)} outputs need a person's look "
                            "(consistency verdict check; see consistency_flagged)")
    metadata = {
        "images": result.images,
        "upscaled": result.upscaled,
        "skipped_already_done": result.skipped,
        "model_version": result.model_version,
        "model_path": dg.MetadataValue.path(layout.relative(result.model_path)),  # under the data root
        "camera": camera,
        "student_camera": served.camera,
        "fallback_student": served.fallback,
        "manifest": dg.MetadataValue.path(layout.relative(result.manifest_path)),
        "dagster/row_count": len(manifest),
        "outputs": dg.MetadataValue.md(_outputs_markdown(manifest)),
        "consistency_flagged_count": result.flagged,
        "consistency_flagged_share": dg.MetadataValue.float(result.flagged_share),
        "consistency_flagged": dg.MetadataValue.md(_flagged_markdown(flagged(manifest))),
    }
    strip = preview_strip(result.previews)
    if strip is not None:
        metadata["previews"] = dg.MetadataValue.md(png_markdown(strip, "bicubic | student (centre crops)"))
    version = fingerprint([result.model_version, *sorted(manifest["source_image_id"])])
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))



# Not partitioned itself (partitioned checks are a Dagster preview): it runs after the archive in the
# batch's run and judges that run's partition; its latest result names the batch.
def _flagged_share_result(context: dg.AssetCheckExecutionContext, config: FlaggedShareConfig,
                          storage: PlantStorage, key: dg.AssetKey) -> dg.AssetCheckResult:
    from sr_pipeline.serving.archive import flagged, flagged_share, read_manifest

    if not context.has_partition_key:
        raise dg.Failure("archive_flagged_share judges one upload batch: run it with its archive asset's partition")
    batch = context.partition_key
    try:
        manifest = read_manifest(storage.layout(), batch)
    except ValueError as exc:  # a damaged manifest (DamagedFile names it): re-materialise the partition
        raise dg.Failure(f"{exc}; re-materialise {key.to_user_string()} for batch {batch} to rebuild it") from exc
    rows, share = flagged(manifest), flagged_share(manifest)
    passed = share <= config.max_flagged_share
    words = (f"batch {batch}: {len(rows)} of {len(manifest)} outputs ({100 * share:.1f} %) need a person's look; "
             f"the setting allows {100 * config.max_flagged_share:.1f} %")
    return dg.AssetCheckResult(
        passed=passed, severity=dg.AssetCheckSeverity.WARN, description=words,
        metadata={"batch": batch, "flagged": len(rows), "outputs": len(manifest),
                  "flagged_share": dg.MetadataValue.float(share),
                  "max_flagged_share": dg.MetadataValue.float(config.max_flagged_share),
                  "flagged_images": dg.MetadataValue.md(_flagged_markdown(rows))},
    )
