"""benchmarks/realsr_pair_diagnostics.py: what an intensity change, a shift or a sharp LR does to its figures."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage


@pytest.fixture
def diag(load_benchmark):
    return load_benchmark("realsr_pair_diagnostics")


def _scene(size: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.uniform(0, 255, (size, size, 3)), (2.0, 2.0, 0))
    return np.clip((img - img.mean()) * 4 + 128, 0, 255).astype(np.uint8)


def _down(hr: np.ndarray, blur: float = 0.0) -> np.ndarray:
    src = ndimage.gaussian_filter(hr.astype(float), (blur, blur, 0)) if blur else hr.astype(float)
    img = Image.fromarray(np.clip(src, 0, 255).astype(np.uint8))
    return np.asarray(img.resize((hr.shape[1] // 4, hr.shape[0] // 4), Image.Resampling.BICUBIC))


def test_a_gain_change_is_recovered_and_a_blurrier_camera_has_a_lower_ratio(diag):
    hr = _scene()
    lr = _down(hr)
    plain = diag.pair_figures(hr, lr, 4)
    assert plain["sharpness"] == pytest.approx(1.0)
    darker = diag.pair_figures(hr, (lr * 0.8).astype(np.uint8), 4)
    assert darker["psnr_y"] < plain["psnr_y"] - 3 and darker["gain_offset"] > darker["psnr_y"] + 3
    assert diag.pair_figures(hr, _down(hr, blur=3.0), 4)["sharpness"] < 0.6 * plain["sharpness"]


def test_a_misregistered_pair_gains_from_the_best_shift(diag):
    hr = _scene(seed=1)
    moved = np.clip(ndimage.shift(hr.astype(float), (2.0, 0, 0), order=3, mode="nearest"), 0, 255).astype(np.uint8)
    f = diag.pair_figures(hr, _down(moved), 4)  # the LR is 0.5 LR px off its HR
    assert f["best_shift"] > f["psnr_y"] + 0.5


def test_the_command_reports_each_camera_and_a_runs_correlations(diag, tmp_path, capsys):
    root = tmp_path / "realsr_x4"
    (root / "HR").mkdir(parents=True)
    (root / "LR").mkdir()
    rows = []
    for cam in ("Canon", "Nikon"):
        for n in (2, 4, 6):
            hr = _scene(64, seed=n)
            name = f"{cam}_{n:03d}_LR4.png"
            Image.fromarray(hr).save(root / "HR" / name)
            Image.fromarray(_down(hr, blur=n / 2)).save(root / "LR" / name)
            rows += [{"method": m, "image": name, "psnr_y": p, "ssim_y": 0.8, "lpips": 0.3, "hf_ratio": 0.5, "ms": 1.0}
                     for m, p in (("bicubic", 27.0), ("student", 27.0 + n / 10))]
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(run / "eval" / "metrics.parquet")
    assert diag.main([str(tmp_path), "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "| Canon | 3 |" in out and "| Nikon | 3 |" in out
    # the blurrier the LR, the larger the student's gain here: a perfect negative rank correlation
    assert "| student | -1.00 | -1.00 |" in out
    with pytest.raises(SystemExit):
        diag.main([str(tmp_path), "--run", str(tmp_path / "nowhere")])
