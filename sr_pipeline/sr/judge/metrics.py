"""Full-reference image metrics as the super-resolution literature computes them.

PSNR and SSIM are taken on the Y channel of ITU-R BT.601 YCbCr (MATLAB ``rgb2ycbcr``) after
cropping ``crop_border`` pixels at each border, with SSIM's 11x11 Gaussian window (sigma 1.5) over
the valid region only -- the conventions of BasicSR's ``calculate_psnr``/``calculate_ssim`` and
pyiqa. Inputs are HxWx3 RGB arrays on the 0-255 scale (uint8, or float already on that scale).
LPIPS lives in :mod:`sr_pipeline.sr.judge.lpips_weights` because it needs network weights; the metric
registry (:mod:`sr_pipeline.sr.judge.scoring`) names all three for the tables and the gate.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5


def _as_rgb(img: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name} must be an HxWx3 RGB array, got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


def _checked_pair(sr: np.ndarray, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_rgb(sr, "sr"), _as_rgb(hr, "hr")
    if a.shape != b.shape:
        raise ValueError(f"image sizes differ: sr {a.shape} vs hr {b.shape}")
    return a, b


def _crop(img: np.ndarray, crop_border: int) -> np.ndarray:
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border == 0:
        return img
    if img.shape[0] <= 2 * crop_border or img.shape[1] <= 2 * crop_border:
        raise ValueError(f"image {img.shape[:2]} is too small to crop {crop_border} px at each border")
    return img[crop_border:-crop_border, crop_border:-crop_border, ...]


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y of YCbCr (range 16-235) from 0-255 RGB: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255.

    Not rounded, as in BasicSR; returns float64 HxW.
    """
    return 16.0 + _as_rgb(img, "img") @ _Y_WEIGHTS


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR (dB) of two same-shaped float arrays (inf when equal)."""
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop_border: int = 4) -> float:
    """PSNR (dB) on the Y channel, peak 255, after cropping ``crop_border`` px at each border."""
    a, b = _checked_pair(sr, hr)
    return psnr(_crop(rgb_to_y(a), crop_border), _crop(rgb_to_y(b), crop_border))


def _gaussian_1d(size: int = _SSIM_WINDOW, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    # Same as cv2.getGaussianKernel(11, 1.5); the 2-D window is its outer product.
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D correlation with the separable window, keeping only fully covered ('valid') positions."""
    out = correlate1d(correlate1d(img, kernel, axis=0, mode="constant"), kernel, axis=1, mode="constant")
    r = len(kernel) // 2
    return out[r:-r, r:-r]


def ssim_gray(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two single-channel float images on the 0-255 scale (valid region)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim_gray needs two equal 2-D arrays, got {a.shape} and {b.shape}")
    if min(a.shape) < _SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels, got {a.shape}")
    k = _gaussian_1d()
    mu_a, mu_b = _filter_valid(a, k), _filter_valid(b, k)
    var_a = _filter_valid(a * a, k) - mu_a * mu_a
    var_b = _filter_valid(b * b, k) - mu_b * mu_b
    cov = _filter_valid(a * b, k) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + _SSIM_C1) * (2.0 * cov + _SSIM_C2)
    den = (mu_a * mu_a + mu_b * mu_b + _SSIM_C1) * (var_a + var_b + _SSIM_C2)
    return float(np.mean(num / den))


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop_border: int = 4) -> float:
    """SSIM on the Y channel (Gaussian 11x11 window, sigma 1.5, K1 0.01, K2 0.03, L 255)."""
    a, b = _checked_pair(sr, hr)
    return ssim_gray(_crop(rgb_to_y(a), crop_border), _crop(rgb_to_y(b), crop_border))


def laplacian_energy(img: np.ndarray, crop_border: int = 4) -> float:
    """Mean squared 4-neighbour Laplacian of Y (0-255 scale): the image's high-frequency energy."""
    y = _crop(rgb_to_y(img), crop_border)
    lap = y[1:-1, :-2] + y[1:-1, 2:] + y[:-2, 1:-1] + y[2:, 1:-1] - 4.0 * y[1:-1, 1:-1]
    return float(np.mean(lap * lap))


def hf_ratio(sr: np.ndarray, hr: np.ndarray, crop_border: int = 4) -> float:
    """Laplacian energy of an output over that of its HR reference: above 1 the output carries more
    fine detail (edges, texture, noise) than the real scene, i.e. it over-sharpens or invents texture."""
    a, b = _checked_pair(sr, hr)
    ref = laplacian_energy(b, crop_border)
    return laplacian_energy(a, crop_border) / ref if ref > 0 else float("inf")

