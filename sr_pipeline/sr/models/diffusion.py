"""Residual-shifting diffusion (ResShift) and its deterministic single-path sampler (SinSR).

Notation follows ``method.md`` section 1: timesteps ``t = 1..T`` with ``eta_0 = 0``; the forward
marginal shifts the HR image ``x0`` towards the upsampled LR ``up(y)`` while adding noise:
``x_t = x0 + eta_t (up(y) - x0) + kappa sqrt(eta_t) eps``. The network predicts ``x0``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config

# f(x_t_scaled, up_y, t) -> x0_hat, with t a 1-D tensor of integer timesteps.
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def eta_schedule(num_steps: int, kappa: float, power: float, eta_end: float = 0.99**2) -> torch.Tensor:
    """The ResShift eta_1..eta_T in float64 (``method.md`` section 1)."""
    sqrt_eta_1 = min(0.04 / kappa, 0.04, math.sqrt(0.001))
    sqrt_eta_T = math.sqrt(eta_end)
    if num_steps == 1:
        return torch.tensor([eta_end], dtype=torch.float64)
    b0 = math.exp(math.log(sqrt_eta_T / sqrt_eta_1) / (num_steps - 1))
    t = torch.arange(1, num_steps + 1, dtype=torch.float64)
    beta = ((t - 1) / (num_steps - 1)) ** power * (num_steps - 1)
    return (sqrt_eta_1 * b0**beta) ** 2


class ResShiftSchedule(ConfigMixin):
    """The schedule and both samplers; saved beside the network as ``scheduler_config.json``."""

    config_name = "scheduler_config.json"

    @register_to_config
    def __init__(self, num_steps: int = 15, kappa: float = 2.0, power: float = 0.3, eta_end: float = 0.99**2):
        if num_steps < 1:
            raise ValueError("num_steps must be >= 1")
        if kappa <= 0:
            raise ValueError("kappa must be > 0")
        self.num_steps = num_steps
        self.kappa = kappa
        etas = eta_schedule(num_steps, kappa, power, eta_end)
        # Index 0 holds eta_0 = 0 so that eta(t) is etas[t] for t = 0..T.
        self.etas = torch.cat([torch.zeros(1, dtype=torch.float64), etas])

    # --- per-timestep coefficients, broadcast to image batches -------------------------------
    def _eta(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        eta = self.etas.to(like.device)[t.long().to(like.device)]
        return eta.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, up_y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample the forward marginal q(x_t | x0, y)."""
        eta = self._eta(t, x0)
        return x0 + eta * (up_y - x0) + self.kappa * eta.sqrt() * noise

    def scale_input(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network sees x_t / sqrt(kappa^2 eta_t + 1), which keeps its input variance near one."""
        return x_t / (self.kappa**2 * self._eta(t, x_t) + 1).sqrt()

    def prior_sample(self, up_y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_T = up(y) + kappa sqrt(eta_T) eps: where every sampler (and the student) starts."""
        t = torch.full((up_y.shape[0],), self.num_steps, dtype=torch.long)
        return up_y + self.kappa * self._eta(t, up_y).sqrt() * noise

    def predict_x0(self, model: Denoiser, x_t: torch.Tensor, up_y: torch.Tensor, t: int) -> torch.Tensor:
        tt = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        return model(self.scale_input(x_t, tt), up_y, tt)

    # --- samplers ------------------------------------------------------------------------------
    def timesteps(self, num_inference_steps: int | None = None) -> list[int]:
        """Descending timesteps T..1; fewer steps pick an evenly spaced subset that keeps T."""
        T = self.num_steps
        n = T if num_inference_steps is None else num_inference_steps
        if not 1 <= n <= T:
            raise ValueError(f"num_inference_steps must be in 1..{T}, got {n}")
        picked = torch.linspace(T, 1, n).round().long().tolist()
        return sorted(set(picked), reverse=True)

    def deterministic_step(self, x0_hat: torch.Tensor, x_t: torch.Tensor, up_y: torch.Tensor, t: int, s: int) -> torch.Tensor:
        """SinSR's deterministic update from t to s < t (s = t - 1 in the full chain)."""
        eta_t = float(self.etas[t])
        eta_s = float(self.etas[s])
        m = math.sqrt(eta_s / eta_t)
        j = eta_s - math.sqrt(eta_s * eta_t)
        k = 1 - eta_s + math.sqrt(eta_s * eta_t) - m
        return k * x0_hat + m * x_t + j * up_y

    def stochastic_step(
        self, x0_hat: torch.Tensor, x_t: torch.Tensor, t: int, s: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Posterior q(x_s | x_t, x0_hat) of the residual-shifting chain (s = t - 1 in ResShift)."""
        eta_t = float(self.etas[t])
        eta_s = float(self.etas[s])
        alpha = eta_t - eta_s
        mean = (eta_s / eta_t) * x_t + (alpha / eta_t) * x0_hat
        if s == 0:
            return mean
        var = self.kappa**2 * (eta_s / eta_t) * alpha
        noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return mean + math.sqrt(var) * noise

    def sample(
        self,
        model: Denoiser,
        up_y: torch.Tensor,
        noise: torch.Tensor,
        *,
        num_inference_steps: int | None = None,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Run the sampler from x_T = prior_sample(up_y, noise); returns the final x0 estimate.

        The deterministic path is SinSR's map F(x_T, y); at the last step it returns x0_hat itself.
        """
        steps: Sequence[int] = self.timesteps(num_inference_steps)
        x_t = self.prior_sample(up_y, noise)
        x0_hat = x_t
        for i, t in enumerate(steps):
            x0_hat = self.predict_x0(model, x_t, up_y, t)
            s = steps[i + 1] if i + 1 < len(steps) else 0
            if s == 0:
                return x0_hat
            if deterministic:
                x_t = self.deterministic_step(x0_hat, x_t, up_y, t, s)
            else:
                x_t = self.stochastic_step(x0_hat, x_t, t, s, generator)
        return x0_hat
