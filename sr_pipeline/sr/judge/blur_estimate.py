"""How much a camera blurs, from its LR images alone, without reading smooth scenes as blur.

Matching the high band of a camera's LR images to bicubic-down of unrelated HR references (the unpaired
statistic the camera model G learns from) cannot tell a blurrier camera from scenes with less fine detail.
This estimate reads the blur from the *shape* of the strongest edges instead of the amount of detail
(Zhuo and Sim, "Defocus map estimation from a single image", 2011): at a step edge of any contrast A blurred
by a Gaussian of sigma c, the gradient magnitude taken at derivative scale s peaks at
``A / sqrt(2 pi (c^2 + s^2))``, so the ratio of the peaks at two scales s1 < s2,
``sqrt((c^2 + s2^2) / (c^2 + s1^2))``, depends on the blur only. The ratio is taken at the edge points
(gradient maxima along the gradient, on an isolated step: the profile across rises monotonically for 4 LR
px each way) among the strongest tenth of each image, and the median over a
camera's images is turned into a blur by a calibration that runs the same statistic on synthetic
dead-leaves scenes (discs of scale-invariant sizes: sharp step edges at every scale) blurred by a Gaussian
of known sigma and bicubic-downsampled by ``scale``. The result is the sigma, in HR pixels, of the
Gaussian before bicubic downsampling that makes an ideally sharp scene look like these LR images.

Real HR references are not ideally sharp either. G blurs its HR references, so the blur it must add is
the camera's less the references' own: with ``references`` the estimate measures those too (bicubic-down
by ``scale``, the same statistic) and returns ``sqrt(camera^2 - references^2)`` (Gaussians add in
quadrature). The quantile (the median, against the quartiles) was chosen on RealSR's Canon camera, the
isolation test (4 LR px, 5 % slack) on synthetic scenes, the rest set beforehand; docs/camera_model.md and
docs/benchmarks.md give the measured errors on other cameras.
Edges read noise and in-camera sharpening as sharpness, so a noisy or sharpened camera reads less blurred.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

from sr_pipeline.sr.images.png_stream import LUMA

# Derivative scales (LR pixels) of the two gradient magnitudes, the share of each image's edge points kept
# (the strongest), the quantile of their ratios that stands for the camera, and the weakest gradient
# (0-255 levels per pixel) that counts as an edge: set beforehand, except QUANTILE, chosen on RealSR's Canon camera
# (among 0.25-0.75 before the isolation test was added, 0.5-0.9 after). ISOLATION (LR pixels each way) and PROFILE_SLACK: the isolation test of _isolated,
# set on synthetic scenes (smooth against detailed).
S1, S2 = 0.5, 1.0
EDGE_SHARE = 0.1
QUANTILE = 0.5
MIN_GRADIENT = 2.0
ISOLATION = 4
PROFILE_SLACK = 0.05
_BORDER = 4  # LR pixels ignored at each border (filters' edge effects)
_MIN_EDGES = 20
_SIGMA_STEP = 0.25  # calibration grid step, HR pixels
_BOOTSTRAP = 200


class BlurEstimate(NamedTuple):
    """A camera's blur as the sigma (HR pixels) of a Gaussian before bicubic downsampling by ``scale``.

    ``sigma`` is relative to the references when they were given (the blur G should add to them) and
    otherwise ``absolute`` (relative to an ideally sharp scene); ``low`` and ``high`` are the 10th and 90th
    percentiles of ``sigma`` over a bootstrap of the images (the spread from which scenes were seen).
    ``reference`` is the references' own absolute blur (None without references); ``edges`` and ``images``
    count the edge points and the LR images the estimate read. ``sigma`` is 0 where the LR images are at
    least as sharp as the references (or as an ideal scene); ``saturated`` says the absolute blur reached
    the calibration's largest sigma, so the camera may blur more than reported.
    """

    sigma: float
    low: float
    high: float
    absolute: float
    reference: float | None
    edges: int
    images: int
    saturated: bool


def luma(img: np.ndarray) -> np.ndarray:
    """An 8-bit (or 0-255 float) RGB or grey image as float64 luma on the 0-255 scale."""
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        if arr.shape[2] != 3:
            raise ValueError(f"expected an HxW or HxWx3 image, got shape {arr.shape}")
        arr = arr @ np.asarray(LUMA, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {arr.shape}")
    return arr


def edge_ratios(img: np.ndarray) -> np.ndarray:
    """The gradient ratio |grad|_S1 / |grad|_S2 at the strongest edge points of one LR image (1-D array).

    Edge points are maxima of the S2 gradient magnitude along its own direction, at least MIN_GRADIENT and
    among the strongest EDGE_SHARE of the image's maxima. A step edge gives 2 (no blur) down towards 1."""
    y = luma(img)
    if min(y.shape) <= 2 * _BORDER + 2:
        return np.empty(0)
    g1 = ndimage.gaussian_gradient_magnitude(y, S1)
    gy = ndimage.gaussian_filter(y, S2, order=(1, 0))
    gx = ndimage.gaussian_filter(y, S2, order=(0, 1))
    g2 = np.hypot(gx, gy)
    ang = np.arctan2(gy, gx)
    dy, dx = np.rint(np.sin(ang)).astype(int), np.rint(np.cos(ang)).astype(int)
    h, w = y.shape
    yy, xx = np.mgrid[0:h, 0:w]
    inner = np.zeros((h, w), bool)
    inner[_BORDER:-_BORDER, _BORDER:-_BORDER] = True
    ahead = g2[np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1)]
    behind = g2[np.clip(yy - dy, 0, h - 1), np.clip(xx - dx, 0, w - 1)]
    peak = inner & (g2 >= ahead) & (g2 >= behind) & (g2 >= MIN_GRADIENT)
    if not peak.any():
        return np.empty(0)
    peak &= _isolated(y, peak, gy / np.maximum(g2, 1e-12), gx / np.maximum(g2, 1e-12))
    if not peak.any():
        return np.empty(0)
    strong = peak & (g2 >= np.quantile(g2[peak], 1.0 - EDGE_SHARE))
    return g1[strong] / g2[strong]


def _isolated(y: np.ndarray, points: np.ndarray, ny: np.ndarray, nx: np.ndarray) -> np.ndarray:
    """Which of ``points`` lie on an isolated step: the profile across the edge (ISOLATION LR pixels each way,
    along the gradient direction) rises monotonically, up to PROFILE_SLACK of its total rise. A neighbouring
    edge within reach would lower the gradient at the larger scale and read as sharpness."""
    idx = np.nonzero(points)
    t = np.arange(-ISOLATION, ISOLATION + 1, dtype=np.float64)
    cy = idx[0][:, None] + t[None] * ny[idx][:, None]
    cx = idx[1][:, None] + t[None] * nx[idx][:, None]
    prof = ndimage.map_coordinates(y, [cy.ravel(), cx.ravel()], order=1, mode="nearest").reshape(cy.shape)
    rise = prof[:, -1] - prof[:, 0]
    steps = np.diff(prof, axis=1)
    ok = (rise > 0) & (steps.min(axis=1) >= -PROFILE_SLACK * rise)
    out = np.zeros_like(points)
    out[idx] = ok
    return out


def dead_leaves(size: int, rng: np.random.Generator, r_min: float = 2.0, r_max: float = 200.0,
                discs: int = 4000) -> np.ndarray:
    """A grey dead-leaves scene (``size`` x ``size``, 0-255 float): opaque discs of random grey levels whose
    radii follow the scale-invariant r^-3 law between ``r_min`` and ``r_max``. Its edges are ideal steps."""
    img = np.full((size, size), 128.0)
    a, b = r_min ** -2, r_max ** -2
    for _ in range(discs):
        r = (a - rng.random() * (a - b)) ** -0.5
        cy, cx = rng.random(2) * size
        y0, y1 = int(max(0, cy - r)), int(min(size, cy + r + 1))
        x0, x1 = int(max(0, cx - r)), int(min(size, cx + r + 1))
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        img[y0:y1, x0:x1][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 25.0 + 200.0 * rng.random()
    return img


def blur_down(hr: np.ndarray, sigma: float, scale: int) -> np.ndarray:
    """Gaussian blur of ``sigma`` HR pixels, then antialiased bicubic downsampling by ``scale`` (PIL, as the
    project's bicubic-down), on a luma image; returns float64 luma."""
    y = luma(hr)
    if sigma > 0:
        y = ndimage.gaussian_filter(y, sigma, mode="reflect")
    h, w = y.shape[0] // scale, y.shape[1] // scale
    out = Image.fromarray(y.astype(np.float32)).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(out, dtype=np.float64)


@functools.lru_cache(maxsize=8)
def calibration(scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(sigmas in HR pixels, the statistic at each): dead-leaves scenes blurred and downsampled by ``scale``.

    The statistic falls as sigma grows; it is made non-increasing so that it can be inverted."""
    rng = np.random.default_rng(0)
    scenes = [dead_leaves(128 * scale, rng) for _ in range(4)]
    sigmas = np.arange(0.0, 1.5 * scale + 1e-9, _SIGMA_STEP)
    stats = np.array([np.quantile(np.concatenate([edge_ratios(blur_down(s, sigma, scale)) for s in scenes]), QUANTILE)
                      for sigma in sigmas])
    return sigmas, np.minimum.accumulate(stats)


def sigma_of_statistic(value: float, scale: int) -> float:
    """The calibration's sigma (HR pixels) for a statistic value, clipped to the calibrated range."""
    sigmas, stats = calibration(scale)
    return float(np.interp(-value, -stats, sigmas))  # np.interp needs increasing abscissae


def _per_image(images: Iterable[np.ndarray]) -> list[np.ndarray]:
    return [edge_ratios(im) for im in images]


def _absolute(ratios: Sequence[np.ndarray], scale: int) -> float:
    pooled = np.concatenate(ratios)
    return sigma_of_statistic(float(np.quantile(pooled, QUANTILE)), scale)


def _relative(camera: float, reference: float | None) -> float:
    if reference is None:
        return camera
    return float(np.sqrt(max(camera * camera - reference * reference, 0.0)))


def _counted(ratios: list[np.ndarray], what: str) -> int:
    edges = int(sum(r.size for r in ratios))
    if edges < _MIN_EDGES:
        raise ValueError(f"{what} hold {edges} edge points; at least {_MIN_EDGES} are needed to read a blur "
                         "(the images are too small or too flat)")
    return edges


def estimate_blur_sigma(lr_images: Iterable[np.ndarray], scale: int,
                        references: Iterable[np.ndarray] | None = None, seed: int = 0) -> BlurEstimate:
    """Estimate a camera's blur from its LR images (uint8 or 0-255 float, RGB or grey) at SR factor ``scale``.

    Without ``references`` the sigma is absolute (an ideally sharp scene blurred by it and bicubic-downsampled
    by ``scale`` has the LR images' edges); with ``references`` (HR images, e.g. the camera model's training
    references) it is the blur to add to them: ``sqrt(camera^2 - references^2)``, each measured the same way
    (the references after bicubic-down by ``scale``). The spread is a bootstrap over the images (and the
    references), ``seed`` fixing its draws. Raises ValueError when the images hold too few edges."""
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    cam = _per_image(lr_images)
    if not cam:
        raise ValueError("no LR images given")
    edges = _counted(cam, "the LR images")
    ref = None
    if references is not None:
        ref = _per_image(blur_down(r, 0.0, scale) for r in references)
        if not ref:
            raise ValueError("references were given but hold no image")
        _counted(ref, "the references")
    absolute = _absolute(cam, scale)
    reference = _absolute(ref, scale) if ref is not None else None
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(_BOOTSTRAP):
        c = _absolute([cam[i] for i in rng.integers(0, len(cam), len(cam))], scale)
        r = _absolute([ref[i] for i in rng.integers(0, len(ref), len(ref))], scale) if ref is not None else None
        draws.append(_relative(c, r))
    low, high = np.quantile(draws, [0.1, 0.9])
    top = float(calibration(scale)[0][-1])
    return BlurEstimate(sigma=_relative(absolute, reference), low=float(low), high=float(high), absolute=absolute,
                        reference=reference, edges=edges, images=len(cam), saturated=absolute >= top)
