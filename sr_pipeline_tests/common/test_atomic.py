"""Atomic writes: the target appears whole or not at all, an exclusive write never replaces a file, and
the published file has the umask's permissions."""

import os
import stat

import pytest

from sr_pipeline.common.atomic import atomic_write, current_umask, umask_mode


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


def test_bytes_are_written_as_they_are(tmp_path):
    atomic_write(tmp_path / "a.json", b'{"a": 1}')
    assert (tmp_path / "a.json").read_bytes() == b'{"a": 1}'


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
@pytest.mark.parametrize("exclusive", [False, True])
def test_published_files_follow_the_umask_not_mkstemps_0600(tmp_path, umask, expected, exclusive):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        assert umask_mode() == expected and umask_mode(folder=True) == expected | 0o111 & ~umask
        atomic_write(tmp_path / "a.bin", b"x", exclusive=exclusive)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == expected


def test_temp_dir_follows_the_umask(tmp_path):
    """Model folders and report folders are built in a temp_dir and renamed: readable by the group
    and others under umask 022, not mkdtemp's 0700."""
    import os
    import stat

    from sr_pipeline.common.atomic import temp_dir

    old = os.umask(0o022)
    try:
        folder = temp_dir(tmp_path, ".model.")
    finally:
        os.umask(old)
    assert folder.parent == tmp_path and folder.name.startswith(".model.")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


def test_temp_names_loose_under_the_data_root_exact_in_shared_folders(tmp_path):
    import tempfile

    from sr_pipeline.common.atomic import is_temp_name, temp_prefix

    fd, made = tempfile.mkstemp(dir=tmp_path, prefix=temp_prefix("out.png"), suffix=".tmp")  # as atomic_write does
    os.close(fd)
    assert is_temp_name(os.path.basename(made), exact=True)
    assert is_temp_name(".b1.parquet.claim.tmp") and not is_temp_name(".b1.parquet.claim.tmp", exact=True)
    assert not is_temp_name(".draft.tmp", exact=True) and not is_temp_name("out.png")
