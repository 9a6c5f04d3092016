"""The upsampler network: a diffusers ``UNet2DModel`` that runs at LR resolution.

The HR-size input ``[x_t_scaled, up(y)]`` (6 channels) is pixel-unshuffled by the scale factor
(6 s^2 channels at LR size), the UNet predicts a residual at LR size, and pixel-shuffle brings it
back to HR size: ``x0_hat = up(y) + r``. The residual's last layer starts at zero, so an untrained
network already returns bicubic upsampling (method.md section 8 measured how much that matters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config


class SRUNet(ModelMixin, ConfigMixin):
    """x0-predicting denoiser f(x_t_scaled, up(y), t) shared by the teacher and the student."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        scale: int = 4,
        image_channels: int = 3,
        block_out_channels: tuple[int, ...] = (32, 64, 64),
        layers_per_block: int = 1,
        attention_levels: tuple[bool, ...] = (False, False, False),
        norm_num_groups: int = 8,
        num_train_timesteps: int = 15,
    ):
        super().__init__()
        if len(attention_levels) != len(block_out_channels):
            raise ValueError("attention_levels needs one flag per block")
        c_in = 2 * image_channels * scale * scale
        c_out = image_channels * scale * scale
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels))
        self.unet = UNet2DModel(
            in_channels=c_in,
            out_channels=c_out,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=down,
            up_block_types=up,
            norm_num_groups=norm_num_groups,
            time_embedding_type="positional",
        )
        torch.nn.init.zeros_(self.unet.conv_out.weight)
        torch.nn.init.zeros_(self.unet.conv_out.bias)

    @property
    def lr_multiple(self) -> int:
        """LR sides must be a multiple of this; forward pads (reflect) and crops otherwise."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def forward(self, x_t_scaled: torch.Tensor, up_y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self.config.scale
        h, w = up_y.shape[-2:]
        if h % s or w % s:
            raise ValueError(f"HR size {h}x{w} is not a multiple of the scale {s}")
        x = F.pixel_unshuffle(torch.cat([x_t_scaled, up_y], dim=1), s)
        m = self.lr_multiple
        pad_h, pad_w = (-x.shape[-2]) % m, (-x.shape[-1]) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(x.shape[-2:]) > max(pad_h, pad_w) else "replicate")
        # Timesteps are spread over [0, 1000) so the positional embedding resolves them like DDPM's.
        t_embed = t.to(x.device).float() * (1000.0 / self.config.num_train_timesteps)
        r = self.unet(x, t_embed).sample[..., : h // s, : w // s]
        return up_y + F.pixel_shuffle(r, s)
