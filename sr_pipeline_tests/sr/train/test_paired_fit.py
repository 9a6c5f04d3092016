"""Fit pairs pin the camera model G: the registry's fit/gate split, the paired term and pre-fit (G's blur and
noise move to a known synthetic camera's), co-learning with and without fit pairs, and bench_quality's
--fit-pairs handling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import photos
from sr_pipeline.common.cameras import CameraRegistry
from sr_pipeline.sr.models.downsampler import LearnedDownsampler
from sr_pipeline.sr.images.tensors import to_tensor, to_uint8
from sr_pipeline.sr.train.paired_fit import PairedCrops, check_fit_pairs, paired_laplacian_ratio, prefit_downsampler
from sr_pipeline.sr.train.stages import colearn as tc
from test_colearn import _weights_hash, field_lr, make_teacher, outs, tiny_profile


# ---- the registry's split -------------------------------------------------------------------------------

def _registry(**field) -> CameraRegistry:
    return CameraRegistry.model_validate(
        {"cameras": {"ref": {"role": "hr_reference"}, "cam": {"role": "field_lr", **field}}})


def test_no_fit_pairs_gates_every_pair_as_before():
    assert _registry().split_pairs("cam", ["b", "a", "c"]) == ([], ["a", "b", "c"])
    assert _registry().split_pairs("not-listed", ["a"]) == ([], ["a"])


def test_a_count_fits_the_first_pairs_by_name_and_the_rest_gate():
    fit, gate = _registry(fit_pairs=2).split_pairs("cam", ["p3", "p1", "p2", "p4"])
    assert (fit, gate) == (["p1", "p2"], ["p3", "p4"])


def test_a_list_fits_exactly_those_pairs_and_never_one_pair_in_both():
    fit, gate = _registry(fit_pairs=["p4", "p2"]).split_pairs("cam", ["p1", "p2", "p3", "p4"])
    assert (fit, gate) == (["p2", "p4"], ["p1", "p3"])
    assert not set(fit) & set(gate)


def test_the_split_refuses_to_leave_no_gate_pair_and_waits_for_listed_pairs_not_uploaded_yet():
    with pytest.raises(ValueError, match="none would gate"):
        _registry(fit_pairs=3).split_pairs("cam", ["p1", "p2", "p3"])
    with pytest.raises(ValueError, match="none would gate"):
        _registry(fit_pairs=["p1", "p2"]).split_pairs("cam", ["p1", "p2"])
    assert _registry(fit_pairs=["p1", "p9"]).split_pairs("cam", ["p1", "p2"]) == (["p1"], ["p2"])
    with pytest.raises(ValueError, match="twice"):
        _registry(fit_pairs=["p1", "p1"])
    with pytest.raises(ValueError, match=">= 0"):
        _registry(fit_pairs=-1)
    with pytest.raises(ValueError, match="field_lr cameras only"):
        CameraRegistry.model_validate({"cameras": {"ref": {"role": "hr_reference", "fit_pairs": 1}}})


def test_yaml_booleans_are_not_counts_or_rates():
    from pydantic import ValidationError

    from sr_pipeline.sr.train.profile import PairedFitConfig

    with pytest.raises(ValidationError):
        _registry(fit_pairs=True)  # YAML's yes: not "the first pair"
    for bad in ({"blur_lr_scale": True}, {"min_pairs": True}):
        with pytest.raises(ValidationError):
            PairedFitConfig(**bad)
    assert PairedFitConfig(blur_lr_scale=1).blur_lr_scale == 1.0  # YAML's 1 is still a rate


def test_declared_fit_pairs_that_are_not_there_are_named():
    from sr_pipeline.training.run import missing_fit_pairs

    said = missing_fit_pairs(_registry(fit_pairs=["P1", "p2", "nope"]), "cam", ["p2"])
    assert said.startswith("fit_pairs lists P1, nope, which no complete calibration pair") and "on 1 fit pair" in said
    assert missing_fit_pairs(_registry(fit_pairs=3), "cam", ["p1"]).startswith("fit_pairs declares 3 fit pairs but only 1")
    assert missing_fit_pairs(_registry(fit_pairs=["p1"]), "cam", ["p1"]) is None
    assert missing_fit_pairs(_registry(), "cam", []) is None and missing_fit_pairs(_registry(), "other", []) is None


def test_a_transparent_fit_pair_is_named_in_a_warning(layout, tmp_path, capsys):
    from conftest import encode, pixels
    from sr_pipeline.intake.ingest import ingest_folder
    from sr_pipeline.training.run import field_camera_fit_pairs

    registry = CameraRegistry.model_validate({"cameras": {"ref_cam": {"role": "hr_reference"}, "field_cam": {
        "role": "field_lr", "scale": 4, "fit_pairs": ["cut", "opaque", "plain"]}}})
    src = tmp_path / "upload"
    for name, seed in (("cut", 1), ("plain", 2), ("gate", 3), ("opaque", 4)):
        hr, lr = pixels(64, 64, seed), pixels(16, 16, seed + 10)
        (src / "pairs" / name / "hr").mkdir(parents=True)
        (src / "pairs" / name / "lr").mkdir(parents=True)
        if name == "cut":  # a cut-out: transparent around the part
            alpha = np.zeros((64, 64), np.uint8)
            alpha[16:48, 16:48] = 255
            hr = np.dstack([hr, alpha])
        if name == "opaque":  # an alpha channel that hides nothing: not a transparent shot
            hr = np.dstack([hr, np.full((64, 64), 255, np.uint8)])
        (src / "pairs" / name / "hr" / "x.png").write_bytes(encode(hr))
        (src / "pairs" / name / "lr" / "x.png").write_bytes(encode(lr))
    ingest_folder(layout, registry, src, "field_cam", batch_key="b1")
    pairs, names = field_camera_fit_pairs(layout, "field_cam", registry)
    assert names == ["cut", "opaque", "plain"] and all(hr.shape == (64, 64, 3) for hr, _ in pairs)
    said = capsys.readouterr().out
    assert "warning: field_cam: fit pair(s) cut (HR) had transparency, which ingestion composited on white" in said
    assert "plain" not in said and "opaque" not in said
    field_camera_fit_pairs(layout, "field_cam", registry, warn=False)  # the unpaired twin fits on none of them
    assert capsys.readouterr().out == ""
    # with fewer fit pairs than min_pairs, the gate's pairs (never the fit ones) judge the pre-fit
    from pathlib import Path

    from sr_pipeline.sr.train.profile import Profile
    from sr_pipeline.training.run import _few_pairs_check_pairs

    profile = Profile.from_yaml(Path(__file__).resolve().parents[3] / "configs" / "cpu-demo.yaml")
    check = _few_pairs_check_pairs(layout, "field_cam", registry, profile, 3)
    assert len(check) == 1 and check[0][0].shape == (64, 64, 3)  # "gate", the one pair fit_pairs does not list
    # with enough declared pairs too: the registration check may leave one out and bring the count below min_pairs
    assert len(_few_pairs_check_pairs(layout, "field_cam", registry, profile, profile.colearn.paired_fit.min_pairs)) == 1
    assert _few_pairs_check_pairs(layout, "field_cam", registry, profile, 0) == []  # the unpaired twin


def test_a_fit_pair_uploaded_again_under_another_name_never_gates(monkeypatch, tmp_path):
    from sr_pipeline.evaluation.calibration import split_calibration_pairs
    from sr_pipeline.storage import store

    # the store keeps one copy of an image: "zz" re-uploads p1's files under a new name
    files = {n: (f"store/{n}-hr.png", f"store/{n}-lr.png") for n in ("p1", "p2", "p3")}
    rows = [(n, *files[n]) for n in ("p1", "p2", "p3")] + [("zz", *files["p1"])]
    monkeypatch.setattr(store, "calibration_pairs", lambda layout, cameras=None: rows)
    fit, gate = split_calibration_pairs(None, "cam", _registry(fit_pairs=["p1"]))
    assert [p.name for p in fit] == ["p1"] and [p.name for p in gate] == ["p2", "p3"]


def test_the_gate_refuses_a_candidate_fitted_on_one_of_its_pairs(tmp_path):
    from sr_pipeline.evaluation.calibration import fit_pairs_overlap
    from sr_pipeline.sr.data.pairs import Pair

    model = tmp_path / "student"
    model.mkdir()
    (model / "training.json").write_text(json.dumps({"fit_pairs": ["p1"]}))
    pairs = [Pair(n, tmp_path / "hr.png", tmp_path / "lr.png") for n in ("p1", "p2")]
    assert fit_pairs_overlap(model, pairs) == ["p1"]
    assert fit_pairs_overlap(model, pairs[1:]) == []
    assert fit_pairs_overlap(tmp_path / "no-model", pairs) == []


# ---- the paired term ---------------------------------------------------------------------------------------

def textures(n: int = 4, size: int = 96, seed: int = 0) -> list[np.ndarray]:
    """Scenes with fine detail at every scale (blocks of random grey and colour levels, 2-8 px)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        b = 2 + 2 * (i % 4)
        small = rng.integers(0, 256, (size // b + 1, size // b + 1, 3)).astype(np.uint8)
        out.append(np.repeat(np.repeat(small, b, 0), b, 1)[:size, :size].copy())
    return out


def synthetic_camera(hr: list[np.ndarray], blur: float, noise_levels: float, seed: int = 1):
    """(HR, LR) pairs of a known camera: a Gaussian blur of ``blur`` HR px, x4 bicubic, white noise of
    ``noise_levels`` 8-bit levels."""
    truth = LearnedDownsampler(noise_model="camera", blur_model="kernel").eval()
    truth.set_blur_sigma(blur)
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    with torch.no_grad():
        for im in hr:
            y = truth(to_tensor(im), None)
            y = y + noise_levels / 127.5 * torch.randn(y.shape, generator=gen)
            pairs.append((im, to_uint8(y)))
    return pairs


def test_prefit_moves_gs_blur_and_noise_toward_the_cameras():
    torch.manual_seed(0)
    pairs = synthetic_camera(textures(), blur=2.0, noise_levels=4.0)
    g = LearnedDownsampler(noise_model="camera", blur_model="kernel")
    assert float(g.blur_sigmas().detach().mean()) < 0.5
    state = torch.random.get_rng_state()
    info = prefit_downsampler(g, PairedCrops(pairs, 64, 4, seed=0), steps=120, lr=1e-3, camera_lr=2e-2,
                              batch_size=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # its own random streams
    sig = g.blur_sigmas().detach()
    assert 1.6 < float(sig.min()) and float(sig.max()) < 2.4, sig
    for part in ("low", "high", "noise"):
        assert info["terms_after"][part] < info["terms_before"][part]
    assert 0.8 < info["laplacian_ratio"] < 1.25
    # the noise level moved from one level toward the camera's four
    assert info["camera"]["noise_sigma_levels"]["0.5"][0] > 2.0


def test_prefit_of_the_residual_g_brings_its_laplacian_energy_to_the_cameras():
    torch.manual_seed(0)
    pairs = synthetic_camera(textures(), blur=2.0, noise_levels=0.0)
    g = LearnedDownsampler(noise_model="camera", channels=16, num_blocks=2, norm_num_groups=4)
    before = paired_laplacian_ratio(g, pairs)
    prefit_downsampler(g, PairedCrops(pairs, 64, 4, seed=0), steps=150, lr=2e-3, camera_lr=2e-3, batch_size=4)
    after = paired_laplacian_ratio(g, pairs)
    assert before > 2.0 and abs(np.log(after)) < abs(np.log(before)) / 3, (before, after)


def test_paired_crops_stay_aligned_and_refuse_pairs_off_the_scale():
    hr = textures(1, 64)[0]
    lr = to_uint8(torch.nn.functional.avg_pool2d(to_tensor(hr), 4))
    crops = PairedCrops([(hr, lr)], 32, 4, seed=3)
    x, y = crops.batch(0, 3)
    assert x.shape == (3, 3, 32, 32) and y.shape == (3, 3, 8, 8)
    assert torch.allclose(torch.nn.functional.avg_pool2d(x, 4), y, atol=1.5 / 127.5)
    with pytest.raises(ValueError, match="fit pair q_ratio: HR 64x64 is not x4"):
        check_fit_pairs([(hr, lr), (hr, lr[:5])], 4, ["p1", "q_ratio"])


def _jpeg_camera_pairs(quality: int = 70):
    """A camera that is bicubic-down plus JPEG (4:2:0): HR photos and their stored LR, and its settings."""
    import io

    from sr_pipeline.sr.images.jpeg_settings import jpeg_settings
    from sr_pipeline.sr.images.tensors import downsample

    pairs, settings = [], None
    for hr in photos(2, 128, seed=5):
        buf = io.BytesIO()
        Image.fromarray(to_uint8(downsample(to_tensor(hr), 4))).save(buf, "JPEG", quality=quality, subsampling=2)
        im = Image.open(io.BytesIO(buf.getvalue()))
        settings = jpeg_settings(im)
        pairs.append((hr, np.array(im.convert("RGB"))))
    return pairs, settings


def test_a_jpeg_cameras_g_is_compared_as_the_camera_stores_its_lr():
    from sr_pipeline.sr.train.paired_fit import paired_terms

    pairs, settings = _jpeg_camera_pairs()
    crops = PairedCrops(pairs, 64, 4, seed=1, grid=16)
    for i in range(20):  # every LR crop on the 16-pixel block grid, whole blocks, never flipped
        hr, lr = crops.sample(i)
        assert lr.shape[-1] % 16 == 0 and lr.shape[-2] % 16 == 0
        assert any(torch.equal(lr, to_tensor(real)[0, :, t: t + lr.shape[-2], l: l + lr.shape[-1]])
                   for _, real in pairs for t in range(0, 32, 16) for l in range(0, 32, 16))
    x, y = crops.batch(0, 4)
    # G starts as bicubic-down: with the camera's JPEG stage it is this camera, so its high band matches the
    # stored LR's; the same G without the stage is compared uncompressed and reads the compression as its own
    with_stage = LearnedDownsampler(noise_model="camera", jpeg=settings.to_config()).eval()
    without = LearnedDownsampler(noise_model="camera").eval()
    without.load_state_dict(with_stage.state_dict())
    with torch.no_grad():
        high_with, high_without = (paired_terms(g, x, y)["high"] for g in (with_stage, without))
    assert float(high_with) < 0.5 * float(high_without)
    assert paired_laplacian_ratio(with_stage, pairs) == pytest.approx(1.0, abs=0.05)
    assert abs(paired_laplacian_ratio(without, pairs) - 1.0) > 0.1  # JPEG's blocks and losses read as blur
    with pytest.raises(ValueError, match="fit pair #1: a JPEG camera.s fit pair needs an LR of at least 16x16"):
        PairedCrops([(p[0][:32, :32], p[1][:8, :8]) for p in pairs], 64, 4, grid=16)


# ---- co-learning with fit pairs -------------------------------------------------------------------------

def _pairs_for_tiny_runs():
    return synthetic_camera(photos(2, 48, seed=7), blur=1.5, noise_levels=2.0)


def test_colearning_with_fit_pairs_prefits_g_and_keeps_the_paired_term(tmp_path):
    from sr_pipeline.sr.train.profile import DownsamplerConfig, PairedFitConfig

    profile = tiny_profile(downsampler=DownsamplerConfig(channels=8, num_blocks=1, norm_num_groups=4,
                                                         noise_model="camera"),
                           paired_fit=PairedFitConfig(prefit_steps=3, batch_size=2, patch_size=32))
    result = tc.train_colearn(profile, make_teacher(tmp_path), photos(), field_lr(), tmp_path / "run",
                              *outs(tmp_path), fit_pairs=_pairs_for_tiny_runs(), fit_pair_names=["a", "b"])
    info = json.loads((result.model_dirs["downsampler"] / "training.json").read_text())
    assert info["fit_pairs"] == ["a", "b"] and info["paired_prefit"]["steps"] == 3
    assert info["loss_weights"]["paired"] == 1.0 and "loss_paired" in info["history"][-1]
    assert "colour_matrix" in info["paired_prefit"]["camera"]  # pairs show the colour response: G learns it
    assert info["fit_pairs_warning"].startswith("only 2 fit pair(s), fewer than the 5 advised: a pre-fit on so few")
    assert info["fit_pairs_warning"].endswith("the camera has no gate pair to judge its pre-fit on")  # what was decided
    assert info["blur_lr_scale"] == 1.0


def _blur_start(g: LearnedDownsampler) -> list[torch.Tensor]:
    """The parts of G's blur whose start is fixed: the residual's zeroed last layer, or the kernel's sigmas."""
    if g.config.blur_model == "kernel":
        return [g.blur_log_sigma, g.blur_angle]
    return [g.conv_out.weight, g.conv_out.bias]


@pytest.mark.parametrize("blur_model", ["residual", "kernel"])
def test_blur_lr_scale_zero_holds_gs_blur_while_its_noise_and_colour_learn(tmp_path, blur_model):
    from sr_pipeline.sr.models.downsampler import load_downsampler
    from sr_pipeline.sr.train.profile import DownsamplerConfig, PairedFitConfig

    teacher = make_teacher(tmp_path)

    def run(scale: float, name: str, min_pairs: int = 2) -> LearnedDownsampler:
        profile = tiny_profile(downsampler=DownsamplerConfig(channels=8, num_blocks=1, norm_num_groups=4,
                                                             noise_model="camera", blur_model=blur_model),
                               paired_fit=PairedFitConfig(prefit_steps=0, batch_size=2, patch_size=32,
                                                          blur_lr_scale=scale, min_pairs=min_pairs))
        result = tc.train_colearn(profile, teacher, photos(), field_lr(), tmp_path / name,
                                  *outs(tmp_path, name), fit_pairs=_pairs_for_tiny_runs())
        return load_downsampler(result.model_dirs["downsampler"])

    held, free = run(0.0, "held"), run(1.0, "free")
    too_few = run(0.0, "too-few", min_pairs=3)  # 2 fit pairs, 3 advised: the blur is not held
    fresh = LearnedDownsampler.from_config(held.config)
    for a, b, c, d in zip(_blur_start(held), _blur_start(fresh), _blur_start(free), _blur_start(too_few)):
        assert torch.equal(a, b) and not torch.equal(c, b)  # no pre-fit here: the held blur is G's start
        assert torch.equal(c, d)  # below min_pairs G learns as with blur_lr_scale 1
    assert not torch.equal(held.log_read_sigma, fresh.log_read_sigma)
    assert not torch.equal(held.colour_matrix, fresh.colour_matrix)


def test_registration_tells_a_registered_pair_from_an_offset_or_foreign_one():
    from sr_pipeline.sr.train.paired_fit import check_fit_pair_registration, registration, registration_warning

    (hr, lr), (_, other_lr) = synthetic_camera(textures(2, 160), blur=1.5, noise_levels=3.0)
    good = registration(hr, lr, 4)
    assert good.offset == (0, 0) and good.correlation > 0.9 and good.unjudged is None
    assert registration(hr, np.roll(lr, 1, axis=0), 4).offset == (1, 0)  # content moved down by one LR pixel
    assert registration(hr, np.roll(lr, -2, axis=1), 4).offset == (0, -2)  # ... left by two
    assert registration(hr, other_lr, 4).best_correlation < 0.5  # another scene
    assert registration(hr[:80, :80], lr[:20, :20], 4).unjudged.startswith("too small to check (LR 20x20")
    flat_hr = np.full((128, 128, 3), 120, np.uint8)
    assert registration(flat_hr, np.full((32, 32, 3), 118, np.uint8), 4).unjudged.startswith("too flat")
    pairs = [(hr, lr), (hr, other_lr), (hr, np.roll(lr, 1, axis=1)), (hr[:64, :64], lr[:16, :16])]
    found = check_fit_pair_registration(pairs, 4, ["ok", "swap", "moved", "tiny"])
    assert list(found.foreign) == ["swap"] and list(found.offset) == ["moved"] and list(found.unchecked) == ["tiny"]
    assert found.offset["moved"].startswith("its LR's content sits 1 LR pixel(s) right from its HR's (correlation")
    said = registration_warning(found, kept=3)
    assert said.startswith("1 fit pair(s) left out of G's fit, their LR another scene than their HR (swap: its LR")
    assert "1 fit pair(s) not registered with their HR, fitted on as declared (moved: its LR's content" in said
    assert said.endswith("; G is fitted on 3 fit pair(s)")
    assert registration_warning(check_fit_pair_registration([(hr, lr)], 4, ["ok"]), 1) is None
    with pytest.raises(ValueError, match="2 fit pairs but 1 names"):
        check_fit_pair_registration([(hr, lr), (hr, lr)], 4, ["ok"])


def test_registered_pairs_of_few_or_one_directional_details_are_not_offsets():
    from sr_pipeline.sr.train.paired_fit import registration

    rng = np.random.default_rng(3)
    stripes = np.repeat((np.sin(np.arange(256) / 5.0)[:, None] * 100 + 128), 256, 1)  # detail along y only
    hr = np.repeat(stripes[..., None], 3, 2).astype(np.uint8)
    for _ in range(5):
        lr = np.asarray(Image.fromarray(hr).resize((64, 64), Image.Resampling.BICUBIC)).astype(float)
        lr = np.clip(lr + rng.normal(0, 1, lr.shape), 0, 255).astype(np.uint8)
        r = registration(hr, lr, 4)
        assert r.offset == (0, 0) or r.best_correlation - r.correlation < 0.01


def test_colearning_leaves_out_a_fit_pair_of_another_scene_and_names_an_offset_one(tmp_path, capsys):
    from sr_pipeline.sr.train.profile import PairedFitConfig

    pairs = synthetic_camera(textures(4, 128), blur=1.5, noise_levels=2.0)
    pairs[2] = (pairs[2][0], pairs[0][1])  # c's LR is a's: another scene
    pairs[3] = (pairs[3][0], np.roll(pairs[3][1], 2, axis=1))  # d's LR sits 2 pixels right
    profile = tiny_profile(paired_fit=PairedFitConfig(prefit_steps=1, batch_size=2, patch_size=32, min_pairs=3))
    result = tc.train_colearn(profile, make_teacher(tmp_path), photos(), field_lr(), tmp_path / "run",
                              *outs(tmp_path), fit_pairs=pairs, fit_pair_names=["a", "b", "c", "d"])
    info = json.loads((result.model_dirs["downsampler"] / "training.json").read_text())
    assert info["fit_pairs"] == ["a", "b", "d"] and info["paired_prefit"]["fit_pairs"] == 3
    check = info["fit_pairs_registration"]
    assert list(check["foreign"]) == ["c"] and list(check["offset"]) == ["d"] and check["unchecked"] == {}
    assert info["blur_lr_scale"] == 0.0  # 3 kept, 3 advised: held
    assert info["fit_pairs_warning"].startswith("1 fit pair(s) left out of G's fit, their LR another scene")
    assert "G is fitted on 3 fit pair(s)" in info["fit_pairs_warning"]
    assert "warning: 1 fit pair(s) left out of G's fit" in capsys.readouterr().out


def test_a_grey_fit_pair_of_a_colour_camera_is_named(tmp_path, capsys):
    from sr_pipeline.sr.images.tensors import grey_rgb
    from sr_pipeline.sr.train.profile import PairedFitConfig

    pairs = _pairs_for_tiny_runs()
    pairs[1] = (pairs[1][0], grey_rgb(pairs[1][1]))
    profile = tiny_profile(paired_fit=PairedFitConfig(prefit_steps=1, batch_size=2, patch_size=32))
    tc.train_colearn(profile, make_teacher(tmp_path), photos(), field_lr(), tmp_path / "run", *outs(tmp_path),
                     fit_pairs=pairs, fit_pair_names=["a", "b"])
    out = capsys.readouterr().out
    assert "warning: fit pair(s) b: the LR is grey but the camera's field images are colour" in out
    assert "fit pair(s) a" not in out


def test_without_fit_pairs_the_paired_settings_change_nothing(tmp_path):
    from sr_pipeline.sr.train.profile import PairedFitConfig

    teacher = make_teacher(tmp_path)
    plain = tc.train_colearn(tiny_profile(), teacher, photos(), field_lr(), tmp_path / "r1", *outs(tmp_path, "v1"))
    other = tiny_profile(weights={"paired": 5.0}, paired_fit=PairedFitConfig(prefit_steps=7, colour_transform=True))
    again = tc.train_colearn(other, teacher, photos(), field_lr(), tmp_path / "r2", *outs(tmp_path, "v2"),
                             fit_pairs=[])
    for role in ("student", "downsampler"):
        assert _weights_hash(plain.model_dirs[role]) == _weights_hash(again.model_dirs[role])
    info = json.loads((again.model_dirs["student"] / "training.json").read_text())
    assert info["fit_pairs"] == [] and info["paired_prefit"] is None and info["loss_weights"]["paired"] == 0.0
    assert info["fit_pairs_warning"] is None


def test_the_fixed_degradation_challenger_ignores_fit_pairs(tmp_path):
    profile = tiny_profile().fixed_degradation_challenger()
    result = tc.train_colearn(profile, make_teacher(tmp_path), photos(), [], tmp_path / "run",
                              outs(tmp_path)[0], fit_pairs=_pairs_for_tiny_runs())
    info = json.loads((result.model_dirs["student"] / "training.json").read_text())
    assert info["fit_pairs"] == [] and info["paired_prefit"] is None


# ---- bench_quality --fit-pairs ----------------------------------------------------------------------------

def _save(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@pytest.fixture
def datasets(tmp_path):
    root = tmp_path / "datasets"
    for folder in ("bsd100_hr", "urban100_hr"):
        (root / folder).mkdir(parents=True)
    hr = textures(1, 32)[0]
    for cam in ("Canon", "Nikon"):
        for i in range(1, 7):
            _save(root / "realsr_x4" / "HR" / f"{cam}_{i:03d}.png", hr)
            _save(root / "realsr_x4" / "LR" / f"{cam}_{i:03d}.png", hr[::4, ::4])
    return root


def test_bench_fit_pairs_are_the_cameras_first_odd_pairs_and_scoring_stays_even(load_benchmark, datasets, tmp_path):
    bq = load_benchmark("bench_quality")
    fit, selection, scored, _ = bq.fit_and_scored_pairs(datasets, "realsr-nikon", 2, tmp_path / "work")
    assert [p.name for p in fit] == ["Nikon_001.png", "Nikon_003.png"]
    assert [p.name for p in selection] == ["Nikon_005.png"]
    assert [p.name for p in scored] == ["Nikon_002.png", "Nikon_004.png", "Nikon_006.png"]
    fit, selection, scored, _ = bq.fit_and_scored_pairs(datasets, "realsr-canon", 0, tmp_path / "work")
    assert fit == [] and selection == [] and len(scored) == 3
    with pytest.raises(ValueError, match="only 3 odd pairs"):
        bq.fit_and_scored_pairs(datasets, "realsr-canon", 4, tmp_path / "work")


@pytest.mark.parametrize("args, message", [
    (["--field", "realsr", "--fit-pairs", "2"], "one field camera with pairs"),
    (["--field", "realsr-canon", "--fit-pairs", "-1"], ">= 0"),
])
def test_bench_refuses_fit_pairs_it_cannot_honour(load_benchmark, datasets, capsys, args, message):
    bq = load_benchmark("bench_quality")
    with pytest.raises(SystemExit):
        bq.main([str(datasets), *args])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("hold, margin, gate, held", [("judged", 0.0, True, True), ("judged", 100.0, True, False),
                                                    ("judged", 0.0, False, False), ("always", 100.0, False, True)])
def test_below_min_pairs_gs_blur_and_colour_are_held_as_few_pairs_hold_decides(tmp_path, hold, margin, gate, held):
    """'judged' holds G's pre-fit blur and colour when the pre-fitted G beats bicubic-down on the camera's gate
    pairs by the margin (free without gate pairs); its noise part learns either way; training.json says why."""
    from sr_pipeline.sr.models.downsampler import load_downsampler
    from sr_pipeline.sr.train.profile import DownsamplerConfig, PairedFitConfig

    teacher = make_teacher(tmp_path)
    profile = tiny_profile(downsampler=DownsamplerConfig(channels=8, num_blocks=1, norm_num_groups=4,
                                                         noise_model="camera"),
                           paired_fit=PairedFitConfig(prefit_steps=0, batch_size=2, patch_size=32, min_pairs=3,
                                                      few_pairs_hold=hold, few_pairs_hold_margin=margin))
    pairs = _pairs_for_tiny_runs()  # 2 fit pairs, 3 advised
    result = tc.train_colearn(profile, teacher, photos(), field_lr(), tmp_path / "few", *outs(tmp_path, "few"),
                              fit_pairs=pairs, check_pairs=pairs[::-1] if gate else None)
    g = load_downsampler(result.model_dirs["downsampler"])
    fresh = LearnedDownsampler.from_config(g.config)
    same = [torch.equal(a, b) for a, b in zip(_blur_start(g), _blur_start(fresh))]
    assert all(same) == held and torch.equal(g.colour_matrix, fresh.colour_matrix) == held
    assert not torch.equal(g.log_read_sigma, fresh.log_read_sigma)
    record = json.loads((result.model_dirs["downsampler"] / "training.json").read_text())["few_pairs_hold"]
    assert record["held"] == held and record["mode"] == hold
    info = json.loads((result.model_dirs["downsampler"] / "training.json").read_text())
    assert info["blur_lr_scale"] == (0.0 if held else 1.0)
    if hold == "judged" and gate:
        assert record["pairs"] == 2 and record["g_psnr"] is not None and "gate pair" in record["why"]
    elif hold == "judged":
        assert "no gate pair" in record["why"] and record["g_psnr"] is None
