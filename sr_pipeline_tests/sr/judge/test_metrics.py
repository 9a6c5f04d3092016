"""PSNR-Y, SSIM-Y and the Y conversion against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sr_pipeline.sr.judge.metrics import psnr_y, rgb_to_y, ssim_gray, ssim_y

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def gray(value: int, size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def textured(seed: int, size: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_y_of_primaries_and_extremes() -> None:
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    y = rgb_to_y(img)
    assert y.dtype == np.float64 and y.shape == (1, 5)
    np.testing.assert_allclose(y[0], [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-9)
    # Not rounded, and floats on the 0-255 scale are accepted as well.
    np.testing.assert_allclose(rgb_to_y(np.array([[[1.0, 1.0, 1.0]]])), [[16 + 219 / 255]])


def test_identical_images_give_infinite_psnr_and_unit_ssim() -> None:
    img = textured(0)
    assert psnr_y(img, img) == math.inf
    assert psnr_y(img, img, crop_border=0) == math.inf
    assert ssim_y(img, img) == pytest.approx(1.0, abs=1e-12)


def test_psnr_of_a_known_mse() -> None:
    # A uniform grey offset of 10 moves Y by 10 * 219 / 255 everywhere.
    dy = 10 * 219 / 255
    assert psnr_y(gray(110), gray(100), crop_border=4) == pytest.approx(10 * math.log10(255**2 / dy**2), abs=1e-9)
    # The LR realism convention: the whole image (no border cropped).
    assert psnr_y(gray(105), gray(100), crop_border=0) == pytest.approx(10 * math.log10(255**2 / (dy / 2) ** 2), abs=1e-9)


def test_border_crop_excludes_the_border() -> None:
    hr = gray(100)
    sr = hr.copy()
    sr[:4] = 255  # damage only the 4-pixel top border
    assert psnr_y(sr, hr, crop_border=4) == math.inf
    assert psnr_y(sr, hr, crop_border=3) < 30
    sr[10, 10] = [110, 110, 110]  # one interior pixel: MSE = dy^2 / 24^2 after the 4-px crop
    dy = 10 * 219 / 255
    assert psnr_y(sr, hr, crop_border=4) == pytest.approx(10 * math.log10(255**2 * 24 * 24 / dy**2), abs=1e-9)


def test_ssim_of_constant_images_by_hand() -> None:
    # Constant images: no variance or covariance, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1).
    a, b = 16 + 100 * 219 / 255, 16 + 140 * 219 / 255
    expected = (2 * a * b + C1) / (a * a + b * b + C1)
    assert ssim_y(gray(100), gray(140), crop_border=4) == pytest.approx(expected, rel=1e-12)
    assert ssim_gray(np.full((20, 20), 50.0), np.full((20, 20), 80.0)) == pytest.approx(
        (2 * 50 * 80 + C1) / (50**2 + 80**2 + C1), rel=1e-12)


def _ssim_direct(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM by the definition: an explicit loop over every fully covered 11x11 Gaussian window."""
    x = np.arange(11) - 5.0
    g = np.exp(-(x * x) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append((2 * ma * mb + C1) * (2 * cov + C2) / ((ma**2 + mb**2 + C1) * (va + vb + C2)))
    return float(np.mean(vals))


def test_ssim_matches_the_direct_formula_and_skimage() -> None:
    hr = textured(1, 24)
    sr = np.clip(hr.astype(int) + np.random.default_rng(2).integers(-40, 41, hr.shape), 0, 255).astype(np.uint8)
    ya, yb = rgb_to_y(sr)[2:-2, 2:-2], rgb_to_y(hr)[2:-2, 2:-2]
    value = ssim_y(sr, hr, crop_border=2)
    assert value == pytest.approx(_ssim_direct(ya, yb), abs=1e-10)
    assert 0.0 < value < 1.0

    from skimage.metrics import structural_similarity

    ref = structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=255)
    assert value == pytest.approx(ref, abs=1e-10)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="sizes differ"):
        psnr_y(gray(1, 32), gray(1, 36))
    with pytest.raises(ValueError, match="HxWx3"):
        psnr_y(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="too small"):
        ssim_y(gray(1, 8), gray(1, 8), crop_border=4)

