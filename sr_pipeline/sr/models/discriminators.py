"""Spectral-normalised patch discriminator (PatchGAN); two instances judge HR and LR images.

D_HR sees HR crops (real: HR references, fake: the student's outputs); D_LR sees LR crops
(real: field-camera LR, fake: the downsampler's outputs). Each returns a map of logits, one per
receptive-field patch; spectral normalisation on every convolution keeps both Lipschitz-bounded,
which is what lets a small discriminator train stably against a pretrained generator.
"""

from __future__ import annotations

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(ModelMixin, ConfigMixin):
    """``num_downsamples`` stride-2 convolutions (channels doubling up to ``max_channels``),
    then a stride-1 convolution and a 1-channel logit convolution."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 32,
        num_downsamples: int = 3,
        max_channels: int = 128,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        if num_downsamples < 1:
            raise ValueError("num_downsamples must be >= 1")
        layers: list[nn.Module] = []
        c_prev = in_channels
        for i in range(num_downsamples):
            c = min(base_channels * 2**i, max_channels)
            layers += [spectral_norm(nn.Conv2d(c_prev, c, 4, stride=2, padding=1)), nn.LeakyReLU(negative_slope)]
            c_prev = c
        c = min(c_prev * 2, max_channels)
        layers += [spectral_norm(nn.Conv2d(c_prev, c, 3, padding=1)), nn.LeakyReLU(negative_slope),
                   spectral_norm(nn.Conv2d(c, 1, 3, padding=1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch (sides multiples of 2^num_downsamples) -> logits, Bx1x(H/2^n)x(W/2^n)."""
        return self.net(x)
