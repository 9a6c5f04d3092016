"""benchmarks/city100_pairs.py: x4 pairs from registered HR-sized LR captures, named by camera."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def city(load_benchmark):
    return load_benchmark("city100_pairs")


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def test_pairs_are_cropped_to_the_grid_box_averaged_and_named_by_camera(city, tmp_path):
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (42, 37, 3), dtype=np.uint8)
    registered = rng.integers(0, 256, (42, 37, 3), dtype=np.uint8)
    for cam in ("NikonD5500", "iPhoneX"):
        _write(tmp_path / "data" / "city100_test5" / cam / "HR" / "001.png", hr)
        _write(tmp_path / "data" / "city100_test5" / cam / "LR_aligned" / "001.png", registered)
    assert city.main([str(tmp_path / "data"), str(tmp_path / "out")]) == 0
    got_hr = np.asarray(Image.open(tmp_path / "out" / "HR" / "iPhoneX_001.png"))
    got_lr = np.asarray(Image.open(tmp_path / "out" / "LR" / "NikonD5500_001.png"))
    assert got_hr.shape == (40, 36, 3) and np.array_equal(got_hr, hr[:40, :36])
    assert got_lr.shape == (10, 9, 3)
    assert got_lr[2, 3, 1] == round(registered[8:12, 12:16, 1].astype(float).mean())
    assert not list((tmp_path / "out").rglob(".*.tmp"))


def test_missing_or_mismatched_inputs_are_refused(city, tmp_path, capsys):
    with pytest.raises(SystemExit):
        city.main([str(tmp_path), str(tmp_path / "out")])
    assert "no <camera>/HR" in capsys.readouterr().err
    with pytest.raises(ValueError, match="differ in size"):
        city.make_pair(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 12, 3), np.uint8))
    cam = tmp_path / "city100_test5" / "iPhoneX"
    _write(cam / "HR" / "002.png", np.zeros((8, 8, 3), np.uint8))
    (cam / "LR_aligned").mkdir()
    with pytest.raises(SystemExit):
        city.main([str(tmp_path), str(tmp_path / "out")])
    assert "has no registered LR" in capsys.readouterr().err


def test_bench_quality_takes_one_city100_camera_as_its_field_pool(load_benchmark, tmp_path):
    bench = load_benchmark("bench_quality")
    img = np.full((16, 16, 3), 100, np.uint8)
    for cam in ("NikonD5500", "iPhoneX"):
        for n in ("001", "016"):
            _write(tmp_path / "data" / "city100_test5" / cam / "HR" / f"{n}.png", img)
            _write(tmp_path / "data" / "city100_test5" / cam / "LR_aligned" / f"{n}.png", img)
    pool, judged = bench.field_pool(tmp_path / "data", "city100-iphone", tmp_path / "work")
    assert [p.name for p in pool] == ["iPhoneX_001.png", "iPhoneX_016.png"] and judged == pool
    assert (tmp_path / "work" / "city100_x4" / "HR" / "NikonD5500_016.png").is_file()
    with pytest.raises(ValueError, match="work folder"):
        bench.field_pool(tmp_path / "data", "city100-nikon")
