"""Images in and out of the upscaler, keeping what ingestion normalises away.

``read_image`` decodes a file for upscaling (``sr_pipeline.intake.images`` converts everything to RGB
for the catalog; here grey stays grey and alpha stays separate):

- EXIF orientation is applied.
- ``1``/``L`` -> grey; ``LA``/``La`` -> grey + alpha; ``RGBA``/``RGBa``/``PA``, and ``P`` or
  ``RGB`` with a transparency entry -> RGB + alpha. Premultiplied modes are un-premultiplied.
- 16-bit grey (``I;16*``, ``I`` in 0..65535) stays 16-bit: the network sees its full precision and
  the output PNG is 16-bit. ``F`` in [0, 1] becomes 16-bit grey. Pillow has no 16-bit colour mode:
  a 16-bit RGB(A) PNG arrives reduced to 8 bits (noted ``16bit_colour_reduced``).
- ``CMYK``, ICC-tagged RGB and the rest go through :func:`sr_pipeline.intake.images.to_rgb` (sRGB).

``PngStreamWriter`` writes a PNG row band by row band (zlib stream, adaptive Sub/Up filter per
row), so an HR output never has to exist whole in memory; its text chunks carry the provenance.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sr_pipeline.intake.images import (
    CORRUPT,
    NOT_AN_IMAGE,
    OPEN_FORMATS,
    TOO_LARGE,
    TOO_SMALL,
    TRUNCATED,
    UNSUPPORTED_MODE,
    DecodeLimits,
    ImageRejected,
    sniff_format,
    to_rgb,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)
MODE_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
TEXT_PREFIX = "sr_pipeline:"


@dataclass
class SourceImage:
    """A decoded input: colour HxWx1 (grey) or HxWx3, optional alpha HxW, both uint8 or uint16."""

    colour: np.ndarray
    alpha: np.ndarray | None
    orig_format: str
    orig_mode: str
    sha256: str
    notes: list[str] = field(default_factory=list)

    @property
    def grey(self) -> bool:
        return self.colour.shape[2] == 1

    @property
    def height(self) -> int:
        return self.colour.shape[0]

    @property
    def width(self) -> int:
        return self.colour.shape[1]

    @property
    def bit_depth(self) -> int:
        return 16 if self.colour.dtype == np.uint16 else 8

    def output_mode(self, drop_alpha: bool = False) -> str:
        base = "L" if self.grey else "RGB"
        return base + ("A" if self.alpha is not None and not drop_alpha else "")


def _reject_open(exc: BaseException, data: bytes) -> ImageRejected:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageRejected(TOO_LARGE, f"decompression-bomb check: {exc}")
    if isinstance(exc, UnidentifiedImageError) and sniff_format(data) is None:
        return ImageRejected(NOT_AN_IMAGE, "the content is not an image in any accepted format")
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return ImageRejected(TRUNCATED, f"the file ends before the image data does ({exc})")
    return ImageRejected(CORRUPT, f"cannot decode the image data ({type(exc).__name__}: {exc})")


def _png_colour_16bit(data: bytes) -> bool:
    # IHDR: bit depth at byte 24, colour type at 25 (2 RGB, 6 RGBA).
    return data.startswith(PNG_SIGNATURE) and len(data) > 26 and data[24] == 16 and data[25] in (2, 6)


def _split_alpha(im: Image.Image, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    rgba = im.convert("RGBA")
    colour_im = rgba.convert("RGB")
    colour_im.info = dict(im.info)
    colour = np.asarray(to_rgb(colour_im, notes))
    return colour, np.array(rgba.getchannel("A"))


def decode_for_upscale(data: bytes, limits: DecodeLimits = DecodeLimits(min_side=1)) -> SourceImage:
    """Decode file bytes keeping grey, alpha and 16-bit grey (rules in the module docstring)."""
    if not data:
        raise ImageRejected("empty_file", "the file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageRejected(TOO_LARGE, f"{len(data)} bytes exceeds the limit of {limits.max_bytes} bytes")
    Image.init()
    try:
        im = Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
        w, h = im.size
        if w * h > limits.effective_max_pixels:
            raise ImageRejected(TOO_LARGE, f"{w}x{h} pixels exceeds the limit of {limits.effective_max_pixels}")
        if min(w, h) < limits.min_side:
            raise ImageRejected(TOO_SMALL, f"{w}x{h} is below the minimum side of {limits.min_side} pixels")
        im.load()
    except ImageRejected:
        raise
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error, ...)
        raise _reject_open(exc, data) from None
    orig_format, orig_mode = str(im.format), im.mode
    notes: list[str] = []
    try:
        orientation = im.getexif().get(0x0112, 1)
        if orientation not in (None, 1):
            im = ImageOps.exif_transpose(im)
            notes.append(f"exif_orientation_{orientation}")
    except Exception:  # unreadable EXIF: the pixels are still good, keep them as stored
        notes.append("exif_unreadable")
    if _png_colour_16bit(data):
        notes.append("16bit_colour_reduced")
    sha = hashlib.sha256(data).hexdigest()
    colour, alpha = _decode_pixels(im, notes)
    if colour.ndim == 2:
        colour = colour[:, :, None]
    return SourceImage(np.ascontiguousarray(colour), alpha, orig_format, orig_mode, sha, notes)


def _decode_pixels(im: Image.Image, notes: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im.convert("L")), None
    if mode in ("LA", "La"):
        la = im.convert("LA")
        return np.asarray(la.getchannel("L")), np.array(la.getchannel("A"))
    if mode in ("RGBA", "RGBa", "PA") or (mode in ("P", "RGB") and "transparency" in im.info):
        return _split_alpha(im, notes)
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(im)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageRejected(UNSUPPORTED_MODE, f"integer mode {mode} with values outside 0..65535")
        return values.astype(np.uint16), None
    if mode == "F":
        values = np.asarray(im, dtype=np.float64)
        if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
            raise ImageRejected(UNSUPPORTED_MODE, "floating-point image with values outside [0, 1]")
        notes.append("float_to_16bit")
        return np.rint(values * 65535.0).astype(np.uint16), None
    return np.asarray(to_rgb(im, notes)), None


UPSCALE_LIMITS = DecodeLimits(min_side=1)  # ingestion's size limits, but any small image may be upscaled


def read_image(path: str | Path, limits: DecodeLimits = UPSCALE_LIMITS) -> SourceImage:
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ImageRejected(TOO_LARGE, f"{size} bytes exceeds the limit of {limits.max_bytes} bytes")
    return decode_for_upscale(path.read_bytes(), limits)


def probe_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) after EXIF orientation from the header only, or None if unreadable."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
            return w, h
    except Exception:
        return None


# ---------------------------------------------------------------- streaming PNG output


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _itxt(key: str, value: str) -> bytes:
    # keyword, null, compression flag 0, method 0, empty language tag and translated keyword, UTF-8 text
    return _chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8"))


class PngStreamWriter:
    """Writes a PNG to ``fh`` from successive row bands of ``(n, width, channels)`` uint8/uint16."""

    IDAT_BYTES = 1 << 20

    def __init__(self, fh: IO[bytes], width: int, height: int, channels: int, bit_depth: int = 8,
                 text: dict[str, str] | None = None, compress_level: int = 6):
        if channels not in _COLOUR_TYPES or bit_depth not in (8, 16):
            raise ValueError(f"unsupported PNG layout: {channels} channels, {bit_depth} bits")
        self.fh, self.width, self.height, self.channels, self.bit_depth = fh, width, height, channels, bit_depth
        self.bpp = channels * bit_depth // 8
        self.rows_written = 0
        self._prev = np.zeros(width * self.bpp, dtype=np.uint8)
        self._z = zlib.compressobj(compress_level)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, _COLOUR_TYPES[channels], 0, 0, 0)
        fh.write(PNG_SIGNATURE + _chunk(b"IHDR", ihdr))
        for key, value in (text or {}).items():
            fh.write(_itxt(key, value))

    def _emit(self, data: bytes, force: bool = False) -> None:
        if data:
            self._pending.append(data)
            self._pending_bytes += len(data)
        if self._pending_bytes >= self.IDAT_BYTES or (force and self._pending_bytes):
            self.fh.write(_chunk(b"IDAT", b"".join(self._pending)))
            self._pending, self._pending_bytes = [], 0

    def write_rows(self, rows: np.ndarray) -> None:
        dtype = np.uint16 if self.bit_depth == 16 else np.uint8
        if rows.ndim == 2:
            rows = rows[:, :, None]
        if rows.shape[1:] != (self.width, self.channels) or rows.dtype != dtype:
            raise ValueError(f"expected rows of shape (n, {self.width}, {self.channels}) {np.dtype(dtype)}, "
                             f"got {rows.shape} {rows.dtype}")
        n = rows.shape[0]
        if self.rows_written + n > self.height:
            raise ValueError("more rows than the image height")
        raw = rows.astype(">u2") if self.bit_depth == 16 else rows
        raw = np.ascontiguousarray(raw).view(np.uint8).reshape(n, -1)
        prev = np.concatenate([self._prev[None], raw[:-1]])
        up = raw - prev
        sub = raw.copy()
        sub[:, self.bpp:] -= raw[:, :-self.bpp]
        # The usual heuristic: the filter whose bytes, read as signed, have the smaller absolute sum.
        cost_up = np.abs(up.view(np.int8)).view(np.uint8).sum(axis=1, dtype=np.uint64)
        cost_sub = np.abs(sub.view(np.int8)).view(np.uint8).sum(axis=1, dtype=np.uint64)
        use_up = cost_up < cost_sub
        filtered = np.empty((n, raw.shape[1] + 1), dtype=np.uint8)
        filtered[:, 0] = np.where(use_up, 2, 1)
        filtered[:, 1:] = np.where(use_up[:, None], up, sub)
        self._prev = raw[-1].copy()
        self._emit(self._z.compress(filtered.data))
        self.rows_written += n

    def close(self) -> None:
        if self.rows_written != self.height:
            raise ValueError(f"wrote {self.rows_written} of {self.height} rows")
        self._emit(self._z.flush(), force=True)
        self.fh.write(_chunk(b"IEND", b""))


def png_text(path: str | Path) -> dict[str, str]:
    """The text chunks before the image data (where :class:`PngStreamWriter` puts them)."""
    with Image.open(path) as im:
        return {k: v for k, v in im.info.items() if isinstance(v, str)}
