"""How an image is cut into LR tiles for upscaling: the one place the tiling's defaults live.

Torch-free, so the command line and the Dagster layer take their defaults from here without loading
a network; :class:`~sr_pipeline.sr.serve.upscaler.Upscaler` takes the object whole.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class TileSettings:
    """The tiling of one upscaling run.

    Args:
        tile: LR pixels per tile side; peak memory is bounded by it.
        overlap: LR pixels shared by neighbouring tiles (feathered together), below ``tile``.
        batch: tiles per network call (the upscaler lowers it to fit its memory budget).
    """

    tile: int = 128
    overlap: int = 16
    batch: int = 4

    def __post_init__(self) -> None:
        for name in ("tile", "overlap", "batch"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise ValueError(f"{name} must be a whole number, not {value!r}")
        if self.tile < 1:
            raise ValueError(f"tile {self.tile} must be >= 1 LR pixel")
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap {self.overlap} must be in 0..{self.tile - 1} (below the tile {self.tile})")
        if self.batch < 1:
            raise ValueError(f"batch {self.batch} must be >= 1 tile per network call")
