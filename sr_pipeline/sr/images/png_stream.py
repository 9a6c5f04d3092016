"""PNG output of the upscaler, streamed row band by row band, and reading its provenance back.

``PngStreamWriter`` writes a PNG row band by row band (zlib stream, adaptive Sub/Up filter per
row), so an HR output never has to exist whole in memory; its text chunks carry the provenance
(before the image data) and what is known only once every row is out, such as the consistency
verdict (after it, as PNG allows); :func:`png_text` reads both back. Decoding lives in
:mod:`sr_pipeline.sr.images.decode`.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's convert("L")

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

    def close(self, trailing_text: dict[str, str] | None = None) -> None:
        """Finish the image; ``trailing_text`` goes after the image data (figures of the whole output)."""
        if self.rows_written != self.height:
            raise ValueError(f"wrote {self.rows_written} of {self.height} rows")
        self._emit(self._z.flush(), force=True)
        for key, value in (trailing_text or {}).items():
            self.fh.write(_itxt(key, value))
        self.fh.write(png_chunk(b"IEND", b""))


def _text_chunk(kind: bytes, body: bytes) -> tuple[str, str] | None:
    key, _, rest = body.partition(b"\0")
    if kind == b"tEXt":
        return key.decode("latin-1"), rest.decode("latin-1")
    if kind == b"zTXt":
        return key.decode("latin-1"), zlib.decompress(rest[1:]).decode("latin-1")
    compressed, _method = rest[0], rest[1]
    _lang, _, rest = rest[2:].partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    return key.decode("latin-1"), (zlib.decompress(text) if compressed else text).decode("utf-8")


def png_text(path: str | Path, *, partial: bool = False) -> dict[str, str]:
    """Every text chunk of a PNG, before and after the image data, without decoding the pixels.

    Raises ``ValueError`` for a file that is not a well-formed PNG up to its end chunk; with
    ``partial``, a file cut short gives the chunks before the cut (an output's provenance is written
    before its image data, so a cut output still says whose it is).
    """
    out: dict[str, str] = {}
    with open(path, "rb") as fh:
        if fh.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            raise ValueError(f"{path} is not a PNG")
        while True:
            head = fh.read(8)
            if len(head) < 8:
                if partial:
                    return out
                raise ValueError(f"{path} ends before its end chunk")
            length, kind = struct.unpack(">I", head[:4])[0], head[4:]
            if kind == b"IEND":
                return out
            if kind in (b"tEXt", b"zTXt", b"iTXt"):
                body = fh.read(length)
                if len(body) < length:
                    if partial:
                        return out
                    raise ValueError(f"{path} ends inside a text chunk")
                try:
                    found = _text_chunk(kind, body)
                except (zlib.error, UnicodeDecodeError, IndexError):
                    found = None
                if found is not None:
                    out[found[0]] = found[1]
                fh.seek(4, os.SEEK_CUR)
            else:
                fh.seek(length + 4, os.SEEK_CUR)


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
