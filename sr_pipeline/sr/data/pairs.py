"""HR/LR pairs on disk: discovery (``HR/`` + ``LR/`` matched by file name), the RealSR split rule,
loading, and the bicubic baseline every evaluation includes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
SPLITS = ("all", "even", "odd")


class EvaluationError(ValueError):
    """The pairs or a method's output cannot be evaluated; the message says what to fix."""


@dataclass(frozen=True)
class Pair:
    name: str
    hr_path: Path
    lr_path: Path


def _subdir(root: Path, name: str) -> Path | None:
    for cand in (root / name.upper(), root / name.lower()):
        if cand.is_dir():
            return cand
    return None


def _images_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in found:
                raise EvaluationError(f"two images named {p.stem!r} in {folder}: {found[p.stem].name}, {p.name}")
            found[p.stem] = p
    return found


def first_number(name: str) -> int | None:
    """The first run of digits in a file name (``Canon_004_LR4.png`` -> 4), or None."""
    m = re.search(r"\d+", name)
    return int(m.group()) if m else None


def find_pairs(pairs_dir: Path, split: str = "all") -> list[Pair]:
    """HR/LR pairs under ``pairs_dir`` (``HR/`` and ``LR/``, matched by file name; the extension may
    differ in case or kind). ``split`` keeps files whose first number is even or odd (RealSR protocol).
    """
    if split not in SPLITS:
        raise EvaluationError(f"split must be one of {SPLITS}, got {split!r}")
    pairs_dir = Path(pairs_dir)
    hr_dir, lr_dir = _subdir(pairs_dir, "hr"), _subdir(pairs_dir, "lr")
    if hr_dir is None or lr_dir is None:
        raise EvaluationError(f"{pairs_dir} must hold HR/ and LR/ folders of images matched by file name")
    hr, lr = _images_by_stem(hr_dir), _images_by_stem(lr_dir)
    stems = sorted(hr.keys() & lr.keys())
    if not stems:
        raise EvaluationError(f"no file name is in both {hr_dir} ({len(hr)} images) and {lr_dir} ({len(lr)} images)")
    if split != "all":
        unnumbered = [s for s in stems if first_number(s) is None]
        if unnumbered:
            raise EvaluationError(f"--split {split} needs a number in every file name; none in {unnumbered[:5]}")
        parity = 0 if split == "even" else 1
        stems = [s for s in stems if first_number(s) % 2 == parity]  # type: ignore[operator]
        if not stems:
            raise EvaluationError(f"no pair in {pairs_dir} has an {split} first number")
    return [Pair(hr[s].name, hr[s], lr[s]) for s in stems]


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """PIL bicubic enlargement by ``scale`` (the plain-enlargement baseline)."""
    h, w = lr.shape[:2]
    return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), Image.Resampling.BICUBIC))
