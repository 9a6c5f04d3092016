"""Consistency in the plant: thresholds fitted on the calibration pairs and stored with
the model, verdicts and heat maps in the archive, and the archive's flagged count in Dagster.

A hallucination is planted for real: the upscaler's output rows of one field image get a dark line
that its LR input does not support, so the archive's own consistency pass must catch and locate it.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
import dagster as dg
from dagster import AssetCheckSeverity, materialize
from PIL import Image, PngImagePlugin

from sr_pipeline.defs.archive.assets import build_camera_archive
from sr_pipeline.defs.intake.assets import raw_plant_images
from sr_pipeline.evaluation import calibration as ev
from sr_pipeline.evaluation.consistency_fit import (
    ALL, PAIRS_KEY, CalibrationConsistency, consistency_summary, fitted_on, thresholds_path,
)
from sr_pipeline.common.cameras import CameraRegistry
from sr_pipeline.serving.archive import (
    CONSISTENCY_COLUMNS, archive_batch, field_images, manifest_path, map_path, read_manifest,
)
from sr_pipeline.serving.consistency import load_check
from sr_pipeline.sr.serve.consistency import LearnedCamera, load_thresholds, measure
from sr_pipeline.sr.serve.consistency_map import panel_map_box
from sr_pipeline.sr.images.png_stream import TEXT_PREFIX, png_text
from sr_pipeline.sr.serve.upscaler import Upscaler
from sr_pipeline.sr.data.pairs import load_rgb
from sr_pipeline.sr.serve.tiles import TileSettings
from test_archive import field_batch, make_student  # noqa: F401  (fixture)
from test_evaluation import STRICT, FakeLPIPS, add_pairs, one_thread, plant, save_downsampler, save_sr  # noqa: F401

TILES = TileSettings(tile=16, overlap=4)  # small images: several tiles each

LINE = (40, 44, 40, 84)  # HR rows y0:y1, columns x0:x1 of the planted dark line (LR rows 10, columns 10-20)


def plant_line(monkeypatch, lr_width: int, box: tuple[int, int, int, int] = LINE) -> None:
    """Every output of an LR image ``lr_width`` pixels wide gets a black line its input does not hold."""
    original = Upscaler.iter_rows
    y0, y1, x0, x1 = box

    def iter_rows(self, lr, *args, **kwargs):
        top = 0
        for rows in original(self, lr, *args, **kwargs):
            lo, hi = max(y0, top), min(y1, top + len(rows))
            if np.asarray(lr).shape[1] == lr_width and lo < hi:
                rows = rows.copy()
                rows[lo - top:hi - top, x0:x1] = -1.0
            top += len(rows)
            yield rows

    monkeypatch.setattr(Upscaler, "iter_rows", iter_rows)


# --- thresholds fitted on the calibration pairs ------------------------------------------------------

def test_the_gate_fits_thresholds_into_the_model_folder_and_load_check_uses_them(plant):
    good = save_sr(plant, "student", "s1")
    save_downsampler(plant, "s1")  # co-trained with s1: the camera model that judges its outputs
    assert not thresholds_path(good).exists()
    ev.evaluate_gate(plant, good, None, STRICT, lpips=FakeLPIPS(), device="cpu")

    pairs = ev.calibration_pairs(plant)
    fitted = load_thresholds(good / "consistency.json")
    assert set(fitted) == {ALL, "field_cam"}  # the pairs' camera, and all pairs
    for cam, t in fitted.items():
        assert t.camera == cam and t.source == "calibration (3 pairs)" and t.fit["pairs"] == 3
        assert t.fit[PAIRS_KEY] == ev.pairs_fingerprint(pairs) and t.fit["camera_model"] == "G s1"
    assert fitted_on(good, ev.pairs_fingerprint(pairs)) and not fitted_on(good, "other pairs")

    check = load_check(good, 4)
    assert isinstance(check.camera, LearnedCamera) and check.camera.name == "G s1"
    assert check.thresholds_source == str(good / "consistency.json")
    assert check.thresholds_of("field_cam") == fitted["field_cam"]
    assert check.thresholds_of("another_cam") == fitted[ALL]
    # Fitted beyond the worst calibration output: the student's own calibration outputs pass.
    upscaler = Upscaler.from_dir(good)
    for p in pairs:
        lr = load_rgb(p.lr_path)
        assert measure(check.camera, upscaler(lr), lr, check.thresholds_of("field_cam")).verdict == "ok"


def test_a_camera_with_few_pairs_is_judged_by_the_fit_on_all_pairs(layout, tmp_path):
    registry = CameraRegistry.model_validate({"cameras": {
        "field_cam": {"role": "field_lr", "scale": 4}, "line_2": {"role": "field_lr", "scale": 4}}})
    add_pairs(layout, registry, tmp_path, [1, 2, 3], "calib-1")
    add_pairs(layout, registry, tmp_path, [4], "calib-2", camera="line_2")
    cameras = ev.pair_cameras(layout)
    assert sorted(cameras.items()) == [("field_cam/p1", "field_cam"), ("field_cam/p2", "field_cam"),
                                       ("field_cam/p3", "field_cam"), ("line_2/p4", "line_2")]

    model = save_sr(layout, "student", "s1")  # no downsampler: judged by bicubic-down
    fit = CalibrationConsistency(model, 4, cameras, "key-1")
    rng = np.random.default_rng(0)
    for i, name in enumerate(cameras):
        lr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        sr = np.repeat(np.repeat(lr, 4, 0), 4, 1)
        hr = np.clip(sr + rng.normal(0, 2 + i, sr.shape), 0, 255).astype(np.uint8)
        fit.see(name, lr, sr, hr)
    fit.save()
    fitted = load_thresholds(thresholds_path(model))
    assert set(fitted) == {ALL, "field_cam"} and fitted[ALL].fit["pairs"] == 4 and fitted["field_cam"].fit["pairs"] == 3
    assert {t.fit["camera_model"] for t in fitted.values()} == {"bicubic"}
    assert load_check(model, 4).thresholds_of("line_2") == fitted[ALL]


def test_a_report_reusing_the_gate_scores_refits_only_missing_thresholds(plant):
    teacher = save_sr(plant, "teacher", "t1")
    good = save_sr(plant, "student", "s1")
    ev.evaluate_gate(plant, good, None, STRICT, lpips=FakeLPIPS(), device="cpu")
    first = (good / "consistency.json").read_bytes()
    thresholds_path(good).unlink()
    out = ev.run_evaluation(plant, teacher, good, None, None, date(2026, 3, 2), STRICT, lpips=FakeLPIPS(),
                            device="cpu")
    assert out.reused == ["bicubic", "candidate"]  # the scores were reused, the thresholds refitted
    assert json.loads((good / "consistency.json").read_bytes()) == json.loads(first)  # same outputs, same fit
    cons = out.summary["consistency"]
    assert cons["available"] and cons["camera_model"] == "bicubic" and set(cons["cameras"]) == {ALL, "field_cam"}
    worst = cons["cameras"]["field_cam"]["worst_calibration"]
    assert set(worst) == {"peak", "share", "psnr_y", "colour"} and worst["psnr_y"] > 0
    assert cons["cameras"]["field_cam"]["thresholds"]["peak"] >= worst["peak"]
    assert json.loads((out.report_dir / "summary.json").read_text())["consistency"] == cons

    assert cons["model_version"] == "s1" and cons["reason"] is None

    thresholds_path(good).write_text("{not json")
    broken = consistency_summary(good)
    assert broken["available"] is False and "cannot read" in broken["reason"] and broken["cameras"] == {}
    assert set(broken) == set(cons)  # the report reads the same keys either way


# --- the archive -------------------------------------------------------------------------------------

def test_the_archive_flags_a_planted_line_lists_it_and_maps_where_it_is(layout, field_batch, monkeypatch):
    model = make_student(layout, "v1")
    images = field_images(layout, field_batch).set_index("source_name")
    plant_line(monkeypatch, lr_width=int(images.loc["b.jpg", "width"]))
    result = archive_batch(layout, field_batch, model, tiles=TILES)
    assert (result.upscaled, result.flagged, result.flagged_share) == (2, 1, 0.5)

    manifest = read_manifest(layout, field_batch).set_index("source_name")
    assert set(CONSISTENCY_COLUMNS) <= set(manifest.columns)
    ok, bad = manifest.loc["a.png"], manifest.loc["b.jpg"]
    assert ok["consistency_verdict"] == "ok" and ok["consistency_reasons"] == "" and pd.isna(ok["consistency_map"])
    assert bad["consistency_verdict"] == "check" and "a region disagrees with the input" in bad["consistency_reasons"]
    assert bad["consistency_peak"] > 20 > ok["consistency_peak"]
    assert ok["consistency_camera"] == bad["consistency_camera"] == "bicubic"  # no co-trained G for v1
    assert len(bad["consistency_colour_shift"]) == 3 and bad["consistency_psnr_y"] < ok["consistency_psnr_y"]
    # The check image is archived like any other, with its verdict in its own metadata too.
    text = png_text(layout.root / bad["output_path"])
    assert text[f"{TEXT_PREFIX}consistency"] == "check"
    assert float(text[f"{TEXT_PREFIX}consistency_peak"]) == pytest.approx(bad["consistency_peak"], abs=0.05)

    heat = layout.root / bad["consistency_map"]
    assert heat == map_path(layout, field_batch, "b", 4)
    assert heat.parent == layout.archive / field_batch / "consistency_maps"
    panel = np.asarray(Image.open(heat).convert("RGB")).astype(int)  # a flagged output: LR | output | map
    top, left, h, w = panel_map_box((int(images.loc["b.jpg", "height"]), int(images.loc["b.jpg", "width"])))
    rgb = panel[top:top + h, left:left + w]
    k = w // int(images.loc["b.jpg", "width"])  # map pixels per LR pixel
    ys, xs = np.nonzero(rgb[..., 0] - rgb[..., 2] >= 127)  # red: the map value is >= 1 (flagged)
    assert len(ys) and (ys // k).min() >= 8 and (ys // k).max() <= 12  # the line is LR row 10 (+ blur)
    assert (xs // k).min() >= 8 and (xs // k).max() <= 22  # LR columns 10-20 (+ blur)


def test_resume_keeps_the_verdict_and_remakes_a_lost_map(layout, field_batch, monkeypatch):
    model = make_student(layout, "v1")
    plant_line(monkeypatch, lr_width=int(field_images(layout, field_batch).set_index("source_name").loc["b.jpg", "width"]))
    archive_batch(layout, field_batch, model, tiles=TILES)
    before = read_manifest(layout, field_batch).set_index("source_image_id")[list(CONSISTENCY_COLUMNS)]
    [bad] = before.index[before["consistency_verdict"] == "check"]
    heat = layout.root / before.loc[bad, "consistency_map"]

    def same_verdicts(result):
        """The manifest's verdicts as first written (figures read back from PNG text are rounded as
        the text writes them)."""
        after = read_manifest(layout, field_batch).set_index("source_image_id")[list(CONSISTENCY_COLUMNS)]
        assert sorted(after.index) == sorted(before.index)
        for image in before.index:
            was, now = before.loc[image], after.loc[image]
            for col in ("consistency_verdict", "consistency_camera", "consistency_reasons", "consistency_map"):
                assert now[col] == was[col] or (pd.isna(now[col]) and pd.isna(was[col])), col
            for col, tol in (("consistency_psnr_y", 0.01), ("consistency_flagged_share", 1e-6),
                             ("consistency_peak", 0.05)):
                assert now[col] == pytest.approx(was[col], abs=tol), col
            assert list(now["consistency_colour_shift"]) == pytest.approx(list(was["consistency_colour_shift"]), abs=0.01)
        assert (result.upscaled, result.skipped, result.flagged) == (0, 2, 1)

    manifest_path(layout, field_batch).unlink()  # a run that died before its manifest: verdicts from the PNGs
    stamp = heat.stat().st_mtime_ns
    same_verdicts(archive_batch(layout, field_batch, model, tiles=TILES))
    assert heat.stat().st_mtime_ns == stamp  # read back, not measured again

    heat.unlink()  # a lost map is measured again from the archived file
    same_verdicts(archive_batch(layout, field_batch, model, tiles=TILES))
    assert heat.is_file()

    # An output archived before verdicts existed (no consistency text) is measured from its file once.
    out = layout.root / read_manifest(layout, field_batch).set_index("source_image_id").loc[bad, "output_path"]
    text = {k: v for k, v in png_text(out).items() if "consistency" not in k}
    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_itxt(k, v)
    Image.open(out).save(out, pnginfo=info)
    manifest_path(layout, field_batch).unlink()
    same_verdicts(archive_batch(layout, field_batch, model, tiles=TILES))


def test_a_bad_thresholds_file_fails_the_archive_run_clearly(layout, field_batch):
    model = make_student(layout, "v1")
    (model / "consistency.json").write_text(json.dumps({"cameras": {ALL: {"pixel": -1}}}))
    with pytest.raises(ValueError, match="cannot judge the outputs' consistency: .*consistency.json.*pixel"):
        archive_batch(layout, field_batch, model, tiles=TILES)
    assert not manifest_path(layout, field_batch).exists()


# --- Dagster -----------------------------------------------------------------------------------------

def test_the_archive_partition_shows_the_flagged_images_and_the_check_warns_above_the_setting(
        layout, registry, storage, instance, field_batch, monkeypatch):
    archive = build_camera_archive(registry, "field_cam")  # as the code location builds field_cam's
    instance.add_dynamic_partitions("upload_batches", [field_batch])
    instance.add_dynamic_partitions("upload_batches__field_cam", [field_batch])
    make_student(layout, "v1")
    assert materialize([raw_plant_images], partition_key=field_batch, resources={"storage": storage},
                       instance=instance).success
    plant_line(monkeypatch, lr_width=int(field_images(layout, field_batch).set_index("source_name").loc["b.jpg", "width"]))

    def run(max_share=None):
        config = None if max_share is None else {"ops": {"upscaled_archive__field_cam_archive_flagged_share": {
            "config": {"max_flagged_share": max_share}}}}
        result = materialize([archive.asset, archive.check], partition_key=field_batch,
                             resources={"storage": storage}, instance=instance, run_config=config)
        assert result.success  # the check warns, it never fails the run
        [evaluation] = result.get_asset_check_evaluations()
        return result, evaluation

    result, warned = run()  # default setting: 5 %
    [mat] = result.asset_materializations_for_node("upscaled_archive__field_cam")
    md = mat.metadata
    assert md["consistency_flagged_count"].value == 1 and md["consistency_flagged_share"].value == 0.5
    assert "| b.jpg | field_cam | a region disagrees" in md["consistency_flagged"].value
    assert "consistency_maps/" in md["consistency_flagged"].value and "a.png" not in md["consistency_flagged"].value
    assert not warned.passed and warned.severity == AssetCheckSeverity.WARN
    assert warned.metadata["flagged"].value == 1 and warned.metadata["max_flagged_share"].value == 0.05
    assert warned.metadata["batch"].value == field_batch and "b.jpg" in warned.metadata["flagged_images"].value

    _, relaxed = run(max_share=0.5)  # half the batch may be flagged: at the setting, not above it
    assert relaxed.passed and relaxed.metadata["flagged_share"].value == 0.5

    monkeypatch.setenv("SR_PIPELINE_ARCHIVE_MAX_FLAGGED_SHARE", "0.6")
    _, from_env = run()
    assert from_env.passed and from_env.metadata["max_flagged_share"].value == 0.6
    [spec] = archive.check.check_specs
    assert not spec.blocking and spec.asset_key == dg.AssetKey(["upscaled_archive", "field_cam"])
    assert spec.name == "archive_flagged_share"
