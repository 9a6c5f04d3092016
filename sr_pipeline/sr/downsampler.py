"""The learnable downsampler G (method.md section 3): HR image + noise -> a plausible field-camera LR.

G runs at LR resolution on ``[y_T, down(x), pixel_unshuffle(x, s)]`` with
``y_T = down(x) + kappa_d sqrt(eta_T) eps'`` and returns ``y_hat = down(x) + r``. The residual's
last layer starts at zero, so an untrained G is exactly bicubic downsampling; different ``eps'``
give different degradations of the same scene. A few residual blocks keep it far smaller than the
upsampler, which runs a UNet on the same number of pixels.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from sr_pipeline.sr.imageops import downsample


class _ResBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LearnedDownsampler(ModelMixin, ConfigMixin):
    """G(x, eps') -> y_hat: a single-step, noise-conditioned residual on bicubic downsampling."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        scale: int = 4,
        image_channels: int = 3,
        channels: int = 32,
        num_blocks: int = 4,
        norm_num_groups: int = 8,
        kappa: float = 1.0,
        sqrt_eta_end: float = 0.99,
    ):
        super().__init__()
        if channels % norm_num_groups:
            raise ValueError("channels must be divisible by norm_num_groups")
        c_in = 2 * image_channels + image_channels * scale * scale
        self.conv_in = nn.Conv2d(c_in, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(_ResBlock(channels, norm_num_groups) for _ in range(num_blocks)))
        self.norm_out = nn.GroupNorm(norm_num_groups, channels)
        self.conv_out = nn.Conv2d(channels, image_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def noise_std(self) -> float:
        """kappa_d sqrt(eta_T): the standard deviation of the noise added to down(x) to form y_T."""
        return self.config.kappa * self.config.sqrt_eta_end

    def lr_shape(self, x_hr: torch.Tensor) -> tuple[int, ...]:
        s = self.config.scale
        return (x_hr.shape[0], self.config.image_channels, x_hr.shape[-2] // s, x_hr.shape[-1] // s)

    def forward(self, x_hr: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """HR batch in [-1, 1] (sides multiples of ``scale``) and LR-shaped noise (None: zero) -> LR batch."""
        s = self.config.scale
        h, w = x_hr.shape[-2:]
        if h % s or w % s:
            raise ValueError(f"HR size {h}x{w} is not a multiple of the scale {s}")
        return self.from_parts(downsample(x_hr, s), F.pixel_unshuffle(x_hr, s), noise)

    def from_parts(self, base: torch.Tensor, unshuffled: torch.Tensor,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
        """G from its LR-sized inputs: ``down(x)`` and ``pixel_unshuffle(x, scale)`` (which a caller
        streaming the HR image in row bands can build without holding it)."""
        y_t = base if noise is None else base + self.noise_std * noise.to(base.dtype)
        # As the upsampler's x_t, y_T is scaled to keep the input variance near one.
        y_t = y_t / math.sqrt(self.noise_std**2 + 1)
        h = self.conv_in(torch.cat([y_t, base, unshuffled], dim=1))
        r = self.conv_out(F.silu(self.norm_out(self.blocks(h))))
        return base + r


def load_downsampler(model_dir: Path, device: str = "cpu") -> LearnedDownsampler:
    """A saved downsampler folder, frozen and in eval mode."""
    return LearnedDownsampler.from_pretrained(Path(model_dir)).to(device).eval().requires_grad_(False)
