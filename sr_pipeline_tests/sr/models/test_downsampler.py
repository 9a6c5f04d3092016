"""The learnable downsampler G: shapes, bicubic start, noise-driven diversity, gradients, save/load."""

import torch

from sr_pipeline.sr.models.downsampler import LearnedDownsampler, load_downsampler
from sr_pipeline.sr.images.tensors import downsample
from sr_pipeline.sr.models.upsampler import SRUNet

TINY = dict(scale=4, channels=8, num_blocks=2, norm_num_groups=4, kappa=1.0)


def _perturbed(model: LearnedDownsampler) -> LearnedDownsampler:
    torch.manual_seed(1)
    torch.nn.init.normal_(model.conv_out.weight, std=0.05)
    return model


def test_output_is_lr_sized_and_any_multiple_of_the_scale_works():
    g = LearnedDownsampler(**TINY).eval()
    for h, w in [(32, 32), (36, 44), (4, 8)]:
        with torch.no_grad():
            y = g(torch.rand(2, 3, h, w) * 2 - 1, torch.randn(2, 3, h // 4, w // 4))
        assert y.shape == (2, 3, h // 4, w // 4)


def test_untrained_downsampler_is_bicubic_down_whatever_the_noise():
    g = LearnedDownsampler(**TINY).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(g(x), downsample(x, 4))
        assert torch.equal(g(x, torch.randn(2, 3, 8, 8)), downsample(x, 4))


def test_noise_changes_the_output_and_zero_noise_equals_none():
    g = _perturbed(LearnedDownsampler(**TINY)).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a, b = g(x, torch.randn(1, 3, 8, 8)), g(x, torch.randn(1, 3, 8, 8))
        assert (a - b).abs().mean() > 1e-4
        assert torch.equal(g(x, torch.zeros(1, 3, 8, 8)), g(x))


def test_gradients_reach_every_parameter_and_the_hr_input():
    g = _perturbed(LearnedDownsampler(**TINY))
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    g(x, torch.randn(2, 3, 8, 8)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_g_sees_the_hr_detail_that_bicubic_downsampling_discards():
    # A pixel-rate checkerboard all but vanishes under down(x); G also reads pixel_unshuffle(x), so its
    # residual must still respond to it (method.md section 3: G "sees the whole HR signal").
    g = _perturbed(LearnedDownsampler(**TINY)).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    checker = ((torch.arange(32).view(32, 1) + torch.arange(32).view(1, 32)) % 2).float() * 2 - 1
    detail = 0.2 * checker.expand(1, 3, 32, 32)
    with torch.no_grad():
        assert (downsample(x + detail, 4) - downsample(x, 4)).abs().max() < 0.005
        residual = lambda hr: g(hr) - downsample(hr, 4)  # noqa: E731
        assert (residual(x + detail) - residual(x)).abs().mean() > 0.01


def test_rejects_hr_sides_that_are_not_multiples_of_the_scale():
    g = LearnedDownsampler(**TINY)
    try:
        g(torch.zeros(1, 3, 30, 32))
    except ValueError as exc:
        assert "multiple of the scale" in str(exc)
    else:
        raise AssertionError("expected a ValueError")


def test_save_pretrained_round_trip(tmp_path):
    g = _perturbed(LearnedDownsampler(**TINY)).eval()
    g.save_pretrained(tmp_path)
    loaded = load_downsampler(tmp_path)
    assert not any(p.requires_grad for p in loaded.parameters())
    x, n = torch.rand(1, 3, 32, 32) * 2 - 1, torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(g(x, n), loaded(x, n))
    assert loaded.config.channels == 8 and loaded.noise_std == g.noise_std


def test_default_downsampler_is_much_smaller_than_the_demo_upsampler():
    g = LearnedDownsampler()
    u = SRUNet(block_out_channels=(32, 64, 64))
    n_g = sum(p.numel() for p in g.parameters())
    n_u = sum(p.numel() for p in u.parameters())
    assert n_g * 5 < n_u
