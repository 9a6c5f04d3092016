"""Source names: collisions after cleaning lose nothing, the original name is catalogued exactly,
special files are reported."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import encode, pixels

from sr_pipeline.intake.ingest import claim_files, ingest_batch, ingest_folder
from sr_pipeline.intake.uploads import poll_landing, read_names, scan_tree
from sr_pipeline.storage import store

COLLIDING = ["a b.png", "a&b.png", "a<b.png", "a>b.png", "a_b.png"]


def _write(root, files: dict[str, bytes]):
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_names_that_clean_alike_are_all_stored(layout, registry, tmp_path):
    src = _write(tmp_path / "src", {name: encode(pixels(seed=i)) for i, name in enumerate(COLLIDING)})
    summary = ingest_folder(layout, registry, src, "ref_cam")
    assert (summary.files_in, summary.accepted) == (5, 5)
    assert sorted(f.original_name for f in summary.files) == sorted(COLLIDING)
    assert len({f.source_name for f in summary.files}) == 5
    assert len(store.list_images(layout)) == 5
    assert next(f for f in summary.files if f.original_name == "a_b.png").source_name == "a_b.png"  # a safe name is kept


def test_a_backslash_name_beside_a_real_subfolder_is_kept_apart(layout, registry, tmp_path):
    src = _write(tmp_path / "src", {"x/y.png": encode(pixels(seed=1)), "x\\y.png": encode(pixels(seed=2))})
    summary = ingest_folder(layout, registry, src, "ref_cam")
    assert summary.accepted == 2
    assert {f.original_name: f.source_name for f in summary.files}["x/y.png"] == "x/y.png"


def test_claiming_again_reuses_the_first_attempts_names(layout, tmp_path):
    src = _write(tmp_path / "src", {name: encode(pixels(seed=i)) for i, name in enumerate(COLLIDING)})
    uploads = scan_tree(src, "ref_cam")
    first = claim_files(layout, "b1", "ref_cam", uploads)
    os.unlink(layout.incoming / "b1" / first[2])  # as if the first attempt died before copying it
    assert claim_files(layout, "b1", "ref_cam", uploads) == first
    assert sorted(p.name for p in (layout.incoming / "b1" / "ref_cam").iterdir()) == sorted(n.split("/")[1] for n in first)


def test_the_original_unicode_name_round_trips_through_the_catalog(layout, registry, tmp_path):
    name = "caméra ünicode 名前.png"
    src = _write(tmp_path / "src", {name: encode(pixels())})
    ingest_folder(layout, registry, src, "ref_cam")
    row = store.read_catalog(layout).iloc[0]
    assert row["source_name"] == "cam_ra_nicode_.png"
    assert row["original_name"] == name
    assert bytes.fromhex(row["original_name_hex"]) == os.fsencode(name)


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes in names")
def test_a_name_that_is_not_utf8_keeps_its_exact_bytes(layout, registry, tmp_path):
    raw = b"shot-\xff\xfe.png"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / os.fsdecode(raw)).write_bytes(encode(pixels()))
    ingest_folder(layout, registry, tmp_path / "src", "ref_cam")
    row = store.read_catalog(layout).iloc[0]
    assert bytes.fromhex(row["original_name_hex"]) == raw
    assert row["original_name"] == raw.decode("utf-8", "replace")


def test_the_sensor_claim_records_original_names(layout, registry, put_landing):
    put_landing("field_cam/été 1.png", encode(pixels(seed=1)))
    put_landing("field_cam/été_1.png", encode(pixels(seed=2)))
    [batch] = poll_landing(layout, registry, {}, now=0.0, stable_seconds=0).batches
    assert sorted(read_names(layout, batch.batch_key).values()) == sorted(os.fsencode(n).hex() for n in ["été 1.png", "été_1.png"])
    summary = ingest_batch(layout, registry, batch.batch_key)
    assert sorted(f.original_name for f in summary.files) == ["été 1.png", "été_1.png"]
    assert summary.accepted == 2
    assert read_names(layout, batch.batch_key) == {}  # dropped with the batch folder


def test_a_fifo_in_the_source_folder_is_reported_not_skipped(layout, registry, tmp_path):
    src = _write(tmp_path / "src", {"good.png": encode(pixels())})
    os.mkfifo(src / "pipe.png")
    summary = ingest_folder(layout, registry, src, "ref_cam")
    outcomes = {f.original_name: (f.outcome, f.reason) for f in summary.files}
    assert outcomes == {"good.png": ("accepted", None), "pipe.png": ("quarantined", "special_file")}
    assert (src / "pipe.png").exists()  # copy mode leaves the source alone
    assert len(store.read_catalog(layout)) == 2
