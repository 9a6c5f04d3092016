"""Loss terms of the co-learning stage and the weight-0 switch that skips a term's computation."""

import pytest
import torch

from sr_pipeline.sr.train.losses import (
    LPIPSLoss,
    d_accuracy,
    d_adv_loss,
    g_adv_loss,
    gaussian_kernel1d,
    l1,
    lowpass,
    mse,
    weighted_sum,
)


def _never() -> torch.Tensor:
    raise AssertionError("a term with weight 0 must not be computed")


def test_weight_zero_removes_each_term_and_skips_its_computation():
    names = ["rec", "distill", "adv_hr", "adv_lr", "struct", "cyc_lr"]
    values = {n: torch.tensor(float(i + 1)) for i, n in enumerate(names)}
    for off in names:
        weights = {n: (0.0 if n == off else 2.0) for n in names}
        terms = {n: (_never if n == off else (lambda n=n: values[n])) for n in names}
        total, computed = weighted_sum(weights, terms)
        assert off not in computed and set(computed) == set(names) - {off}
        assert float(total) == pytest.approx(2.0 * sum(float(values[n]) for n in names if n != off))


def test_all_weights_zero_gives_no_total():
    total, computed = weighted_sum({"a": 0.0}, {"a": _never})
    assert total is None and computed == {}


def test_unknown_term_and_negative_weight_are_rejected():
    with pytest.raises(KeyError):
        weighted_sum({}, {"a": lambda: torch.tensor(1.0)})
    with pytest.raises(ValueError):
        weighted_sum({"a": -1.0}, {"a": lambda: torch.tensor(1.0)})


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1 - real) = [0, 0.5], relu(1 + fake) = [0, 1]
    assert float(d_adv_loss(real, fake, "hinge")) == pytest.approx(0.25 + 0.5)
    assert float(g_adv_loss(fake, "hinge")) == pytest.approx(1.0)


def test_nonsaturating_losses_match_binary_cross_entropy():
    real, fake = torch.randn(8), torch.randn(8)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected_d = bce(real, torch.ones(8)) + bce(fake, torch.zeros(8))
    assert float(d_adv_loss(real, fake, "nonsaturating")) == pytest.approx(float(expected_d), rel=1e-5)
    assert float(g_adv_loss(fake, "nonsaturating")) == pytest.approx(float(bce(fake, torch.ones(8))), rel=1e-5)
    with pytest.raises(ValueError):
        d_adv_loss(real, fake, "wasserstein")


def test_discriminator_accuracy():
    assert d_accuracy(torch.tensor([1.0, 1.0]), torch.tensor([-1.0, -1.0])) == 1.0
    assert d_accuracy(torch.tensor([1.0, -1.0]), torch.tensor([1.0, 1.0])) == 0.25


def test_l1_and_mse_are_float32_even_for_bf16_inputs():
    a, b = torch.zeros(4, dtype=torch.bfloat16), torch.full((4,), 0.5, dtype=torch.bfloat16)
    assert l1(a, b).dtype == torch.float32 and float(l1(a, b)) == 0.5
    assert float(mse(a, b)) == 0.25


def test_lowpass_keeps_constants_and_removes_fine_detail():
    assert float(gaussian_kernel1d(1.5).sum()) == pytest.approx(1.0)
    const = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(lowpass(const, 1.0), const, atol=1e-6)
    checker = (torch.arange(16).view(1, 16) + torch.arange(16).view(16, 1)) % 2
    x = checker.float().expand(1, 3, 16, 16) * 2 - 1
    assert lowpass(x, 1.0).std() < 0.1 * x.std()
    assert torch.equal(lowpass(x, 0.0), x)
    assert lowpass(torch.randn(2, 3, 4, 4), 2.0).shape == (2, 3, 4, 4)  # radius > side falls back to replicate
    small = torch.full((1, 3, 4, 4), -0.7)
    assert torch.allclose(lowpass(small, 2.0), small, atol=1e-6)  # ... which keeps constants too


def test_lpips_wrapper_is_frozen_and_averages_the_batch():
    class Dist(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, a, b):
            return ((a - b).abs() * self.w).mean(dim=(1, 2, 3), keepdim=True)

    loss = LPIPSLoss(Dist()).train()
    assert not loss.training and not any(p.requires_grad for p in loss.parameters())
    a = torch.zeros(2, 3, 4, 4, requires_grad=True)
    value = loss(a, torch.ones(2, 3, 4, 4))
    assert float(value.detach()) == pytest.approx(1.0)
    value.backward()
    # d/da of mean_batch(mean |a - b| * w) at a < b: -1 / (all elements), pulling a towards b.
    assert a.grad is not None
    torch.testing.assert_close(a.grad, torch.full_like(a, -1.0 / a.numel()))
