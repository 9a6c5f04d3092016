"""Loss terms of the co-learning stage (method.md section 4) and the rule that switches them off.

Adversarial losses come in two standard forms (hinge, non-saturating); reconstruction terms are
computed in float32 whatever the autocast precision. ``weighted_sum`` takes each term as a thunk
and evaluates only those whose weight is positive, so a weight of 0 removes a term and also the
network evaluations it would cost.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

GanLoss = Literal["hinge", "nonsaturating"]


def d_adv_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: GanLoss = "hinge") -> torch.Tensor:
    """The discriminator's loss: push real logits up, fake logits down."""
    real, fake = real_logits.float(), fake_logits.float()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "nonsaturating":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def g_adv_loss(fake_logits: torch.Tensor, kind: GanLoss = "hinge") -> torch.Tensor:
    """The generator's loss on its fakes' logits (hinge: -D(fake); non-saturating: -log sigmoid D(fake))."""
    fake = fake_logits.float()
    if kind == "hinge":
        return -fake.mean()
    if kind == "nonsaturating":
        return F.softplus(-fake).mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


@torch.no_grad()
def d_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> float:
    """Share of patch decisions the discriminator gets right (real > 0, fake < 0), both halves weighted equally."""
    return 0.5 * float((real_logits > 0).float().mean() + (fake_logits < 0).float().mean())


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(a.float(), b.float())


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(a.float(), b.float())


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def lowpass(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur per channel (reflect padding): what L_struct compares of two LR images."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma).to(device=x.device, dtype=x.dtype)
    c, r = x.shape[1], k.numel() // 2
    mode = "reflect" if r < min(x.shape[-2:]) else "replicate"
    x = F.pad(x, (r, r, r, r), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class LPIPSLoss(nn.Module):
    """Frozen LPIPS distance (mean over the batch) between images in [-1, 1].

    Takes an already-built LPIPS network: whoever builds it must have loaded the real AlexNet
    weights (a random backbone gives a meaningless distance).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "LPIPSLoss":
        return super().train(False)  # always eval: no dropout, no running statistics

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(a.float(), b.float()).mean()


def weighted_sum(
    weights: Mapping[str, float], terms: Mapping[str, Callable[[], torch.Tensor]]
) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """Sum ``weight * term()`` over the terms with a positive weight; the others are never called.

    Returns the total (None when every weight is 0) and the unweighted value of each computed term.
    """
    unknown = set(terms) - set(weights)
    if unknown:
        raise KeyError(f"no weight for loss terms {sorted(unknown)}")
    total: torch.Tensor | None = None
    values: dict[str, torch.Tensor] = {}
    for name, term in terms.items():
        w = float(weights[name])
        if w < 0:
            raise ValueError(f"loss weight {name} must be >= 0, got {w}")
        if w == 0:
            continue
        values[name] = term()
        total = w * values[name] if total is None else total + w * values[name]
    return total, values
