"""A JPEG file's encoder settings (quantisation tables, chroma subsampling), read at ingestion.

A camera's uploads carry the settings its encoder used in their headers; ``sr/models/differentiable_jpeg.py`` applies the same
compression to G's LR. This module needs only PIL, so ingestion reads the settings without torch.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from PIL import Image

# ITU T.81 Annex K tables (natural row-major order): what libjpeg scales by its quality setting.
_ANNEX_K_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
# Chroma subsampling -> its (horizontal, vertical) factors, and PIL's get_sampling codes for each.
SUBSAMPLING = {"4:4:4": (1, 1), "4:2:2": (2, 1), "4:2:0": (2, 2)}
_PIL_SAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


@dataclass(frozen=True)
class JpegSettings:
    """A JPEG encoder's settings as its files record them: ``tables`` (64 ints each, natural order):
    the luma table, then the chroma table (absent for a grey file); ``subsampling`` of the chroma
    (``grey`` for a one-component file)."""

    tables: tuple[tuple[int, ...], ...]
    subsampling: str

    def __post_init__(self):
        if self.subsampling != "grey" and self.subsampling not in SUBSAMPLING:
            raise ValueError(f"unknown chroma subsampling {self.subsampling!r}")
        need = 1 if self.subsampling == "grey" else 2
        if len(self.tables) < need or any(len(t) != 64 or min(t) < 1 for t in self.tables):
            raise ValueError(f"a {self.subsampling} JPEG needs {need} quantisation tables of 64 positive ints")

    @property
    def grey(self) -> bool:
        return self.subsampling == "grey"

    @property
    def factors(self) -> tuple[int, int]:
        """The chroma subsampling's (horizontal, vertical) factors; (1, 1) for grey."""
        return (1, 1) if self.grey else SUBSAMPLING[self.subsampling]

    def to_config(self) -> dict:
        return {"tables": [list(t) for t in self.tables], "subsampling": self.subsampling}

    @classmethod
    def from_config(cls, cfg: dict) -> "JpegSettings":
        return cls(tables=tuple(tuple(int(v) for v in t) for t in cfg["tables"]), subsampling=str(cfg["subsampling"]))

    def to_json(self) -> str:
        return json.dumps(self.to_config(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "JpegSettings":
        return cls.from_config(json.loads(text))

    def quality(self) -> int:
        """The IJG quality (1-100) whose scaled Annex K luma table is nearest this file's, for reports."""
        return min(range(1, 101), key=lambda q: sum(abs(a - b) for a, b in zip(annex_k_luma(q), self.tables[0])))

    def describe(self) -> dict:
        return {"subsampling": self.subsampling, "quality_estimate": self.quality()}


def annex_k_luma(quality: int) -> tuple[int, ...]:
    """libjpeg's luma table at an IJG quality (jcparam.c's scaling, baseline: clipped to 1..255)."""
    q = max(1, min(100, int(quality)))
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return tuple(max(1, min(255, (v * scale + 50) // 100)) for v in _ANNEX_K_LUMA)


def jpeg_settings(im: Image.Image) -> JpegSettings | None:
    """The settings of an opened JPEG (None for any other format, or tables PIL could not read)."""
    if im.format != "JPEG":
        return None
    from PIL import JpegImagePlugin

    try:
        tables = getattr(im, "quantization", None) or {}
        if im.mode == "L":
            return JpegSettings((tuple(tables[0]),), "grey")
        sampling = _PIL_SAMPLING.get(JpegImagePlugin.get_sampling(im))
        if sampling is None or im.mode != "RGB" or len(tables) < 2:
            return None  # CMYK, unusual sampling: not a camera model's business
        return JpegSettings((tuple(tables[0]), tuple(tables[1])), sampling)
    except Exception:  # a malformed header must never cost the image itself: no settings, that is all
        return None


def common_settings(values: Iterable[str | None]) -> tuple[JpegSettings | None, float]:
    """The most common settings among a camera's files (JSON strings; None: not JPEG) and the share
    of files that carry them."""
    values = list(values)
    counts = Counter(v for v in values if v)
    if not counts:
        return None, 0.0
    text, n = counts.most_common(1)[0]
    return JpegSettings.from_json(text), n / len(values)
