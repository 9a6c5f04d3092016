"""Pin the camera model G with a few registered pairs of its field camera (HR and real LR of one scene).

Unpaired matching of G(HR references) against the field pool cannot tell a blurrier camera from a pool
of smoother scenes; a registered pair can, because both sides show the same scene. The paired term
compares G's LR of a pair's HR crop with the pair's real LR crop:

- the low band (``lowpass`` at ``struct_sigma``): geometry, intensity and colour response;
- the high band of G's LR at eps' = 0: the blur. The camera's noise is zero-mean, so the deterministic
  LR that best matches the real one carries the camera's blur and no grain;
- the flat-region noise level (``losses.flat_noise_sigma``) of G's noisy LR against the real LR's, on
  the same crops, so flat regions are the same regions on both sides; it trains only G's noise part.

``prefit_downsampler`` runs the term alone for a few hundred steps before co-learning (a pinned start);
co-learning then keeps it with the profile's ``paired`` weight beside the unpaired terms, and by default holds
G's blur where the pre-fit left it (``paired_fit.blur_lr_scale``): left free, the unpaired terms sharpened it
past the camera's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from sr_pipeline.sr.models.downsampler import LearnedDownsampler
from sr_pipeline.sr.train.losses import flat_noise_sigma, l1, lowpass
from sr_pipeline.sr.judge.metrics import laplacian_energy

FitPair = tuple[np.ndarray, np.ndarray]  # (HR uint8 HxWx3, its registered LR uint8 (H/s)x(W/s)x3)


def check_fit_pairs(pairs: Sequence[FitPair], scale: int, names: Sequence[str] | None = None) -> list[FitPair]:
    """The pairs with each HR cropped to exactly ``scale`` times its LR; ValueError, naming the pair (by
    ``names``, else its position from 1), when a pair does not fit."""
    out = []
    for i, (hr, lr) in enumerate(pairs):
        name = names[i] if names is not None and i < len(names) else f"#{i + 1}"
        for side in (hr, lr):
            if side.dtype != np.uint8 or side.ndim != 3 or side.shape[2] != 3:
                raise ValueError(f"fit pair {name}: expected uint8 HxWx3 images, got {side.dtype} {side.shape}")
        h, w = lr.shape[:2]
        if hr.shape[0] < h * scale or hr.shape[1] < w * scale or hr.shape[0] >= (h + 1) * scale \
                or hr.shape[1] >= (w + 1) * scale:
            raise ValueError(f"fit pair {name}: HR {hr.shape[1]}x{hr.shape[0]} is not x{scale} its LR {w}x{h}")
        out.append((np.ascontiguousarray(hr[: h * scale, : w * scale]), lr))
    if not out:
        raise ValueError("no fit pairs")
    return out


class Registration(NamedTuple):
    """How a fit pair's real LR lines up with its HR shrunk by plain bicubic (luma, both smoothed by 1 LR pixel):
    ``offset`` (dy, dx) is where the real LR's content sits relative to the HR's, in whole LR pixels, at the best
    match (``(0, 0)`` for a registered pair), ``correlation`` the Pearson correlation aligned and
    ``best_correlation`` at ``offset``; ``unjudged`` says why a pair was not judged (too small, too flat), else None."""

    offset: tuple[int, int]
    correlation: float
    best_correlation: float
    unjudged: str | None = None


REGISTRATION_SEARCH = 3  # LR pixels searched each way
_REGISTRATION_SIDE = 512  # at most this many LR pixels each way are compared (a larger pair on its centre)
_MIN_JUDGED_SIDE = 24  # LR pixels each way the compared window needs: a smaller one matches moved by chance
_MIN_DETAIL_LEVELS = 2.0  # 8-bit levels of (smoothed) luma spread: a flatter pair shows nothing to line up


def registration(hr: np.ndarray, lr: np.ndarray, scale: int, search: int = REGISTRATION_SEARCH) -> Registration:
    """:class:`Registration` of one pair (HR exactly ``scale`` times its LR, as :func:`check_fit_pairs` leaves it):
    a pair of another scene, or one offset by a pixel or more, would teach G a blur the camera does not have."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    from sr_pipeline.sr.judge.blur_estimate import luma

    h, w = lr.shape[:2]
    nan = float("nan")
    side_h, side_w = min(_REGISTRATION_SIDE, h - 2 * search), min(_REGISTRATION_SIDE, w - 2 * search)
    if min(side_h, side_w) < _MIN_JUDGED_SIDE:
        return Registration((0, 0), nan, nan, f"too small to check (LR {w}x{h} pixels)")
    # smoothed by 1 LR pixel on both sides: a grainy camera's noise would otherwise read as a different scene
    down = gaussian_filter(luma(np.asarray(Image.fromarray(hr).resize((w, h), Image.Resampling.BICUBIC))), 1.0)
    real = gaussian_filter(luma(lr), 1.0)
    top, left = (h - side_h) // 2, (w - side_w) // 2
    ref = down[top: top + side_h, left: left + side_w]
    if min(ref.std(), real[top: top + side_h, left: left + side_w].std()) < _MIN_DETAIL_LEVELS:
        return Registration((0, 0), nan, nan, "too flat to check (no detail to line up)")
    ref = (ref - ref.mean()) / ref.std()
    scores = {}
    for dy in range(-search, search + 1):
        for dx in range(-search, search + 1):
            moved = real[top + dy: top + dy + side_h, left + dx: left + dx + side_w]
            scores[dy, dx] = float(np.mean(ref * (moved - moved.mean()) / (moved.std() + 1e-9)))
    best = max(scores, key=lambda k: (scores[k], k == (0, 0)))  # a tie keeps no offset
    return Registration(best, scores[0, 0], scores[best])


# Registered pairs (RealSR's 100 and City100's 10 real ones, the demo's 24) correlate with their bicubic-shrunk HR at
# 0.94 or more, aligned; each of them offset by 1 or 2 LR pixels matched best at that offset, by 0.02 or more
# (docs/benchmarks.md). A pair below FOREIGN_CORRELATION at its best match shows another scene; an offset counts
# only when it matches better than the aligned pair by OFFSET_GAIN (a tie is chance, not an offset).
FOREIGN_CORRELATION = 0.5
OFFSET_GAIN = 0.01


class FitPairCheck(NamedTuple):
    """What the registration check found in a camera's fit pairs, by name and in words: ``foreign`` (another scene:
    left out of G's fit), ``offset`` (kept, and named) and ``unchecked`` (too small or too flat to judge)."""

    foreign: dict[str, str]
    offset: dict[str, str]
    unchecked: dict[str, str]


def _where(offset: tuple[int, int]) -> str:
    dy, dx = offset
    parts = [f"{abs(dx)} LR pixel(s) {'right' if dx > 0 else 'left'}" if dx else "",
             f"{abs(dy)} LR pixel(s) {'down' if dy > 0 else 'up'}" if dy else ""]
    return " and ".join(p for p in parts if p)


def check_fit_pair_registration(pairs: Sequence[FitPair], scale: int, names: Sequence[str]) -> FitPairCheck:
    """:func:`registration` of each fit pair (one name per pair), sorted into a :class:`FitPairCheck`."""
    if len(names) != len(pairs):
        raise ValueError(f"{len(pairs)} fit pairs but {len(names)} names")
    foreign, offset, unchecked = {}, {}, {}
    for name, (hr, lr) in zip(names, check_fit_pairs(pairs, scale, names)):
        r = registration(hr, lr, scale)
        if r.unjudged:
            unchecked[name] = r.unjudged
        elif r.best_correlation < FOREIGN_CORRELATION:
            foreign[name] = (f"its LR correlates with its HR at {r.best_correlation:.2f} at best (registered pairs of "
                             "real cameras: 0.94 or more)")
        elif r.offset != (0, 0) and r.best_correlation - r.correlation >= OFFSET_GAIN:
            offset[name] = (f"its LR's content sits {_where(r.offset)} from its HR's (correlation "
                            f"{r.best_correlation:.3f} there against {r.correlation:.3f} aligned)")
    return FitPairCheck(foreign, offset, unchecked)


def registration_warning(found: FitPairCheck, kept: int) -> str | None:
    """One sentence on the fit pairs the check left out or named, and how many G is fitted on (None with none)."""
    said = []
    if found.foreign:
        said.append(f"{len(found.foreign)} fit pair(s) left out of G's fit, their LR another scene than their HR ("
                    + "; ".join(f"{n}: {why}" for n, why in found.foreign.items())
                    + "): check that HR and LR are the same shot")
    if found.offset:
        said.append(f"{len(found.offset)} fit pair(s) not registered with their HR, fitted on as declared ("
                    + "; ".join(f"{n}: {why}" for n, why in found.offset.items())
                    + "): register them again, since an offset pair teaches G a blur the camera does not have")
    if not said:
        return None
    if found.foreign:
        said.append(f"G is fitted on {kept} fit pair(s)" if kept else "no fit pair is left: G learns from unpaired "
                    "images alone, and the gate's unpaired twin is the same run")
    return "; ".join(said)


def few_pairs_warning(count: int, advised: int) -> str | None:
    """The warning for a camera that declares fewer fit pairs than ``advised`` (None with none or enough)."""
    if not 0 < count < advised:
        return None
    return (f"only {count} fit pair(s), fewer than the {advised} advised: a pre-fit on so few scenes was right for "
            "some cameras and wrong for others (docs/benchmarks.md), so G's blur and colour are held after it or left "
            "free as paired_fit.few_pairs_hold decides (by default: held where the pre-fitted G is clearly closer "
            "than bicubic-down to the real LR of the camera's gate pairs); the Dagster asset also trains the unpaired "
            "twin, and the promotion gate serves the twin when it scores better than the student with pairs")


PSNR_CAP = 60.0  # dB: an LR matched to the level (a flat or clipped pair) counts as this, never as infinity
REALISM_WINDOW = 1024  # LR pixels: the centre of a larger check pair is enough to compare two camera models


class PrefitRealism(NamedTuple):
    """How close the pre-fitted G and bicubic-down come to the real LR of pairs G was not fitted on (mean PSNR-Y,
    whole LR window, no border cropped, as the benchmarks measure a camera model)."""

    g_psnr: float
    bicubic_psnr: float
    pairs: int

    @property
    def margin(self) -> float:
        return self.g_psnr - self.bicubic_psnr


@torch.no_grad()
def prefit_realism(g: LearnedDownsampler, pairs: Sequence[FitPair], scale: int) -> PrefitRealism | None:
    """:class:`PrefitRealism` of ``g`` (noise-free, through its JPEG stage as the camera stores its LR) on the
    exact x``scale`` pairs among ``pairs``; None when none is."""
    from sr_pipeline.sr.images.tensors import downsample, to_tensor, to_uint8
    from sr_pipeline.sr.judge.metrics import psnr_y

    was_training = g.training
    g.eval()
    device = next(g.parameters()).device
    learned, bicubic = [], []
    try:
        for hr, lr in pairs:
            if hr.shape[0] % scale or hr.shape[1] % scale or lr.shape[:2] != (hr.shape[0] // scale, hr.shape[1] // scale):
                continue
            h, w = (min(n, REALISM_WINDOW) for n in lr.shape[:2])
            top, left = (lr.shape[0] - h) // 2, (lr.shape[1] - w) // 2
            top, left = top - top % 16, left - left % 16  # on a JPEG camera's block grid (8 or 16 LR pixels)
            lr = lr[top: top + h, left: left + w]
            x = to_tensor(hr[top * scale: (top + h) * scale, left * scale: (left + w) * scale]).to(device)
            # both through G's JPEG stage, as the camera stored the real LR; capped, so a flat pair cannot decide alone
            learned.append(min(psnr_y(to_uint8(g.as_stored(g(x))), lr, 0), PSNR_CAP))
            bicubic.append(min(psnr_y(to_uint8(g.as_stored(downsample(x, scale))), lr, 0), PSNR_CAP))
    finally:
        g.train(was_training)
    return PrefitRealism(float(np.mean(learned)), float(np.mean(bicubic)), len(learned)) if learned else None


class PairedCrops:
    """Aligned random crops of the fit pairs: sample i is a pure function of (seed, i), like sr/data/datasets.py's.

    ``grid`` > 1 (a JPEG camera: its MCU side in LR pixels) keeps every LR crop on the camera's block grid (its
    corner and side multiples of ``grid``, no flips or turns, which JPEG's blocks and tables are not invariant
    to), so G's LR compressed from the crop's corner is compressed as the camera compressed the real one."""

    salt = 4

    def __init__(self, pairs: Sequence[FitPair], patch: int, scale: int, seed: int = 0, grid: int = 1,
                 names: Sequence[str] | None = None):
        if patch % scale:
            raise ValueError(f"paired patch {patch} is not a multiple of the scale {scale}")
        self.pairs, self.patch, self.scale, self.seed = check_fit_pairs(pairs, scale, names), patch, scale, seed
        self.grid = grid
        small = [names[i] if names else f"#{i + 1}" for i, (_, lr) in enumerate(self.pairs) if min(lr.shape[:2]) < grid]
        if grid > 1 and small:
            raise ValueError(f"fit pair {small[0]}: a JPEG camera's fit pair needs an LR of at least {grid}x{grid} "
                             "pixels (one block)")

    def sample(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.salt, index])
        hr, lr = self.pairs[int(rng.integers(len(self.pairs)))]
        s, g = self.scale, self.grid
        p = min(self.patch // s, *lr.shape[:2])
        if g > 1:
            p = max(g, p - p % g)
            top = g * int(rng.integers((lr.shape[0] - p) // g + 1))
            left = g * int(rng.integers((lr.shape[1] - p) // g + 1))
        else:
            top, left = int(rng.integers(lr.shape[0] - p + 1)), int(rng.integers(lr.shape[1] - p + 1))
        lr_crop = lr[top: top + p, left: left + p]
        hr_crop = hr[top * s: (top + p) * s, left * s: (left + p) * s]
        k = int(rng.integers(8)) if g == 1 else 0  # the same symmetry on both sides keeps them aligned
        return _tensor(_dihedral(hr_crop, k)), _tensor(_dihedral(lr_crop, k))

    def batch(self, index: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``index`` of ``size`` samples (HR and LR stacked); pairs smaller than the patch give
        smaller crops, so one batch uses the smallest side drawn."""
        samples = [self.sample(index * size + j) for j in range(size)]
        p = min(y.shape[-1] for _, y in samples)
        p = min(p, min(y.shape[-2] for _, y in samples))
        s = self.scale
        return (torch.stack([x[:, : p * s, : p * s] for x, _ in samples]),
                torch.stack([y[:, :p, :p] for _, y in samples]))


def _dihedral(img: np.ndarray, k: int) -> np.ndarray:
    from sr_pipeline.sr.data.datasets import dihedral

    return np.ascontiguousarray(dihedral(img, k))


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def paired_terms(g: LearnedDownsampler, x_hr: torch.Tensor, y_real: torch.Tensor, sigma: float = 1.0,
                 call: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The paired term's parts for one batch of aligned crops: ``low`` and ``high`` (L1 of the low and high
    bands of G's LR at eps' = 0 against the real LR's; they train G's blur and colour) and, for a
    camera-model G, ``noise`` (L1 between flat-region noise levels; it trains only G's noise part).
    ``call``: the module to run G through (a distributed wrapper of ``g``; default ``g`` itself)."""
    call = call if call is not None else g
    y_real = y_real.float()
    # G's LR as the camera stores it: else G's blur would learn the compression's losses and block edges, and
    # its JPEG stage would then apply them a second time
    det = g.as_stored(call(x_hr, None).float())
    low_det, low_real = lowpass(det, sigma), lowpass(y_real, sigma)
    terms = {"low": l1(low_det, low_real), "high": l1(det - low_det, y_real - low_real)}
    if g.config.noise_model == "camera":
        noise = torch.randn(g.lr_shape(x_hr), device=x_hr.device, dtype=x_hr.dtype)
        parts = call(x_hr, noise, return_parts=True)
        view = (parts.lr - parts.noise).detach() + parts.noise  # only the noise level learns from it
        terms["noise"] = (flat_noise_sigma(view.float(), sigma) - flat_noise_sigma(y_real, sigma)).abs().mean()
    return terms


def paired_loss(g: LearnedDownsampler, x_hr: torch.Tensor, y_real: torch.Tensor, sigma: float = 1.0,
                noise_weight: float = 1.0, call: torch.nn.Module | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """low + high + noise_weight * noise (``paired_terms``), and the parts."""
    terms = paired_terms(g, x_hr, y_real, sigma, call)
    total = terms["low"] + terms["high"] + noise_weight * terms.get("noise", torch.zeros((), device=x_hr.device))
    return total, terms


def prefit_downsampler(g: LearnedDownsampler, crops: PairedCrops, steps: int, lr: float, camera_lr: float,
                       batch_size: int, sigma: float = 1.0, noise_weight: float = 1.0,
                       device: torch.device | str = "cpu") -> dict:
    """Train G alone on the paired term for ``steps`` steps (Adam: its network at ``lr``, its camera
    parameters at ``camera_lr``), on its own random streams (the global RNG is left as it was), and return
    what changed: the term's parts on a fixed check batch before and after, and the camera summary."""
    was_training = g.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(crops.seed * 1_000_003 + crops.salt)
        check = [t.to(device) for t in crops.batch(10**9, max(batch_size, 16))]

        def measure() -> dict[str, float]:
            g.eval()
            with torch.no_grad():
                torch.manual_seed(0)
                return {k: round(float(v), 6) for k, v in paired_terms(g, *check, sigma).items()}

        before = measure()
        g.train()
        groups = [{"params": g.network_parameters(), "lr": lr}] if g.network_parameters() else []
        if g.camera_parameters():
            groups.append({"params": g.camera_parameters(), "lr": camera_lr})
        opt = torch.optim.Adam(groups)
        for step in range(steps):
            x, y = (t.to(device) for t in crops.batch(step, batch_size))
            loss, _ = paired_loss(g, x, y, sigma, noise_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        after = measure()
    g.train(was_training)
    return {"steps": steps, "fit_pairs": len(crops.pairs), "terms_before": before, "terms_after": after,
            "laplacian_ratio": round(paired_laplacian_ratio(g, crops.pairs), 4), "camera": g.camera_summary()}


@torch.no_grad()
def paired_laplacian_ratio(g: LearnedDownsampler, pairs: Sequence[FitPair]) -> float:
    """Median over the pairs of the Laplacian energy of G(HR) at eps' = 0 (as stored: ``as_stored``) over that
    of the real LR."""
    was_training = g.training
    g.eval()
    try:
        device = next(g.parameters()).device
        ratios = []
        for hr, lr in pairs:
            y = g.as_stored(g(_tensor(hr)[None].to(device), None))[0]
            out = y.add(1).mul(127.5).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
            ratios.append(laplacian_energy(out) / max(laplacian_energy(lr), 1e-12))
        return float(np.median(ratios))
    finally:
        g.train(was_training)
