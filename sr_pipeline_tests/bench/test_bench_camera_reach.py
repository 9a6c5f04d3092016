"""benchmarks/bench_camera_reach.py on a tiny made-up datasets folder: the floor, bicubic and each grid point
reach the report, and a G it cannot vary is refused."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from sr_pipeline.sr.models.downsampler import LearnedDownsampler


@pytest.fixture
def datasets(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "datasets"
    for name, n in (("bsd100_hr", 3), ("urban100_hr", 3)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            ramp = np.linspace(0, 255, 64)[None, :, None] * np.ones((64, 1, 3))
            img = np.clip(ramp + rng.normal(0, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"img_{i:03d}.png")
    neu = root / "neu_det"
    neu.mkdir()
    for i in range(8):
        grey = np.clip(128 + rng.normal(0, 6 + i, (40, 40)), 0, 255).astype(np.uint8)
        Image.fromarray(np.repeat(grey[..., None], 3, 2)).save(neu / f"steel_{i}.jpg", quality=90)
    (neu / "HOLDOUT.txt").write_text("steel_0.jpg\nsteel_5.jpg\n")
    return root


def test_the_reach_table_has_the_floor_bicubic_and_every_grid_point(datasets, tmp_path, load_benchmark):
    bench = load_benchmark("bench_camera_reach")
    g = LearnedDownsampler(scale=4, noise_model="camera", blur_model="kernel", grey=True)
    g.save_pretrained(tmp_path / "g")
    report = tmp_path / "report.md"
    assert bench.main([str(datasets), "--field", "neu", "--downsampler", str(tmp_path / "g"), "--blur-sigmas", "1", "2",
                       "--noise-factors", "1", "3", "--contrast", "1", "0.5", "--report", str(report)]) == 0
    text = report.read_text()
    assert "the camera's own pool, 2 images (the floor)" in text and "bicubic-down of the HR sample" in text
    assert "G as trained (blur" in text
    rows = [line for line in text.splitlines() if line.startswith("| G: ")]
    assert len(rows) == 2 * 2 * 2 and sum("contrast x0.5" in r for r in rows) == 4
    assert "best point of G's family (contrast x1): G: blur" in text


def test_a_residual_g_bad_settings_and_a_missing_folder_are_refused(datasets, tmp_path, load_benchmark, capsys):
    bench = load_benchmark("bench_camera_reach")
    LearnedDownsampler(scale=4, noise_model="camera").save_pretrained(tmp_path / "g")
    LearnedDownsampler(scale=4, noise_model="camera", blur_model="kernel").save_pretrained(tmp_path / "k")
    report = ["--report", str(tmp_path / "r.md")]
    for argv, message in (([str(datasets), "--downsampler", str(tmp_path / "g")], "needs a kernel G"),
                          ([str(datasets), "--downsampler", str(tmp_path / "k"), "--blur-sigmas", "0"], "positive"),
                          ([str(tmp_path), "--downsampler", str(tmp_path / "k")], "lacks bsd100_hr")):
        with pytest.raises(SystemExit):
            bench.main(argv + report)
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_contrast_scales_about_the_mean(load_benchmark):
    img = np.array([[[100] * 3, [200] * 3]], dtype=np.uint8)
    out = load_benchmark("bench_camera_reach").with_contrast(img, 0.5)
    assert out[0, 0, 0] == 125 and out[0, 1, 0] == 175
