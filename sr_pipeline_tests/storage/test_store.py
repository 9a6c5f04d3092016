"""The content-addressed image store and the Parquet catalog."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from conftest import pixels
from PIL import Image

from sr_pipeline.storage import store
from sr_pipeline.storage.store import (
    CATALOG_COLUMNS,
    calibration_pairs,
    image_id_for,
    image_path,
    list_images,
    load_image,
    put_image,
    read_catalog,
    write_batch_catalog,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _row(batch: str, image_id: str | None, role: str, outcome: str = store.ACCEPTED, **extra) -> dict:
    row = dict(
        image_id=image_id, batch=batch, camera=extra.pop("camera", "field_cam"), role=role, pair_name=None,
        source_name=f"{image_id}.png", width=8, height=8, orig_format="PNG", orig_mode="RGB", bytes=10,
        received_at=NOW, stored_path=f"store/images/{(image_id or 'xx')[:2]}/{image_id}.png", outcome=outcome, reason=None,
    )  # fmt: skip
    row.update(extra)
    return row


def test_image_id_depends_on_pixels_and_size_only():
    rgb = pixels(20, 10)
    assert image_id_for(rgb) == image_id_for(rgb.copy())
    assert len(image_id_for(rgb)) == 64
    assert image_id_for(rgb) != image_id_for(pixels(20, 10, seed=1))
    # same bytes, other shape: another image
    assert image_id_for(rgb) != image_id_for(rgb.reshape(20, 10, 3))
    with pytest.raises(ValueError):
        image_id_for(rgb.astype(np.float32))


def test_put_image_writes_once_atomically_and_round_trips(layout):
    rgb = pixels(30, 20)
    image_id, path, written = put_image(layout, Image.fromarray(rgb))
    assert written and path == image_path(layout, image_id)
    assert path == layout.image_store / image_id[:2] / f"{image_id}.png"
    np.testing.assert_array_equal(load_image(path), rgb)
    np.testing.assert_array_equal(store.load_image_by_id(layout, image_id), rgb)
    mtime = path.stat().st_mtime_ns
    again = put_image(layout, Image.fromarray(rgb.copy()))
    assert again == (image_id, path, False)
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_put_image_rejects_non_rgb(layout):
    with pytest.raises(ValueError):
        put_image(layout, Image.new("L", (4, 4)))


def test_image_path_refuses_non_ids(layout):
    with pytest.raises(ValueError):
        image_path(layout, "../../etc/passwd")


def test_empty_catalog_has_the_columns(layout):
    df = read_catalog(layout)
    assert df.empty and tuple(df.columns) == CATALOG_COLUMNS
    assert list_images(layout).empty
    assert calibration_pairs(layout) == []


def test_batches_concatenate_and_are_written_once(layout):
    write_batch_catalog(layout, "b1", [_row("b1", "a" * 64, "hr_reference")])
    bad = _row("b2", None, "field_lr", store.QUARANTINED, reason="corrupt", width=None)
    write_batch_catalog(layout, "b2", [_row("b2", "b" * 64, "field_lr"), bad])
    df = read_catalog(layout)
    assert len(df) == 3 and set(df["batch"]) == {"b1", "b2"}
    assert str(df["width"].dtype) == "Int32" and df["width"].isna().sum() == 1
    assert df["received_at"].iloc[0] == NOW
    with pytest.raises(FileExistsError):
        write_batch_catalog(layout, "b1", [])
    assert sorted(p.name for p in store.catalog_dir(layout).iterdir()) == ["b1.parquet", "b2.parquet"]


def test_list_images_filters_accepted_rows_by_role_and_camera(layout):
    write_batch_catalog(
        layout,
        "b1",
        [
            _row("b1", "a" * 64, "hr_reference", camera="ref_cam"),
            _row("b1", "b" * 64, "field_lr"),
            _row("b1", "b" * 64, "field_lr", store.DUPLICATE, source_name="again.png"),
            _row("b1", None, "field_lr", store.QUARANTINED),
        ],
    )
    assert list(list_images(layout, role="hr_reference")["image_id"]) == ["a" * 64]
    assert list(list_images(layout, role="field_lr")["image_id"]) == ["b" * 64]
    assert len(list_images(layout)) == 2
    assert list_images(layout, role="field_lr", cameras=["ref_cam"]).empty
    paths = list_images(layout, role=["hr_reference", "field_lr"])["path"]
    assert all(str(layout.root) in p for p in paths)


def test_calibration_pairs_are_complete_and_sorted(layout):
    write_batch_catalog(
        layout,
        "b1",
        [
            _row("b1", "1" * 64, store.CALIB_HR, pair_name="p2"),
            _row("b1", "2" * 64, store.CALIB_LR, pair_name="p2"),
            _row("b1", "3" * 64, store.CALIB_HR, pair_name="p1"),
            _row("b1", "4" * 64, store.CALIB_LR, pair_name="p1", outcome=store.DUPLICATE),
            _row("b1", "5" * 64, store.CALIB_HR, pair_name="lonely"),
        ],
    )
    pairs = calibration_pairs(layout)
    assert [name for name, _, _ in pairs] == ["p1", "p2"]
    name, hr, lr = pairs[1]
    assert hr == layout.root / f"store/images/11/{'1' * 64}.png"
    assert lr == layout.root / f"store/images/22/{'2' * 64}.png"


def test_catalogs_written_before_the_original_name_columns_still_read(layout):
    import pyarrow as pa
    import pyarrow.parquet as pq

    old_schema = pa.schema([f for f in store.CATALOG_SCHEMA if not f.name.startswith("original_name")])
    table = pa.Table.from_pylist([{"image_id": "a" * 64, "batch": "old", "outcome": store.ACCEPTED, "stored_path": "x.png"}], schema=old_schema)
    store.catalog_dir(layout).mkdir(parents=True)
    pq.write_table(table, store.batch_catalog_path(layout, "old"))
    df = store.read_catalog(layout)
    assert list(df.columns) == list(store.CATALOG_COLUMNS)
    assert df["original_name"].isna().all() and df["batch"].tolist() == ["old"]
