"""The content-addressed image store and the Parquet image catalog.

Image ids are the sha256 of the *normalised pixels* (``"rgb8:<w>x<h>:"`` + the RGB bytes), not of
the uploaded or stored file: the same picture re-uploaded as another format or with other PNG
settings gets the same id, and the id does not change if the PNG encoder does. Images are stored as
PNG (lossless; fast zlib level) at ``<image_store>/<id[:2]>/<id>.png``.

The catalog is one Parquet file per upload batch, ``<catalog>/images/<batch>.parquet``, written
once, atomically, with a checksum of its content (:mod:`checked_parquet`); :func:`read_catalog`
concatenates them and refuses a damaged one (:class:`CatalogDamaged`) rather than count it. Every claimed upload has one row:
``accepted`` (stored), ``duplicate`` (its pixels were already accepted: the row points at the
existing image) or ``quarantined`` (``stored_path`` is the quarantined file, ``reason`` says why; null for a special
file left in a source folder). ``source_name`` is the cleaned path the file was claimed as,
``original_name`` / ``original_name_hex`` the name it arrived with.
Paths in the catalog are relative to the data root, so the root can move.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from sr_pipeline.common.atomic import atomic_write, fsync_dir  # noqa: F401  (part of the store API)
from sr_pipeline.storage.checked_parquet import DamagedFile, read_checked, write_checked
from sr_pipeline.storage.layout import DataLayout

ACCEPTED, DUPLICATE, QUARANTINED = "accepted", "duplicate", "quarantined"
OUTCOMES = (ACCEPTED, DUPLICATE, QUARANTINED)
# Catalog roles: the camera's role, or calib_hr / calib_lr for calibration pairs.
CALIB_HR, CALIB_LR = "calib_hr", "calib_lr"

CATALOG_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("batch", pa.string()),
        ("camera", pa.string()),
        ("role", pa.string()),
        ("pair_name", pa.string()),
        ("source_name", pa.string()),
        # The path as the camera (or the source folder) named it, for traceability: exact bytes as
        # hex, and decoded as UTF-8 for humans. Catalogs written before these columns read as null.
        ("original_name", pa.string()),
        ("original_name_hex", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("orig_format", pa.string()),
        ("orig_mode", pa.string()),
        ("bytes", pa.int64()),
        ("received_at", pa.timestamp("us", tz="UTC")),
        ("stored_path", pa.string()),
        ("outcome", pa.string()),
        ("reason", pa.string()),
        ("notes", pa.string()),
        # A JPEG upload's encoder settings (sr/images/jpeg_settings.py, JSON); null for other formats and for
        # catalogs written before the column.
        ("jpeg", pa.string()),
    ]
)
CATALOG_COLUMNS = tuple(CATALOG_SCHEMA.names)
PNG_COMPRESS_LEVEL = 1  # the store is read by training, not shipped: favour ingest speed over size


# ---------------------------------------------------------------- image store


def image_id_for(rgb: np.ndarray) -> str:
    """The content id of an HxWx3 uint8 image."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected HxWx3 uint8 pixels, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    digest = hashlib.sha256(f"rgb8:{w}x{h}:".encode())
    digest.update(np.ascontiguousarray(rgb).data)
    return digest.hexdigest()


def image_path(layout: DataLayout, image_id: str) -> Path:
    if len(image_id) != 64 or any(c not in "0123456789abcdef" for c in image_id):
        raise ValueError(f"not an image id: {image_id!r}")
    return layout.image_store / image_id[:2] / f"{image_id}.png"


def relative_to_root(layout: DataLayout, path: Path) -> str:
    return Path(path).relative_to(layout.root).as_posix()


def resolve_path(layout: DataLayout, stored_path: str) -> Path:
    """A catalog ``stored_path`` (relative to the data root) as an absolute path."""
    return layout.root / stored_path


def put_image(
    layout: DataLayout,
    image: Image.Image,
    image_id: str | None = None,
    *,
    png_bytes: bytes | None = None,
    durable: bool = True,
    sync_dir: bool = True,
) -> tuple[str, Path, bool]:
    """Store an RGB image under its content id. Returns ``(image_id, path, written)``.

    ``png_bytes``, when given, must be a PNG of exactly these pixels (the caller's promise, as
    with :func:`sr_pipeline.sr.images.decode.canonical_png`); it is written instead of encoding again.
    An image already in the store is not written again (``written`` is False). With
    ``sync_dir=False`` the caller fsyncs the folder later (once per batch, not per image).
    """
    if image.mode != "RGB":
        raise ValueError(f"the store holds RGB images, got mode {image.mode}")
    image_id = image_id or image_id_for(np.asarray(image))
    path = image_path(layout, image_id)
    if path.exists():
        return image_id, path, False
    if png_bytes is not None:
        write = lambda fh: fh.write(png_bytes)  # noqa: E731
    else:
        write = lambda fh: image.save(fh, format="PNG", compress_level=PNG_COMPRESS_LEVEL)  # noqa: E731
    try:
        # exclusive: of two writers of one image exactly one publishes it; the other finds it there
        atomic_write(path, write, durable=durable, sync_dir=sync_dir, exclusive=True)
    except FileExistsError:
        return image_id, path, False
    return image_id, path, True


def load_image(path: str | Path) -> np.ndarray:
    """A stored image as HxWx3 uint8."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def load_image_by_id(layout: DataLayout, image_id: str) -> np.ndarray:
    return load_image(image_path(layout, image_id))


# ---------------------------------------------------------------- catalog


def catalog_dir(layout: DataLayout) -> Path:
    return layout.catalog / "images"


def batch_catalog_path(layout: DataLayout, batch: str) -> Path:
    return catalog_dir(layout) / f"{batch}.parquet"


def catalog_table(rows: Iterable[dict]) -> pa.Table:
    rows = [{name: row.get(name) for name in CATALOG_COLUMNS} for row in rows]
    return pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA)


@contextmanager
def catalog_lock(layout: DataLayout) -> Iterator[None]:
    """Exclusive lock on the catalog (blocking, across threads and processes).

    An ingestion holds it from re-reading the accepted ids to writing its batch catalog, so of two
    ingestions of one image, concurrent or not, exactly one records it ``accepted``. The kernel
    releases it when its holder dies (even by ``kill -9``); the lock file itself stays.
    """
    path = catalog_dir(layout) / ".ingest.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_batch_catalog(layout: DataLayout, batch: str, rows: Iterable[dict]) -> Path:
    """Write a batch's catalog once; an existing batch catalog is never replaced."""
    path = batch_catalog_path(layout, batch)
    if path.exists():
        raise FileExistsError(f"the catalog of batch {batch!r} already exists: {path}")
    table = catalog_table(rows)
    return atomic_write(path, lambda fh: write_checked(table, fh))


_PANDAS_TYPES = {pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_PANDAS_TYPES.get)


class CatalogDamaged(DamagedFile):
    """A batch catalog that cannot be trusted; its message names the file and the remedy."""

    def __init__(self, damaged: DamagedFile):
        super().__init__(damaged.path, damaged.why)

    def __str__(self) -> str:
        root = Path(self.path).parents[2]  # <root>/catalog/images/<batch>.parquet
        return (f"catalog file {self.path} is damaged ({self.why}); its rows are not counted: "
                f"run `sr-pipeline --data {root} doctor --rebuild-catalog` to rebuild it from the image store")


def _read_catalog_file(path: Path, schema: pa.Schema = CATALOG_SCHEMA) -> pa.Table:
    try:
        return read_checked(path, schema)[0]
    except DamagedFile as exc:
        raise CatalogDamaged(exc) from None


def catalog_files(layout: DataLayout) -> list[Path]:
    return sorted(p for p in catalog_dir(layout).glob("*.parquet") if not p.name.startswith("."))


def damaged_catalogs(layout: DataLayout) -> tuple[list[CatalogDamaged], list[Path]]:
    """``(damaged, unverified)``: the batch catalogs that fail their check (unreadable, content
    unlike its checksum, or an accepted row whose image is not in the store), and those written
    before catalogs carried a checksum (only the store check applies to them)."""
    damaged, unverified = [], []
    for path in catalog_files(layout):
        try:
            table, verified = read_checked(path, CATALOG_SCHEMA)
        except DamagedFile as exc:
            damaged.append(CatalogDamaged(exc))
            continue
        if not verified:
            unverified.append(path)
        ids = table.filter(pc.equal(table["outcome"], ACCEPTED))["image_id"].to_pylist()
        lost = [i for i in ids if not _is_stored(layout, i)]
        if lost:
            why = f"{len(lost)} accepted image id(s) it names are not in the image store, e.g. {str(lost[0])[:20]}"
            damaged.append(CatalogDamaged(DamagedFile(path, why)))
    return damaged, unverified


def _is_stored(layout: DataLayout, image_id: str | None) -> bool:
    try:
        return image_id is not None and image_path(layout, image_id).exists()
    except ValueError:  # not even an id
        return False


def read_batch_catalog(layout: DataLayout, batch: str) -> pd.DataFrame:
    return _to_pandas(_read_catalog_file(batch_catalog_path(layout, batch)))


def read_catalog(layout: DataLayout, columns: list[str] | None = None, *, skip_damaged: bool = False) -> pd.DataFrame:
    """All batches' rows, in batch-file order (an empty frame with the catalog columns if none).

    Each file is checked whole against its checksum; a damaged one raises :class:`CatalogDamaged`
    (or, with ``skip_damaged``, is left out), so its rows are never merged into counts.
    """
    names = list(CATALOG_COLUMNS if columns is None else columns)
    tables = []
    for path in catalog_files(layout):
        try:
            tables.append(_read_catalog_file(path).select(names))
        except CatalogDamaged:
            if not skip_damaged:
                raise
    schema = pa.schema([CATALOG_SCHEMA.field(c) for c in names])
    return _to_pandas(pa.concat_tables(tables) if tables else schema.empty_table())


def accepted_ids(layout: DataLayout, exclude_batch: str | None = None) -> set[str]:
    """Image ids accepted by any batch (except ``exclude_batch``)."""
    df = read_catalog(layout, columns=["image_id", "batch", "outcome"])
    df = df[df["outcome"] == ACCEPTED]
    if exclude_batch is not None:
        df = df[df["batch"] != exclude_batch]
    return set(df["image_id"])


def _with_paths(layout: DataLayout, df: pd.DataFrame) -> pd.DataFrame:
    # In this view both columns are absolute, so callers can open either directly.
    df = df.copy()
    df["path"] = [str(resolve_path(layout, p)) for p in df["stored_path"]]
    df["stored_path"] = df["path"]
    return df.reset_index(drop=True)


def list_images(layout: DataLayout, role: str | Iterable[str] | None = None, cameras: Iterable[str] | None = None) -> pd.DataFrame:
    """Accepted images (one row per stored image), optionally of some roles and cameras.

    Adds a ``path`` column with the absolute path of each stored PNG (``stored_path`` is made
    absolute too in this view; the catalog files keep it relative to the data root). Should two
    batches ever both have accepted one image (catalogs written before ingestions took the
    catalog lock), the earliest row stands for it, so nothing is loaded twice.
    """
    df = read_catalog(layout)
    df = df[df["outcome"] == ACCEPTED]
    df = df.sort_values(["received_at", "batch"], kind="stable").drop_duplicates("image_id", keep="first").sort_index()
    if role is not None:
        roles = [role] if isinstance(role, str) else list(role)
        df = df[df["role"].isin(roles)]
    if cameras is not None:
        df = df[df["camera"].isin(list(cameras))]
    return _with_paths(layout, df)


def calibration_pairs(layout: DataLayout, cameras: Iterable[str] | None = None) -> list[tuple[str, Path, Path]]:
    """Complete calibration pairs ``(name, hr_path, lr_path)``, sorted by name.

    Duplicate rows count too (a pair uploaded again still points at the stored image); the first
    upload of each (camera, pair, side) wins. Names are prefixed with the camera when pairs come
    from more than one camera.
    """
    df = read_catalog(layout)
    df = df[df["outcome"].isin([ACCEPTED, DUPLICATE]) & df["role"].isin([CALIB_HR, CALIB_LR]) & df["pair_name"].notna()]
    if cameras is not None:
        df = df[df["camera"].isin(list(cameras))]
    df = df.sort_values(["received_at", "batch", "source_name"], kind="stable")
    sides: dict[tuple[str, str], dict[str, str]] = {}
    for row in df.itertuples(index=False):
        sides.setdefault((row.camera, row.pair_name), {}).setdefault(row.role, row.stored_path)
    several = len({camera for camera, _ in sides}) > 1
    pairs = []
    for (camera, name), found in sides.items():
        if CALIB_HR in found and CALIB_LR in found:
            label = f"{camera}/{name}" if several else name
            pairs.append((label, resolve_path(layout, found[CALIB_HR]), resolve_path(layout, found[CALIB_LR])))
    return sorted(pairs)
