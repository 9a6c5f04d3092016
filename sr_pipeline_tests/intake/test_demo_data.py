"""The bundled demo uploads: roles, disjointness, determinism, the field camera, and ingestion."""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest
from PIL import Image

from sr_pipeline.intake import demo_data
from sr_pipeline.storage import store
from sr_pipeline.intake.demo_data import (
    FIELD_CAMERA_MODEL,
    GREY_CAMERA_MODEL,
    field_camera_degrade,
    field_camera_jpeg,
    make_demo_data,
)
from sr_pipeline.intake.ingest import ingest_batch
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.intake.uploads import poll_landing


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    layout = DataLayout(tmp_path_factory.mktemp("demo") / "data")
    return layout, make_demo_data(layout, seed=0)


def _overlap(a: list[int], b: list[int]) -> bool:
    (t1, l1, h1, w1), (t2, l2, h2, w2) = a, b
    return t1 < t2 + h2 and t2 < t1 + h1 and l1 < l2 + w2 and l2 < l1 + w1


def test_counts_sizes_and_layout(demo):
    layout, result = demo
    assert 12 <= result.count("hr_reference") <= 24
    assert 44 <= result.count("field_lr") <= 64
    pairs = demo_data.N_PAIRS + demo_data.N_GREY_PAIRS + demo_data.N_FIT_PAIRS * len(demo_data.CAMERA_MODELS)
    assert result.count("calib_hr") == result.count("calib_lr") == pairs == 24
    for entry in result.files:
        path = layout.landing / entry["path"]
        with Image.open(path) as im:
            w, h = im.size
            fmt = im.format
        side = entry["box"][2]
        if entry["role"] in ("hr_reference", "calib_hr"):
            assert fmt == "PNG" and 128 <= w == h == side <= 192
        else:
            assert fmt == "JPEG" and (w, h) == (side // 4, side // 4)
        camera = entry["path"].split("/")[0]
        assert camera == "ref_cam" if entry["role"] == "hr_reference" else camera in ("field_cam", "grey_cam")
        if entry["role"] == "field_lr" and camera == "grey_cam":
            with Image.open(path) as im:
                assert im.mode == "L"  # the monochrome camera uploads greyscale
    pair_files = [f["path"] for f in result.files if f["role"].startswith("calib")]
    assert all(p.split("/")[1] == "pairs" and ("/hr/" in p or "/lr/" in p) for p in pair_files)
    for camera in ("field_cam", "grey_cam"):  # each field camera has its own field images and calibration pairs
        assert sum(f["path"].startswith(f"{camera}/pairs/") and "/hr/" in f["path"] and f.get("use") != "fit"
                   for f in result.files) >= 6  # gate pairs, as many as before the fit pairs
        assert [f["path"] for f in result.files if f["path"].startswith(f"{camera}/") and f.get("use") == "fit"
                and "/hr/" in f["path"]] == [f"{camera}/pairs/fit-{n}/hr/fit-{n}.png" for n in range(1, 6)]
        assert sum(f["path"].startswith(f"{camera}/") and f["role"] == "field_lr" for f in result.files) >= 20


def test_roles_use_disjoint_crops(demo):
    """References, field images and gate pairs never share a scene; fit pairs (which train, like the field
    images whose scenes they show) never share one with a gate pair or a reference."""
    _, result = demo
    by_role = {
        "reference": [f for f in result.files if f["role"] == "hr_reference"],
        "field": [f for f in result.files if f["role"] == "field_lr"],
        "calibration": [f for f in result.files if f["role"] == "calib_hr" and f.get("use") != "fit"],
        "fit": [f for f in result.files if f["role"] == "calib_hr" and f.get("use") == "fit"],
    }
    roles = list(by_role)
    for i, a in enumerate(roles):
        for b in roles[i + 1 :]:
            if {a, b} == {"field", "fit"}:
                continue
            for fa in by_role[a]:
                for fb in by_role[b]:
                    assert not (fa["photo"] == fb["photo"] and _overlap(fa["box"], fb["box"])), (fa, fb)
    assert len(by_role["fit"]) == demo_data.N_FIT_PAIRS * len(demo_data.CAMERA_MODELS)
    photos = {f["photo"] for f in result.files}
    assert photos <= set(demo_data.PHOTOS) and len(photos) >= 8


def test_manifest_is_hidden_and_second_call_skips(demo):
    layout, result = demo
    manifest = json.loads((layout.landing / demo_data.MANIFEST_NAME).read_text())
    assert manifest["seed"] == 0 and len(manifest["files"]) == len(result.files)
    assert set(manifest["field_camera_models"]) == {"field_cam", "grey_cam"}
    assert set(manifest["photo_licences"]) <= set(demo_data.PHOTOS)
    again = make_demo_data(layout, seed=0)
    assert again.skipped and len(again.files) == len(result.files)


def test_deterministic_for_a_seed_and_different_across_seeds(demo, tmp_path):
    layout, result = demo
    other = DataLayout(tmp_path / "again")
    make_demo_data(other, seed=0)
    for entry in result.files[:: max(1, len(result.files) // 12)]:
        assert (other.landing / entry["path"]).read_bytes() == (layout.landing / entry["path"]).read_bytes()
    third = make_demo_data(DataLayout(tmp_path / "seed1"), seed=1)
    assert [f["path"] for f in third.files] != [f["path"] for f in result.files]


def test_force_rewrites_and_removes_the_previous_uploads(tmp_path):
    layout = DataLayout(tmp_path / "d")
    first = make_demo_data(layout, seed=0)
    second = make_demo_data(layout, seed=1, force=True)
    assert not second.skipped
    written = {p.relative_to(layout.landing).as_posix() for p in layout.landing.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert written == {f["path"] for f in second.files}
    assert written != {f["path"] for f in first.files}


def test_field_camera_degradation():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    lr = field_camera_degrade(hr, seed=3, name="x")
    assert lr.shape == (16, 24, 3) and lr.dtype == np.uint8
    np.testing.assert_array_equal(lr, field_camera_degrade(hr, seed=3, name="x"))
    assert not np.array_equal(lr, field_camera_degrade(hr, seed=4, name="x"))  # noise follows the seed
    data = field_camera_jpeg(hr, seed=3, name="x")
    assert Image.open(io.BytesIO(data)).format == "JPEG"
    flat = np.full((32, 32, 3), 128, np.uint8)
    mean = field_camera_degrade(flat, seed=0).reshape(-1, 3).mean(axis=0)
    assert mean[0] > mean[1] > mean[2]  # the warm colour cast
    with pytest.raises(ValueError):
        field_camera_jpeg(hr[:63], seed=0)
    assert FIELD_CAMERA_MODEL.scale == 4
    grey = field_camera_degrade(hr, seed=3, name="x", model=GREY_CAMERA_MODEL)
    assert grey.shape == (16, 24, 3) and (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    flat_grey = field_camera_degrade(flat, seed=0, name="flat", model=GREY_CAMERA_MODEL)[..., 0].astype(float)
    flat_colour = field_camera_degrade(flat, seed=0, name="flat")[..., 1].astype(float)
    assert flat_grey.std() > 1.5 * flat_colour.std()  # the grainy camera is the noisier one


def test_the_demo_uploads_ingest_cleanly(demo, tmp_path):
    import shutil

    from sr_pipeline.common.cameras import load_registry

    registry = load_registry()  # configs/cameras.yaml lists the demo's cameras
    src, result = demo
    layout = DataLayout(tmp_path / "ingest")
    shutil.copytree(src.landing, layout.landing)
    poll = poll_landing(layout, registry, {}, now=0.0, stable_seconds=0)
    summaries = [ingest_batch(layout, registry, b.batch_key) for b in poll.batches]
    assert sum(s.quarantined for s in summaries) == 0 and sum(s.duplicate for s in summaries) == 0
    assert sum(s.accepted for s in summaries) == len(result.files)
    assert len(store.list_images(layout, role="hr_reference")) == result.count("hr_reference")
    assert len(store.list_images(layout, role="field_lr")) == result.count("field_lr")
    pairs = store.calibration_pairs(layout)
    assert len(pairs) == result.count("calib_hr")
    for _, hr, lr in pairs:
        h, w = store.load_image(hr).shape[:2]
        assert store.load_image(lr).shape[:2] == (h // 4, w // 4)
    # The demo registry fits each field camera's G on 5 pairs and gates on as many pairs as before, never both.
    from sr_pipeline.evaluation.calibration import split_calibration_pairs

    for camera, gate_pairs in (("field_cam", demo_data.N_PAIRS), ("grey_cam", demo_data.N_GREY_PAIRS)):
        fit, gate = split_calibration_pairs(layout, camera, registry)
        assert [p.name for p in fit] == [f"fit-{n}" for n in range(1, 6)] and len(gate) == gate_pairs
        assert not {p.name for p in fit} & {p.name for p in gate}
        assert not {(p.hr_path, p.lr_path) for p in fit} & {(p.hr_path, p.lr_path) for p in gate}


def test_cli(tmp_path, capsys):
    args = argparse.Namespace(layout=DataLayout(tmp_path / "cli"), seed=2, force=False)
    assert demo_data.run_cli(args) == 0
    assert "calibration pairs" in capsys.readouterr().out
    assert demo_data.run_cli(args) == 0
    assert "already written" in capsys.readouterr().out
