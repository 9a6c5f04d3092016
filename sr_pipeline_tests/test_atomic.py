"""Atomic writes: the target appears whole or not at all, and an exclusive write never replaces a file."""

import pytest

from sr_pipeline.storage.atomic import atomic_write


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_write_replaces_the_target_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.bin"
    atomic_write(target, lambda fh: fh.write(b"one"))
    atomic_write(target, lambda fh: fh.write(b"two"))
    assert target.read_bytes() == b"two" and not _leftovers(target.parent)


def test_a_failing_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def fail(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old" and not _leftovers(tmp_path)


def test_exclusive_write_never_replaces_even_a_file_that_appears_meanwhile(tmp_path):
    target = tmp_path / "a.bin"

    def racing(fh):
        target.write_bytes(b"someone else")  # appears while we write
        fh.write(b"ours")

    with pytest.raises(FileExistsError):
        atomic_write(target, racing, exclusive=True)
    assert target.read_bytes() == b"someone else" and not _leftovers(tmp_path)
    atomic_write(tmp_path / "b.bin", lambda fh: fh.write(b"new"), exclusive=True)
    assert (tmp_path / "b.bin").read_bytes() == b"new"
