"""The consistency heat map a person reads, with its legend, and the panel of a flagged output.

Two tints only, far apart: cyan where an LR pixel's disagreement is between half of and the
camera's pixel threshold (near the limit), solid red where it is above it (flagged); elsewhere the
dimmed input. A legend under the map says so in words. For a ``check`` output the map is drawn
beside the recorded LR and the restored output (brought to the same size) as one panel, so the
person sees at once what the camera recorded, what the model made of it and where they disagree.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

NEAR = 0.5  # map value (residual over the pixel threshold) from which a pixel is tinted "near the limit"
NEAR_RGB = (0, 200, 255)
FLAGGED_RGB = (255, 0, 0)
DIM = 0.35  # the input's brightness under the tints
LEGEND = (((90, 90, 90), "agrees with the input (dimmed input)"),
          (NEAR_RGB, "near the limit (half to 1x the pixel threshold)"),
          (FLAGGED_RGB, "contradicts the input: flagged"))
LINE = 14
PAD = 4


def tinted(map_values: np.ndarray, lr_intensity: np.ndarray) -> np.ndarray:
    """(h, w, 3) float RGB: the dimmed input with the two tints."""
    grey = (DIM * lr_intensity)[..., None].repeat(3, axis=2)
    out = grey.copy()
    near = (map_values >= NEAR) & (map_values < 1.0)
    out[near] = 0.4 * grey[near] + 0.6 * np.array(NEAR_RGB, dtype=float)
    out[map_values >= 1.0] = np.array(FLAGGED_RGB, dtype=float)
    return out


def _enlarge(img: np.ndarray, k: int) -> np.ndarray:
    return img.repeat(k, axis=0).repeat(k, axis=1)


def _with_legend(body: Image.Image, captions: list[tuple[int, str]] | None = None) -> Image.Image:
    """``body`` with optional captions above (x, text) and the legend below, on white."""
    top = LINE if captions else 0
    width = max(body.width, 300)
    canvas = Image.new("RGB", (width + 2 * PAD, top + body.height + len(LEGEND) * LINE + 3 * PAD), "white")
    draw = ImageDraw.Draw(canvas)
    for x, text in captions or []:
        draw.text((PAD + x, 1), text, fill="black")
    canvas.paste(body, (PAD, top + PAD))
    y = top + body.height + 2 * PAD
    for rgb, text in LEGEND:
        draw.rectangle((PAD, y + 2, PAD + 10, y + 11), fill=rgb, outline="black")
        draw.text((PAD + 16, y + 1), text, fill="black")
        y += LINE
    return canvas


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _map_rgb(map_values: np.ndarray, lr_intensity: np.ndarray, min_side: int) -> np.ndarray:
    out = tinted(map_values, lr_intensity)
    k = max(1, -(-min_side // max(out.shape[:2])))
    return np.clip(np.rint(_enlarge(out, k)), 0, 255).astype(np.uint8)


def map_png(map_values: np.ndarray, lr_intensity: np.ndarray, min_side: int = 256) -> bytes:
    """The heat map over the dimmed input at LR size (enlarged by whole pixels up to ``min_side``),
    with its legend. ``map_values``: smoothed |residual| over the pixel threshold; ``lr_intensity``:
    the input's first channel on 0-255."""
    return _png(_with_legend(Image.fromarray(_map_rgb(map_values, lr_intensity, min_side))))


def panel_map_box(lr_shape: tuple[int, int], min_side: int = 256) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the map inside :func:`panel_png`'s picture for an LR of
    ``lr_shape`` (h, w): where a reader (or a test) finds the map's pixels."""
    k = max(1, -(-min_side // max(lr_shape)))
    h, w = lr_shape[0] * k, lr_shape[1] * k
    return LINE + PAD, PAD + 2 * (w + PAD), h, w


def panel_png(map_values: np.ndarray, lr_intensity: np.ndarray, lr_rgb: np.ndarray, output_rgb: np.ndarray,
              min_side: int = 256) -> bytes:
    """LR | restored output | map, side by side at the map's size, captioned, with the legend."""
    heat = Image.fromarray(_map_rgb(map_values, lr_intensity, min_side))
    size = heat.size
    lr = Image.fromarray(np.ascontiguousarray(lr_rgb)).convert("RGB").resize(size, Image.Resampling.NEAREST)
    out = Image.fromarray(np.ascontiguousarray(output_rgb)).convert("RGB").resize(size, Image.Resampling.LANCZOS)
    body = Image.new("RGB", (3 * size[0] + 2 * PAD, size[1]), "white")
    for i, im in enumerate((lr, out, heat)):
        body.paste(im, (i * (size[0] + PAD), 0))
    captions = [(0, "LR (what the camera recorded)"), (size[0] + PAD, "restored output"),
                (2 * (size[0] + PAD), "consistency map")]
    return _png(_with_legend(body, captions))
