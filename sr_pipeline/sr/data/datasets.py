"""Training data: degraded HR/LR pairs for the teacher, HR crops and unpaired field LR crops for co-learning.

Every sample is a pure function of (seed, index): its generator is seeded from both, so each
DataLoader worker draws its own independent stream, the batches are the same for any number of
workers, and a loader started at sample k yields exactly what the k-th sample onwards would have
been. Crops get a random flip/transpose (the 8 symmetries of the square); the pair's LR is made
from the transformed HR crop, so the two stay aligned.

Images smaller than the crop are reflect-padded, not upscaled: an upscaled HR crop is blurry,
and the teacher would learn that blur is what HR looks like.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sr_pipeline.sr.data.degrade import DegradationConfig, degrade

ENDLESS = 2**40  # default dataset length: more samples than any training run draws


def _check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(images) == 0:
        raise ValueError("no images to crop from")
    for i, img in enumerate(images):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image {i}: expected uint8 HxWx3, got {img.dtype} {img.shape}")
    return list(images)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (or float in [0, 1]) HxWx3 -> float32 3xHxW in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
    return t.div_(127.5).sub_(1.0) if img.dtype == np.uint8 else t.mul_(2.0).sub_(1.0)


def dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """The k-th (0..7) symmetry of the square: bit 0 flips left-right, bit 1 up-down, bit 2 transposes."""
    if k & 1:
        img = img[:, ::-1]
    if k & 2:
        img = img[::-1]
    if k & 4:
        img = img.transpose(1, 0, 2)
    return img


class _SeededCrops(Dataset):
    """Random square crops, sample i drawn from a generator seeded by (seed, salt, i)."""

    salt = 0  # separates the streams of the dataset kinds when they share a seed

    def __init__(self, images: Sequence[np.ndarray], patch: int, seed: int = 0,
                 length: int = ENDLESS, augment: bool = True) -> None:
        if patch < 1:
            raise ValueError("patch must be positive")
        if seed < 0:
            raise ValueError("seed must be non-negative")
        self.images = _check_images(images)
        self.patch, self.seed, self.length, self.augment = patch, seed, length, augment

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return np.random.default_rng([self.seed, self.salt, index])

    def _crop(self, rng: np.random.Generator) -> np.ndarray:
        img = self.images[int(rng.integers(len(self.images)))]
        p = self.patch
        h, w = img.shape[:2]
        if h < p or w < p:
            ph, pw = max(0, p - h), max(0, p - w)
            img = np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="reflect")
            h, w = img.shape[:2]
        top, left = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
        crop = img[top : top + p, left : left + p]
        if self.augment:
            crop = dihedral(crop, int(rng.integers(8)))
        return np.ascontiguousarray(crop)


class DegradedPairs(_SeededCrops):
    """The teacher's pairs: ``{"hr": 3xPxP, "lr": 3x(P/s)x(P/s)}``, float32 in [-1, 1]."""

    salt = 1

    def __init__(self, images: Sequence[np.ndarray], patch: int, cfg: DegradationConfig, seed: int = 0,
                 length: int = ENDLESS, augment: bool = True) -> None:
        if patch % cfg.scale:
            raise ValueError(f"patch {patch} is not a multiple of the scale {cfg.scale}")
        super().__init__(images, patch, seed, length, augment)
        self.cfg = cfg

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self._rng(index)
        hr = self._crop(rng)
        lr = degrade(hr.astype(np.float32) / 255.0, self.cfg, rng)
        return {"hr": _to_tensor(hr), "lr": _to_tensor(lr)}


class HRCrops(_SeededCrops):
    """HR reference crops (co-learning's HR batches): float32 3xPxP in [-1, 1]."""

    salt = 2

    def __getitem__(self, index: int) -> torch.Tensor:
        return _to_tensor(self._crop(self._rng(index)))


class UnpairedLR(_SeededCrops):
    """Crops of real field-camera LR images (no HR exists for them): float32 3xPxP in [-1, 1].

    ``patch`` is the LR crop side, i.e. the HR patch divided by the scale.
    """

    salt = 3

    def __getitem__(self, index: int) -> torch.Tensor:
        return _to_tensor(self._crop(self._rng(index)))


def loader_for(dataset: Dataset, batch: int, workers: int = 0, start: int = 0) -> DataLoader:
    """Batches of ``dataset`` in index order from sample ``start`` (resume at step k: start = k * batch)."""
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=range(start, len(dataset)),
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
        # Its own generator: starting an iterator must not draw from the global RNG, whose state a
        # resumed training run restores (otherwise resumed runs would drift from uninterrupted ones).
        generator=torch.Generator().manual_seed(0),
    )


def make_loader(images: Sequence[np.ndarray], patch: int, batch: int, cfg: DegradationConfig,
                seed: int = 0, workers: int = 0, start: int = 0) -> DataLoader:
    """The teacher's endless loader of degraded pairs; identical batches for any ``workers``."""
    return loader_for(DegradedPairs(images, patch, cfg, seed), batch, workers, start)
