"""The synthetic second-order degradation: shapes, seeds, switches, kernels, noise and JPEG."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from sr_pipeline.sr.data.degrade import (
    KERNEL_TYPES,
    DegradationConfig,
    StageConfig,
    bicubic_down,
    bivariate_kernel,
    degrade,
    random_kernel,
    sinc_kernel,
)


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A float32 HR image in [0, 1] with edges, stripes and fine noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.5 + 0.25 * np.sin(xx / 2.0 + yy / 7.0)[..., None] * np.array([1.0, 0.6, 0.3])
    img = img + 0.15 * (((xx // 6) + (yy // 6)) % 2)[..., None]
    return np.clip(img + 0.03 * rng.standard_normal((h, w, 3)), 0, 1).astype(np.float32)


def _with(cfg: DegradationConfig, updates: dict[str, object]) -> DegradationConfig:
    """``cfg`` with some dotted fields (``"stage1.blur_prob"``) changed."""
    raw = cfg.model_dump()
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for p in parents:
            node = node[p]
        node[leaf] = value
    return DegradationConfig.model_validate(raw)


def _plain_with(updates: dict[str, object], scale: int = 4) -> DegradationConfig:
    """The all-off config with some steps switched on."""
    return _with(DegradationConfig.plain(scale), updates)


def _moments(k: np.ndarray) -> np.ndarray:
    """Covariance matrix of a kernel seen as a distribution over (x, y)."""
    ax = np.arange(k.shape[0]) - (k.shape[0] - 1) / 2
    xx, yy = np.meshgrid(ax, ax)
    return np.array([[(k * xx * xx).sum(), (k * xx * yy).sum()], [(k * xx * yy).sum(), (k * yy * yy).sum()]])


def test_output_shape_dtype_and_range():
    hr = _texture(64, 48)
    cfg = DegradationConfig()
    for seed in range(25):
        lr = degrade(hr, cfg, np.random.default_rng(seed))
        assert lr.shape == (16, 12, 3) and lr.dtype == np.float32
        assert lr.min() >= 0.0 and lr.max() <= 1.0
        np.testing.assert_allclose(lr * 255, np.round(lr * 255), atol=1e-3)  # quantised to 8 bits


def test_tiny_images_survive_strong_downsizing():
    hr = _texture(8, 8)
    for seed in range(30):
        assert degrade(hr, DegradationConfig(), np.random.default_rng(seed)).shape == (2, 2, 3)


def test_reproducible_for_a_seed_and_different_for_others():
    hr = _texture(64, 64)
    cfg = DegradationConfig()
    a = degrade(hr, cfg, np.random.default_rng(7))
    b = degrade(hr, cfg, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    others = [degrade(hr, cfg, np.random.default_rng(s)) for s in (8, 9, 10)]
    assert all(np.abs(a - o).mean() > 1e-3 for o in others)


@pytest.mark.parametrize("scale", [2, 4])
def test_everything_off_is_plain_downsampling(scale):
    hr = _texture(64, 48)
    down = bicubic_down(hr, scale)
    assert down.shape == (64 // scale, 48 // scale, 3)
    for seed in range(3):
        lr = degrade(hr, DegradationConfig.plain(scale), np.random.default_rng(seed))
        np.testing.assert_array_equal(lr, down)
        quantised = degrade(hr, DegradationConfig.plain(scale, quantize=True), np.random.default_rng(seed))
        np.testing.assert_allclose(quantised, down, atol=0.5 / 255 + 1e-6)


def test_bicubic_down_is_antialiased_bicubic_and_modcrops():
    hr = _texture(67, 70)
    down = bicubic_down(hr, 4)
    assert down.shape == (16, 17, 3)
    np.testing.assert_array_equal(down, bicubic_down(hr[:64, :68], 4))
    # PIL's BICUBIC resize antialiases (widens the kernel by the factor); compare on float planes.
    pil = np.stack(
        [np.asarray(Image.fromarray(hr[:64, :68, c], mode="F").resize((17, 16), Image.BICUBIC))
         for c in range(3)],
        axis=-1,
    )
    np.testing.assert_allclose(down, np.clip(pil, 0, 1), atol=1e-5)


@pytest.mark.parametrize(
    "updates",
    [
        {"stage1.blur_prob": 1.0},
        {"stage1.resize_prob": (1.0, 0.0, 0.0), "stage1.resize_modes": ("bilinear",)},
        {"stage1.noise_prob": 1.0},
        {"stage1.jpeg_prob": 1.0},
        {"stage2.blur_prob": 1.0},
        {"stage2.resize_prob": (0.0, 1.0, 0.0)},
        {"stage2.noise_prob": 1.0},
        {"stage2.jpeg_prob": 1.0},
        {"final_sinc_prob": 1.0, "final_sinc_size_range": (13, 13)},
        {"final_resize_modes": ("area",), "stage2.resize_modes": ("area",)},
    ],
)
def test_each_step_alone_changes_the_output(updates):
    hr = _texture(64, 64)
    plain = degrade(hr, DegradationConfig.plain(), np.random.default_rng(0))
    changed = [degrade(hr, _plain_with(updates), np.random.default_rng(s)) for s in range(4)]
    assert max(np.abs(c - plain).mean() for c in changed) > 2e-3


@pytest.mark.parametrize(
    "prob, ranges",
    [
        ("stage1.blur_prob", {"stage1.sigma_range": (2.5, 3.0), "stage1.sinc_prob": 1.0}),
        ("stage1.noise_prob", {"stage1.noise_range": (40.0, 50.0), "stage1.poisson_scale_range": (3.0, 4.0)}),
        ("stage1.jpeg_prob", {"stage1.jpeg_range": (5, 10)}),
        ("stage2.blur_prob", {"stage2.sigma_range": (2.5, 3.0)}),
        ("stage2.noise_prob", {"stage2.noise_range": (40.0, 50.0)}),
        ("stage2.jpeg_prob", {"stage2.jpeg_range": (5, 10)}),
        ("final_sinc_prob", {"final_sinc_size_range": (21, 21)}),
    ],
)
def test_a_switched_off_step_ignores_its_ranges(prob, ranges):
    hr = _texture(64, 64)
    off = _with(DegradationConfig(), {prob: 0.0})
    for seed in range(4):
        a = degrade(hr, off, np.random.default_rng(seed))
        b = degrade(hr, _with(off, ranges), np.random.default_rng(seed))
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", KERNEL_TYPES)
def test_random_kernels_are_normalised_odd_and_finite(kind):
    stage = StageConfig(kernel_types=(kind,), kernel_weights=(1.0,), sinc_prob=0.0)
    for seed in range(20):
        k = random_kernel(stage, np.random.default_rng(seed))
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and 7 <= k.shape[0] <= 21
        assert np.isfinite(k).all() and k.min() >= 0
        assert k.sum() == pytest.approx(1.0, abs=1e-9)


def test_sinc_kernel_sums_to_one_and_rings():
    k = sinc_kernel(15, math.pi / 3)
    assert k.sum() == pytest.approx(1.0, abs=1e-9)
    assert k.min() < 0  # negative lobes: the ringing it is there for
    np.testing.assert_allclose(k, k.T)
    stage = StageConfig(sinc_prob=1.0)
    for seed in range(10):
        assert random_kernel(stage, np.random.default_rng(seed)).sum() == pytest.approx(1.0, abs=1e-9)


def test_anisotropic_kernels_are_anisotropic_and_isotropic_ones_are_not():
    theta = math.pi / 6
    cov = _moments(bivariate_kernel(31, 3.0, 1.0, theta))
    evals, evecs = np.linalg.eigh(cov)
    assert evals[1] == pytest.approx(9.0, rel=0.05) and evals[0] == pytest.approx(1.0, rel=0.05)
    major = evecs[:, 1]
    assert abs(abs(math.atan2(major[1], major[0])) - theta) < 0.02 or abs(
        abs(math.atan2(-major[1], -major[0])) - theta) < 0.02
    iso_cov = _moments(bivariate_kernel(31, 2.0, 2.0, 0.7))
    np.testing.assert_allclose(iso_cov, 4.0 * np.eye(2), atol=0.05)

    def ratio(k: np.ndarray) -> float:
        e = np.linalg.eigvalsh(_moments(k))
        return float(e[1] / e[0])

    aniso = StageConfig(kernel_types=("aniso", "generalized_aniso", "plateau_aniso"),
                        kernel_weights=(1, 1, 1), sinc_prob=0.0)
    iso = StageConfig(kernel_types=("iso", "generalized_iso", "plateau_iso"),
                      kernel_weights=(1, 1, 1), sinc_prob=0.0)
    assert max(ratio(random_kernel(aniso, np.random.default_rng(s))) for s in range(20)) > 2.0
    assert all(ratio(random_kernel(iso, np.random.default_rng(s))) == pytest.approx(1.0) for s in range(20))


def test_kernel_shapes_differ_as_intended():
    gauss = bivariate_kernel(21, 2.0, 2.0, 0.0)
    np.testing.assert_allclose(bivariate_kernel(21, 2.0, 2.0, 0.0, "generalized", 1.0), gauss)
    flat_top = bivariate_kernel(21, 2.0, 2.0, 0.0, "generalized", 4.0)
    plateau = bivariate_kernel(21, 2.0, 2.0, 0.0, "plateau", 1.0)
    assert flat_top[10, 10] / flat_top[10, 11] < gauss[10, 10] / gauss[10, 11]  # flatter near the centre
    assert plateau[10, 20] / plateau[10, 10] > gauss[10, 20] / gauss[10, 10]  # heavier tails


def test_jpeg_stage_changes_the_image_more_at_low_quality():
    hr = _texture(64, 64)
    plain = degrade(hr, DegradationConfig.plain(), np.random.default_rng(0))

    def err(q: int) -> float:
        cfg = _plain_with({"stage2.jpeg_prob": 1.0, "stage2.jpeg_range": (q, q),
                           "final_jpeg_first_prob": 0.0})
        lr = degrade(hr, cfg, np.random.default_rng(0))
        np.testing.assert_allclose(lr * 255, np.round(lr * 255), atol=1e-4)  # decoded JPEG: 8-bit levels
        return float(np.abs(lr - plain).mean())

    assert err(10) > err(60) > err(100) > 0


@pytest.mark.parametrize("gray", [0.0, 1.0])
def test_gaussian_noise_has_the_configured_sigma(gray):
    hr = np.full((96, 96, 3), 0.5, dtype=np.float32)
    cfg = _plain_with({"stage1.noise_prob": 1.0, "stage1.gaussian_noise_prob": 1.0,
                       "stage1.noise_range": (10.0, 10.0), "stage1.gray_noise_prob": gray}, scale=1)
    noise = degrade(hr, cfg, np.random.default_rng(0)) - hr
    assert noise.std() == pytest.approx(10 / 255, rel=0.05)
    channel_spread = np.abs(noise - noise.mean(axis=2, keepdims=True)).max()
    assert (channel_spread < 1e-6) == (gray == 1.0)


def test_poisson_noise_follows_the_brightness():
    rng = np.random.default_rng(1)
    levels = np.concatenate([rng.integers(20, 31, (96, 48, 3)), rng.integers(140, 171, (96, 48, 3))], axis=1)
    hr = (levels / 255.0).astype(np.float32)  # 42 distinct levels: Real-ESRGAN's count scale is 64
    cfg = _plain_with({"stage1.noise_prob": 1.0, "stage1.gaussian_noise_prob": 0.0,
                       "stage1.poisson_scale_range": (0.5, 0.5), "stage1.gray_noise_prob": 0.0}, scale=1)
    noise = degrade(hr, cfg, np.random.default_rng(0)) - hr
    for half in (slice(0, 48), slice(48, 96)):
        expected = 0.5 * np.sqrt(hr[:, half].mean() / 64)  # strength * sqrt(lambda) / counts per unit
        assert noise[:, half].std() == pytest.approx(expected, rel=0.1)
        assert abs(noise[:, half].mean()) < 0.1 * expected


def test_config_validation_and_stage_defaults():
    with pytest.raises(ValidationError):
        DegradationConfig(blur=1.0)
    with pytest.raises(ValidationError):
        StageConfig(sigma_range=(3.0, 1.0))
    with pytest.raises(ValidationError):
        StageConfig(kernel_size_range=(6, 21))
    with pytest.raises(ValidationError):
        StageConfig(kernel_types=("iso",), kernel_weights=(0.5, 0.5))
    with pytest.raises(ValidationError):
        StageConfig(noise_prob=1.5)
    # A partial stage-2 section keeps stage 2's own defaults, not stage 1's.
    cfg = DegradationConfig.model_validate({"stage2": {"blur_prob": 0.5}})
    assert cfg.stage2.blur_prob == 0.5 and cfg.stage2.sigma_range == (0.2, 1.5)
    assert cfg.stage1.sigma_range == (0.2, 3.0)
    assert DegradationConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_degrade_rejects_sizes_that_are_not_multiples_of_the_scale():
    with pytest.raises(ValueError, match="multiple"):
        degrade(_texture(63, 64), DegradationConfig(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="HxWx3"):
        degrade(np.zeros((64, 64), np.float32), DegradationConfig(), np.random.default_rng(0))



def test_the_blur_step_is_the_kernel_applied_in_place():
    # A stage with a single possible kernel: the output must be that kernel convolved with the image (mirror
    # padding) at the same position, not shifted by part of the padding.
    from scipy.ndimage import convolve

    hr = _texture(40, 48)
    cfg = _plain_with({"stage1.blur_prob": 1.0, "stage1.sinc_prob": 0.0, "stage1.kernel_types": ("iso",),
                       "stage1.kernel_weights": (1.0,), "stage1.kernel_size_range": (21, 21),
                       "stage1.sigma_range": (2.0, 2.0)}, scale=1)
    kernel = bivariate_kernel(21, 2.0, 2.0, 0.0)
    expected = np.stack([convolve(hr[..., c].astype(np.float64), kernel, mode="mirror") for c in range(3)], -1)
    np.testing.assert_allclose(degrade(hr, cfg, np.random.default_rng(0)), np.clip(expected, 0, 1), atol=1e-5)
