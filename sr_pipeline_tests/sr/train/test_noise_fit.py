"""The direct fit of G's noise level (sr/train/noise_fit.py): it finds the field camera's level in one search,
scales only the noise (the eps' = 0 output, the noise's signal dependence and correlation are kept),
works through the JPEG stage, and a co-learning run applies and records it on schedule."""

import json

import pytest
import torch

from sr_pipeline.sr.models.downsampler import LearnedDownsampler
from sr_pipeline.sr.images.tensors import downsample
from sr_pipeline.sr.images.jpeg_settings import JpegSettings, annex_k_luma
from sr_pipeline.sr.train.losses import flat_noise_sigma
from sr_pipeline.sr.train.noise_fit import fit_noise_level

CAMERA = dict(scale=4, channels=8, num_blocks=1, norm_num_groups=4, noise_model="camera")


def _smooth_hr(n: int, side: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    phases = torch.linspace(0, 3, n)
    return torch.stack([0.5 * torch.sin(1.5 * xx + p) * torch.cos(yy - p) for p in phases])[:, None].expand(
        n, 3, side, side).clone()


def _level(g: LearnedDownsampler) -> float:
    """G's noise standard deviation at mid-grey in 8-bit levels."""
    return g.noise_sigma(torch.zeros(1, 3, 1, 1)).mean().item() * 127.5


def test_one_fit_brings_the_noise_to_the_field_cameras_level():
    torch.manual_seed(0)
    g = LearnedDownsampler(**CAMERA)
    x = _smooth_hr(16)
    field = downsample(_smooth_hr(16).flip(-1), 4) + torch.randn(16, 3, 16, 16) * 6 / 127.5
    assert _level(g) == pytest.approx(1.0, rel=0.05)  # an untrained G: one level
    fit = fit_noise_level(g, x, field)
    assert _level(g) == pytest.approx(6.0, rel=0.15)
    assert fit.applied and fit.factor == pytest.approx(6.0, rel=0.15) and fit.term_after < 0.2 * fit.term_before
    # A second fit finds nothing clearly better, so it leaves the level as it is.
    level, again = _level(g), fit_noise_level(g, x, field)
    assert again.factor == pytest.approx(1.0, abs=0.06) and not again.applied and _level(g) == level


def test_the_fit_scales_only_the_noise():
    torch.manual_seed(1)
    g = LearnedDownsampler(**CAMERA)
    with torch.no_grad():
        g.log_shot_gain.fill_(-6.0)
        torch.nn.init.normal_(g.conv_out.weight, std=0.05)
        g.noise_kernel.add_(0.3 * torch.rand_like(g.noise_kernel))
    x = _smooth_hr(8)
    kernel, shot_over_read = g.noise_kernel.clone(), (g.log_shot_gain - 2 * g.log_read_sigma).clone()
    with torch.no_grad():
        clean, noisy = g(x), g(x, torch.randn(8, 3, 16, 16))
    field = downsample(x, 4) + torch.randn(8, 3, 16, 16) * 0.2 / 127.5  # a cleaner camera: the level falls
    fit = fit_noise_level(g, x, field)
    assert fit.applied and fit.factor < 0.6
    with torch.no_grad():
        assert torch.equal(g(x), clean)  # eps' = 0: the optics and response are untouched
    assert torch.equal(g.noise_kernel, kernel)
    assert torch.allclose(g.log_shot_gain - 2 * g.log_read_sigma, shot_over_read)  # same signal dependence
    assert g.training  # left as it was found


def test_the_fit_sees_the_level_before_the_cameras_jpeg():
    """Through a JPEG stage the fitted level is the sensor's: higher than the noise the compressed images show."""
    torch.manual_seed(2)
    x = _smooth_hr(16)
    jpeg = JpegSettings((annex_k_luma(60),), "grey").to_config()
    camera = LearnedDownsampler(**CAMERA, grey=True, jpeg=jpeg)
    with torch.no_grad():
        camera.log_read_sigma.fill_(torch.log(torch.tensor(8 / 127.5)))
        field = camera.eval()(_smooth_hr(16).flip(-1), torch.randn(16, 3, 16, 16))
    shown = flat_noise_sigma(field).mean().item() * 127.5
    g = LearnedDownsampler(**CAMERA, grey=True, jpeg=jpeg)
    fit_noise_level(g, x, field)
    assert shown < 6.5  # the compression removed part of the noise ...
    assert _level(g) == pytest.approx(8.0, rel=0.2)  # ... and the fit still finds the sensor's level


def test_only_a_camera_model_has_a_level_to_fit():
    g = LearnedDownsampler(scale=4, channels=8, num_blocks=1, norm_num_groups=4)
    with pytest.raises(ValueError, match="camera"):
        fit_noise_level(g, _smooth_hr(2), torch.zeros(2, 3, 16, 16))


def test_co_learning_fits_the_noise_on_schedule_and_records_each_fit(tmp_path):
    from conftest import photos
    from test_colearn import field_lr, make_teacher, outs, tiny_profile

    from sr_pipeline.sr.train.profile import DownsamplerConfig
    from sr_pipeline.sr.models.downsampler import load_downsampler
    from sr_pipeline.sr.train.stages import colearn as tc
    from sr_pipeline.sr.train.loop import run_stage

    camera_g = DownsamplerConfig(noise_model="camera", blur_model="kernel")
    teacher_dir = make_teacher(tmp_path)
    student_dir, g_dir = outs(tmp_path)
    stage = tc.ColearnStage(tiny_profile(downsampler=camera_g, noise_fit_every=3, noise_fit_crops=8), teacher_dir,
                            photos(), field_lr(), student_dir, g_dir)
    run_stage(stage, tmp_path / "run")
    info = json.loads((g_dir / "training.json").read_text())
    fits = info["noise_fits"]
    assert "noise_fit" in info["time_breakdown"]  # its cost is shown beside the training step's parts
    assert [f["step"] for f in fits] == [1, 4]  # the first step, then every 3
    assert fits[0]["applied"] and fits[0]["factor"] > 3  # field_lr: 12-level noise
    assert _level(load_downsampler(g_dir)) > 3

    # Off by default, and a G without camera parts has no level to fit: the profile's setting is then ignored.
    for profile in (tiny_profile(downsampler=camera_g),
                    tiny_profile(noise_fit_every=3)):
        other = tc.ColearnStage(profile, teacher_dir, photos(), field_lr(), *outs(tmp_path, "v2"))
        assert not other.cfg.fits_noise_level
