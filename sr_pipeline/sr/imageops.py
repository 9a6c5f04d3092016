"""Tensor conversions and the two fixed resamplers of the method: up(y) and down(x)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
