"""benchmarks/blur_estimate_check.py's paired truth and naive match, and the perception-distortion figure's
published and transductive points (synthetic inputs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sr_pipeline.sr.judge.blur_estimate import blur_down


def scene(seed: int, size: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    canvas = Image.new("L", (size, size), 128)
    draw = ImageDraw.Draw(canvas)
    for _ in range(80):
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(4, 30)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.integers(20, 236)))
    return np.repeat(np.asarray(canvas)[..., None], 3, axis=-1)


def as_lr(hr: np.ndarray, sigma: float) -> np.ndarray:
    return np.repeat(np.clip(np.rint(blur_down(hr, sigma, 4)), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def test_paired_truth_finds_the_blur_of_a_pair(load_benchmark):
    check = load_benchmark("blur_estimate_check")
    hr = scene(0)
    assert check.paired_sigma(hr, as_lr(hr, 1.5)) == pytest.approx(1.5, abs=0.25)
    assert check.paired_sigma(hr, as_lr(hr, 0.5)) == pytest.approx(0.5, abs=0.25)


def test_naive_match_reads_the_references_blur_back(load_benchmark):
    check = load_benchmark("blur_estimate_check")
    refs = [scene(s) for s in range(3)]
    curve = check.naive_curve(refs)
    assert np.all(np.diff(curve) <= 1e-9)  # blur only lowers the high band
    assert check.naive_sigma([as_lr(r, 2.0) for r in refs], curve) == pytest.approx(2.0, abs=0.2)


def test_figure_with_published_and_transductive_points(load_benchmark, tmp_path, capsys):
    plot = load_benchmark("plot_perception_distortion")
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"methods": {"bicubic": {"psnr_y": 27.11, "lpips": 0.456},
                                               "student": {"psnr_y": 27.5, "lpips": 0.33}}}))
    out = tmp_path / "pd.png"
    assert plot.main(["--published", "--point", f"bicubic={summary}::bicubic", "--point", f"ours={summary}::student",
                      "--transductive", "ours", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "OSEDiff (published): PSNR-Y 25.15, LPIPS 0.292" in printed and "ours: PSNR-Y 27.500" in printed
    assert Image.open(out).size[0] > 300
    with pytest.raises(SystemExit):
        plot.main(["--point", f"bicubic={summary}::bicubic", "--transductive", "nobody", "--out", str(out)])
    assert "--transductive names no --point" in capsys.readouterr().err
