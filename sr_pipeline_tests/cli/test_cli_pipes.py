"""The command line as a pipeline stage: a closed pipe ends it quietly; a crashed ingest names its batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import encode, pixels

REPO = Path(__file__).resolve().parents[2]


def _run_into_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess:
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` that has already exited
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.run([sys.executable, "-m", "sr_pipeline.cli", *argv], stdout=write_end, stderr=subprocess.PIPE,
                              env=env, timeout=120)  # fmt: skip
    finally:
        os.close(write_end)


def test_ingest_into_a_closed_pipe_exits_quietly(tmp_path, cameras_file):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.png").write_bytes(encode(pixels(seed=i)))
    result = _run_into_closed_pipe(["--data", str(tmp_path / "d"), "ingest", str(src), "--camera", "ref_cam", "--cameras", str(cameras_file)])
    err = result.stderr.decode()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert result.returncode == 141  # 128 + SIGPIPE, as a POSIX tool killed by SIGPIPE
    assert "batch ref_cam-" in err  # the batch key is named before any work
