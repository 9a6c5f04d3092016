"""The sensor's pure logic: stable-file detection, ignored names, claiming, batch keys, recovery."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import PurePosixPath

import pytest

from sr_pipeline.intake import uploads
from sr_pipeline.intake.uploads import (
    BatchBusyError,
    batch_lock,
    check_batch_key,
    is_ignored_name,
    make_batch_key,
    observe,
    poll_landing,
    safe_relative_path,
    scan_tree,
)

T0 = 1_800_000_000.0


def test_ignored_names():
    for name in [".hidden.png", "a.png.part", "a.PART", "b.tmp", "c.png~", "d.crdownload", ".DS_Store"]:
        assert is_ignored_name(name), name
    for name in ["a.png", "part.png", "tmp_1.jpg", "x~y.png"]:
        assert not is_ignored_name(name), name


def test_safe_relative_path_never_escapes():
    assert safe_relative_path("../../etc/passwd") == PurePosixPath("_/_/etc/passwd")
    assert safe_relative_path("/abs/x.png") == PurePosixPath("abs/x.png")
    assert safe_relative_path("a\\..\\b.png") == PurePosixPath("a/_/b.png")
    assert safe_relative_path("we ird/na\nme?.png") == PurePosixPath("we_ird/na_me_.png")
    assert safe_relative_path(".secret/x.png") == PurePosixPath("secret/x.png")
    long = safe_relative_path("x" * 300 + ".png")
    assert len(long.name) <= 120 and long.suffix == ".png"
    with pytest.raises(ValueError):
        safe_relative_path("///")


def test_batch_keys_are_valid_partition_keys():
    key = make_batch_key("field_cam", ["b.png", "a.png"], datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc))
    assert re.fullmatch(r"field_cam-20260304T050607-[0-9a-f]{8}", key)
    assert key == make_batch_key("field_cam", ["a.png", "b.png"], datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc))
    assert "..." not in key
    for bad in ["a/b", "..", "x...y", "-x", "", "a b"]:
        with pytest.raises(ValueError):
            check_batch_key(bad)


def test_scan_ignores_temp_and_hidden_and_does_not_follow_links(layout, put_landing, tmp_path):
    put_landing("field_cam/a.png", b"1")
    put_landing("field_cam/sub/b.png", b"22")
    put_landing("field_cam/c.png.part", b"3")
    put_landing("field_cam/d.tmp", b"3")
    put_landing("field_cam/e.png~", b"3")
    put_landing("field_cam/.f.png", b"3")
    put_landing("field_cam/.git/g.png", b"3")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"s")
    os.symlink(outside, layout.landing / "field_cam" / "linkdir")
    found = scan_tree(layout.landing / "field_cam", "field_cam")
    assert [(u.relpath, u.kind) for u in found] == [("a.png", "file"), ("linkdir", "symlink"), ("sub/b.png", "file")]
    assert found[2].size == 2


def test_observe_waits_for_an_unchanged_signature(layout, put_landing):
    path = put_landing("field_cam/a.png", b"12")
    state, stable = observe({}, scan_tree(layout.landing / "field_cam", "field_cam"), T0, 10)
    assert stable == []  # first sight is never enough
    state, stable = observe(state, scan_tree(layout.landing / "field_cam", "field_cam"), T0 + 5, 10)
    assert stable == []  # not for long enough
    path.write_bytes(b"123")  # still being written: the clock restarts
    state, stable = observe(state, scan_tree(layout.landing / "field_cam", "field_cam"), T0 + 11, 10)
    assert stable == [] and state["seen"]["field_cam/a.png"]["since"] == T0 + 11
    state, stable = observe(state, scan_tree(layout.landing / "field_cam", "field_cam"), T0 + 21, 10)
    assert [u.relpath for u in stable] == ["a.png"]
    json.dumps(state)  # the state is the sensor cursor
    path.unlink()
    state, _ = observe(state, scan_tree(layout.landing / "field_cam", "field_cam"), T0 + 30, 10)
    assert state["seen"] == {}


def test_observe_with_zero_stable_time_takes_files_at_once(layout, put_landing):
    put_landing("ref_cam/a.png", b"1")
    _, stable = observe({}, scan_tree(layout.landing / "ref_cam", "ref_cam"), T0, 0)
    assert len(stable) == 1


def test_same_mtime_but_new_size_is_not_stable(layout, put_landing):
    path = put_landing("field_cam/a.png", b"12")
    state, _ = observe({}, scan_tree(layout.landing / "field_cam", "field_cam"), T0, 10)
    st = path.stat()
    path.write_bytes(b"1234")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # e.g. a copy that preserves times
    _, stable = observe(state, scan_tree(layout.landing / "field_cam", "field_cam"), T0 + 60, 10)
    assert stable == []


def test_poll_claims_one_batch_per_camera_by_rename(layout, registry, put_landing):
    put_landing("field_cam/a.png", b"a")
    put_landing("field_cam/deep/er/b.jpg", b"b")
    put_landing("field_cam/c.jpg.part", b"c")
    put_landing("ref_cam/r.png", b"r")
    put_landing("stranger_cam/x.png", b"x")
    first = poll_landing(layout, registry, {}, now=T0, stable_seconds=10)
    assert first.batches == [] and first.waiting == 3
    assert first.unknown_folders == ["stranger_cam"]
    inode = (layout.landing / "field_cam/a.png").stat().st_ino

    second = poll_landing(layout, registry, first.state, now=T0 + 10, stable_seconds=10)
    assert [(b.camera, sorted(b.files)) for b in second.batches] == [
        ("field_cam", ["field_cam/a.png", "field_cam/deep/er/b.jpg"]),
        ("ref_cam", ["ref_cam/r.png"]),
    ]
    field_batch = second.batches[0].batch_key
    assert field_batch.startswith("field_cam-") and second.batches[1].batch_key.startswith("ref_cam-")
    claimed = layout.incoming / field_batch / "field_cam" / "a.png"
    assert claimed.stat().st_ino == inode  # moved, not copied
    assert not (layout.landing / "field_cam/a.png").exists()
    assert (layout.landing / "field_cam/c.jpg.part").exists()  # temp names stay
    assert (layout.landing / "stranger_cam/x.png").exists()  # unknown cameras stay
    assert second.state["seen"] == {}
    assert set(second.state["requested"]) == {b.batch_key for b in second.batches}

    third = poll_landing(layout, registry, second.state, now=T0 + 20, stable_seconds=10)
    assert third.batches == []  # idempotent: requested batches are not returned again


def test_a_file_changed_after_observation_is_not_claimed(layout, registry, put_landing):
    path = put_landing("field_cam/a.png", b"a")
    state = poll_landing(layout, registry, {}, now=T0, stable_seconds=5).state
    stable = observe(state, scan_tree(layout.landing / "field_cam", "field_cam"), T0 + 5, 5)[1]
    path.write_bytes(b"changed")
    assert uploads.claim_by_rename(layout, "field_cam-x", stable) == []
    assert path.exists()
    assert not uploads.names_path(layout, "field_cam-x").exists()  # no name file for a batch that claimed nothing


def test_unsafe_names_are_sanitised_on_claim_and_collisions_kept_apart(layout, registry, put_landing):
    put_landing("field_cam/a b.png", b"1")
    put_landing("field_cam/a_b.png", b"2")
    result = poll_landing(layout, registry, {}, now=T0, stable_seconds=0)
    files = sorted(result.batches[0].files)
    assert len(files) == 2 and "field_cam/a_b.png" in files
    assert all(re.fullmatch(r"field_cam/[A-Za-z0-9._-]+", f) for f in files)


def test_symlinks_are_claimed_as_links_not_followed(layout, registry, put_landing, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"do not read")
    (layout.landing / "field_cam").mkdir(parents=True)
    os.symlink(secret, layout.landing / "field_cam" / "evil.png")
    result = poll_landing(layout, registry, {}, now=T0, stable_seconds=0)
    claimed = layout.incoming / result.batches[0].batch_key / "field_cam" / "evil.png"
    assert claimed.is_symlink() and secret.read_bytes() == b"do not read"


def test_max_files_per_batch(layout, registry, put_landing):
    for i in range(5):
        put_landing(f"ref_cam/{i}.png", b"x")
    result = poll_landing(layout, registry, {}, now=T0, stable_seconds=0, max_files_per_batch=3)
    assert len(result.batches) == 1 and len(result.batches[0].files) == 3
    result = poll_landing(layout, registry, result.state, now=T0 + 1, stable_seconds=0, max_files_per_batch=3)
    assert len(result.batches[0].files) == 2


def test_orphan_batches_are_recovered_once_old_and_unlocked(layout, registry, put_incoming):
    put_incoming("field_cam-20260101T000000-00000000", "field_cam/a.png", b"a")
    young = poll_landing(layout, registry, {}, now=T0, stable_seconds=0, recover_after_s=10**12)
    assert young.batches == []
    with batch_lock(layout, "field_cam-20260101T000000-00000000"):
        busy = poll_landing(layout, registry, {}, now=T0, stable_seconds=0, recover_after_s=0)
        assert busy.batches == []
        with pytest.raises(BatchBusyError):
            with batch_lock(layout, "field_cam-20260101T000000-00000000"):
                pass
    recovered = poll_landing(layout, registry, {}, now=T0, stable_seconds=0, recover_after_s=0)
    assert [(b.batch_key, b.camera, b.recovered) for b in recovered.batches] == [
        ("field_cam-20260101T000000-00000000", "field_cam", True)
    ]
    again = poll_landing(layout, registry, recovered.state, now=T0, stable_seconds=0, recover_after_s=0)
    assert again.batches == []


def test_stable_seconds_env(monkeypatch):
    monkeypatch.delenv(uploads.STABLE_SECONDS_ENV, raising=False)
    assert uploads.stable_seconds_from_env() == 10
    monkeypatch.setenv(uploads.STABLE_SECONDS_ENV, "2.5")
    assert uploads.stable_seconds_from_env() == 2.5
    monkeypatch.setenv(uploads.STABLE_SECONDS_ENV, "soon")
    with pytest.raises(ValueError):
        uploads.stable_seconds_from_env()


def test_batch_lock_is_exclusive_and_leaves_no_file(layout):
    with batch_lock(layout, "b1"):
        assert uploads.is_batch_locked(layout, "b1")
        assert not uploads.is_batch_locked(layout, "b2")
    assert not uploads.is_batch_locked(layout, "b1")
    assert list((layout.incoming / ".locks").iterdir()) == []


def test_an_empty_batch_folder_is_removed_not_recovered(layout, registry):
    folder = layout.incoming / "ref_cam-20260101T000000-00000000"
    folder.mkdir(parents=True)
    old = T0 - 1000
    os.utime(folder, (old, old))
    assert poll_landing(layout, registry, {}, now=T0, stable_seconds=5, recover_after_s=300).batches == []
    assert not folder.exists()


def test_reserved_batch_keys_are_never_shared(layout):
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    keys = [uploads.reserve_batch_key(layout, "ref_cam", ["a.png"], when) for _ in range(3)]
    assert len(set(keys)) == 3 and all((layout.incoming / k).is_dir() for k in keys)
