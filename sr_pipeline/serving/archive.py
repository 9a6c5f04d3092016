"""The upscaled archive of one upload batch: its field LR images through the promoted student.

Outputs go to ``<data>/archive/<batch>/<name>_x<scale>.png``, where ``<name>`` is the cleaned source
name the file was claimed as, flattened (``line1/a.png`` -> ``line1__a``), with ``-<8 hex of the image
id>`` added only where two images of the batch would share it (or the name is very long); each is
written to a temp file and renamed, with the model version, the source image id and the source
file's sha256 in the PNG's text chunks. ``<data>/archive/<batch>/manifest.parquet`` lists one row
per archived image (source image id and name, output path relative to the data root, model version,
time) and is replaced atomically at the end of each run. Outputs named by image id by older
versions are renamed in place when their batch is archived again.

Every output is checked against what its camera recorded while it is written: the
model's co-trained camera model and the thresholds fitted for the image's field camera
(:func:`sr_pipeline.serving.consistency.load_check`) give a verdict, ``ok`` or ``check``, with its
figures, in the PNG's text and in the manifest's ``consistency_*`` columns. A ``check`` output is
archived and listed like any other, and its heat map is written to
``<data>/archive/<batch>/consistency_maps/`` (``consistency_map`` in the manifest).

Idempotent: an image whose output already carries the current model's version is skipped (the
manifest is checked first, then the PNG's own metadata, so a run that died before writing the
manifest loses no work, and the verdict is read back from the PNG's text; an output without one, or
a ``check`` whose map is missing, is measured again from the file). With a newer model the output is
replaced, so re-upscaling old batches after a promotion is a backfill over the batch partitions
(docs/archive.md).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa

from sr_pipeline.sr.images.decode import ImageRejected
from sr_pipeline.sr.serve.tiles import TileSettings
from sr_pipeline.storage import store
from sr_pipeline.storage.checked_parquet import DamagedFile, read_checked, write_checked
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.common.cameras import CameraRole

MANIFEST_NAME = "manifest.parquet"
FIELD_LR = CameraRole.field_lr
PREVIEW_CROP = 96  # HR pixels per side of a preview crop
MAX_STEM = 120  # characters of a source name kept in an output's file name
MANIFEST_SCHEMA = pa.schema(
    [
        ("source_image_id", pa.string()),
        ("batch", pa.string()),
        ("camera", pa.string()),
        ("source_name", pa.string()),
        ("source_path", pa.string()),
        ("output_path", pa.string()),
        ("model_version", pa.string()),
        ("model_path", pa.string()),
        ("steps", pa.int32()),
        ("scale", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("upscaled_at", pa.timestamp("us", tz="UTC")),
        ("seconds", pa.float64()),
        ("consistency_verdict", pa.string()),
        ("consistency_psnr_y", pa.float64()),
        ("consistency_flagged_share", pa.float64()),
        ("consistency_peak", pa.float64()),
        ("consistency_colour_shift", pa.list_(pa.float64())),
        ("consistency_camera", pa.string()),
        ("consistency_reasons", pa.string()),
        ("consistency_map", pa.string()),
    ]
)
CONSISTENCY_COLUMNS = tuple(n for n in MANIFEST_SCHEMA.names if n.startswith("consistency_"))
MAPS_DIR = "consistency_maps"
CHECK = "check"


def archive_dir(layout: DataLayout, batch: str) -> Path:
    return layout.archive / batch


def manifest_path(layout: DataLayout, batch: str) -> Path:
    return archive_dir(layout, batch) / MANIFEST_NAME


def output_stem(source_name: str) -> str:
    """A cleaned source name as one file stem: its folders joined with ``__``, its extension dropped."""
    path = PurePosixPath(source_name)
    return "__".join([*path.parent.parts, path.stem]) if path.parent.parts else path.stem


def output_stems(images: pd.DataFrame) -> dict[str, str]:
    """image id -> the stem of its output: :func:`output_stem` of its source name, with the image id's
    first 8 hex digits added where two images of the batch share that stem or it is very long."""
    stems = {row.image_id: output_stem(row.source_name) for row in images.itertuples(index=False)}
    uses = Counter(stems.values())
    return {image_id: stem if uses[stem] == 1 and 0 < len(stem) <= MAX_STEM else f"{stem[:MAX_STEM]}-{image_id[:8]}"
            for image_id, stem in stems.items()}


def output_path(layout: DataLayout, batch: str, stem: str, scale: int) -> Path:
    """Where the output of stem ``stem`` (:func:`output_stems`) goes."""
    return archive_dir(layout, batch) / f"{stem}_x{scale}.png"


def map_path(layout: DataLayout, batch: str, stem: str, scale: int) -> Path:
    """Where the heat map of a ``check`` output goes."""
    from sr_pipeline.sr.serve.consistency import MAP_FILE_SUFFIX

    return archive_dir(layout, batch) / MAPS_DIR / f"{stem}_x{scale}{MAP_FILE_SUFFIX}"


def _adopt_legacy(layout: DataLayout, batch: str, image_id: str, stem: str, scale: int) -> None:
    """Rename an output (and its heat map) named by image id, as older versions wrote them, to its stem."""
    for old, new in ((output_path(layout, batch, image_id, scale), output_path(layout, batch, stem, scale)),
                     (map_path(layout, batch, image_id, scale), map_path(layout, batch, stem, scale))):
        if old != new and old.is_file() and not new.exists():
            os.replace(old, new)


def flagged(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest's rows whose verdict is ``check``."""
    return manifest[manifest["consistency_verdict"] == CHECK]


def flagged_share(manifest: pd.DataFrame) -> float:
    """Flagged outputs over the outputs the manifest lists (0 for an empty one)."""
    return len(flagged(manifest)) / len(manifest) if len(manifest) else 0.0


def read_manifest(layout: DataLayout, batch: str) -> pd.DataFrame:
    """A batch's manifest (paths relative to the data root); empty with the columns if none.

    Raises :class:`DamagedFile` (naming the file) when it fails its checksum: re-materialising the
    batch's partition of its camera's ``upscaled_archive/<camera>`` rebuilds it from the outputs' own PNG records."""
    path = manifest_path(layout, batch)
    table = read_checked(path, MANIFEST_SCHEMA)[0] if path.is_file() else MANIFEST_SCHEMA.empty_table()
    return table.to_pandas()


def field_images(layout: DataLayout, batch: str) -> pd.DataFrame:
    """The batch's accepted field LR images (catalog rows), by source name."""
    if not store.batch_catalog_path(layout, batch).is_file():
        raise FileNotFoundError(f"batch {batch!r} has no catalog: ingest it (raw_plant_images) first")
    df = store.read_batch_catalog(layout, batch)
    df = df[(df["outcome"] == store.ACCEPTED) & (df["role"] == FIELD_LR)]
    return df.sort_values(["source_name", "image_id"], kind="stable").reset_index(drop=True)


def batch_field_cameras(layout: DataLayout, batch: str) -> list[str]:
    """The field cameras whose images the batch holds (one for every batch the upload sensor claims)."""
    return sorted(set(field_images(layout, batch)["camera"]))


@dataclass
class ArchiveResult:
    batch: str
    model_version: str
    model_path: str
    manifest_path: Path
    images: int = 0
    upscaled: int = 0
    skipped: int = 0
    flagged: int = 0
    """outputs in the manifest whose consistency verdict is ``check``"""
    failed: dict[str, str] = field(default_factory=dict)
    """image id -> reason"""
    previews: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)
    """(source name, bicubic crop, model crop) for some images upscaled in this run"""
    manifest: pd.DataFrame | None = None

    @property
    def flagged_share(self) -> float:
        """Flagged outputs over the outputs listed in the manifest (0 for an empty batch)."""
        return 0.0 if self.manifest is None else flagged_share(self.manifest)


class _CropKeeper:
    """Keeps a centred HR crop of an output while its bands stream past."""

    def __init__(self, height: int, width: int, size: int = PREVIEW_CROP):
        self.size = min(size, height, width)
        self.y0, self.x0 = (height - self.size) // 2, (width - self.size) // 2
        self.crop: np.ndarray | None = None

    def __call__(self, first_row: int, rows: np.ndarray) -> None:
        lo, hi = max(first_row, self.y0), min(first_row + len(rows), self.y0 + self.size)
        if lo >= hi:
            return
        if self.crop is None:
            self.crop = np.zeros((self.size, self.size, rows.shape[2]), dtype=rows.dtype)
        self.crop[lo - self.y0:hi - self.y0] = rows[lo - first_row:hi - first_row, self.x0:self.x0 + self.size]


def _preview_crops(lr: np.ndarray, keeper: _CropKeeper, scale: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The kept crop's bicubic enlargement and the model's output (RGB only)."""
    from sr_pipeline.sr.data.pairs import bicubic_upscale

    if keeper.crop is None or keeper.crop.dtype != np.uint8 or keeper.crop.shape[2] != 3:
        return None
    n = keeper.size // scale
    y, x = keeper.y0 // scale, keeper.x0 // scale
    return bicubic_upscale(np.ascontiguousarray(lr[y:y + n, x:x + n]), scale), keeper.crop


def preview_strip(previews: list[tuple[str, np.ndarray, np.ndarray]]) -> bytes | None:
    """One PNG, a row per preview (left: bicubic, right: model); None without previews."""
    from sr_pipeline.sr.images.figures import grid_png

    return grid_png([[bicubic, model] for _, bicubic, model in previews], optimize=True)


def _done_record(layout: DataLayout, target: Path, image_id: str, version: str, previous: dict | None) -> dict | None:
    """The manifest record of an output already made by ``version``, or None if it must be (re)made.

    An output is kept only when it decodes whole (a damaged file is made again, whatever the manifest
    says). Its consistency columns come from the manifest, else from the PNG's text (None when neither
    has a verdict: the caller measures the file)."""
    from sr_pipeline.serving.consistency import stored_consistency
    from sr_pipeline.serving.upscale import output_intact
    from sr_pipeline.sr.images.png_stream import TEXT_PREFIX, png_text

    if not target.is_file() or output_intact(target) is not None:
        return None
    if previous is not None and previous["model_version"] == version and pd.notna(previous["consistency_verdict"]):
        return previous
    try:
        text = png_text(target)
    except Exception:  # unreadable output: make it again
        return None
    if text.get(f"{TEXT_PREFIX}model_version") != version or text.get(f"{TEXT_PREFIX}source_image_id") != image_id:
        return None
    created = text.get(f"{TEXT_PREFIX}created")
    return {"upscaled_at": pd.Timestamp(created) if created else pd.Timestamp.now(tz="UTC"), "seconds": None,
            "steps": int(text.get(f"{TEXT_PREFIX}steps", 1)), **(stored_consistency(text) or {})}


def _write_manifest(path: Path, records: list[dict]) -> None:
    rows = [{k: r.get(k) for k in MANIFEST_SCHEMA.names} for r in records]
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    store.atomic_write(path, lambda fh: write_checked(table, fh))


def model_scale(model_dir: Path) -> int:
    """The model's scale factor from its ``config.json`` (no torch needed)."""
    import json

    return int(json.loads((Path(model_dir) / "config.json").read_text()).get("scale", 4))


class _Models:
    """The upscaler and the consistency check of the model, loaded on first use (only when there is
    work); a broken model or thresholds file fails the run."""

    def __init__(self, model_dir: Path, scale: int, device: str, tiles: TileSettings, memory_budget: int | None):
        self.model_dir, self.scale = Path(model_dir), scale
        self.device, self.tiles, self.memory_budget = device, tiles, memory_budget

    def load(self) -> None:
        self.upscaler, self.check  # noqa: B018 (cached on first access)

    @cached_property
    def upscaler(self):
        return _load(self.model_dir, self.device, self.tiles, self.memory_budget)

    @cached_property
    def check(self):
        from sr_pipeline.serving.consistency import load_check

        try:  # judged where the upscaler runs
            return load_check(self.model_dir, self.scale, device=self.upscaler.device)
        except ValueError as exc:
            raise ValueError(f"cannot judge the outputs' consistency: {exc}") from None


def archive_batch(
    layout: DataLayout,
    batch: str,
    model_dir: Path,
    *,
    tiles: TileSettings = TileSettings(),
    device: str = "auto",
    memory_budget: int | None = None,
    compress_level: int = 6,
    max_previews: int = 4,
    log: Callable[[str], None] | None = None,
) -> ArchiveResult:
    """Upscale the batch's accepted field LR images with ``model_dir`` (skipping what it already did).

    ``memory_budget`` in bytes (None: the upscaler's default, 4 GiB). An image that cannot be read or
    written is reported in ``failed``; its previous output, if any, stays listed in the manifest.
    """
    from sr_pipeline.sr.models.checkpoints import read_info

    info = read_info(model_dir)
    version = str(info.get("version", Path(model_dir).name))
    result = ArchiveResult(batch, version, str(model_dir), manifest_path(layout, batch))
    images = field_images(layout, batch)
    result.images = len(images)
    try:
        previous = {r["source_image_id"]: r for r in read_manifest(layout, batch).to_dict("records")}
    except DamagedFile as exc:  # every output carries its own record: the manifest is rebuilt from them
        (log or print)(f"{exc}; rebuilding it from the outputs' own records")
        previous = {}
    scale = model_scale(model_dir)
    models = _Models(model_dir, scale, device, tiles, memory_budget)
    records, remeasured = [], 0
    stems = output_stems(images)
    for row in images.itertuples(index=False):
        stem = stems[row.image_id]
        _adopt_legacy(layout, batch, row.image_id, stem, scale)
        target = output_path(layout, batch, stem, scale)
        base = {
            "source_image_id": row.image_id, "batch": batch, "camera": row.camera, "source_name": row.source_name,
            "source_path": row.stored_path, "output_path": store.relative_to_root(layout, target),
            "model_version": version, "model_path": layout.relative(model_dir), "scale": scale,
            "width": int(row.width) * scale, "height": int(row.height) * scale,
        }
        done = _done_record(layout, target, row.image_id, version, previous.get(row.image_id))
        if done is not None:
            done = _with_map(layout, batch, stem, scale, done)
            if pd.isna(done.get("consistency_verdict")) or (done["consistency_verdict"] == CHECK
                                                             and done["consistency_map"] is None):
                found = _measure_file(layout, models.check, row, target)  # None: unreadable, made again
                done = None if found is None else {**done, **_verdict_record(layout, batch, stem, scale,
                                                                             *found, target)}
                remeasured += done is not None
        if done is not None:
            records.append({**base, **{k: done[k] for k in ("upscaled_at", "seconds", "steps", *CONSISTENCY_COLUMNS)}})
            result.skipped += 1
            continue
        models.load()  # outside the per-image errors: a broken model fails the run
        try:
            record = _upscale_one(layout, models, row, batch, stem, target, compress_level,
                                  keep_preview=len(result.previews) < max_previews, result=result)
            records.append({**base, **record})
            result.upscaled += 1
            if log:
                log(f"{row.source_name} -> {target.name} ({record['seconds']:.1f} s, "
                    f"consistency {record['consistency_verdict']})")
        except (ImageRejected, OSError, ValueError, MemoryError) as exc:
            result.failed[row.image_id] = f"{type(exc).__name__}: {exc}"
            if row.image_id in previous and target.is_file():
                records.append(previous[row.image_id])
    unchanged = (result.upscaled == 0 and remeasured == 0 and result.manifest_path.is_file()
                 and set(previous) == {r["source_image_id"] for r in records}
                 and all(previous[r["source_image_id"]]["model_version"] == version
                         and pd.notna(previous[r["source_image_id"]]["consistency_verdict"])
                         and all(previous[r["source_image_id"]][k] == r[k] for k in ("output_path", "model_path"))
                         for r in records))
    if not unchanged:
        _write_manifest(result.manifest_path, records)
    result.manifest = read_manifest(layout, batch)
    result.flagged = len(flagged(result.manifest))
    return result


def _load(model_dir: Path, device: str, tiles: TileSettings, memory_budget: int | None):
    from sr_pipeline.sr.models.devices import resolve_device
    from sr_pipeline.sr.serve.upscaler import DEFAULT_MEMORY_BUDGET, Upscaler

    device = resolve_device(device)
    return Upscaler.from_dir(Path(model_dir), device=device, steps=1,
                             tiles=tiles,
                             memory_budget=memory_budget or DEFAULT_MEMORY_BUDGET)


def _with_map(layout: DataLayout, batch: str, stem: str, scale: int, done: dict) -> dict:
    """``done`` with its ``consistency_map``: the heat map of a ``check`` output when it exists."""
    path = map_path(layout, batch, stem, scale)
    listed = done.get("consistency_verdict") == CHECK and path.is_file()
    return {**done, "consistency_map": store.relative_to_root(layout, path) if listed else None}


def _verdict_record(layout: DataLayout, batch: str, stem: str, scale: int, found, lr: np.ndarray,
                    output: Path) -> dict:
    """The manifest's consistency columns of a measured output; writes a ``check`` output's panel (LR,
    the ``output`` file, heat map; and removes a stale one left by an earlier output that was flagged)."""
    from sr_pipeline.sr.serve.consistency import map_png
    from sr_pipeline.sr.images.decode import read_image

    path = map_path(layout, batch, stem, scale)
    if found.verdict != CHECK:
        path.unlink(missing_ok=True)
        return {**found.record(), "consistency_map": None}
    store.atomic_write(path, map_png(found, lr, output=read_image(output).colour), sync_dir=False)
    return {**found.record(), "consistency_map": store.relative_to_root(layout, path)}


def _measure_file(layout: DataLayout, check, row, target: Path):
    """(consistency, LR colour) of an archived output measured from its file against its source, for
    an output kept without a verdict or without its map; None when either file cannot be read."""
    from sr_pipeline.serving.audit import measure_saved
    from sr_pipeline.sr.images.decode import read_image

    try:
        src = read_image(store.resolve_path(layout, row.stored_path))
        return measure_saved(check, src.colour, read_image(target).colour, row.camera, keep_map=True), src.colour
    except (ImageRejected, OSError, ValueError, MemoryError):
        return None


def _upscale_one(layout: DataLayout, models: _Models, row, batch: str, stem: str, target: Path, compress_level: int, *,
                 keep_preview: bool, result: ArchiveResult) -> dict:
    import time

    from sr_pipeline.serving.upscale import write_upscaled_png
    from sr_pipeline.sr.images.decode import read_image
    from sr_pipeline.sr.images.png_stream import TEXT_PREFIX
    from sr_pipeline.sr.serve.upscaler import provenance_text

    upscaler, check = models.upscaler, models.check
    t0 = time.perf_counter()
    src = read_image(store.resolve_path(layout, row.stored_path))
    text = provenance_text(upscaler, src, row.source_name, extra={
        f"{TEXT_PREFIX}source_image_id": row.image_id, f"{TEXT_PREFIX}batch": batch,
        f"{TEXT_PREFIX}camera": row.camera})
    keeper = _CropKeeper(src.height * upscaler.scale, src.width * upscaler.scale) if keep_preview else None
    _, found = write_upscaled_png(upscaler, src, target, text, overwrite=True, compress_level=compress_level,
                                  on_rows=keeper, consistency=check.start(src.colour, row.camera, keep_map=True))
    seconds = time.perf_counter() - t0
    if keeper is not None:
        crops = _preview_crops(src.colour, keeper, upscaler.scale)
        if crops is not None:
            result.previews.append((row.source_name, *crops))
    return {"steps": upscaler.steps, "upscaled_at": datetime.now(timezone.utc), "seconds": seconds,
            **_verdict_record(layout, batch, stem, upscaler.scale, found, src.colour, target)}
