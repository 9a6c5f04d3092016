"""Learned-degradation LR sets: K variants per HR image from G, and how field-like and diverse they are.

For each HR reference the downsampler G makes K LR images from K noise seeds. Each LR image is
summarised by a few no-reference statistics a camera leaves in its images -- noise level (MAD of
the finest Haar diagonal band per RGB channel, Donoho's estimator), sharpness (log variance of the Laplacian, mean
gradient), colour (mean RGB, saturation) and frequency content (slope of the radially averaged power
spectrum, share of energy above a quarter of the sampling rate). The realism distance of a set to
the field LR pool is, per statistic, the 1-D Wasserstein distance between the two sets' values in
units of the field pool's spread. Its ``total`` averages the degradation statistics (noise,
sharpness, frequency content); the colour statistics are averaged apart as ``colour``, because colour
is as much the scene as the camera and a grey inspection camera's pool has no colour spread to
measure against. It is computed for G's LR and for plain bicubic LR of the same HR images, so the two
can be compared. Diversity is the mean pairwise L1 distance between the K variants of one HR image.
Pure numpy/torch; no Dagster.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from sr_pipeline.sr.models.downsampler import LearnedDownsampler
from sr_pipeline.sr.images.tensors import LUMA, downsample, to_tensor, to_uint8

DEGRADATION_STATISTICS = ("noise_sigma", "log_laplacian_var", "gradient_mean", "spectrum_slope", "hf_ratio")
COLOUR_STATISTICS = ("mean_r", "mean_g", "mean_b", "saturation")
STATISTICS = DEGRADATION_STATISTICS + COLOUR_STATISTICS
COLOUR_FLOOR = 0.01


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """The image cropped at its bottom and right to sides that are multiples of ``scale``."""
    h, w = img.shape[0] // scale * scale, img.shape[1] // scale * scale
    if h == 0 or w == 0:
        raise ValueError(f"image {img.shape[:2]} is smaller than the scale {scale}")
    return img[:h, :w]


@torch.no_grad()
def generate_variants(model: LearnedDownsampler, hr: np.ndarray, seeds: Sequence[int],
                      device: str | torch.device = "cpu") -> list[np.ndarray]:
    """One uint8 LR image per seed: G(x, eps'_seed) of the HR image (cropped to a multiple of the scale)."""
    x = to_tensor(modcrop(hr, model.config.scale)).to(device)
    out = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(model.lr_shape(x), generator=gen).to(device)
        out.append(to_uint8(model(x, noise)))
    return out


@torch.no_grad()
def bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """down(x) as uint8: the LR an untrained G would make."""
    return to_uint8(downsample(to_tensor(modcrop(hr, scale)), scale))


# ---- per-image statistics --------------------------------------------------------------------------

def _luma(img: np.ndarray) -> np.ndarray:
    # float64: the statistics below take medians and spectra of small differences
    return np.asarray(img, dtype=np.float64) @ LUMA.astype(np.float64)


def noise_sigma(gray: np.ndarray) -> float:
    """Noise standard deviation of one channel (0-255 scale): median |HH| / 0.6745 on the finest Haar diagonal band."""
    h, w = gray.shape[0] // 2 * 2, gray.shape[1] // 2 * 2
    g = gray[:h, :w]
    hh = (g[0::2, 0::2] - g[0::2, 1::2] - g[1::2, 0::2] + g[1::2, 1::2]) / 2.0
    return float(np.median(np.abs(hh)) / 0.6745)


def _spectrum_stats(gray: np.ndarray, bins: int = 24) -> tuple[float, float]:
    """(slope of log power vs log frequency, energy share above 0.25 cycles/pixel), DC excluded."""
    h, w = gray.shape
    win = np.outer(np.hanning(h), np.hanning(w)) if min(h, w) > 2 else np.ones((h, w))
    power = np.abs(np.fft.fft2((gray - gray.mean()) * win)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    keep = (f > 0) & (f <= 0.5)
    total = power[keep].sum()
    hf = float(power[keep & (f > 0.25)].sum() / total) if total > 0 else 0.0
    edges = np.linspace(0, 0.5, bins + 1)
    idx = np.digitize(f[keep], edges) - 1
    sums = np.bincount(idx, weights=power[keep], minlength=bins)[:bins]
    counts = np.bincount(idx, minlength=bins)[:bins]
    centres = 0.5 * (edges[:-1] + edges[1:])
    ok = (counts > 0) & (sums > 0) & (centres >= 2.0 / min(h, w))
    if ok.sum() < 2:
        return 0.0, hf
    slope = np.polyfit(np.log(centres[ok]), np.log(sums[ok] / counts[ok]), 1)[0]
    return float(slope), hf


def image_stats(img: np.ndarray) -> dict[str, float]:
    """The statistics of one uint8 HxWx3 image (see the module docstring)."""
    rgb = np.asarray(img, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 4:
        raise ValueError(f"expected an HxWx3 image of at least 4x4 pixels, got {rgb.shape}")
    gray = _luma(rgb)
    lap = (gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1])
    gy, gx = np.diff(gray, axis=0)[:, :-1], np.diff(gray, axis=1)[:-1, :]
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-9), 0.0)
    slope, hf = _spectrum_stats(gray)
    means = rgb.reshape(-1, 3).mean(axis=0) / 255.0
    return {
        "noise_sigma": float(np.mean([noise_sigma(rgb[..., c]) for c in range(3)])),
        "log_laplacian_var": float(np.log10(1.0 + lap.var())),
        "gradient_mean": float(np.hypot(gx, gy).mean()),
        "mean_r": float(means[0]), "mean_g": float(means[1]), "mean_b": float(means[2]),
        "saturation": float(sat.mean()),
        "spectrum_slope": slope,
        "hf_ratio": hf,
    }


def set_stats(images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Each statistic over a set of images, as one array per statistic."""
    rows = [image_stats(im) for im in images]
    return {k: np.array([r[k] for r in rows]) for k in STATISTICS}


def summarise(stats: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in stats.items()}


def realism_distance(candidate: dict[str, np.ndarray], field_pool: dict[str, np.ndarray]) -> dict[str, float]:
    """Per statistic, Wasserstein-1 between the sets in units of the field pool's spread; ``total`` is the
    mean over the degradation statistics, ``colour`` over the colour statistics.

    0 means the candidate set is statistically indistinguishable from the field pool on these statistics.
    """
    out: dict[str, float] = {}
    for k in STATISTICS:
        ref = field_pool[k]
        spread = float(np.std(ref)) + 1e-3 * (abs(float(np.mean(ref))) + 1e-3)
        if k in COLOUR_STATISTICS:  # 0-1 units; a grey pool has no colour spread: 1 % is the finest step that counts
            spread = max(spread, COLOUR_FLOOR)
        out[k] = float(wasserstein_distance(candidate[k], ref) / spread)
    out["total"] = float(np.mean([out[k] for k in DEGRADATION_STATISTICS]))
    out["colour"] = float(np.mean([out[k] for k in COLOUR_STATISTICS]))
    return out


def diversity(variants: Sequence[np.ndarray]) -> float:
    """Mean pairwise L1 distance (0-1 scale) between the LR variants of one HR image; 0 for one variant."""
    pairs = list(itertools.combinations(range(len(variants)), 2))
    if not pairs:
        return 0.0
    vs = [np.asarray(v, dtype=np.float64) / 255.0 for v in variants]
    return float(np.mean([np.abs(vs[i] - vs[j]).mean() for i, j in pairs]))


# ---- preview ----------------------------------------------------------------------------------------

def _centre_crop(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    side = min(side, h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return img[top: top + side, left: left + side]


def preview_grid(hr_images: Sequence[np.ndarray], bicubic: Sequence[np.ndarray],
                 variants: Sequence[Sequence[np.ndarray]], scale: int, *, max_rows: int = 4,
                 lr_crop: int = 48, cell: int = 144) -> bytes:
    """PNG bytes: one row per HR image (at most ``max_rows``) with the centre crop of the HR image,
    its bicubic LR and each learned LR variant, LR crops shown with nearest-neighbour zoom."""
    from sr_pipeline.sr.images.figures import grid_png

    rows = min(max_rows, len(hr_images))
    k = max((len(v) for v in variants[:rows]), default=0)
    grid = []
    for r in range(rows):
        lr_side = min(lr_crop, *bicubic[r].shape[:2])
        grid.append([_centre_crop(hr_images[r], lr_side * scale)]
                    + [_centre_crop(lr, lr_side) for lr in [bicubic[r], *variants[r]]])
    return grid_png(grid, cell=cell, labels=["HR", "bicubic"] + [f"G seed {j}" for j in range(k)],
                    resample=["bicubic"] + ["nearest"] * (k + 1))


# ---- the whole set ------------------------------------------------------------------------------------

@dataclass
class LRSets:
    """K learned LR variants per HR image with their bicubic counterparts and the set's quality figures."""

    variants: list[list[np.ndarray]]
    seeds: list[list[int]]
    bicubic: list[np.ndarray]
    diversity: float
    realism_learned: dict[str, float]
    realism_bicubic: dict[str, float]
    stats: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def learned_closer_than_bicubic(self) -> bool:
        return self.realism_learned["total"] < self.realism_bicubic["total"]

    def summary(self) -> dict:
        """JSON-ready figures (no images) for metadata and reports."""
        return {
            "num_hr": len(self.variants),
            "variants_per_hr": len(self.variants[0]) if self.variants else 0,
            "diversity_l1": self.diversity,
            "realism_distance_learned": self.realism_learned,
            "realism_distance_bicubic": self.realism_bicubic,
            "learned_closer_than_bicubic": self.learned_closer_than_bicubic,
            "mean_stats": self.stats,
        }


def build_lr_sets(model: LearnedDownsampler, hr_images: Sequence[np.ndarray],
                  field_lr_images: Sequence[np.ndarray], k: int = 4, seed: int = 0,
                  device: str | torch.device = "cpu") -> LRSets:
    """K variants of every HR image (seeds ``seed + 1000 i + j``), bicubic LR, realism and diversity."""
    if k < 1:
        raise ValueError("k must be >= 1")
    if not hr_images or not field_lr_images:
        raise ValueError("need at least one HR image and one field LR image")
    model = model.to(device).eval()
    scale = model.config.scale
    seeds = [[seed + 1000 * i + j for j in range(k)] for i in range(len(hr_images))]
    variants = [generate_variants(model, hr, s, device) for hr, s in zip(hr_images, seeds)]
    bicubic = [bicubic_lr(hr, scale) for hr in hr_images]
    learned_stats = set_stats([v for vs in variants for v in vs])
    bicubic_stats = set_stats(bicubic)
    field_stats = set_stats(field_lr_images)
    return LRSets(
        variants=variants, seeds=seeds, bicubic=bicubic,
        diversity=float(np.mean([diversity(vs) for vs in variants])),
        realism_learned=realism_distance(learned_stats, field_stats),
        realism_bicubic=realism_distance(bicubic_stats, field_stats),
        stats={"learned": summarise(learned_stats), "bicubic": summarise(bicubic_stats),
               "field": summarise(field_stats)},
    )
