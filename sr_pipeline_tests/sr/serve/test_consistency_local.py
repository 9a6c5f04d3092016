"""The local limit of the consistency verdict: a residual the input's structure does not explain (an
invented defect on flat ground) is flagged even when it stays below the per-image peak limit; its
fit on calibration outputs, its settings and old threshold files without it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sr_pipeline.sr.serve.consistency import (
    BicubicCamera, CalibrationSample, Thresholds, fit_local, fit_thresholds, load_thresholds, local_structure, measure,
    Y_WEIGHTS, ring_maxima,
)
from sr_pipeline.sr.images.tensors import downsample, upsample


def _unit(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0


def _uint8(x: torch.Tensor) -> np.ndarray:
    return ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def _blocks(seed: int, side: int = 192) -> np.ndarray:
    """An HR scene of sharp-edged bright blocks on flat grey ground: bicubic-up of its LR leaves a
    residual on the edges only (what a model's own disagreement looks like)."""
    rng = np.random.default_rng(seed)
    img = np.full((side, side, 3), 90.0)
    for _ in range(6):
        top, left = rng.integers(0, side // 2, 2)
        h, w = rng.integers(12, side // 3, 2)
        img[top:top + h, left + side // 4:left + side // 4 + w] = rng.uniform(150, 230, 3)
    return img.astype(np.uint8)


def _output(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR, the 'model' output: an over-sharpened bicubic-up, whose residual sits on the LR's edges)."""
    lr = downsample(_unit(_blocks(seed)), 4)
    up = upsample(lr, 4)
    blur = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(up, (4, 4, 4, 4), mode="replicate"), 9, 1)
    return _uint8(lr), _uint8(up + 1.5 * (up - blur))


def _samples(seeds, true=None) -> list[CalibrationSample]:
    return [CalibrationSample(measure(BicubicCamera(4), *_output(s)[::-1], Thresholds(), keep_map=True), true)
            for s in seeds]


def test_local_structure_is_the_local_maximum_of_the_input_gradient():
    y = torch.full((3, 9, 9), -0.2)
    y[:, :, 5:] = 0.4  # a vertical step of 0.6 * 127.5 levels between columns 4 and 5
    s = local_structure(y)
    step = 0.6 * 127.5 * float(Y_WEIGHTS.sum()) / 2  # in Y levels; central differences spread it over two columns
    assert s[4, 3:7].tolist() == pytest.approx([step] * 4, rel=1e-4)
    assert s[4, 0:2].tolist() == [0.0, 0.0] and s[4, 8] == 0.0


def test_ring_maxima_separates_the_outermost_ring():
    z = np.zeros((6, 7))
    z[0, 3], z[2, 2] = 5.0, 2.0
    assert ring_maxima(z) == (2.0, 5.0)
    assert ring_maxima(np.ones((2, 5))) == (0.0, 1.0)


def test_fit_local_relates_the_residual_to_the_structure():
    rng = np.random.default_rng(0)
    struct = rng.uniform(0, 100, (200, 200))
    res = rng.uniform(0, 1, struct.shape) * (2.0 + 0.1 * struct)  # the 0.999 quantile: ~2 + 0.1 s
    floor, slope = fit_local([res], [struct])
    assert floor == pytest.approx(2.0, abs=0.3) and slope == pytest.approx(0.1, abs=0.01)
    assert fit_local([np.full((40, 40), 3.0)], [np.zeros((40, 40))]) == (3.0, 0.0)  # flat: one flat limit


def test_a_small_defect_on_flat_ground_is_flagged_by_the_local_limit_only():
    t = fit_thresholds(_samples(range(8)), "bicubic")
    assert t.local and t.local_slope > 0 and t.border_peak >= t.local_peak
    lr, out = _output(100)
    clean = measure(BicubicCamera(4), out, lr, t)
    assert clean.verdict == "ok", clean.reasons
    spot = out.copy()
    spot[8:11, 100:103] = np.clip(spot[8:11, 100:103].astype(int) + 60, 0, 255)  # 3x3 HR px on the grey ground
    assert local_structure(_unit(lr)[0])[2, 25] < 1.0, "the spot must sit on flat ground"
    found = measure(BicubicCamera(4), spot, lr, t)
    assert found.peak < t.peak, "the per-image peak limit alone would miss it"
    assert found.verdict == "check" and any("stands out" in r for r in found.reasons), found.reasons
    off = measure(BicubicCamera(4), spot, lr, Thresholds(**{**t.to_dict(), "local_peak": 0.0, "border_peak": 0.0}))
    assert off.verdict == "ok" and off.local_peak == 0.0


def test_the_fit_takes_outputs_whose_true_error_is_unknown():
    t = fit_thresholds(_samples(range(4)), "bicubic")
    assert t.fit["spearman_consistency_vs_true_psnr"] is None and t.fit["pairs_with_true_error"] == 0
    json.dumps(t.to_dict(), allow_nan=False)  # no NaN in what consistency.json stores
    nan = fit_thresholds(_samples(range(4), math.nan), "bicubic")
    assert nan.fit["spearman_consistency_vs_true_psnr"] is None
    known = fit_thresholds([CalibrationSample(s.consistency, 20.0 + k) for k, s in enumerate(_samples(range(4)))],
                           "bicubic")
    assert known.fit["pairs_with_true_error"] == 4 and -1 <= known.fit["spearman_consistency_vs_true_psnr"] <= 1


def test_an_old_thresholds_file_loads_with_the_local_limit_off(tmp_path):
    path = tmp_path / "consistency.json"
    path.write_text(json.dumps({"cameras": {"all": {"pixel": 5.0, "peak": 20.0, "share": 0.01, "psnr": 30.0,
                                                    "colour": 2.0, "camera": "bicubic", "source": "old", "fit": {}}}}))
    t = load_thresholds(path)["all"]
    assert not t.local and t.local_floor == 0.0
    lr, out = _output(3)
    assert measure(BicubicCamera(4), out, lr, t).local_peak == 0.0


@pytest.mark.parametrize("setting, says", [
    ({"local_peak": -1.0}, "local_peak"), ({"local_slope": float("nan")}, "local_slope"),
    ({"local_peak": 2.0}, "local_floor"), ({"border_peak": "3"}, "border_peak"),
])
def test_a_bad_local_setting_is_a_clear_error(setting, says):
    with pytest.raises(ValueError, match=says):
        Thresholds.from_dict(setting)
