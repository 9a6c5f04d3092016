"""Fit G's sensor-noise level to the field camera directly.

G's noise level is two log-scalars (read noise, shot gain) moved by Adam at ``camera_params_lr``: about
that much in log per step, so the demo's 200 co-learning steps can move a level at most ~1.5x, while a
grainy camera needs 5x its starting level. Measured on the demo's grey camera, the noise term was lowest
at 3-4x the level G had learned, and a 5x faster learning rate overshot. Ji et al. (NTIRE 2020) estimate
a camera's noise from the flat regions of its own images instead; this does the same with the noise
term's own statistic: every so often, the whole noise is scaled by the one factor that brings the
flat-region noise of G's LR closest to the field images' (``losses.noise_match``), a 1-D search on a
fixed calibration set. Scaling read noise by f and shot gain by f^2 scales the noise by f at every
signal level, so the camera's signal dependence and its noise correlation, learned by gradient between
fits, are kept. The structure, colour response and JPEG stage are not touched.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from sr_pipeline.sr.models.downsampler import LearnedDownsampler
from sr_pipeline.sr.models.differentiable_jpeg import jpeg_roundtrip
from sr_pipeline.sr.train.losses import flat_noise_sigma

# Candidate factors: e^-2.5 .. e^2.5 (0.08x .. 12x) in steps of e^0.25, then within e^0.25 of the best in steps of e^0.05
# (5 %), the best of those refined by a parabola: 32 evaluations of the term instead of a fine grid's 101.
_LOG_SPAN, _COARSE_STEP, _LOG_STEP = 2.5, 0.25, 0.05
# A fit that lowers the term by less than this share is not applied: where G's structure, not its noise, sets
# the flat-region statistic (a residual G on RealSR's Canon camera), the term hardly depends on the level and
# its minimum wanders from fit to fit (measured: 0.08x, 2.6x, 0.15x, 7.4x ... for gains of 0.1-1.6 %).
_MIN_GAIN = 0.05


class NoiseFit(NamedTuple):
    """The best factor for G's noise, the noise term before and at it (mean L1 between flat-region noise
    levels, in [-1, 1] units), and whether it was applied (it lowered the term by at least ``_MIN_GAIN``)."""

    factor: float
    term_before: float
    term_after: float
    applied: bool


def noise_term_by_factor(g: LearnedDownsampler, x_hr: torch.Tensor, target: torch.Tensor, eps: torch.Tensor,
                         log_factors: torch.Tensor, sigma: float) -> torch.Tensor:
    """The noise term of G's LR of ``x_hr`` with its noise scaled by each ``exp(log_factors)``, for one draw eps'.

    The noise is linear in its level, so G runs twice (with and without eps'), not once per factor:
    LR(f) = c + f n, then the camera's JPEG stage, if any."""
    noise = g(x_hr, eps, return_parts=True).noise
    base = g(x_hr, None)  # the structure after the colour response: what the noise is added to
    terms = []
    for a in log_factors.tolist():
        y = base + math.exp(a) * noise
        if g.jpeg is not None:
            y = jpeg_roundtrip(y, g.jpeg, (0, 0))
        terms.append((flat_noise_sigma(y, sigma) - target).abs().mean())
    return torch.stack(terms)


@torch.no_grad()
def fit_noise_level(g: LearnedDownsampler, x_hr: torch.Tensor, y_field: torch.Tensor, sigma: float = 1.0,
                    seed: int = 0) -> NoiseFit:
    """Scale G's noise (in place) by the factor that minimises the noise term between G's LR of the HR crops
    ``x_hr`` and the field crops ``y_field``, when that clearly lowers the term; the same ``seed`` gives the
    same eps' on every process."""
    if g.config.noise_model != "camera":
        raise ValueError("only a camera-model G (noise_model camera) has a noise level to fit")
    was_training = g.training
    g.eval()  # the JPEG grid at its corner: the search compares factors on identical LR
    try:
        gen = torch.Generator().manual_seed(seed)
        eps = torch.randn(g.lr_shape(x_hr), generator=gen).to(x_hr.device)
        target = flat_noise_sigma(y_field.float(), sigma)
        x_hr = x_hr.float()

        def term(log_factors: torch.Tensor) -> torch.Tensor:
            return noise_term_by_factor(g, x_hr, target, eps, log_factors, sigma).double().cpu()

        n = round(_LOG_SPAN / _COARSE_STEP)
        coarse = torch.arange(-n, n + 1, dtype=torch.float64) * _COARSE_STEP
        coarse_terms = term(coarse)
        before = float(coarse_terms[n])  # log factor 0: the level G has now
        m = round(_COARSE_STEP / _LOG_STEP)
        grid = float(coarse[int(torch.argmin(coarse_terms))]) + torch.arange(-m, m + 1, dtype=torch.float64) * _LOG_STEP
        terms = term(grid)
        best = int(torch.argmin(terms))
        log_f = float(grid[best])
        if 0 < best < 2 * m:  # the vertex of the parabola through the best point and its neighbours
            lo, mid, hi = (float(terms[best + d]) for d in (-1, 0, 1))
            curve = lo - 2 * mid + hi
            if curve > 0:
                log_f += _LOG_STEP * 0.5 * (lo - hi) / curve
        after = float(term(torch.tensor([log_f]))[0])
        if after > float(terms[best]):  # the parabola overshot a kink of the L1 term: keep the grid point
            log_f, after = float(grid[best]), float(terms[best])
        applied = after <= (1 - _MIN_GAIN) * before
        if applied:
            g.scale_noise(math.exp(log_f))
        return NoiseFit(math.exp(log_f), before, after, applied)
    finally:
        g.train(was_training)
