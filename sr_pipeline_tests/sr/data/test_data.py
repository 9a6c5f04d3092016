"""Training datasets and loaders: shapes, ranges, seeds, workers, alignment of HR and LR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sr_pipeline.sr.data.datasets import DegradedPairs, HRCrops, UnpairedLR, dihedral, loader_for, make_loader
from sr_pipeline.sr.data.degrade import DegradationConfig, bicubic_down


def _images(*sizes: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return ((t.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)


def _is_window(small: np.ndarray, big: np.ndarray) -> bool:
    """Whether ``small`` appears somewhere in ``big`` as a contiguous window."""
    h, w = small.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(big, (h, w, 3))[..., 0, :, :, :]
    return bool((windows == small).all(axis=(-3, -2, -1)).any())


def test_pairs_have_the_right_shapes_and_ranges():
    ds = DegradedPairs(_images((40, 52), (64, 64)), patch=32, cfg=DegradationConfig(), seed=0)
    for i in range(6):
        item = ds[i]
        assert item["hr"].shape == (3, 32, 32) and item["lr"].shape == (3, 8, 8)
        for t in item.values():
            assert t.dtype == torch.float32 and t.min() >= -1.0 and t.max() <= 1.0


def test_pairs_are_reproducible_per_seed_and_index():
    images = _images((40, 52), (64, 64))
    cfg = DegradationConfig()
    a = DegradedPairs(images, 32, cfg, seed=3)
    b = DegradedPairs(images, 32, cfg, seed=3)
    c = DegradedPairs(images, 32, cfg, seed=4)
    for i in (0, 5):
        assert torch.equal(a[i]["hr"], b[i]["hr"]) and torch.equal(a[i]["lr"], b[i]["lr"])
        assert not torch.equal(a[i]["hr"], c[i]["hr"])
    assert not torch.equal(a[0]["hr"], a[1]["hr"])


def test_lr_stays_aligned_with_the_flipped_cropped_hr():
    ds = DegradedPairs(_images((40, 52), (33, 70)), 16, DegradationConfig.plain(4), seed=1)
    for i in range(16):
        item = ds[i]
        hr = (item["hr"].permute(1, 2, 0).numpy() + 1) / 2
        lr = (item["lr"].permute(1, 2, 0).numpy() + 1) / 2
        np.testing.assert_allclose(lr, bicubic_down(hr, 4), atol=1e-5)


def test_hr_crop_is_a_flipped_or_rotated_window_of_the_source():
    (img,) = _images((20, 24))
    ds = DegradedPairs([img], 8, DegradationConfig(), seed=2)
    for i in range(12):
        crop = _to_uint8(ds[i]["hr"])
        assert any(_is_window(dihedral(crop, k), img) for k in range(8))


def test_small_images_are_reflect_padded_not_scaled():
    (img,) = _images((10, 12))
    crop = _to_uint8(HRCrops([img], 16, seed=0)[0])
    assert crop.shape == (16, 16, 3)
    # The whole source lies inside the crop unchanged (up to the flip/rotation), at full resolution.
    assert any(_is_window(img, dihedral(crop, k)) for k in range(8))


def test_the_eight_symmetries_are_distinct():
    (img,) = _images((5, 5))
    variants = {dihedral(img, k).tobytes() for k in range(8)}
    assert len(variants) == 8


def test_loader_batches_do_not_depend_on_workers_and_resume_at_a_sample():
    images = _images((40, 52), (64, 64), (30, 30))
    cfg = DegradationConfig()

    def batches(workers: int, start: int = 0, n: int = 3) -> list[dict[str, torch.Tensor]]:
        it = iter(make_loader(images, 16, 4, cfg, seed=5, workers=workers, start=start))
        return [next(it) for _ in range(n)]

    serial, parallel = batches(0), batches(2)
    for s, p in zip(serial, parallel):
        assert s["hr"].shape == (4, 3, 16, 16) and s["lr"].shape == (4, 3, 4, 4)
        assert torch.equal(s["hr"], p["hr"]) and torch.equal(s["lr"], p["lr"])
    resumed = batches(0, start=8, n=1)[0]
    assert torch.equal(resumed["hr"], serial[2]["hr"]) and torch.equal(resumed["lr"], serial[2]["lr"])
    # Every sample of a batch is different: the workers do not repeat one stream.
    flat = serial[0]["hr"].flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(4) for j in range(i))


def test_hr_crops_and_unpaired_lr():
    hr = HRCrops(_images((64, 64)), 32, seed=1)
    lr = UnpairedLR(_images((20, 24), seed=1), 8, seed=1)
    for ds, side in ((hr, 32), (lr, 8)):
        x = ds[3]
        assert x.shape == (3, side, side) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1
        assert torch.equal(x, ds[3]) and not torch.equal(x, ds[4])
    batch = next(iter(loader_for(lr, batch=5)))
    assert batch.shape == (5, 3, 8, 8)


def test_bad_inputs_are_rejected():
    cfg = DegradationConfig()
    with pytest.raises(ValueError, match="multiple"):
        DegradedPairs(_images((32, 32)), 30, cfg)
    with pytest.raises(ValueError, match="uint8"):
        DegradedPairs([np.zeros((32, 32, 3), np.float32)], 16, cfg)
    with pytest.raises(ValueError, match="no images"):
        HRCrops([], 16)
    with pytest.raises(ValueError, match="non-negative"):
        UnpairedLR(_images((32, 32)), 8, seed=-1)


def test_augmentation_draws_all_eight_symmetries():
    # An image exactly one patch in size: every crop is the whole image, so only the symmetry varies.
    (img,) = _images((8, 8), seed=3)
    seen = {_to_uint8(HRCrops([img], 8, seed=0)[i]).tobytes() for i in range(64)}
    assert seen == {dihedral(img, k).tobytes() for k in range(8)}
    plain = HRCrops([img], 8, seed=0, augment=False)
    assert all(np.array_equal(_to_uint8(plain[i]), img) for i in range(8))


def test_dataset_kinds_draw_separate_streams_from_one_seed():
    # Co-learning seeds its HR crops and its field LR crops alike: the two must not pick the same windows.
    images = _images((64, 64), (48, 80))
    hr, lr = HRCrops(images, 16, seed=4), UnpairedLR(images, 16, seed=4)
    pairs = DegradedPairs(images, 16, DegradationConfig.plain(4), seed=4)
    for i in range(4):
        assert not torch.equal(hr[i], lr[i]) and not torch.equal(hr[i], pairs[i]["hr"])
        assert any(_is_window(dihedral(_to_uint8(lr[i]), k), im) for k in range(8) for im in images)
