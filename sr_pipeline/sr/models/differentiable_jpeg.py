"""A field camera's JPEG compression, read from its own files and applied differentiably.

Most inspection cameras upload JPEG. The compression removes fine grain and adds 8x8 blocking, so a
camera model without it must learn the noise the images *show* (after compression) rather than the
sensor's, and its LR carries grain no real upload has. A JPEG file carries its quantisation tables and
chroma subsampling in its header: those are read at ingestion (``sr/images/jpeg_settings.py``), and G applies
the same compression to its noisy LR (:func:`jpeg_roundtrip`), as libjpeg does it: 8-bit rounding,
JFIF YCbCr, chroma averaged over 2x2 (or 2x1), 8x8 DCT-II, quantisation, dequantisation, the inverse,
triangular ("fancy") chroma upsampling. Rounding passes its gradient straight through, so the sensor
noise before the compression stays learnable. Nothing here is learned: the camera's own settings are
exact, so noise level and compression cannot trade against each other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sr_pipeline.sr.images.jpeg_settings import JpegSettings

# JFIF's colour conversion (what libjpeg's encoder and decoder use).
_RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_YCBCR_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def _round(x: torch.Tensor) -> torch.Tensor:
    """Round with a straight-through gradient."""
    return x + (torch.round(x) - x).detach()


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(dtype=dtype, device=device)


def _quantise_plane(plane: torch.Tensor, table: tuple[int, ...]) -> torch.Tensor:
    """(B, H, W) samples (sides multiples of 8, level-shifted) -> the same after DCT, quantisation and inverse."""
    b, h, w = plane.shape
    d = _dct_matrix(plane.dtype, plane.device)
    q = torch.tensor(table, dtype=plane.dtype, device=plane.device).view(8, 8)
    blocks = plane.reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)
    coeffs = d @ blocks @ d.T
    coeffs = _round(coeffs / q) * q
    return (d.T @ coeffs @ d).permute(0, 1, 3, 2, 4).reshape(b, h, w)


def jpeg_roundtrip(x: torch.Tensor, settings: JpegSettings, offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """A (B, C, H, W) batch in [-1, 1] as the camera's JPEG encoder and a libjpeg decoder leave it.

    ``offset`` shifts the block grid (rows, columns), for crops whose grid phase in the camera's full
    frame is unknown. A grey setting compresses the first channel and repeats it over C. Runs in float32
    whatever autocast asks for: bf16 matmuls would round DCT coefficients by several levels."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _roundtrip(x, settings, offset)


def _roundtrip(x: torch.Tensor, settings: JpegSettings, offset: tuple[int, int]) -> torch.Tensor:
    b, c, h, w = x.shape
    sx, sy = settings.factors
    my, mx = 8 * sy, 8 * sx
    oy, ox = offset[0] % my, offset[1] % mx
    pad_b, pad_r = (-(h + oy)) % my, (-(w + ox)) % mx
    v = _round((x.float().clamp(-1, 1) + 1) * 127.5)
    if oy or ox or pad_b or pad_r:  # libjpeg fills a partial block by repeating the edge
        v = F.pad(v, (ox, pad_r, oy, pad_b), mode="replicate")
    if settings.grey:
        y = _quantise_plane(v[:, 0] - 128, settings.tables[0]) + 128
        out = _round(y.clamp(0, 255))[:, None].expand(-1, c, -1, -1)
    else:
        shift = torch.tensor([0.0, 128.0, 128.0], dtype=v.dtype, device=v.device)[None, :, None, None]
        ycc = _round(torch.einsum("ij,bjhw->bihw", torch.tensor(_RGB_TO_YCBCR, dtype=v.dtype, device=v.device), v) + shift)
        luma = _quantise_plane(ycc[:, 0] - 128, settings.tables[0]) + 128
        chroma = ycc[:, 1:]
        if (sy, sx) != (1, 1):
            chroma = _round(F.avg_pool2d(chroma, (sy, sx)))
        hc, wc = chroma.shape[-2:]
        chroma = _quantise_plane(chroma.reshape(-1, hc, wc) - 128, settings.tables[1]).reshape(b, 2, hc, wc) + 128
        chroma = _round(chroma.clamp(0, 255))
        if (sy, sx) != (1, 1):  # libjpeg's fancy upsampling: the triangle filter, i.e. half-pixel bilinear
            chroma = F.interpolate(chroma, scale_factor=(sy, sx), mode="bilinear", align_corners=False)
        ycc = torch.cat([_round(luma.clamp(0, 255))[:, None], chroma], dim=1)
        ycc = ycc - shift
        out = _round(torch.einsum("ij,bjhw->bihw", torch.tensor(_YCBCR_TO_RGB, dtype=v.dtype, device=v.device),
                                  ycc).clamp(0, 255))
    out = out[..., oy:oy + h, ox:ox + w]
    return (out / 127.5 - 1).to(x.dtype)
