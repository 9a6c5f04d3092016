"""The LR-resolution UNet: shapes, bicubic start, save/load round trip."""

import torch

from sr_pipeline.sr.nets import SRUNet

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


def test_gradients_reach_every_layer():
    net = SRUNet(**TINY)
    torch.nn.init.normal_(net.unet.conv_out.weight, std=0.1)
    x = torch.randn(2, 3, 32, 32)
    net(x, x, torch.tensor([2, 9])).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


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
