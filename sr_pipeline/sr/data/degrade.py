"""Synthetic second-order degradation (Real-ESRGAN style): HR crop -> realistic LR training input.

Two stages each blur, resize, add noise and JPEG-compress with their own parameter ranges; then
the image is resized to HR size / scale (optionally with a sinc "ringing" filter), in random order
with the second stage's JPEG, as in Real-ESRGAN (Wang et al., ICCVW 2021). As there, the first
stage resizes relative to the HR size and the second relative to the LR size. All randomness comes
from the caller's ``numpy.random.Generator``, so a seed reproduces the LR image exactly.
"""

from __future__ import annotations

import io
import math
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import special

KernelType = Literal["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
KernelShape = Literal["gaussian", "generalized", "plateau"]
# area/bilinear/bicubic are torch's (no antialiasing: downsizing aliases, as in Real-ESRGAN);
# bicubic_aa is antialiased bicubic, the method's down(x).
Interp = Literal["area", "bilinear", "bicubic", "bicubic_aa"]
Prob = Annotated[float, Field(ge=0.0, le=1.0)]
PosRange = tuple[Annotated[float, Field(ge=0.0)], Annotated[float, Field(ge=0.0)]]

KERNEL_TYPES: tuple[KernelType, ...] = (
    "iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso",
)
_SHAPES: dict[str, KernelShape] = {
    "iso": "gaussian", "aniso": "gaussian",
    "generalized_iso": "generalized", "generalized_aniso": "generalized",
    "plateau_iso": "plateau", "plateau_aniso": "plateau",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _check_ranges(self):
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name.endswith("_range") and value[0] > value[1]:
                raise ValueError(f"{name}: the lower bound {value[0]} exceeds the upper bound {value[1]}")
        return self


class StageConfig(_Strict):
    """One degradation stage (Real-ESRGAN's first-stage defaults). A probability of 0 switches a step off."""

    blur_prob: Prob = 1.0
    kernel_size_range: tuple[int, int] = (7, 21)  # odd sizes, drawn uniformly
    kernel_types: tuple[KernelType, ...] = KERNEL_TYPES
    kernel_weights: tuple[Annotated[float, Field(ge=0.0)], ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sigma_range: PosRange = (0.2, 3.0)
    betag_range: PosRange = (0.5, 4.0)  # generalised Gaussian shape
    betap_range: PosRange = (1.0, 2.0)  # plateau shape
    sinc_prob: Prob = 0.1  # a blur is a sinc (ringing) kernel instead of the types above

    # (up, down, keep) weights. Stage 1 resizes relative to the HR size, stage 2 relative to the LR
    # size, so stage 2's "keep" brings the image to LR size with one of resize_modes.
    resize_prob: tuple[Prob, Prob, Prob] = (0.2, 0.7, 0.1)
    resize_range: PosRange = (0.15, 1.5)
    resize_modes: tuple[Interp, ...] = ("area", "bilinear", "bicubic")

    noise_prob: Prob = 1.0
    gaussian_noise_prob: Prob = 0.5  # given noise: Gaussian, else Poisson
    noise_range: PosRange = (1.0, 30.0)  # Gaussian sigma, in 8-bit levels
    poisson_scale_range: PosRange = (0.05, 3.0)
    gray_noise_prob: Prob = 0.4  # the same noise in all three channels

    jpeg_prob: Prob = 1.0  # stage 2's JPEG is applied in the final step
    jpeg_range: tuple[Annotated[int, Field(ge=1, le=100)], Annotated[int, Field(ge=1, le=100)]] = (30, 95)

    @model_validator(mode="after")
    def _check(self) -> "StageConfig":
        lo, hi = self.kernel_size_range
        if lo < 1 or lo % 2 == 0 or hi % 2 == 0 or lo > hi:
            raise ValueError("kernel_size_range needs two odd sizes, lower first")
        if len(self.kernel_weights) != len(self.kernel_types) or not self.kernel_types:
            raise ValueError("kernel_weights needs one weight per entry of kernel_types")
        if self.blur_prob > 0 and self.sinc_prob < 1 and sum(self.kernel_weights) <= 0:
            raise ValueError("kernel_weights must not all be zero")
        if sum(self.resize_prob) <= 0:
            raise ValueError("resize_prob (up, down, keep) must not all be zero")
        if not self.resize_modes:
            raise ValueError("resize_modes must name at least one interpolation")
        return self


class Stage2Config(StageConfig):
    """Real-ESRGAN's second-stage defaults: milder blur, sometimes skipped, resize around LR size."""

    blur_prob: Prob = 0.8
    sigma_range: PosRange = (0.2, 1.5)
    resize_prob: tuple[Prob, Prob, Prob] = (0.3, 0.4, 0.3)
    resize_range: PosRange = (0.3, 1.2)
    noise_range: PosRange = (1.0, 25.0)
    poisson_scale_range: PosRange = (0.05, 2.5)


class DegradationConfig(_Strict):
    """Every range of the synthetic degradation; part of a training profile."""

    scale: int = Field(4, ge=1)
    stage1: StageConfig = StageConfig()
    stage2: Stage2Config = Stage2Config()
    final_resize_modes: tuple[Interp, ...] = ("area", "bilinear", "bicubic", "bicubic_aa")
    final_sinc_prob: Prob = 0.8
    final_sinc_size_range: tuple[int, int] = (7, 21)
    final_jpeg_first_prob: Prob = 0.5  # JPEG before the final resize, else after it
    quantize: bool = True  # round the LR to 8-bit levels, as a camera stores it

    @model_validator(mode="after")
    def _check(self) -> "DegradationConfig":
        lo, hi = self.final_sinc_size_range
        if lo < 1 or lo % 2 == 0 or hi % 2 == 0 or lo > hi:
            raise ValueError("final_sinc_size_range needs two odd sizes, lower first")
        if not self.final_resize_modes:
            raise ValueError("final_resize_modes must name at least one interpolation")
        return self

    @classmethod
    def plain(cls, scale: int = 4, quantize: bool = False) -> "DegradationConfig":
        """Every random step off: the LR is plain antialiased bicubic downsampling (``bicubic_down``)."""
        off = {"blur_prob": 0.0, "resize_prob": (0.0, 0.0, 1.0), "resize_modes": ("bicubic_aa",),
               "noise_prob": 0.0, "jpeg_prob": 0.0}
        return cls(scale=scale, stage1=StageConfig(**off), stage2=Stage2Config(**off),
                   final_resize_modes=("bicubic_aa",), final_sinc_prob=0.0, quantize=quantize)


# ---- kernels -------------------------------------------------------------------------------------

def bivariate_kernel(size: int, sigma_x: float, sigma_y: float, theta: float,
                     shape: KernelShape = "gaussian", beta: float = 1.0) -> np.ndarray:
    """A size x size blur kernel summing to 1: Gaussian, generalised Gaussian or plateau.

    sigma_x, sigma_y are the standard deviations along the axes rotated by theta (radians).
    """
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    (a, b), (_, d) = np.linalg.inv(rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T)
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    xx, yy = ax[None, :], ax[:, None]
    q = a * xx**2 + 2 * b * xx * yy + d * yy**2  # squared Mahalanobis distance
    if shape == "gaussian":
        k = np.exp(-0.5 * q)
    elif shape == "generalized":
        k = np.exp(-0.5 * q**beta)
    elif shape == "plateau":
        k = 1.0 / (q**beta + 1.0)
    else:
        raise ValueError(f"unknown kernel shape {shape!r}")
    return k / k.sum()


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """Circular low-pass (2-D sinc) kernel with cutoff in radians per pixel; sums to 1, rings."""
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    r = np.hypot(*np.meshgrid(ax, ax))
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    k[size // 2, size // 2] = cutoff**2 / (4 * np.pi)  # the limit at r = 0
    return k / k.sum()


def _odd_size(lo_hi: tuple[int, int], rng: np.random.Generator) -> int:
    lo, hi = lo_hi
    return int(lo + 2 * rng.integers((hi - lo) // 2 + 1))


def _beta(lo_hi: tuple[float, float], rng: np.random.Generator) -> float:
    # As Real-ESRGAN: half the draws below 1 (heavier tails), half above (flatter top).
    lo, hi = lo_hi
    if rng.random() < 0.5:
        return float(rng.uniform(lo, max(lo, min(hi, 1.0))))
    return float(rng.uniform(min(hi, max(lo, 1.0)), hi))


def random_kernel(stage: StageConfig, rng: np.random.Generator) -> np.ndarray:
    """One blur kernel drawn from a stage's ranges (Real-ESRGAN's mixed kernels plus sinc)."""
    size = _odd_size(stage.kernel_size_range, rng)
    if rng.random() < stage.sinc_prob:
        low = math.pi / 3 if size < 13 else math.pi / 5
        return sinc_kernel(size, float(rng.uniform(low, math.pi)))
    weights = np.asarray(stage.kernel_weights, dtype=np.float64)
    kind = stage.kernel_types[int(rng.choice(len(weights), p=weights / weights.sum()))]
    sigma_x = float(rng.uniform(*stage.sigma_range))
    if kind.endswith("aniso"):
        sigma_y, theta = float(rng.uniform(*stage.sigma_range)), float(rng.uniform(-math.pi, math.pi))
    else:
        sigma_y, theta = sigma_x, 0.0
    shape = _SHAPES[kind]
    beta = 1.0
    if shape == "generalized":
        beta = _beta(stage.betag_range, rng)
    elif shape == "plateau":
        beta = _beta(stage.betap_range, rng)
    return bivariate_kernel(size, sigma_x, sigma_y, theta, shape, beta)


# ---- image operations on 1x3xHxW float tensors in [0, 1] -----------------------------------------

def _fft_size(n: int) -> int:
    """Smallest m >= n with no prime factor above 5 (FFTs of such sizes are fast)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _filter(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    # Through the FFT: 2-7x faster than a direct 21x21 convolution on one core. The kernels are
    # point-symmetric, so convolution and correlation agree.
    k = kernel.shape[0]
    pad = k // 2
    # Reflect padding needs pad < side; tiny intermediate images (strong downsizing) fall back.
    mode = "reflect" if pad < min(x.shape[-2:]) else "replicate"
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode)
    h, w = xp.shape[-2:]
    size = (_fft_size(h), _fft_size(w))  # >= the padded input: linear, not circular, convolution
    kernel_t = torch.from_numpy(kernel.astype(np.float32))
    spectrum = torch.fft.rfft2(xp, s=size) * torch.fft.rfft2(kernel_t, s=size)
    return torch.fft.irfft2(spectrum, s=size)[..., k - 1 : h, k - 1 : w].contiguous()


def _resize(x: torch.Tensor, size: tuple[int, int], mode: Interp) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    if mode == "bicubic_aa":
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def _random_resize(x: torch.Tensor, stage: StageConfig, rng: np.random.Generator,
                   base: tuple[int, int]) -> torch.Tensor:
    p = np.asarray(stage.resize_prob, dtype=np.float64)
    updown = int(rng.choice(3, p=p / p.sum()))
    lo, hi = stage.resize_range
    if updown == 0:
        factor = float(rng.uniform(max(1.0, lo), max(1.0, hi)))
    elif updown == 1:
        factor = float(rng.uniform(min(1.0, lo), min(1.0, hi)))
    else:
        factor = 1.0
    mode = stage.resize_modes[int(rng.integers(len(stage.resize_modes)))]
    size = (max(1, int(base[0] * factor)), max(1, int(base[1] * factor)))
    return _resize(x, size, mode)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _add_noise(x: torch.Tensor, stage: StageConfig, rng: np.random.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    if rng.random() < stage.gaussian_noise_prob:
        sigma = float(rng.uniform(*stage.noise_range)) / 255.0
        gray = rng.random() < stage.gray_noise_prob
        noise = rng.standard_normal((1, 1 if gray else 3, h, w), dtype=np.float32) * np.float32(sigma)
        return (x + torch.from_numpy(noise)).clamp_(0.0, 1.0)
    # Poisson (shot) noise as Real-ESRGAN: counts at 2^ceil(log2(#distinct 8-bit levels)) per unit.
    strength = float(rng.uniform(*stage.poisson_scale_range))
    gray = rng.random() < stage.gray_noise_prob
    src = (_gray(x) if gray else x).clamp(0.0, 1.0)
    levels = (src * 255.0).round().to(torch.uint8).numpy()
    distinct = int(np.count_nonzero(np.bincount(levels.ravel(), minlength=256)))
    vals = 2.0 ** math.ceil(math.log2(max(distinct, 1)))
    clean = levels.astype(np.float32) / 255.0
    lam = clean * np.float32(vals)
    # Exact Poisson draws cost ~9 ms per 256 px image; above 16 counts a Gaussian of the same
    # variance is indistinguishable at 8 bits and 5x cheaper, so only dark pixels draw exactly.
    counts = lam + np.sqrt(lam) * rng.standard_normal(lam.shape, dtype=np.float32)
    dark = lam < 16.0
    counts[dark] = rng.poisson(lam[dark])
    noise = (counts / np.float32(vals) - clean) * np.float32(strength)
    return (x + torch.from_numpy(noise)).clamp_(0.0, 1.0)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    arr = (x[0].clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    with Image.open(buf) as im:  # a 3-channel JPEG decodes as RGB
        out = np.array(im)
    return torch.from_numpy(out).permute(2, 0, 1)[None].float().div_(255.0).contiguous()


def _maybe_jpeg(x: torch.Tensor, stage: StageConfig, rng: np.random.Generator) -> torch.Tensor:
    if rng.random() < stage.jpeg_prob:
        lo, hi = stage.jpeg_range
        return _jpeg(x, int(rng.integers(lo, hi + 1)))
    return x


def _stage(x: torch.Tensor, stage: StageConfig, rng: np.random.Generator, base: tuple[int, int],
           jpeg: bool) -> torch.Tensor:
    if rng.random() < stage.blur_prob:
        x = _filter(x, random_kernel(stage, rng))
    x = _random_resize(x, stage, rng, base)
    if rng.random() < stage.noise_prob:
        x = _add_noise(x, stage, rng)
    return _maybe_jpeg(x, stage, rng) if jpeg else x


def _final_resize(x: torch.Tensor, cfg: DegradationConfig, rng: np.random.Generator,
                  size: tuple[int, int]) -> torch.Tensor:
    x = _resize(x, size, cfg.final_resize_modes[int(rng.integers(len(cfg.final_resize_modes)))])
    if rng.random() < cfg.final_sinc_prob:
        size_k = _odd_size(cfg.final_sinc_size_range, rng)
        x = _filter(x, sinc_kernel(size_k, float(rng.uniform(math.pi / 3, math.pi))))
    return x


# ---- public API ----------------------------------------------------------------------------------

def _as_tensor(img: np.ndarray) -> torch.Tensor:
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {img.shape}")
    return torch.from_numpy(np.array(img.transpose(2, 0, 1), dtype=np.float32, order="C"))[None]


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x[0].permute(1, 2, 0).numpy())


def degrade(hr: np.ndarray, cfg: DegradationConfig, rng: np.random.Generator) -> np.ndarray:
    """HR float32 HxWx3 in [0, 1] -> LR float32 (H/s)x(W/s)x3 in [0, 1]; H and W multiples of s."""
    x = _as_tensor(hr)
    h, w = x.shape[-2:]
    s = cfg.scale
    if h % s or w % s:
        raise ValueError(f"HR size {h}x{w} is not a multiple of the scale {s}")
    lr_size = (h // s, w // s)
    with torch.no_grad():
        x = _stage(x, cfg.stage1, rng, base=(h, w), jpeg=True)
        x = _stage(x, cfg.stage2, rng, base=lr_size, jpeg=False)
        if rng.random() < cfg.final_jpeg_first_prob:
            x = _final_resize(_maybe_jpeg(x, cfg.stage2, rng), cfg, rng, lr_size)
        else:
            x = _maybe_jpeg(_final_resize(x, cfg, rng, lr_size), cfg.stage2, rng)
        x = x.clamp(0.0, 1.0)
        if cfg.quantize:
            x = (x * 255.0).round() / 255.0
    return _as_numpy(x)


def bicubic_down(hr: np.ndarray, scale: int) -> np.ndarray:
    """down(x): antialiased bicubic downsampling of a float HxWx3 image in [0, 1], clipped to [0, 1].

    A side that is not a multiple of ``scale`` is first cropped at the bottom/right (the SR
    literature's "modcrop"), so that LR pixel (i, j) covers HR pixels [s*i, s*(i+1)).
    """
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    x = _as_tensor(hr[: h * scale, : w * scale])
    return _as_numpy(_resize(x, (h, w), "bicubic_aa").clamp_(0.0, 1.0))
