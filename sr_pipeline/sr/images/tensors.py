"""Tensor conversions and the two fixed resamplers of the method: up(y) and down(x)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sr_pipeline.sr.images.png_stream import LUMA  # noqa: F401  (re-exported: the luma weights live beside the image I/O, torch-free)


def upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """up(y): bicubic upsampling to HR size."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


def downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """down(x): antialiased bicubic downsampling by the scale factor."""
    h, w = hr.shape[-2:]
    return F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float 1x3xHxW in [-1, 1]."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float 1x3xHxW (or 3xHxW) in [-1, 1] -> uint8 HxWx3, rounded and clipped."""
    if x.ndim == 4:
        x = x[0]
    return x.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()




def is_grey(img: np.ndarray, tolerance: int = 1) -> bool:
    """Whether a uint8 HxWx3 image carries no colour (every pixel's channels within ``tolerance`` levels)."""
    if img.ndim == 2 or img.shape[-1] == 1:
        return True
    rgb = np.asarray(img, dtype=np.int16)
    return bool((rgb.max(axis=-1) - rgb.min(axis=-1)).max(initial=0) <= tolerance)


def grey_rgb(img: np.ndarray) -> np.ndarray:
    """The luma of a uint8 HxWx3 image, replicated to three channels (what a grey camera records)."""
    y = np.asarray(img, dtype=np.float64) @ LUMA
    return np.repeat(np.clip(np.round(y), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
