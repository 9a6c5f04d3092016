"""Pictures for reports and Dagster metadata: PNG bytes, data URIs, image grids and HTML figures.

One grid maker serves every strip in the project: the evaluation's captioned crop strip, the
archive's bicubic | student previews and the LR-set preview. Reports carry no external files, so
images are inlined as ``data:`` URIs (HTML) or markdown images (Dagster has no image metadata type).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bicubic": Image.Resampling.BICUBIC}
LABEL_HEIGHT = 14


def png_bytes(img: np.ndarray | Image.Image, optimize: bool = False) -> bytes:
    """An RGB array (or PIL image) as PNG bytes."""
    im = img if isinstance(img, Image.Image) else Image.fromarray(np.ascontiguousarray(img))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=optimize)
    return buf.getvalue()


def png_data_uri(img: np.ndarray | bytes) -> str:
    """An inline ``data:`` URI of an RGB array or of PNG bytes."""
    png = img if isinstance(img, bytes) else png_bytes(img)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_markdown(png: bytes, alt: str = "plot") -> str:
    """Embed PNG bytes in markdown (Dagster has no image metadata type)."""
    return f"![{alt}]({png_data_uri(png)})"


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def grid_png(rows: Sequence[Sequence[np.ndarray]], *, cell: int | None = None, pad: int = 2,
             labels: Sequence[str] | None = None, resample: str | Sequence[str] = "nearest",
             optimize: bool = False) -> bytes | None:
    """Images in a grid on white, as PNG bytes (None for no image).

    ``cell`` resizes every image to ``cell`` x ``cell`` (``resample`` per column or for all);
    without it images keep their size and each cell is as large as the largest. ``labels`` (cut to
    20 characters) head the columns.
    """
    rows = [list(r) for r in rows if len(r)]
    if not rows:
        return None
    ncols = max(len(r) for r in rows)
    modes = [resample] * ncols if isinstance(resample, str) else list(resample)
    if cell is not None:
        rows = [[np.asarray(Image.fromarray(np.ascontiguousarray(im)).resize((cell, cell), _RESAMPLE[modes[c]]))
                 for c, im in enumerate(r)] for r in rows]
    cw = max(im.shape[1] for r in rows for im in r)
    ch = max(im.shape[0] for r in rows for im in r)
    top = LABEL_HEIGHT if labels else 0
    canvas = Image.new("RGB", (ncols * (cw + pad) + pad, top + len(rows) * (ch + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(labels or []):
        draw.text((pad + c * (cw + pad) + 2, 1), str(label)[:20], fill="black")
    for r, images in enumerate(rows):
        for c, im in enumerate(images):
            canvas.paste(Image.fromarray(np.ascontiguousarray(im)).convert("RGB"),
                         (pad + c * (cw + pad), top + pad + r * (ch + pad)))
    return png_bytes(canvas, optimize=optimize)


def figures_html(columns: Sequence[tuple[str, np.ndarray]]) -> str:
    """Captioned inline images side by side (``<figure>`` elements in a ``div.crops``)."""
    esc = html.escape
    return "<div class='crops'>" + "".join(
        f"<figure><img alt='{esc(caption)}' src='{png_data_uri(img)}'><figcaption>{esc(caption)}</figcaption></figure>"
        for caption, img in columns) + "</div>"
