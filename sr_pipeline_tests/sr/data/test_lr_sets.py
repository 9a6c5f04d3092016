"""Learned-degradation LR sets: variants from G, image statistics, realism, diversity and the preview."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from sr_pipeline.sr.data import lr_sets
from sr_pipeline.sr.models.downsampler import LearnedDownsampler
from sr_pipeline.sr.images.tensors import downsample, to_tensor, to_uint8
from sr_pipeline.sr.train.losses import lowpass

TINY = dict(scale=4, channels=8, num_blocks=1, norm_num_groups=4)


def scene(size=64, seed=0, smooth=3.0):
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.uniform(0, 255, (size, size, 3)), sigma=(smooth, smooth, 0))
    img = (img - img.min()) / (np.ptp(img) + 1e-9) * 200 + 20
    return img.astype(np.uint8)


def noisy(img, sigma, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).round().astype(np.uint8)


def perturbed_g():
    torch.manual_seed(0)
    g = LearnedDownsampler(**TINY)
    torch.nn.init.normal_(g.conv_out.weight, std=0.1)
    return g.eval()


def test_untrained_g_gives_bicubic_for_every_seed_and_crops_to_the_scale():
    g = LearnedDownsampler(**TINY).eval()
    hr = scene(66)
    variants = lr_sets.generate_variants(g, hr, [0, 1, 2])
    assert len(variants) == 3 and variants[0].shape == (16, 16, 3) and variants[0].dtype == np.uint8
    assert all(np.array_equal(v, lr_sets.bicubic_lr(hr, 4)) for v in variants)
    assert lr_sets.diversity(variants) == 0.0


def test_noise_seeds_give_diverse_reproducible_variants():
    g = perturbed_g()
    hr = scene(64)
    a = lr_sets.generate_variants(g, hr, [0, 1, 2])
    assert lr_sets.diversity(a) > 0.001
    assert all(np.array_equal(x, y) for x, y in zip(a, lr_sets.generate_variants(g, hr, [0, 1, 2])))
    assert lr_sets.diversity(a[:1]) == 0.0


def test_noise_estimate_follows_added_gaussian_noise():
    flat = np.full((96, 96, 3), 128, np.uint8)
    for sigma in (5.0, 15.0):
        est = lr_sets.image_stats(noisy(flat, sigma))["noise_sigma"]
        assert est == pytest.approx(sigma, rel=0.15)
    assert lr_sets.image_stats(scene(96))["noise_sigma"] < 1.5


def test_sharpness_and_frequency_statistics_drop_with_blur():
    sharp = noisy(scene(96), 8)
    blurred = gaussian_filter(sharp.astype(float), sigma=(1.5, 1.5, 0)).round().astype(np.uint8)
    s, b = lr_sets.image_stats(sharp), lr_sets.image_stats(blurred)
    assert b["log_laplacian_var"] < s["log_laplacian_var"]
    assert b["gradient_mean"] < s["gradient_mean"]
    assert b["hf_ratio"] < s["hf_ratio"] and b["spectrum_slope"] < s["spectrum_slope"]
    white = lr_sets.image_stats(noisy(np.full((128, 128, 3), 128, np.uint8), 20))
    assert white["hf_ratio"] == pytest.approx(0.75, abs=0.05)  # flat spectrum: share of the disk beyond 0.25
    assert abs(white["spectrum_slope"]) < 0.3


def test_colour_statistics():
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 200
    st = lr_sets.image_stats(red)
    assert st["mean_r"] == pytest.approx(200 / 255) and st["mean_g"] == 0 and st["saturation"] == pytest.approx(1.0)
    assert lr_sets.image_stats(np.full((16, 16, 3), 90, np.uint8))["saturation"] == 0


def test_realism_distance_is_zero_for_the_pool_itself_and_grows_with_mismatch():
    field = [noisy(scene(48, i), 10, i) for i in range(6)]
    pool = lr_sets.set_stats(field)
    assert lr_sets.realism_distance(pool, pool)["total"] == pytest.approx(0.0, abs=1e-9)
    close = lr_sets.set_stats([noisy(scene(48, 10 + i), 10, 10 + i) for i in range(6)])
    far = lr_sets.set_stats([scene(48, 10 + i) for i in range(6)])  # no noise: unlike the field camera
    d_close, d_far = lr_sets.realism_distance(close, pool), lr_sets.realism_distance(far, pool)
    assert d_far["total"] > d_close["total"]
    assert d_far["noise_sigma"] > 3 * d_close["noise_sigma"]
    assert set(d_far) == set(lr_sets.STATISTICS) | {"total", "colour"}


def test_a_grey_field_pool_judges_degradation_not_colour():
    # An inspection camera that records grey: its pool has no colour spread. Colour scenes with the same
    # noise must come out close on the degradation total, far only on colour.
    grey = [np.repeat(noisy(scene(48, i), 10, i).mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
            for i in range(6)]
    pool = lr_sets.set_stats(grey)
    same_noise = lr_sets.realism_distance(lr_sets.set_stats([noisy(scene(48, 10 + i), 10, 10 + i) for i in range(6)]), pool)
    no_noise = lr_sets.realism_distance(lr_sets.set_stats([scene(48, 10 + i) for i in range(6)]), pool)
    assert same_noise["total"] < no_noise["total"]
    assert same_noise["colour"] > same_noise["total"]
    assert same_noise["colour"] < 1e3  # far, but in units of a 1 % colour step rather than of a zero spread


def test_build_lr_sets_summary_and_preview():
    hr = [scene(64, i) for i in range(3)]
    field = [noisy(scene(16, 20 + i), 6, i) for i in range(4)]
    sets = lr_sets.build_lr_sets(perturbed_g(), hr, field, k=3, seed=7)
    assert len(sets.variants) == 3 and all(len(v) == 3 for v in sets.variants)
    assert sets.seeds[1] == [1007, 1008, 1009]
    summary = sets.summary()
    json.dumps(summary)
    assert summary["variants_per_hr"] == 3 and summary["diversity_l1"] > 0
    assert set(summary["mean_stats"]) == {"learned", "bicubic", "field"}
    png = lr_sets.preview_grid(hr, sets.bicubic, sets.variants, 4, max_rows=2, cell=64)
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        assert im.size == (5 * (64 + 2) + 2, 14 + 2 * (64 + 2) + 2)  # HR, bicubic, 3 variants; 2 rows
    with pytest.raises(ValueError):
        lr_sets.build_lr_sets(perturbed_g(), hr, [], k=2)


class KnownDegradation(LearnedDownsampler):
    """A stand-in G that degrades by a known recipe: bicubic down, Gaussian blur (``blur`` LR pixels,
    negative: unsharp masking) and Gaussian noise of ``sigma`` grey levels drawn from G's own noise input."""

    def configure(self, blur: float, sigma: float) -> "KnownDegradation":
        self.blur, self.sigma = blur, sigma
        return self

    def forward(self, x_hr, noise=None):
        y = downsample(x_hr, self.config.scale)
        if self.blur > 0:
            y = lowpass(y, self.blur)
        elif self.blur < 0:
            y = 2 * y - lowpass(y, -self.blur)
        return y if noise is None else y + self.sigma / 127.5 * noise


def field_camera(hr: np.ndarray, blur: float, sigma: float, seed: int) -> np.ndarray:
    """An LR image of ``hr`` as the field camera records it: the recipe above, noise from ``seed``."""
    g = KnownDegradation(**TINY).configure(blur, sigma)
    noise = torch.randn(g.lr_shape(to_tensor(hr)), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return to_uint8(g(to_tensor(hr), noise))


@pytest.mark.parametrize("smooth, blur, sigma, wrong, stat", [
    (3.0, 1.0, 0.0, (-1.0, 0.0), "gradient_mean"),  # a soft field camera; the wrong G sharpens
    (6.0, 0.0, 6.0, (0.0, 30.0), "noise_sigma"),  # a noisy field camera; the wrong G adds five times the noise
])
def test_a_downsampler_with_the_field_degradation_is_measured_closer_than_bicubic(smooth, blur, sigma, wrong, stat):
    # The field pool (other scenes) is degraded by a known recipe. G with the field's own recipe must come out
    # closer than bicubic, on the total and on the statistic the recipe moves; G with the wrong recipe further.
    hr = [scene(128, i, smooth) for i in range(4)]
    field = [field_camera(scene(128, 50 + i, smooth), blur, sigma, seed=i) for i in range(8)]
    right = lr_sets.build_lr_sets(KnownDegradation(**TINY).configure(blur, sigma), hr, field, k=2, seed=3)
    off = lr_sets.build_lr_sets(KnownDegradation(**TINY).configure(*wrong), hr, field, k=2, seed=3)
    bicubic = right.realism_bicubic
    assert off.realism_bicubic == bicubic  # the same HR images, so the same bicubic baseline

    assert right.learned_closer_than_bicubic and right.summary()["learned_closer_than_bicubic"] is True
    assert not off.learned_closer_than_bicubic and off.summary()["learned_closer_than_bicubic"] is False
    assert right.realism_learned["total"] < 0.5 * bicubic["total"] < 0.5 * off.realism_learned["total"]
    assert right.realism_learned[stat] < 0.5 * bicubic[stat] < 0.5 * off.realism_learned[stat]
    # The mean statistic: bicubic misses the field's value, the right recipe meets it, the wrong one misses more.
    mean = {name: st[stat] for name, st in right.stats.items()}
    miss = mean["bicubic"] - mean["field"]
    assert abs(miss) > 0.3 * mean["field"]
    assert abs(mean["learned"] - mean["field"]) < 0.2 * abs(miss)
    assert abs(off.stats["learned"][stat] - mean["field"]) > 1.5 * abs(miss)


def test_a_colour_cast_moves_only_the_colour_distance():
    # The same field images with a red cast: the camera's degradation is unchanged (total stays at zero),
    # the colour statistics move (mean red up by 20 grey levels = 8 % against a pool spread of a few %).
    field = [noisy(scene(48, i), 6, i) for i in range(6)]
    cast = [f + np.array([20, 0, 0], np.uint8) for f in field]
    assert max(int(f[..., 0].max()) for f in field) <= 235  # no wrap-around
    pool = lr_sets.set_stats(field)
    d = lr_sets.realism_distance(lr_sets.set_stats(cast), pool)
    assert d["total"] < 0.05
    assert d["mean_r"] > 1 and d["mean_g"] == d["mean_b"] == 0 and d["colour"] > 0.25
