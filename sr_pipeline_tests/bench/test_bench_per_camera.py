"""benchmarks/per_camera.py: per-camera means of an evaluation's per-pair metrics."""
from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture
def per_camera(load_benchmark):
    return load_benchmark("per_camera")


def _metrics() -> pd.DataFrame:
    rows = []
    for method, base in (("bicubic", 27.0), ("student", 28.0)):
        for cam, shift in (("Canon", 1.0), ("Nikon", 0.0)):
            for i, d in enumerate((-0.5, 0.5)):
                rows.append({"method": method, "image": f"{cam}_{i:03d}_LR4.png", "psnr_y": base + shift + d,
                             "ssim_y": 0.8, "lpips": 0.3 + shift / 10, "hf_ratio": 0.5, "ms": 1.0})
    return pd.DataFrame(rows)


def test_each_camera_gets_its_own_means(per_camera):
    table = per_camera.per_camera_table(_metrics())
    lines = table.splitlines()
    assert lines[0] == "| method | Canon (2 pairs): PSNR-Y / LPIPS / HF | Nikon (2 pairs): PSNR-Y / LPIPS / HF |"
    assert lines[2] == "| bicubic | 28.000 / 0.4000 / 0.50x | 27.000 / 0.3000 / 0.50x |"
    assert lines[3] == "| student | 29.000 / 0.4000 / 0.50x | 28.000 / 0.3000 / 0.50x |"


def test_the_command_reads_eval_folders_and_refuses_an_empty_one(per_camera, tmp_path, capsys):
    (tmp_path / "eval").mkdir()
    _metrics().to_parquet(tmp_path / "eval" / "metrics.parquet")
    assert per_camera.main([str(tmp_path / "eval")]) == 0
    assert "| student | 29.000" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        per_camera.main([str(tmp_path)])
