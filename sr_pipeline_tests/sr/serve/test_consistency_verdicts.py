"""Verdicts a reviewer can trust: evidence a person can see, figures that agree with their rounding, a
map with a legend, and a flagged output drawn as one panel beside its LR and output."""

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from sr_pipeline.sr.serve.consistency import PSNR_MARGIN_DB, BicubicCamera, Thresholds, map_png, measure, verdict
from sr_pipeline.sr.serve.consistency_map import FLAGGED_RGB, NEAR_RGB
from sr_pipeline.sr.images.tensors import downsample, upsample, to_tensor, to_uint8

LIMITS = Thresholds(pixel=6.0, peak=12.0, share=0.01, psnr=39.7, colour=3.0)


def test_a_marginal_psnr_alone_is_not_a_check():
    assert verdict(39.66, 0.0, 5.0, (0.1, 0.2, 0.1), LIMITS) == ("ok", [])
    far = verdict(39.7 - PSNR_MARGIN_DB - 0.05, 0.0, 5.0, (0.0,), LIMITS)
    assert far[0] == "check" and "consistency PSNR-Y" in far[1][0]
    seen = verdict(39.66, 0.002, 9.0, (0.0,), LIMITS)  # a few flagged pixels: something to look at on the map
    assert seen[0] == "check" and len(seen[1]) == 1


def test_messages_never_contradict_their_own_rounding():
    _, reasons = verdict(39.66, 0.002, 12.3, (3.04, 0.0, 0.0), LIMITS)
    assert "consistency PSNR-Y 39.66 dB is below 39.70 dB" in reasons
    assert "a region disagrees with the input by 12.3 levels (limit 12.0)" in reasons
    assert "colour/intensity shifted by 3.04 levels (limit 3.00)" in reasons
    for text in reasons:
        figures = re.findall(r"\d+(?:\.\d+)?", text)
        assert figures[-2] != figures[-1], text


def _pair():
    yy, xx = np.mgrid[0:128, 0:128]
    scene = np.stack([128 + 60 * np.sin(xx / 9 + c) + 40 * np.cos(yy / 11) for c in range(3)], -1)
    hr = np.clip(scene, 0, 255).astype(np.uint8)
    lr = to_uint8(downsample(to_tensor(hr), 4))
    return lr, to_uint8(upsample(to_tensor(lr), 4))


def _colours(png: bytes) -> tuple[Image.Image, set]:
    img = Image.open(io.BytesIO(png)).convert("RGB")
    return img, {tuple(int(v) for v in p) for p in np.asarray(img).reshape(-1, 3)}


def test_the_map_carries_a_legend_and_a_flagged_output_is_one_panel():
    lr, out = _pair()
    clean = measure(BicubicCamera(4), out, lr, LIMITS, keep_map=True)
    img, colours = _colours(map_png(clean, lr))
    assert img.height > 256 and NEAR_RGB in colours and FLAGGED_RGB in colours  # the legend's swatches
    defect = out.copy()
    defect[60:64, 20:100] = 0
    flagged = measure(BicubicCamera(4), defect, lr, LIMITS, keep_map=True)
    assert flagged.verdict == "check"
    single, _ = _colours(map_png(flagged, lr))
    panel, colours = _colours(map_png(flagged, lr, output=defect))
    assert panel.width > 2.5 * single.width and FLAGGED_RGB in colours
    # The middle third shows the output: the pasted dark line is there.
    middle = np.asarray(panel)[:, panel.width // 3:2 * panel.width // 3]
    assert (middle.sum(axis=2) < 30).any()
    assert map_png(clean, lr, output=out) == map_png(clean, lr)  # an ok output keeps the map alone


def test_each_camera_model_is_judged_by_thresholds_fitted_for_it(layout, tmp_path):
    from test_evaluation import save_downsampler, save_sr

    from sr_pipeline.evaluation.consistency_fit import ALL, CalibrationConsistency, fitted_on, thresholds_path
    from sr_pipeline.serving.consistency import load_check
    from sr_pipeline.sr.serve.consistency import LearnedCamera, load_thresholds

    model = save_sr(layout, "student", "s1")
    save_downsampler(layout, "s1")  # co-trained: G judges by default, bicubic-down on request
    fit = CalibrationConsistency(model, 4, {f"p{i}": "field_cam" for i in range(3)}, "key-1")
    rng = np.random.default_rng(0)
    for i in range(3):
        lr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        sr = np.repeat(np.repeat(lr, 4, 0), 4, 1)
        fit.see(f"p{i}", lr, sr, np.clip(sr + rng.normal(0, 2, sr.shape), 0, 255).astype(np.uint8))
    fit.save()
    path = thresholds_path(model)
    own, bicubic = load_thresholds(path), load_thresholds(path, "bicubic")
    assert {t.fit["camera_model"] for t in own.values()} == {"G s1"}
    assert {t.fit["camera_model"] for t in bicubic.values()} == {"bicubic"} and set(bicubic) == {ALL, "field_cam"}
    assert fitted_on(model, "key-1")

    by_g, by_bicubic = load_check(model, 4), load_check(model, 4, camera_model="bicubic")
    assert isinstance(by_g.camera, LearnedCamera) and by_g.thresholds_of("field_cam") == own["field_cam"]
    assert by_bicubic.thresholds_of("field_cam").fit["camera_model"] == "bicubic"

    # A file fitted for G alone (before this split) never lends G's limits to bicubic-down.
    path.write_text(json.dumps({"cameras": {ALL: own[ALL].to_dict()}}))
    fallback = load_check(model, 4, camera_model="bicubic")
    assert fallback.thresholds == {} and "no thresholds fitted for bicubic" in fallback.thresholds_source
    assert not fitted_on(model, "key-1")  # the report refits the missing set



@pytest.mark.parametrize("figures", [dict(peak=20.004), dict(share=0.0100004), dict(colour=[4.0004, 0.0, 0.0]),
                                     dict(psnr_y=27.9996, share=0.0)])
def test_a_figure_its_record_keeps_equal_to_the_limit_is_not_over_it(figures):
    """Flagged with "20.00 levels (limit 20.00)" would name nothing a person can find: the verdict compares what
    the record keeps (peak 2 decimals, share 6, PSNR-Y and colour 3) with the limit."""
    kw = dict(psnr_y=40.0, share=0.0, peak=1.0, colour=[0.0, 0.0, 0.0]) | figures
    assert verdict(t=Thresholds(), **kw) == ("ok", [])
    over = {k: (v + 0.01 if k != "colour" else [v[0] + 0.01, 0.0, 0.0]) for k, v in figures.items() if k != "psnr_y"}
    if "psnr_y" in figures:
        over = {"psnr_y": 27.99, "share": 0.005}  # a flagged pixel makes a PSNR below its limit count
    state, reasons = verdict(t=Thresholds(), **(kw | over))
    assert state == "check" and len(reasons) == 1
    figure, limit = re.search(r"(\d[\d.]*)%? (?:of input pixels disagree |levels |dB is below )?\(?(?:limit )?(\d[\d.]*)",
                              reasons[0].split("by ")[-1].split("PSNR-Y ")[-1]).groups()
    assert figure != limit, reasons


def test_huge_figures_and_limits_are_written_not_raised():
    """A thresholds file may hold any finite number; its wording never raises (Decimal's default 28 digits did)."""
    from sr_pipeline.sr.judge.wording import fixed, percent

    assert fixed(1e30, 0, 2) == "1" + "0" * 30 and percent(1e25).startswith("1" + "0" * 27)
    state, reasons = verdict(40.0, 0.5, 30.0, [5.0, 0.0, 0.0], Thresholds(psnr=1e30))
    assert state == "check" and any(r.endswith("below 1" + "0" * 30 + ".0 dB") for r in reasons), reasons
