"""PNG output of the upscaler, streamed row band by row band, and reading its provenance back.

``PngStreamWriter`` writes a PNG row band by row band (zlib stream, adaptive Sub/Up filter per
row), so an HR output never has to exist whole in memory; its text chunks (written before the
image data) carry the provenance, which :func:`png_text` reads back. Decoding lives in
:mod:`sr_pipeline.sr.decode`.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)
MODE_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
TEXT_PREFIX = "sr_pipeline:"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole (empty) end chunk, CRC included



def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _itxt(key: str, value: str) -> bytes:
    # keyword, null, compression flag 0, method 0, empty language tag and translated keyword, UTF-8 text
    return png_chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8"))


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
        fh.write(PNG_SIGNATURE + png_chunk(b"IHDR", ihdr))
        for key, value in (text or {}).items():
            fh.write(_itxt(key, value))

    def _emit(self, data: bytes, force: bool = False) -> None:
        if data:
            self._pending.append(data)
            self._pending_bytes += len(data)
        if self._pending_bytes >= self.IDAT_BYTES or (force and self._pending_bytes):
            self.fh.write(png_chunk(b"IDAT", b"".join(self._pending)))
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
        self.fh.write(png_chunk(b"IEND", b""))


def png_text(path: str | Path) -> dict[str, str]:
    """The text chunks before the image data (where :class:`PngStreamWriter` puts them)."""
    with Image.open(path) as im:
        return {k: v for k, v in im.info.items() if isinstance(v, str)}


def png_complete(path: str | Path) -> bool:
    """Whether ``path`` starts as a PNG and ends with its end chunk (a whole file, not a cut one)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                return False
            fh.seek(-len(_IEND), os.SEEK_END)
            return fh.read() == _IEND
    except OSError:
        return False
