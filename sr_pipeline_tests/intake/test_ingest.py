"""Ingesting upload batches: outcomes, quarantine, duplicates, accounting, retries and the CLI."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import encode, pixels
from PIL import Image

from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.intake import ingest as ingest_mod
from sr_pipeline.storage import store
from sr_pipeline.common.cameras import UnknownCameraError
from sr_pipeline.sr.images.decode import DecodeLimits
from sr_pipeline.intake.ingest import classify, ingest_batch, ingest_folder, quarantine_name, run_cli

BATCH = "field_cam-20260101T000000-abcdef12"


def _files_under(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _quarantine_record(layout, batch: str, camera: str, rel: str) -> dict:
    return json.loads((layout.quarantine / batch / f"{quarantine_name(camera, rel)}.json").read_text())


BAD_INPUTS = {
    # name: (bytes factory, expected reason)
    "zero.png": (lambda mk: b"", "empty_file"),
    "half.png": (lambda mk: mk(64, 64)[:2000], "truncated"),
    "half.jpg": (lambda mk: mk(64, 64, fmt="JPEG")[:700], "truncated"),
    "zeros_inside.png": (lambda mk: (lambda d: d[:400] + bytes(200) + d[600:])(mk(64, 64)), "corrupt"),
    "random.jpg": (lambda mk: b"\xff\xd8\xff" + np.random.default_rng(0).bytes(3000) + b"\xff\xd9", "corrupt"),
    "readme.png": (lambda mk: b"this is not a picture\n" * 20, "not_an_image"),
    "tiny.png": (lambda mk: mk(8, 8), "too_small"),
    "huge.png": (lambda mk: mk(200, 150), "too_large"),
    "notes.txt": (lambda mk: b"shift report", "unsupported_format"),
    "frame.raw12": (lambda mk: mk(), "unsupported_format"),
}


def test_every_bad_input_is_quarantined_with_its_reason(layout, registry, make_image, put_incoming):
    for name, (factory, _) in BAD_INPUTS.items():
        put_incoming(BATCH, f"field_cam/{name}", factory(make_image))
    put_incoming(BATCH, "field_cam/good.png", make_image(64, 64))

    summary = ingest_batch(layout, registry, BATCH, limits=DecodeLimits(max_pixels=20_000))

    outcomes = {f.source_name: (f.outcome, f.reason) for f in summary.files}
    assert outcomes["good.png"] == ("accepted", None)
    for name, (_, reason) in BAD_INPUTS.items():
        assert outcomes[name] == ("quarantined", reason), name
        record = _quarantine_record(layout, BATCH, "field_cam", name)
        assert record["reason"] == reason and record["camera"] == "field_cam"
        assert record["relative_path"] == name and record["batch"] == BATCH
        assert record["message"] and record["quarantined_at"]
        assert (layout.quarantine / BATCH / record["file"]).is_file()
    assert (summary.accepted, summary.duplicate, summary.quarantined) == (1, 0, len(BAD_INPUTS))
    assert not (layout.incoming / BATCH).exists()

    df = store.read_catalog(layout)
    assert len(df) == summary.files_in == len(BAD_INPUTS) + 1
    bad = df[df["outcome"] == "quarantined"].set_index("source_name")
    assert {n: bad.loc[n, "reason"] for n in BAD_INPUTS} == {n: r for n, (_, r) in BAD_INPUTS.items()}
    assert all(p.startswith(f"quarantine/{BATCH}/") for p in bad["stored_path"])


def test_quarantined_bytes_are_moved_unchanged(layout, registry, put_incoming):
    put_incoming(BATCH, "field_cam/readme.png", b"plain text")
    ingest_batch(layout, registry, BATCH)
    record = _quarantine_record(layout, BATCH, "field_cam", "readme.png")
    assert (layout.quarantine / BATCH / record["file"]).read_bytes() == b"plain text"
    assert record["bytes"] == 10


def test_symlink_out_of_the_landing_folder_is_not_followed(layout, registry, tmp_path, make_image, put_incoming):
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(make_image())
    link = layout.incoming / BATCH / "field_cam" / "link.png"
    link.parent.mkdir(parents=True)
    os.symlink(secret, link)
    os.symlink(secret.parent, layout.incoming / BATCH / "field_cam" / "linked_dir")

    summary = ingest_batch(layout, registry, BATCH)

    assert {(f.source_name, f.outcome, f.reason) for f in summary.files} == {
        ("link.png", "quarantined", "symlink"),
        ("linked_dir", "quarantined", "symlink"),
    }
    record = _quarantine_record(layout, BATCH, "field_cam", "link.png")
    assert record["link_target"] == str(secret)
    assert (layout.quarantine / BATCH / record["file"]).is_symlink()
    assert secret.read_bytes() == make_image()  # the target was neither read into the store nor moved
    assert not layout.image_store.exists()


def test_fifo_is_quarantined_without_being_opened(layout, registry, put_incoming):
    fifo = layout.incoming / BATCH / "field_cam" / "pipe.png"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    summary = ingest_batch(layout, registry, BATCH)
    assert [(f.outcome, f.reason) for f in summary.files] == [("quarantined", "special_file")]


def test_files_outside_registered_camera_folders_are_quarantined(layout, registry, make_image, put_incoming):
    put_incoming(BATCH, "mystery_cam/a.png", make_image())
    put_incoming(BATCH, "loose.png", make_image(seed=1))
    summary = ingest_batch(layout, registry, BATCH)
    assert sorted((f.camera, f.source_name, f.reason) for f in summary.files) == [
        ("", "loose.png", "unknown_camera"),
        ("mystery_cam", "a.png", "unknown_camera"),
    ]


def test_mode_conversions_end_to_end(layout, registry, put_incoming):
    rgb = pixels(32, 32)
    grey = rgb[:, :, 0]
    put_incoming(BATCH, "ref_cam/grey.png", encode(Image.fromarray(grey, "L")))
    put_incoming(BATCH, "ref_cam/palette.png", encode(Image.fromarray(rgb).quantize(8)))
    put_incoming(BATCH, "ref_cam/alpha.png", encode(Image.fromarray(np.dstack([rgb, np.full((32, 32), 255, np.uint8)]), "RGBA")))
    put_incoming(BATCH, "ref_cam/deep.png", encode(Image.fromarray(grey.astype(np.uint16) * 257)))
    put_incoming(BATCH, "ref_cam/cmyk.tif", encode(Image.fromarray(rgb).convert("CMYK"), "TIFF"))
    summary = ingest_batch(layout, registry, BATCH)
    by_name = {f.source_name: f for f in summary.files}
    # opaque RGBA is the RGB image; 16-bit grey (v * 257) scaled back is the grey PNG: a duplicate
    assert by_name["alpha.png"].outcome == "accepted"
    np.testing.assert_array_equal(store.load_image(store.resolve_path(layout, by_name["alpha.png"].stored_path)), rgb)
    assert {by_name["grey.png"].outcome, by_name["deep.png"].outcome} == {"accepted", "duplicate"}
    assert by_name["grey.png"].image_id == by_name["deep.png"].image_id
    df = store.read_catalog(layout).set_index("source_name")
    assert df.loc["deep.png", "orig_mode"].startswith("I") and df.loc["cmyk.tif", "orig_mode"] == "CMYK"
    assert df.loc["palette.png", "orig_mode"] == "P"
    for f in summary.files:
        arr = store.load_image(store.resolve_path(layout, f.stored_path))
        assert arr.dtype == np.uint8 and arr.shape == (32, 32, 3)


def test_duplicates_within_and_across_batches(layout, registry, make_image, put_incoming):
    put_incoming("b1", "field_cam/a.png", make_image(seed=1))
    put_incoming("b1", "field_cam/b.png", make_image(seed=2))
    put_incoming("b1", "field_cam/z_copy_of_a.bmp", encode(pixels(seed=1), "BMP"))
    first = ingest_batch(layout, registry, "b1")
    assert [(f.source_name, f.outcome) for f in first.files] == [
        ("a.png", "accepted"),
        ("b.png", "accepted"),
        ("z_copy_of_a.bmp", "duplicate"),
    ]
    put_incoming("b2", "ref_cam/b_again.png", make_image(seed=2))
    put_incoming("b2", "ref_cam/c.png", make_image(seed=3))
    second = ingest_batch(layout, registry, "b2")
    assert [(f.source_name, f.outcome, f.reason) for f in second.files] == [
        ("b_again.png", "duplicate", "duplicate"),
        ("c.png", "accepted", None),
    ]
    assert second.files[0].image_id == first.files[1].image_id
    assert second.files[0].stored_path == first.files[1].stored_path
    stored = [p for p in layout.image_store.rglob("*.png")]
    assert len(stored) == 3  # a, b, c: each stored once
    for f in (*first.files, *second.files):
        assert store.image_id_for(store.load_image(layout.root / f.stored_path)) == f.image_id
    assert len(store.list_images(layout)) == 3


def _mixed_batch(put_incoming, make_image, batch: str = BATCH) -> int:
    files = {f"field_cam/img{i:02d}.png": make_image(seed=i) for i in range(10)}
    files["field_cam/dup.png"] = make_image(seed=3)
    files["field_cam/bad1.png"] = b""
    files["field_cam/bad2.png"] = b"text"
    files["field_cam/pairs/p1/hr/p1.png"] = make_image(64, 64, seed=20)
    files["field_cam/pairs/p1/lr/p1.png"] = make_image(16, 16, seed=21)
    for rel, data in files.items():
        put_incoming(batch, rel, data)
    return len(files)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_that_fails_midway_loses_nothing_and_the_retry_completes(layout, registry, make_image, put_incoming, monkeypatch, workers):
    files_in = _mixed_batch(put_incoming, make_image)
    real_put = store.put_image
    calls = {"n": 0}

    def flaky_put(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            raise OSError("disk full (simulated)")
        return real_put(*args, **kwargs)

    monkeypatch.setattr(store, "put_image", flaky_put)
    with pytest.raises(OSError, match="simulated"):
        ingest_batch(layout, registry, BATCH, workers=workers)
    # nothing catalogued, nothing lost: every file is still in incoming or in quarantine with its JSON
    assert not store.batch_catalog_path(layout, BATCH).exists()
    left = _files_under(layout.incoming / BATCH)
    quarantined = [p for p in _files_under(layout.quarantine / BATCH) if not p.endswith(".json")]
    assert len(left) + len(quarantined) == files_in
    assert len(_files_under(layout.quarantine / BATCH)) == 2 * len(quarantined)

    monkeypatch.setattr(store, "put_image", real_put)
    summary = ingest_batch(layout, registry, BATCH, workers=workers)
    assert summary.files_in == files_in == summary.accepted + summary.duplicate + summary.quarantined
    assert (summary.accepted, summary.duplicate, summary.quarantined) == (12, 1, 2)
    assert {f.reason for f in summary.files if f.outcome == "quarantined"} == {"empty_file", "not_an_image"}
    assert not (layout.incoming / BATCH).exists()
    assert len(list(layout.image_store.rglob("*.png"))) == 12
    assert store.calibration_pairs(layout)[0][0] == "p1"
    assert len(store.read_catalog(layout)) == files_in


def test_a_crash_after_the_catalog_is_written_is_finished_by_the_retry(layout, registry, make_image, put_incoming, monkeypatch):
    files_in = _mixed_batch(put_incoming, make_image)

    def crash(*args, **kwargs):
        raise RuntimeError("killed before cleanup (simulated)")

    real_remove = ingest_mod._remove_batch_folder
    monkeypatch.setattr(ingest_mod, "_remove_batch_folder", crash)
    with pytest.raises(RuntimeError):
        ingest_batch(layout, registry, BATCH)
    assert store.batch_catalog_path(layout, BATCH).exists()
    assert _files_under(layout.incoming / BATCH)  # the files wait for their cleanup

    monkeypatch.setattr(ingest_mod, "_remove_batch_folder", real_remove)
    summary = ingest_batch(layout, registry, BATCH)
    assert summary.already_ingested
    assert summary.files_in == files_in and (summary.accepted, summary.duplicate, summary.quarantined) == (12, 1, 2)
    assert not (layout.incoming / BATCH).exists()
    # and once more: still the same answer, nothing written twice
    again = ingest_batch(layout, registry, BATCH)
    assert again.to_dict()["files"] == summary.to_dict()["files"]
    assert len(store.read_catalog(layout)) == files_in


def test_a_batch_without_files_or_catalog_is_an_error(layout, registry):
    with pytest.raises(FileNotFoundError):
        ingest_batch(layout, registry, "nothing-here")


def test_invalid_batch_keys_are_refused(layout, registry):
    for key in ["../escape", "a...b", "/abs", ""]:
        with pytest.raises(ValueError):
            ingest_batch(layout, registry, key)


def test_classify_roles_and_pairs(registry):
    field, ref = registry.get("field_cam"), registry.get("ref_cam")
    assert classify(ref, "pairs/p/hr/x.png") == ("hr_reference", None)
    assert classify(field, "x.jpg") == ("field_lr", None)
    assert classify(field, "pairs/p7/hr/x.png") == ("calib_hr", "p7")
    assert classify(field, "pairs/p7/LR/x.jpg") == ("calib_lr", "p7")
    assert classify(field, "site2/pairs/p7/lr/x.jpg") == ("calib_lr", "site2/p7")
    assert classify(field, "HR/img01.png") == ("calib_hr", "img01")
    assert classify(field, "set1/LR/img01.jpg") == ("calib_lr", "set1/img01")
    assert classify(None, "x.png") == ("unknown", None)


def test_hr_lr_folders_make_calibration_pairs(layout, registry, tmp_path, make_image):
    src = tmp_path / "calib"
    files = {
        "HR/a.png": make_image(64, 64, seed=1),
        "LR/a.jpg": make_image(16, 16, seed=2, fmt="JPEG"),
        "HR/b.png": make_image(64, 64, seed=3),  # no LR: not a pair
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    ingest_folder(layout, registry, src, "field_cam")
    pairs = store.calibration_pairs(layout)
    assert [name for name, _, _ in pairs] == ["a"]
    assert store.load_image(pairs[0][1]).shape == (64, 64, 3) and store.load_image(pairs[0][2]).shape == (16, 16, 3)


# ---------------------------------------------------------------- back-fill and CLI


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_ingest_folder_copies_sanitises_names_and_skips_temp_files(layout, registry, tmp_path, make_image):
    src = _tree(
        tmp_path / "archive",
        {
            "2024 March/shot #1 (ok).png": make_image(seed=1),
            "näme with ü.png": make_image(seed=2),
            "upload.png.part": make_image(seed=3),
            ".hidden.png": make_image(seed=4),
            ".cache/inside.png": make_image(seed=5),
        },
    )
    summary = ingest_folder(layout, registry, src, "ref_cam", batch_key="backfill-1")
    assert summary.batch == "backfill-1"
    names = sorted(f.source_name for f in summary.files)
    assert names == ["2024_March/shot_1_ok_.png", "n_me_with_.png"]
    assert all(f.outcome == "accepted" and f.role == "hr_reference" for f in summary.files)
    assert (src / "upload.png.part").exists() and (src / "2024 March/shot #1 (ok).png").exists()  # copied, not moved
    with pytest.raises(FileExistsError):
        ingest_folder(layout, registry, src, "ref_cam", batch_key="backfill-1")


def test_ingest_folder_move_empties_the_source(layout, registry, tmp_path, make_image):
    src = _tree(tmp_path / "drop", {"a.png": make_image(seed=1), "b.png": b""})
    summary = ingest_folder(layout, registry, src, "field_cam", move=True)
    assert (summary.accepted, summary.quarantined) == (1, 1)
    assert _files_under(src) == []


def test_ingest_folder_default_batch_key(layout, registry, tmp_path, make_image):
    src = _tree(tmp_path / "s", {"a.png": make_image()})
    summary = ingest_folder(layout, registry, src, "field_cam")
    assert summary.batch.startswith("field_cam-") and "..." not in summary.batch
    with pytest.raises(UnknownCameraError):
        ingest_folder(layout, registry, src, "nope")


def _args(tmp_path, src, camera, cameras_file, **kw) -> argparse.Namespace:
    return argparse.Namespace(
        data=tmp_path / "data", layout=DataLayout(tmp_path / "data"), src_dir=src, camera=camera, batch=kw.get("batch"), cameras=cameras_file, json=kw.get("json", False)
    )


def test_cli_json_summary(tmp_path, cameras_file, make_image, capsys):
    src = _tree(tmp_path / "in", {"good.png": make_image(), "copy.png": make_image(), "empty.png": b"", "n.txt": b"x"})
    code = run_cli(_args(tmp_path, src, "field_cam", cameras_file, batch="cli-batch", json=True))
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["accepted"], out["duplicate"], out["quarantined"], out["files_in"]) == (1, 1, 2, 4)
    reasons = {f["source_name"]: (f["outcome"], f["reason"]) for f in out["files"]}
    assert reasons == {
        "copy.png": ("accepted", None),
        "good.png": ("duplicate", "duplicate"),
        "empty.png": ("quarantined", "empty_file"),
        "n.txt": ("quarantined", "unsupported_format"),
    }
    assert (tmp_path / "data" / "catalog" / "images" / "cli-batch.parquet").is_file()


def test_cli_human_output_and_errors(tmp_path, cameras_file, make_image, capsys):
    src = _tree(tmp_path / "in", {"good.png": make_image()})
    assert run_cli(_args(tmp_path, src, "field_cam", cameras_file)) == 0
    assert "1 accepted" in capsys.readouterr().out

    assert run_cli(_args(tmp_path, src, "no_such_cam", cameras_file)) != 0
    assert "unknown camera 'no_such_cam'" in capsys.readouterr().err
    assert run_cli(_args(tmp_path, tmp_path / "missing", "field_cam", cameras_file)) != 0
    assert "does not exist" in capsys.readouterr().err
    assert run_cli(_args(tmp_path, src, "field_cam", tmp_path / "nope.yaml")) != 0
    assert "camera registry" in capsys.readouterr().err
    assert run_cli(_args(tmp_path, src, "field_cam", cameras_file, batch="../x")) != 0


def test_cli_through_the_console_entry_point(tmp_path, cameras_file, make_image, capsys):
    from sr_pipeline.cli import main

    src = _tree(tmp_path / "in", {"good.png": make_image()})
    code = main(["--data", str(tmp_path / "d"), "ingest", str(src), "--camera", "ref_cam", "--cameras", str(cameras_file), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["accepted"] == 1
    assert len(store.read_catalog(store.DataLayout(tmp_path / "d"))) == 1


def test_hidden_upload_names_in_incoming_are_still_accounted_for(layout, registry, make_image, put_incoming):
    put_incoming(BATCH, "field_cam/.hidden.png", make_image())
    put_incoming(BATCH, "field_cam/.x.png.1234.tmp", b"our own temp file")
    summary = ingest_batch(layout, registry, BATCH)
    assert [(f.source_name, f.outcome) for f in summary.files] == [(".hidden.png", "accepted")]
    assert not (layout.incoming / BATCH).exists()


def test_files_added_after_the_catalog_are_left_and_reported(layout, registry, make_image, put_incoming):
    put_incoming(BATCH, "field_cam/a.png", make_image())
    ingest_batch(layout, registry, BATCH)
    put_incoming(BATCH, "field_cam/late.png", make_image(seed=9))
    summary = ingest_batch(layout, registry, BATCH)
    assert summary.already_ingested and summary.left_in_incoming == ["field_cam/late.png"]
    assert (layout.incoming / BATCH / "field_cam/late.png").exists()


def test_quarantine_names_are_safe_and_distinct(layout, registry, put_incoming):
    assert quarantine_name("field_cam", "a/b.png") != quarantine_name("field_cam", "a__b.png")
    assert quarantine_name("field_cam", "a/b.png") == quarantine_name("field_cam", "a/b.png")
    assert quarantine_name("", "x.png") != quarantine_name("_", "x.png")
    name = quarantine_name("field_cam", "sub dir/we?rd näme.png")
    assert name.endswith(".png") and "/" not in name and " " not in name
    put_incoming(BATCH, "field_cam/a/b.png", b"1")
    put_incoming(BATCH, "field_cam/a__b.png", b"2")
    summary = ingest_batch(layout, registry, BATCH)
    assert summary.quarantined == 2
    assert len([p for p in (layout.quarantine / BATCH).iterdir() if p.suffix == ".png"]) == 2
