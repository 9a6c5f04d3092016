"""The camera-model G: deterministic at eps' = 0, noise drawn from eps' at a learnable,
signal-dependent level, a colour response after the structure term, grey cameras, the matching losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from sr_pipeline.sr.models.downsampler import LearnedDownsampler, load_downsampler
from sr_pipeline.sr.images.tensors import downsample
from sr_pipeline.sr.train.losses import colour_match, flat_noise_sigma, noise_match

CAMERA = dict(scale=4, channels=8, num_blocks=1, norm_num_groups=4, noise_model="camera", colour_transform=True)


def _perturbed(g: LearnedDownsampler) -> LearnedDownsampler:
    torch.manual_seed(3)
    torch.nn.init.normal_(g.conv_out.weight, std=0.05)
    return g


def _smooth_hr(n: int = 2, side: int = 64, channels: int = 3) -> torch.Tensor:
    """A slowly varying HR batch: flat enough that the flat-region noise estimate sees only noise."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    base = 0.5 * torch.sin(1.5 * xx) * torch.cos(yy)
    return torch.stack([base + 0.1 * c for c in range(channels)]).expand(n, channels, side, side).clone()


def test_zero_noise_is_deterministic_and_equals_no_noise():
    g = _perturbed(LearnedDownsampler(**CAMERA)).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(g(x), g(x))
        assert torch.equal(g(x, torch.zeros(2, 3, 8, 8)), g(x))


def test_different_noise_gives_different_lr_of_the_same_level():
    g = _perturbed(LearnedDownsampler(**CAMERA)).eval()
    with torch.no_grad():
        g.log_read_sigma.fill_(math.log(4 / 127.5))  # 4 levels of read noise
    x = _smooth_hr()
    with torch.no_grad():
        clean = g(x)
        a, b = g(x, torch.randn(2, 3, 16, 16)), g(x, torch.randn(2, 3, 16, 16))
    assert (a - b).abs().mean() > 1e-3
    for noisy in (a, b):
        assert (noisy - clean).std().item() * 127.5 == pytest.approx(4.0, rel=0.2)


def test_noise_grows_with_the_signal_when_shot_noise_is_learned():
    g = LearnedDownsampler(**CAMERA).eval()
    with torch.no_grad():
        g.log_shot_gain.fill_(math.log((8 / 127.5) ** 2))
        dark, bright = g.noise_sigma(torch.full((1, 3, 1, 1), -0.9)), g.noise_sigma(torch.full((1, 3, 1, 1), 0.9))
    assert (bright > 2 * dark).all()


def test_colour_transform_changes_colour_but_not_the_structure_part():
    g = LearnedDownsampler(**CAMERA).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        g.colour_matrix.copy_(torch.tensor([[1.1, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.8]]))
        g.colour_offset.copy_(torch.tensor([0.05, 0.0, -0.05]))
        parts = g(x, None, return_parts=True)
    assert torch.equal(parts.structure, downsample(x, 4))  # the untrained residual is zero
    assert (parts.lr[:, 0] - parts.structure[:, 0]).abs().mean() > 0.01
    assert torch.allclose(parts.lr[:, 1], parts.structure[:, 1])


def test_grey_camera_stays_one_channel():
    g = LearnedDownsampler(**{**CAMERA, "image_channels": 1}).eval()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        y = g(x, torch.randn(2, 1, 8, 8))
    assert y.shape == (2, 1, 8, 8)
    assert g.colour_matrix.shape == (1, 1)


def test_camera_parameters_are_split_from_the_network_and_all_get_gradients():
    g = _perturbed(LearnedDownsampler(**CAMERA))
    names = {n for n, _ in g.named_parameters()}
    assert {"log_read_sigma", "log_shot_gain", "noise_kernel", "colour_matrix", "colour_offset"} <= names
    assert len(g.camera_parameters()) == 5
    assert len(g.camera_parameters()) + len(g.network_parameters()) == len(list(g.parameters()))
    g(torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, 3, 8, 8)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())


def test_save_and_load_keeps_the_camera_parts(tmp_path):
    g = _perturbed(LearnedDownsampler(**CAMERA)).eval()
    with torch.no_grad():
        g.log_read_sigma.fill_(-3.0)
        g.colour_offset.fill_(0.02)
    g.save_pretrained(tmp_path)
    loaded = load_downsampler(tmp_path)
    x, n = torch.rand(1, 3, 32, 32) * 2 - 1, torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(g(x, n), loaded(x, n))
    assert loaded.camera_summary() == g.camera_summary()


def test_first_design_still_loads_and_has_no_camera_parts():
    g = LearnedDownsampler(scale=4, channels=8, num_blocks=1, norm_num_groups=4)
    assert g.config.noise_model == "input" and g.camera_parameters() == [] and g.camera_summary() == {}
    with pytest.raises(ValueError, match="colour_transform needs"):
        LearnedDownsampler(scale=4, channels=8, num_blocks=1, norm_num_groups=4, colour_transform=True)


def test_flat_noise_sigma_measures_noise_not_texture():
    torch.manual_seed(0)
    smooth = downsample(_smooth_hr(4, 128), 4)
    textured = smooth + 0.3 * torch.sign(torch.sin(torch.arange(32.0) * 0.8))[None, None, None, :]  # 8-px stripes
    for level in (2.0, 6.0):
        noisy = smooth + torch.randn_like(smooth) * level / 127.5
        assert (flat_noise_sigma(noisy) * 127.5).mean().item() == pytest.approx(level, rel=0.15)
    # Strong texture in part of the batch does not read as noise where the scene is flat.
    mixed = torch.cat([smooth[:2], textured[2:]]) + torch.randn_like(smooth) * 3 / 127.5
    assert (flat_noise_sigma(mixed) * 127.5).mean().item() == pytest.approx(3.0, rel=0.25)


def test_noise_match_trains_the_noise_level_toward_the_field_camera():
    torch.manual_seed(0)
    g = LearnedDownsampler(**{**CAMERA, "colour_transform": False})
    x = _smooth_hr(4, 64)
    field = downsample(x, 4) + torch.randn(4, 3, 16, 16) * 5 / 127.5
    opt = torch.optim.Adam(g.camera_parameters(), lr=0.05)
    for _ in range(150):
        parts = g(x, torch.randn(4, 3, 16, 16), return_parts=True)
        view = (parts.lr - parts.noise).detach() + parts.noise
        loss = noise_match(view, field)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sigma = g.noise_sigma(torch.zeros(1, 3, 1, 1)).mean().item() * 127.5
    assert sigma == pytest.approx(5.0, rel=0.25)
    with torch.no_grad():  # white field noise: the learned noise is white too (equal level in every band)
        levels = flat_noise_sigma(g(x, torch.randn(4, 3, 16, 16)) - g(x)).mean(dim=0) * 127.5
    assert levels.min() > 0.7 * levels.max()


def test_colour_match_learns_a_cast():
    torch.manual_seed(0)
    g = LearnedDownsampler(**CAMERA)
    x = torch.rand(8, 3, 32, 32) * 1.6 - 0.8
    cast = torch.tensor([1.1, 1.0, 0.85])[None, :, None, None]
    field = downsample(x, 4) * cast + 0.05
    opt = torch.optim.Adam([g.colour_matrix, g.colour_offset], lr=0.01)
    before = colour_match(g.colour(downsample(x, 4)), field, 1.0).item()
    for _ in range(200):
        loss = colour_match(g.colour(downsample(x, 4)), field, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * before
    assert g.colour_matrix[2, 2].item() < 0.95 and g.colour_matrix[0, 0].item() > 1.03


def test_grey_camera_model_never_invents_colour():
    g = _perturbed(LearnedDownsampler(**{**CAMERA, "colour_transform": False, "grey": True})).eval()
    with torch.no_grad():
        g.log_read_sigma.fill_(math.log(5 / 127.5))
        y = g(torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, 3, 8, 8))  # even from a colour HR image
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    with pytest.raises(ValueError, match="grey camera model"):
        LearnedDownsampler(**{**CAMERA, "grey": True})  # a colour transform makes no sense for grey


def test_grey_camera_model_records_the_luma_of_a_colour_scene():
    """A grey G fed a colour HR image (calibration pairs, LR sets) gives the luma a grey sensor records,
    as its training references were made (grey_rgb), not the channels' mean."""
    from sr_pipeline.sr.images.tensors import LUMA

    g = LearnedDownsampler(**{**CAMERA, "colour_transform": False, "grey": True, "blur_model": "kernel"}).eval()
    x = torch.zeros(1, 3, 32, 32)
    x[:, 1] = 0.8  # a green scene: luma 0.587 * 0.8, mean 0.8 / 3
    with torch.no_grad():
        y = g(x)
        y_grey = g(torch.einsum("c,bchw->bhw", torch.as_tensor(LUMA), x)[:, None].expand_as(x))
    assert torch.allclose(y, torch.full_like(y, float(LUMA[1]) * 0.8), atol=1e-5)
    assert torch.allclose(y, y_grey, atol=1e-5)  # the same as from the scene's own grey picture


def test_edge_sharpness_falls_with_blur_and_ignores_contrast():
    from sr_pipeline.sr.train.losses import edge_sharpness, lowpass

    torch.manual_seed(0)
    y = torch.nn.functional.interpolate(torch.rand(4, 3, 8, 8) * 2 - 1, size=32, mode="nearest")  # sharp blocks
    values = [edge_sharpness(lowpass(y, s) if s else y).item() for s in (0, 0.7, 1.5)]
    assert values[0] > values[1] > values[2] > 1.0
    assert edge_sharpness(0.5 * y).item() == pytest.approx(values[0], rel=1e-4)


def test_student_can_start_from_scratch_for_the_plain_baseline(tmp_path):
    from accelerate import Accelerator

    from conftest import tiny_sr_model
    from sr_pipeline.sr.models.checkpoints import load_sr_model
    from sr_pipeline.sr.train.profile import ColearnConfig, DiffusionConfig, NetConfig, OptimConfig, Profile
    from sr_pipeline.sr.train.stages.colearn import CoLearner

    teacher = load_sr_model(tiny_sr_model(tmp_path / "t", {"kind": "teacher", "version": "t"}))
    net = NetConfig(block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4)
    for init, same in ((True, True), (False, False)):
        cfg = ColearnConfig(train=OptimConfig(steps=1, batch_size=2, patch_size=32), use_downsampler=False,
                            init_from_teacher=init)
        learner = CoLearner(Profile(name="p", net=net, diffusion=DiffusionConfig(num_steps=4), colearn=cfg),
                            teacher.net, teacher.schedule, Accelerator(cpu=True))
        student = learner.unwrap(learner.student).state_dict()
        equal = all(torch.equal(v, student[k]) for k, v in teacher.net.state_dict().items())
        assert equal is same


KERNEL = dict(scale=4, noise_model="camera", blur_model="kernel")


def _laplacian_energy(y: torch.Tensor) -> float:
    lap = y[..., 1:-1, 1:-1] * 4 - y[..., :-2, 1:-1] - y[..., 2:, 1:-1] - y[..., 1:-1, :-2] - y[..., 1:-1, 2:]
    return float(lap.pow(2).mean())


def test_the_kernel_camera_model_starts_at_bicubic_and_can_only_blur(tmp_path):
    g = LearnedDownsampler(**KERNEL).eval()
    assert g.network_parameters() == [] and {n for n, _ in g.named_parameters()} <= set(g.CAMERA_PARAMETERS)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64) * 2 - 1  # all texture: the hardest case for "never adds detail"
    with torch.no_grad():
        assert torch.allclose(g(x), downsample(x, 4), atol=2e-3)  # starts (almost) at bicubic downsampling
        k = g.blur_kernel()
        assert float(k.min()) >= 0 and float(k.sum()) == pytest.approx(1.0)
        base = _laplacian_energy(downsample(x, 4))
        for sigmas, angle in (((0.8, 0.8), 0.0), ((2.5, 0.4), 0.7), ((0.1, 3.0), -1.2)):
            g.blur_log_sigma.copy_(torch.log(torch.tensor(sigmas)) / 5.0)
            g.blur_angle.fill_(angle)
            assert _laplacian_energy(g(x)) < base  # a non-negative kernel summing to one never sharpens
        assert g.camera_summary()["blur_sigmas_hr_px"] == pytest.approx([0.1, 3.0], abs=1e-3)
        g.save_pretrained(tmp_path / "g")
        again = load_downsampler(tmp_path / "g")
        assert again.config.blur_model == "kernel" and torch.allclose(again(x), g(x))
        # the streaming entry point (LR-sized parts) gives exactly what forward gives
        assert torch.equal(g.from_parts(downsample(x, 4), F.pixel_unshuffle(x, 4)), g(x))
        # the grain comes from eps' alone: with noise, HF energy rises above the deterministic output's
        g.log_read_sigma.fill_(math.log(6 / 127.5))
        assert _laplacian_energy(g(x, torch.randn(2, 3, 16, 16))) > _laplacian_energy(g(x))


def test_the_kernel_camera_model_needs_the_camera_noise_model():
    from sr_pipeline.sr.train.profile import DownsamplerConfig

    with pytest.raises(ValueError, match="noise_model"):
        LearnedDownsampler(scale=4, noise_model="input", blur_model="kernel")
    with pytest.raises(ValueError, match="noise_model"):
        DownsamplerConfig(noise_model="input", blur_model="kernel")


def test_set_blur_sigma_makes_an_isotropic_kernel_of_that_width():
    g = LearnedDownsampler(**KERNEL).eval()
    g.blur_angle.data.fill_(0.9)
    g.set_blur_sigma(2.0)
    assert g.camera_summary()["blur_sigmas_hr_px"] == pytest.approx([2.0, 2.0], abs=1e-4)
    k = g.blur_kernel()
    assert torch.allclose(k, k.T, atol=1e-6)  # isotropic: the angle no longer matters
    with pytest.raises(ValueError, match="kernel"):
        LearnedDownsampler(scale=4, noise_model="camera").set_blur_sigma(1.0)
