"""Patch discriminators: logit map shapes, spectral norm on every convolution, gradients, save/load."""

import torch
from torch.nn.utils import parametrize

from sr_pipeline.sr.models.discriminators import PatchDiscriminator


def test_logit_map_shape_follows_the_number_of_downsamples():
    for n, side in [(3, 32), (2, 8), (1, 16)]:
        d = PatchDiscriminator(base_channels=8, num_downsamples=n, max_channels=32)
        assert d(torch.randn(2, 3, side, side)).shape == (2, 1, side // 2**n, side // 2**n)


def test_channels_double_up_to_the_cap_and_activations_leak():
    d = PatchDiscriminator(base_channels=8, num_downsamples=3, max_channels=128, negative_slope=0.1)
    assert [m.out_channels for m in d.modules() if isinstance(m, torch.nn.Conv2d)] == [8, 16, 32, 64, 1]
    capped = PatchDiscriminator(base_channels=8, num_downsamples=3, max_channels=16)
    assert [m.out_channels for m in capped.modules() if isinstance(m, torch.nn.Conv2d)] == [8, 16, 16, 16, 1]
    acts = [m for m in d.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU))]
    assert len(acts) == 4 and all(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.1 for m in acts)


def test_every_convolution_is_spectrally_normalised():
    d = PatchDiscriminator(base_channels=8, num_downsamples=3)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5
    assert all(parametrize.is_parametrized(m, "weight") for m in convs)
    # After power iterations the largest singular value of each (reshaped) weight is about 1.
    d.train()
    for _ in range(30):
        d(torch.randn(1, 3, 32, 32))
    for m in convs:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.1


def test_gradients_reach_every_parameter_and_the_input():
    d = PatchDiscriminator(base_channels=8, num_downsamples=2)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    d(x).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_eval_mode_does_not_touch_the_power_iteration_buffers():
    d = PatchDiscriminator(base_channels=8, num_downsamples=2).eval()
    before = {k: v.clone() for k, v in d.state_dict().items()}
    with torch.no_grad():
        d(torch.randn(1, 3, 16, 16))
    assert all(torch.equal(before[k], v) for k, v in d.state_dict().items())


def test_save_pretrained_round_trip(tmp_path):
    d = PatchDiscriminator(base_channels=8, num_downsamples=2)
    d.train()
    d(torch.randn(1, 3, 16, 16))  # move the power-iteration vectors away from their init
    d.eval().save_pretrained(tmp_path)
    loaded = PatchDiscriminator.from_pretrained(tmp_path).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(d(x), loaded(x), atol=1e-6)
