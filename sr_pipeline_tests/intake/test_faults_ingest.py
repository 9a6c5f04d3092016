"""Faults of the disk and the bytes during ingestion: full disk, read-only root, refused permission,
flipped bits in catalogs. Each is injected at one step (claim, copy, store, catalog, lock), told in
one sentence (exit 1, never a traceback), and recovered with the command the tool printed: afterwards
every source file has exactly one outcome (files in = accepted + duplicate + quarantined).

Most faults are injected by making one write call raise the OSError a real disk would; one test
fills and remounts a real 1 MB tmpfs where this process may mount (root with CAP_SYS_ADMIN).
"""

from __future__ import annotations

import errno
import os
import random
import shlex
import shutil
import subprocess
import threading

import pytest
from conftest import encode, pixels

from sr_pipeline.cli import main
from sr_pipeline.intake import doctor
from sr_pipeline.intake.uploads import names_path
from sr_pipeline.storage import store
from sr_pipeline.storage.checked_parquet import DamagedFile, read_checked

N = 12  # source files: 10 good pictures, one re-upload, one broken file


@pytest.fixture
def src(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    for i in range(10):
        (folder / f"shot {i:02d}.png").write_bytes(encode(pixels(40, 32, seed=i)))
    (folder / "again.png").write_bytes(encode(pixels(40, 32, seed=3)))
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


@pytest.fixture(autouse=True)
def _registry_env(monkeypatch, cameras_file):
    # the printed commands carry no --cameras: they must work as printed
    monkeypatch.setenv("SR_PIPELINE_CAMERAS", str(cameras_file))


def _ingest(layout, src, capsys):
    code = main(["--data", str(layout.root), "ingest", str(src), "--camera", "ref_cam"])
    return code, capsys.readouterr()


def _printed_command(err: str) -> list[str]:
    line = next(line for line in err.splitlines() if line.startswith("left to do:"))
    return shlex.split(line.split("run: ", 1)[1])[1:]  # drop "sr-pipeline"


def _one_sentence(code: int, err: str, what: str) -> None:
    assert code == 1, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and what in errors[0], err


def _temps(root) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def _accounted(layout, n=N) -> None:
    df = store.read_catalog(layout)
    counts = df["outcome"].value_counts().to_dict()
    assert len(df) == n == sum(counts.get(k, 0) for k in store.OUTCOMES)
    assert sorted(df["original_name"]) == sorted([f"shot {i:02d}.png" for i in range(10)] + ["again.png", "broken.png"])
    assert (counts.get(store.ACCEPTED), counts.get(store.DUPLICATE), counts.get(store.QUARANTINED)) == (10, 1, 1)
    assert sum(1 for _ in layout.image_store.rglob("*.png")) == 10
    assert not list(names_path(layout, "x").parent.glob("*.json"))  # every list closed with its batch
    assert not _temps(layout.root)
    assert not doctor.examine(layout).unfinished


class _FailAfter:
    """Call ``real`` normally ``n`` times, then raise ``OSError(code)`` (thread-safe)."""

    def __init__(self, real, n, code, when=lambda *a, **k: True, partial=None):
        self.real, self.n, self.code, self.when, self.partial = real, n, code, when, partial
        self.lock, self.calls, self.raised = threading.Lock(), 0, 0

    def __call__(self, *args, **kwargs):
        if self.when(*args, **kwargs):
            with self.lock:
                self.calls += 1
                fail = self.calls > self.n
            if fail:
                self.raised += 1
                if self.partial:
                    self.partial(*args, **kwargs)
                raise OSError(self.code, os.strerror(self.code))
        return self.real(*args, **kwargs)


def _half_copy(src, dst, **kwargs):  # what a full disk leaves: part of the file
    with open(dst, "wb") as fh:
        fh.write(open(src, "rb").read()[:10])


def test_disk_full_mid_copy_resumes_the_whole_batch(layout, src, capsys, monkeypatch):
    fault = _FailAfter(shutil.copy2, 5, errno.ENOSPC, partial=_half_copy)
    monkeypatch.setattr(shutil, "copy2", fault)
    code, out = _ingest(layout, src, capsys)
    _one_sentence(code, out.err, "no space is left on the device while copying")
    assert not _temps(layout.root)  # the half-written claim copy is gone
    monkeypatch.setattr(shutil, "copy2", fault.real)  # space freed

    assert main(_printed_command(out.err)) == 0, capsys.readouterr()
    _accounted(layout)


def test_a_finish_never_closes_a_batch_with_files_missing(layout, src, capsys, monkeypatch):
    fault = _FailAfter(shutil.copy2, 5, errno.ENOSPC)
    monkeypatch.setattr(shutil, "copy2", fault)
    code, out = _ingest(layout, src, capsys)
    monkeypatch.setattr(shutil, "copy2", fault.real)
    gone = src / "shot 09.png"
    gone.unlink()  # the operator cleaned the source folder before finishing

    assert main(_printed_command(out.err)) == 1
    report = capsys.readouterr().out
    assert "shot 09.png" in report and "gone from the source folder" in report
    batch = _printed_command(out.err)[-1]
    assert names_path(layout, batch).exists()  # the list stays while a name lacks an outcome
    assert not store.batch_catalog_path(layout, batch).exists()

    gone.write_bytes(encode(pixels(40, 32, seed=9)))  # put back
    assert main(_printed_command(out.err)) == 0
    _accounted(layout)


def _atomic_write_failing(monkeypatch, code, n, which):
    fault = _FailAfter(store.atomic_write, n, code, when=lambda path, *a, **k: which(str(path)))
    monkeypatch.setattr(store, "atomic_write", fault)
    return fault


@pytest.mark.parametrize(
    ("code", "which", "n", "step", "said"),
    [
        (errno.ENOSPC, lambda p: "/store/images/" in p, 3, "storing the images", "no space is left"),
        (errno.ENOSPC, lambda p: p.endswith(".parquet"), 0, "writing the catalog", "no space is left"),
        (errno.EROFS, lambda p: p.endswith(".parquet"), 0, "writing the catalog", "read-only"),
        (errno.EACCES, lambda p: "/store/images/" in p, 0, "storing the images", "permission was refused"),
    ],
    ids=["enospc-store", "enospc-catalog", "erofs-catalog", "eacces-store"],
)
def test_a_fault_while_storing_or_cataloguing_is_one_sentence_and_finishes(layout, src, capsys, monkeypatch, code, which, n, step, said):
    fault = _atomic_write_failing(monkeypatch, code, n, which)
    exit_code, out = _ingest(layout, src, capsys)
    _one_sentence(exit_code, out.err, said)
    assert step in out.err
    assert fault.raised
    monkeypatch.setattr(store, "atomic_write", fault.real)
    assert main(_printed_command(out.err)) == 0
    _accounted(layout)


def test_a_refused_quarantine_move_and_a_read_only_lock(layout, src, capsys, monkeypatch):
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", _FailAfter(real_rename, 0, errno.EACCES, when=lambda a, b: "/quarantine/" in str(b)))
    code, out = _ingest(layout, src, capsys)
    _one_sentence(code, out.err, "permission was refused while storing")
    monkeypatch.setattr(os, "rename", real_rename)

    real_open = os.open
    monkeypatch.setattr(os, "open", _FailAfter(real_open, 0, errno.EROFS, when=lambda p, flags, *a: str(p).endswith(".lock") and flags & os.O_CREAT))
    assert main(_printed_command(out.err)) == 1
    report = capsys.readouterr().out
    assert "read-only while taking the lock of batch" in report and "Traceback" not in report
    monkeypatch.setattr(os, "open", real_open)

    assert main(_printed_command(out.err)) == 0
    _accounted(layout)


def _ingested(layout, src, capsys):
    code, out = _ingest(layout, src, capsys)
    assert code == 0, out.err
    return next(store.catalog_dir(layout).glob("*.parquet"))


def test_every_flipped_bit_in_a_catalog_is_caught_or_harmless(layout, src, capsys):
    path = _ingested(layout, src, capsys)
    data = path.read_bytes()
    good, verified = read_checked(path, store.CATALOG_SCHEMA)
    assert verified
    rng = random.Random(0)
    caught = harmless = 0
    for _ in range(150):
        flipped = bytearray(data)
        i = rng.randrange(len(flipped))
        flipped[i] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
        try:
            table, _ = read_checked(path, store.CATALOG_SCHEMA)
        except DamagedFile:
            caught += 1
            continue
        assert table.equals(good), f"byte {i}: wrong values read back silently"
        harmless += 1
    assert caught > 0 and caught + harmless == 150


def test_a_damaged_catalog_is_reported_never_counted_and_rebuilt(layout, src, capsys, tmp_path):
    path = _ingested(layout, src, capsys)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10  # inside the column data
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedFile):
        store.read_catalog(layout)

    assert main(["--data", str(layout.root), "doctor"]) == 1
    out = capsys.readouterr().out
    assert f"damaged catalog {path}" in out and "--rebuild-catalog" in out

    again = tmp_path / "again"
    shutil.copytree(src, again)
    code, out = _ingest(layout, again, capsys)  # never merges the damaged rows into its counts
    _one_sentence(code, out.err, "is damaged")
    assert "doctor --rebuild-catalog" in out.err

    assert main(["--data", str(layout.root), "doctor", "--rebuild-catalog"]) == 1  # the re-ingest is still to finish
    assert "rebuilt 1 damaged catalog(s)" in capsys.readouterr().out
    df = store.read_catalog(layout)
    assert (df["outcome"] == store.ACCEPTED).sum() == 10  # every stored image, once
    assert (df["outcome"] == store.QUARANTINED).sum() == 1  # the quarantine record survives
    assert list((layout.catalog / "damaged").glob("*.parquet"))  # kept aside, never read
    assert main(_printed_command(out.err)) == 0
    assert "finished now: 12 files, 0 accepted, 11 duplicate and 1 quarantined" in capsys.readouterr().out
    assert not doctor.examine(layout).problems_left()


def test_doctor_refuses_bad_batch_keys_and_finds_temps_in_output_folders(layout, src, capsys, tmp_path):
    _ingested(layout, src, capsys)
    assert main(["--data", str(layout.root), "doctor", "--finish", "--batch", "../../etc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid batch key" in err
    assert main(["--data", str(layout.root), "doctor", "--batch", "no-such-batch"]) == 2
    capsys.readouterr()

    out_dir = tmp_path / "upscaled"
    out_dir.mkdir()
    stale = [out_dir / f".x{i}.png.abcd_12{i}.tmp" for i in range(3)]  # mkstemp's 8 random characters
    # Other programs' hidden files in the shared output folder are never ours to remove.
    others = [out_dir / ".draft.tmp", out_dir / ".config" / "app" / ".settings.ab12cd34.tmp"]
    others[1].parent.mkdir(parents=True)
    for p in stale + others:
        p.write_bytes(b"")
    assert main(["--data", str(layout.root), "doctor", "--min-age", "0", "--out", str(out_dir)]) == 1
    out = capsys.readouterr().out
    assert all(str(p) in out for p in stale) and not any(str(p) in out for p in others)
    assert main(["--data", str(layout.root), "doctor", "--min-age", "0", "--out", str(out_dir), "--clean"]) == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in others)
    assert main(["--data", str(layout.root), "doctor", "--out", "/"]) == 2  # never a whole file system
    assert "whole file system" in capsys.readouterr().err


def _can_mount(folder) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True).returncode == 0


def test_a_real_full_then_read_only_tmpfs(tmp_path, capsys, monkeypatch):
    """The probe's case on a real file system: a 1 MB tmpfs fills during the copy, is then
    remounted read-only (doctor looks without creating a lock), then grows; the printed
    command finishes the whole batch."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _can_mount(mnt):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN); the injected faults above still run")
    try:
        source = tmp_path / "noise"
        source.mkdir()
        rng = __import__("numpy").random.default_rng(0)
        for i in range(40):  # ~40 x 31 kB of incompressible PNGs: more than 1 MB
            (source / f"n{i:02d}.png").write_bytes(encode(rng.integers(0, 256, (64, 160, 3), dtype="uint8")))
        layout = store.DataLayout(mnt / "data")
        code = main(["--data", str(layout.root), "ingest", str(source), "--camera", "ref_cam"])
        err = capsys.readouterr().err
        _one_sentence(code, err, "no space is left on the device")
        assert not _temps(layout.root)

        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        locks = sorted(os.listdir(layout.incoming / ".locks")) if (layout.incoming / ".locks").is_dir() else []
        assert main(["--data", str(layout.root), "doctor"]) == 1
        assert main(["--data", str(layout.root), "doctor", "--finish"]) == 1
        out = capsys.readouterr()
        assert "read-only file system" in out.out and "Traceback" not in out.err
        assert (sorted(os.listdir(layout.incoming / ".locks")) if (layout.incoming / ".locks").is_dir() else []) == locks

        subprocess.run(["mount", "-o", "remount,rw,size=8m", str(mnt)], check=True)
        assert main(_printed_command(err)) == 0
        df = store.read_catalog(layout)
        assert len(df) == 40 and (df["outcome"] == store.ACCEPTED).sum() == 40
        assert not list(names_path(layout, "x").parent.glob("*.json"))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("later_first", [True, False])
def test_a_sensor_claim_stopped_half_way_finishes_both_batches(layout, registry, monkeypatch, later_first):
    """The sensor's claim hits a read-only root after two renames (and cannot shorten its list):
    the rest stays in landing and a later poll claims it; each batch finishes, in either order
    (the completeness rule must not hold the first batch for files the second one holds)."""
    from sr_pipeline.intake import uploads
    from sr_pipeline.intake.ingest import ingest_batch

    for i in range(6):
        path = layout.landing / "ref_cam" / f"up {i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(pixels(40, 32, seed=i)))
    real_rename, real_write = os.rename, uploads.atomic_write
    monkeypatch.setattr(os, "rename", _FailAfter(real_rename, 2, errno.EROFS, when=lambda a, b: "/landing/" in str(a)))
    monkeypatch.setattr(uploads, "atomic_write", _FailAfter(real_write, 1, errno.EROFS))  # the list, then not its pruning
    with pytest.raises(OSError):
        uploads.poll_landing(layout, registry, {}, now=1e9, stable_seconds=0)
    first = next(p.stem for p in names_path(layout, "x").parent.glob("*.json"))
    assert len(uploads.read_names(layout, first)) == 6  # lists all six, holds two
    monkeypatch.setattr(os, "rename", real_rename)
    monkeypatch.setattr(uploads, "atomic_write", real_write)

    later = uploads.poll_landing(layout, registry, {}, now=1e9 + 60, stable_seconds=0).batches
    second = next(b.batch_key for b in later if b.batch_key != first)
    for batch in (second, first) if later_first else (first, second):
        ingest_batch(layout, registry, batch)
    df = store.read_catalog(layout)
    assert sorted(df["original_name"]) == [f"up {i}.png" for i in range(6)]
    assert (df["outcome"] == store.ACCEPTED).sum() == 6
    assert not list(names_path(layout, "x").parent.glob("*.json"))


def test_plain_doctor_creates_nothing_so_a_read_only_root_only_reports(layout, src, capsys, monkeypatch):
    fault = _FailAfter(shutil.copy2, 4, errno.ENOSPC)
    monkeypatch.setattr(shutil, "copy2", fault)
    code, out = _ingest(layout, src, capsys)
    monkeypatch.setattr(shutil, "copy2", fault.real)
    before = sorted(str(p) for p in layout.root.rglob("*"))
    real_open, real_mkdir = os.open, os.mkdir

    def read_only_open(path, flags, *args):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only_open)
    monkeypatch.setattr(os, "mkdir", _FailAfter(real_mkdir, 0, errno.EROFS))
    assert main(["--data", str(layout.root), "doctor"]) == 1
    assert main(_printed_command(out.err)) == 1  # --finish: the batch's lock cannot be taken
    report = capsys.readouterr()
    assert "4 file(s) in incoming of 12 listed" in report.out
    assert "read-only while taking the lock" in report.out and "Traceback" not in report.err
    assert sorted(str(p) for p in layout.root.rglob("*")) == before
    monkeypatch.setattr(os, "open", real_open)
    monkeypatch.setattr(os, "mkdir", real_mkdir)
    assert main(_printed_command(out.err)) == 0
    _accounted(layout)


def test_a_catalog_older_than_checksums_is_checked_against_the_store(layout, src, capsys):
    """The probe's flipped ``image_id`` in a catalog written before checksums: doctor finds the
    accepted id the store does not hold, and the rebuild counts each stored image once."""
    import pyarrow.parquet as pq

    path = _ingested(layout, src, capsys)
    table = pq.read_table(path).replace_schema_metadata(None)
    ids = table["image_id"].to_pylist()
    first = next(i for i, o in enumerate(table["outcome"].to_pylist()) if o == store.ACCEPTED)
    ids[first] = ("1" if ids[first][0] != "1" else "2") + ids[first][1:]  # one flipped character
    pq.write_table(table.set_column(0, "image_id", store.pa.array(ids, store.pa.string())), path)  # legacy: no hash

    assert main(["--data", str(layout.root), "doctor"]) == 1
    out = capsys.readouterr().out
    assert "written before catalogs carried a checksum" in out
    assert f"damaged catalog {path}" in out and "not in the image store" in out
    assert main(["--data", str(layout.root), "doctor", "--rebuild-catalog"]) == 0, capsys.readouterr().out
    df = store.read_catalog(layout)
    assert (df["outcome"] == store.ACCEPTED).sum() == 10 == sum(1 for _ in layout.image_store.rglob("*.png"))
    assert df[df["outcome"] == store.ACCEPTED]["image_id"].is_unique


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_fault_while_writing_the_name_list_is_one_sentence(layout, src, capsys, monkeypatch, code):
    from sr_pipeline.intake import uploads

    fault = _FailAfter(uploads.atomic_write, 0, code)
    monkeypatch.setattr(uploads, "atomic_write", fault)
    exit_code, out = _ingest(layout, src, capsys)
    _one_sentence(exit_code, out.err, "while recording the names of batch")
    monkeypatch.setattr(uploads, "atomic_write", fault.real)
    assert main(_printed_command(out.err)) == 0, capsys.readouterr().out
    _accounted(layout)


def test_a_fault_before_anything_is_claimed_says_to_run_the_command_again(layout, src, capsys, monkeypatch):
    fault = _atomic_write_failing(monkeypatch, errno.ENOSPC, 0, lambda p: "/.sources/" in p)
    code, out = _ingest(layout, src, capsys)
    _one_sentence(code, out.err, "while recording the source of batch")
    assert "run this command again (nothing was claimed)" in out.err
    monkeypatch.setattr(store, "atomic_write", fault.real)
    assert main(["--data", str(layout.root), "doctor", "--finish"]) == 0  # removes the reserved, empty folder
    code, out = _ingest(layout, src, capsys)
    assert code == 0
    _accounted(layout)


def test_a_rebuilt_catalog_keeps_its_images_camera_so_training_still_sees_them(layout, src, capsys):
    """A value flipped in a catalog that still parses: the rebuild takes each stored image's camera and
    role from its (unverified) row where the registry allows them, so none silently leaves training,
    and a re-ingest of the same files counts them once."""
    import pyarrow.parquet as pq

    path = _ingested(layout, src, capsys)
    table = pq.read_table(path)  # its schema metadata keeps the checksum written with the original values
    names = table["source_name"].to_pylist()
    names[0] = names[0][:-1] + "x"  # one changed character: the file still parses, its checksum no longer matches
    pq.write_table(table.set_column(table.schema.get_field_index("source_name"), "source_name",
                                    store.pa.array(names, store.pa.string())), path)
    assert main(["--data", str(layout.root), "doctor"]) == 1 and "damaged catalog" in capsys.readouterr().out
    assert main(["--data", str(layout.root), "doctor", "--rebuild-catalog"]) == 0
    out = capsys.readouterr().out
    assert "each with the camera and role it had" in out and "{" not in out  # a sentence, no raw dict
    accepted = store.read_catalog(layout)
    accepted = accepted[accepted["outcome"] == store.ACCEPTED]
    assert len(accepted) == 10 and set(accepted["camera"]) == {"ref_cam"} and set(accepted["role"]) == {"hr_reference"}
    assert len(store.list_images(layout, role="hr_reference")) == 10
    code, _ = _ingest(layout, src, capsys)  # the same files again: all duplicates or quarantined, none counted twice
    assert code == 0
    assert len(store.list_images(layout, role="hr_reference")) == 10
