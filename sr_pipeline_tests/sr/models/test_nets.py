"""The LR-resolution UNet: shapes, bicubic start, save/load round trip."""

import pytest
import torch

from sr_pipeline.sr.models.upsampler import SRUNet

TINY = dict(scale=4, block_out_channels=(8, 16), layers_per_block=1, attention_levels=(False, False),
            norm_num_groups=4, num_train_timesteps=15)


def test_untrained_net_returns_its_condition():
    net = SRUNet(**TINY).eval()
    up_y = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32), up_y, torch.tensor([1, 15]))
    assert out.shape == up_y.shape
    assert torch.equal(out, up_y)


def test_any_multiple_of_the_scale_works():
    net = SRUNet(**TINY).eval()
    torch.nn.init.normal_(net.unet.conv_out.weight, std=0.1)
    for h, w in [(36, 44), (8, 8), (64, 20)]:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            assert net(x, x, torch.tensor([3])).shape == (1, 3, h, w)


def _random_weights(net: SRUNet) -> SRUNet:
    torch.manual_seed(0)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return net


def test_gradients_reach_every_layer_and_match_finite_differences():
    # float64, so that a central difference along a random direction checks the whole gradient's direction.
    net = _random_weights(SRUNet(**TINY)).double()
    gen = torch.Generator().manual_seed(1)
    x, up_y = (torch.randn(2, 3, 32, 32, generator=gen, dtype=torch.float64) for _ in range(2))
    t = torch.tensor([2, 9])

    def loss() -> torch.Tensor:
        return net(x, up_y, t).square().mean()

    loss().backward()
    params = [p for p in net.parameters() if p.requires_grad]
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    analytic = sum(float((p.grad * v).sum()) for p, v in zip(params, direction))
    h = 1e-5
    with torch.no_grad():
        for p, v in zip(params, direction):
            p.add_(h * v)
        plus = float(loss())
        for p, v in zip(params, direction):
            p.sub_(2 * h * v)
        minus = float(loss())
    assert abs(analytic) > 1e-6
    assert (plus - minus) / (2 * h) == pytest.approx(analytic, rel=1e-5)


def test_output_depends_on_the_noisy_input_and_the_timestep():
    net = _random_weights(SRUNet(**TINY)).eval()
    for name, p in net.named_parameters():
        if "time_emb" in name:  # the timestep's path: large enough to see beside the small random residual
            torch.nn.init.normal_(p, std=0.5)
    x, up_y = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        base = net(x, up_y, torch.tensor([3]))
        assert (net(x, up_y, torch.tensor([12])) - base).abs().mean() > 1e-4
        assert (net(torch.randn(1, 3, 32, 32), up_y, torch.tensor([3])) - base).abs().mean() > 1e-3


def test_save_pretrained_round_trip_gives_identical_outputs(tmp_path):
    net = SRUNet(**TINY).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    net.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists()
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = SRUNet.from_pretrained(tmp_path).eval()
    x = torch.randn(1, 3, 32, 32)
    t = torch.tensor([7])
    with torch.no_grad():
        assert torch.equal(net(x, x, t), loaded(x, x, t))
    assert loaded.config.block_out_channels == (8, 16) or list(loaded.config.block_out_channels) == [8, 16]
