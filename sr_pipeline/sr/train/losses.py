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


def _gradient_magnitude(img: torch.Tensor) -> torch.Tensor:
    """Central-difference gradient magnitude on the interior pixels (differentiable at zero)."""
    gx = (img[..., 1:-1, 2:] - img[..., 1:-1, :-2]) / 2
    gy = (img[..., 2:, 1:-1] - img[..., :-2, 1:-1]) / 2
    return torch.sqrt(gx * gx + gy * gy + 1e-12)


def _detail_bands(y: torch.Tensor) -> torch.Tensor:
    """Three finest-scale detail responses on the interior pixels, stacked on a new dim 2: horizontal and
    vertical second differences ([1, -2, 1] / sqrt 6) and the diagonal one ([[1, -1], [-1, 1]] / 2). Each
    cancels a linear ramp, white noise of std sigma has std sigma in each, correlated noise less in some."""
    c = y[..., 1:-1, 1:-1]
    horizontal = (y[..., 1:-1, :-2] - 2 * c + y[..., 1:-1, 2:]) / math.sqrt(6)
    vertical = (y[..., :-2, 1:-1] - 2 * c + y[..., 2:, 1:-1]) / math.sqrt(6)
    diagonal = (c - y[..., 1:-1, 2:] - y[..., 2:, 1:-1] + y[..., 2:, 2:]) / 2
    return torch.stack([horizontal, vertical, diagonal], dim=2)


def flat_noise_sigma(y: torch.Tensor, sigma: float = 1.0, flat_share: float = 0.2) -> torch.Tensor:
    """Noise level of a batch per channel and detail band (C x 3: horizontal, vertical, diagonal),
    measured where the scene is flat (Ji et al. collect a camera's noise from its flat patches): the RMS
    of each band over the ``flat_share`` of pixels with the weakest low-band gradient. Flatness is judged
    on the detached low band, so batches of different scenes are measured alike and texture is not
    mistaken for noise; three bands tell a noise level from its spatial correlation."""
    with torch.no_grad():
        grad = _gradient_magnitude(lowpass(y.detach().float().mean(dim=1, keepdim=True), sigma)).flatten()
        flat = grad <= torch.quantile(grad, flat_share)
    bands = _detail_bands(y).permute(1, 2, 0, 3, 4).flatten(2)[..., flat]
    return bands.pow(2).mean(dim=-1).add(1e-12).sqrt()


def noise_match(y_hat: torch.Tensor, y_real: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """L1 between the flat-region noise levels (per channel and detail band) of G's LR batch and a real
    field LR batch."""
    return (flat_noise_sigma(y_hat, sigma) - flat_noise_sigma(y_real, sigma).detach()).abs().mean()


def edge_sharpness(y: torch.Tensor, sigma: float = 2.0, edge_share: float = 0.1) -> torch.Tensor:
    """How sharp a batch's edges are, whatever the scene and its contrast: on the ``edge_share`` of pixels
    with the strongest low-band gradient, the mean full-band gradient over the mean low-band gradient
    (luma). A blur of width w gives about sqrt(w^2 + sigma^2) / w: near 1 for a blurry camera, larger
    for a sharp one. Edges are chosen on the detached low band, so two pools are measured alike."""
    luma = y.mean(dim=1, keepdim=True)
    g_low = _gradient_magnitude(lowpass(luma, sigma)).flatten()
    with torch.no_grad():
        edges = g_low >= torch.quantile(g_low.detach().float(), 1 - edge_share)
    return _gradient_magnitude(luma).flatten()[edges].mean() / g_low[edges].mean().clamp(min=1e-8)


def sharpness_match(y_hat: torch.Tensor, y_real: torch.Tensor) -> torch.Tensor:
    """|edge sharpness(G's LR batch) - edge sharpness(field LR batch)|: G must blur as much as the
    camera does, no more (a G that blurs more teaches the student to sharpen what was never blurred)."""
    return (edge_sharpness(y_hat) - edge_sharpness(y_real).detach()).abs()


def colour_moments(y: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the low-band pixel colours of a batch (the scene-scale colour, not the noise)."""
    pixels = lowpass(y, sigma).transpose(0, 1).flatten(1)
    mean = pixels.mean(dim=1)
    centred = pixels - mean[:, None]
    return mean, centred @ centred.T / max(1, pixels.shape[1] - 1)


def colour_match(y_hat: torch.Tensor, y_real: torch.Tensor, sigma: float) -> torch.Tensor:
    """L1 between the colour moments (mean, covariance) of G's LR batch and a real field LR batch."""
    (m_a, c_a), (m_b, c_b) = colour_moments(y_hat, sigma), colour_moments(y_real.detach(), sigma)
    return (m_a - m_b).abs().mean() + (c_a - c_b).abs().mean()


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
