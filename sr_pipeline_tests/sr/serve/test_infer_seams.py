"""Tile seams: feathered blending leaves no step in the upscaled image where one tile hands over to the next.

A network whose output depends on the whole tile (as the real UNet's GroupNorm does: it normalises by
the tile's own statistics) gives two overlapping tiles different values for the same pixels. Blended
with flat weights, the image then jumps where a tile begins or ends; the feathered ramps spread the
hand-over across the overlap. The test measures the mean |difference| between neighbouring HR columns
(rows) across the tile edges against the same figure everywhere else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from sr_pipeline.sr.models.checkpoints import LoadedModel
from sr_pipeline.sr.models.diffusion import ResShiftSchedule
from sr_pipeline.sr.serve.upscaler import TileSettings, Upscaler
from sr_pipeline.sr.models.upsampler import SRUNet

SCALE = 4


class TileContrastNet(SRUNet):
    """Bicubic upsampling (the untrained UNet) with its contrast stretched about the tile's own mean:
    an exaggerated form of the tile-level normalisation a trained network applies."""

    def forward(self, x_t_scaled, up_y, t):
        out = super().forward(x_t_scaled, up_y, t)
        return out + 0.5 * (out - out.mean(dim=(-2, -1), keepdim=True))


def tile_contrast_model() -> LoadedModel:
    net = TileContrastNet(scale=SCALE, block_out_channels=(8, 16), attention_levels=(False, False),
                          norm_num_groups=4, num_train_timesteps=4).eval()
    return LoadedModel(net, ResShiftSchedule(num_steps=4, kappa=1.0), {"kind": "student", "version": "seams"},
                       Path("tile-contrast"))


def textured_ramp(h: int, w: int) -> np.ndarray:
    """A brightness ramp (so every tile has its own mean) under fine smooth texture."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    tex = gaussian_filter(rng.uniform(0, 255, (h, w, 3)), sigma=(1.5, 1.5, 0))
    tex = (tex - tex.mean()) / tex.std() * 15
    base = 40 + 150 * (x + y)[..., None] / (h + w)
    return np.clip(base + tex, 0, 255).astype(np.uint8)


def tile_edges(length: int, tile: int, overlap: int) -> list[int]:
    """HR positions where a tile begins or ends inside the image: tiles step by tile - overlap LR pixels and
    the last one sits flush with the end (the tiling ``Upscaler`` documents)."""
    starts = sorted(set(list(range(0, length - tile, tile - overlap)) + [length - tile]))
    edges = {s for s in starts if s > 0} | {s + tile for s in starts if s + tile < length}
    return sorted(e * SCALE for e in edges)


def seam_ratio(hr: np.ndarray, edges: list[int], axis: int) -> float:
    """Mean |step| between neighbouring HR lines across the tile edges over the mean step elsewhere."""
    steps = np.abs(np.diff(hr, axis=axis)).mean(axis=tuple(a for a in range(3) if a != axis))
    seam = np.zeros(len(steps), dtype=bool)
    seam[[e - 1 for e in edges]] = True  # the step from line e - 1 to line e
    return float(steps[seam].mean() / steps[~seam].mean())


@pytest.mark.parametrize("tile, overlap", [(16, 4), (24, 8)])
def test_feathered_tiles_leave_no_seam(tile, overlap):
    model = tile_contrast_model()
    lr = textured_ramp(40, 56)
    tiled = np.concatenate(list(Upscaler(model, tiles=TileSettings(tile=tile, overlap=overlap, batch=4)).iter_rows(lr)))
    whole = np.concatenate(list(Upscaler(model, tiles=TileSettings(tile=64, overlap=0)).iter_rows(lr)))
    assert tiled.shape == whole.shape == (160, 224, 3)
    # The test can only see seams if the tiles disagree: they must, by much more than a grey level.
    assert np.abs(tiled - whole).mean() > 0.02
    for axis, length in ((0, 40), (1, 56)):
        edges = tile_edges(length, tile, overlap)
        assert len(edges) >= 2
        # Flat weights give a ratio of 2 to 2.5 here; feathering keeps it at the untiled level (about 0.9).
        assert seam_ratio(whole, edges, axis) < 1.2
        assert seam_ratio(tiled, edges, axis) < 1.3, f"a seam along axis {axis} at HR lines {edges}"

