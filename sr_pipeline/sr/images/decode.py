"""Decode one image file, for the catalog (8-bit RGB) or for upscaling (grey, alpha and 16 bits kept).

Both paths share everything up to the pixels: the sniffing, the limits, the reason codes, the full
decode and EXIF orientation. They differ only in how the decoded pixels are normalised.

Shared rules:

- The file is decoded fully (``Image.load``), so truncated and corrupt files fail here and not in
  training or mid-upscale. EXIF orientation is applied (``ImageOps.exif_transpose``).
- Multi-frame files (GIF, TIFF, WebP) contribute their first frame.
- Limits: PIL's decompression-bomb check stays on; the effective pixel limit is the lower of
  :attr:`DecodeLimits.max_pixels` and ``Image.MAX_IMAGE_PIXELS``, checked from the header before
  any pixel is decoded.
- ``I`` outside 0..65535 and ``F`` outside [0, 1] are rejected (``unsupported_mode``).

Catalog (:func:`decode_image`, :func:`decode_file`: :class:`DecodedImage`, mode ``RGB``), so every
stored image means the same thing:

- ``1``/``L`` grey -> the grey value in all three channels.
- Anything with alpha (``LA``, ``PA``, ``RGBA``, premultiplied ``La``/``RGBa``, and ``P`` or
  ``RGB`` with a transparency entry) is composited on **white**: inspection uploads with alpha are
  cut-outs whose transparent area carries no scene content, and white matches how viewers and
  reports show them; keeping the premultiplied black would invent dark edges around every cut-out.
- 16-bit grey (``I;16*``, or ``I`` with values in 0..65535) is **scaled** to 8 bits by
  ``round(v * 255 / 65535)``, never clipped, so the full sensor range survives. 16-bit RGB PNGs are
  reduced to 8 bits by Pillow itself. ``F`` (float) is accepted only in [0, 1].
- ``CMYK`` (and RGB with an embedded ICC profile) is transformed to sRGB with its ICC profile when
  it has one (LittleCMS), otherwise with Pillow's plain conversion.

Upscaling (:func:`decode_for_upscale`, :func:`read_image`: :class:`SourceImage`), which keeps what
the catalog normalises away:

- ``1``/``L`` -> grey; ``LA``/``La`` -> grey + alpha; ``RGBA``/``RGBa``/``PA``, and ``P`` or
  ``RGB`` with a transparency entry -> RGB + alpha. Premultiplied modes are un-premultiplied.
- 16-bit grey stays 16-bit: the network sees its full precision and the output PNG is 16-bit.
  ``F`` in [0, 1] becomes 16-bit grey. Pillow has no 16-bit colour mode: a 16-bit RGB(A) PNG
  arrives reduced to 8 bits (noted ``16bit_colour_reduced``).
- ``CMYK``, ICC-tagged RGB and the rest become sRGB as in the catalog (:func:`to_rgb`).
- Any size from 1 pixel is accepted (:data:`UPSCALE_LIMITS`), and any file name.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from sr_pipeline.sr.images.png_stream import PNG_SIGNATURE, png_chunk
from sr_pipeline.sr.images.jpeg_settings import JpegSettings, jpeg_settings

# Reason codes (machine-readable; they appear in catalogs and quarantine JSON files).
EMPTY_FILE = "empty_file"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
NOT_AN_IMAGE = "not_an_image"
TOO_SMALL = "too_small"
TOO_LARGE = "too_large"
UNSUPPORTED_FORMAT = "unsupported_format"
UNSUPPORTED_MODE = "unsupported_mode"

# Extension -> what we expect; the content decides the recorded format.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm"}
)
# Pillow plugins we let identify files (JPEG also opens MPO); restricting them stops lenient plugins (TGA, ...) from
# "recognising" random bytes.
OPEN_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF", "PPM")

_MAGIC = (
    (PNG_SIGNATURE, "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
# Real image formats we do not accept (recognised so the reason says so instead of not_an_image).
_UNSUPPORTED_MAGIC = (
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG2000"),
    (b"\xff\x4f\xff\x51", "JPEG2000"),
    (b"DDS ", "DDS"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"qoif", "QOI"),
    (b"%!PS", "EPS"),
    (b"%PDF", "PDF"),
)
_ISO_BMFF_BRANDS = (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis")


class ImageRejected(Exception):
    """An upload that cannot become a catalogued image. ``reason`` is one of the codes above."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class DecodeLimits:
    min_side: int = 16
    """Shortest side in pixels below which an image is rejected as ``too_small``."""
    max_pixels: int = 64_000_000
    """Width x height above which an image is rejected as ``too_large`` (also capped by PIL's limit)."""
    max_bytes: int = 256 * 1024 * 1024
    """File size above which an upload is rejected as ``too_large`` without being read."""

    @property
    def effective_max_pixels(self) -> int:
        pil_limit = Image.MAX_IMAGE_PIXELS
        return self.max_pixels if pil_limit is None else min(self.max_pixels, int(pil_limit))


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image
    """The normalised image, mode ``RGB``, orientation applied."""
    orig_format: str
    orig_mode: str
    notes: tuple[str, ...] = field(default=())
    """What normalisation did beyond a plain decode (``exif_transpose``, ``alpha_on_white``, ...)."""
    canonical_png: bytes | None = None
    """For an upload that already is a plain 8-bit RGB PNG: the same compressed pixel data with
    only the critical chunks (see :func:`canonical_png`), which the store can keep as is instead
    of encoding the pixels again (PNG encoding is most of the ingest time)."""
    jpeg: str | None = None
    """A JPEG upload's encoder settings (``JpegSettings`` as JSON), which a camera model compresses with."""

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    def array(self) -> np.ndarray:
        """HxWx3 uint8."""
        return np.asarray(self.image)


def sniff_format(data: bytes) -> str | None:
    """The accepted format whose signature ``data`` starts with, if any."""
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    # "BM" alone is too weak (text starts with it): require a known DIB header size as well.
    if data[:2] == b"BM" and len(data) >= 18 and int.from_bytes(data[14:18], "little") in (12, 40, 52, 56, 64, 108, 124):
        return "BMP"
    if len(data) >= 2 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return "PPM"
    return None


def _sniff_unsupported(data: bytes) -> str | None:
    for magic, fmt in _UNSUPPORTED_MAGIC:
        if data.startswith(magic):
            return fmt
    if data[4:8] == b"ftyp" and data[8:12] in _ISO_BMFF_BRANDS:
        return "HEIF/AVIF"
    return None


def _looks_truncated(data: bytes, fmt: str | None) -> bool:
    if fmt == "PNG":
        return b"IEND" not in data[-64:]
    if fmt == "JPEG":
        return not data.rstrip(b"\x00").endswith(b"\xff\xd9")
    return False


def _failure(exc: BaseException, data: bytes) -> ImageRejected:
    """Map a Pillow decode error to a rejection."""
    text = str(exc)
    if isinstance(exc, EOFError) or "truncated" in text.lower():
        return ImageRejected(TRUNCATED, f"the file ends before the image data does ({text or type(exc).__name__})")
    fmt = sniff_format(data)
    if _looks_truncated(data, fmt):
        return ImageRejected(TRUNCATED, f"{fmt} data without its end marker ({text or type(exc).__name__})")
    return ImageRejected(CORRUPT, f"cannot decode the image data ({type(exc).__name__}: {text})")


def check_name(name: str) -> None:
    """Reject names whose extension is not an image extension we accept."""
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        shown = suffix or "(no extension)"
        raise ImageRejected(
            UNSUPPORTED_FORMAT, f"extension {shown} is not an accepted image type ({', '.join(sorted(IMAGE_EXTENSIONS))})"
        )


def _check_bytes(size: int, limits: DecodeLimits) -> None:
    if size == 0:
        raise ImageRejected(EMPTY_FILE, "the file is empty (0 bytes)")
    if size > limits.max_bytes:
        raise ImageRejected(TOO_LARGE, f"{size} bytes exceeds the limit of {limits.max_bytes} bytes")


def _read_capped(path: str | Path, limits: DecodeLimits) -> tuple[Path, bytes]:
    """A file's bytes, refusing one over ``limits.max_bytes`` before reading it."""
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ImageRejected(TOO_LARGE, f"{size} bytes exceeds the limit of {limits.max_bytes} bytes")
    return path, path.read_bytes()


def _open(data: bytes, limits: DecodeLimits) -> Image.Image:
    """Open, check the size from the header, and decode every pixel; any failure is a rejection."""
    Image.init()  # registers every plugin (MPO, WebP, ...) so ``formats=`` can name them; cached
    try:
        im = Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(TOO_LARGE, f"decompression-bomb check: {exc}") from None
    except UnidentifiedImageError:
        fmt = sniff_format(data)
        if fmt is not None:
            if _looks_truncated(data, fmt):
                raise ImageRejected(TRUNCATED, f"{fmt} signature but the header is cut short") from None
            raise ImageRejected(CORRUPT, f"{fmt} signature but the header cannot be read") from None
        other = _sniff_unsupported(data)
        if other is not None:
            raise ImageRejected(UNSUPPORTED_FORMAT, f"{other} images are not accepted ({', '.join(OPEN_FORMATS)})") from None
        raise ImageRejected(NOT_AN_IMAGE, "the content is not an image in any accepted format") from None
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error, ...)
        if sniff_format(data) is None:  # a plugin's weak check matched, the content is no image
            raise ImageRejected(NOT_AN_IMAGE, f"the content is not an image in any accepted format ({exc})") from None
        raise _failure(exc, data) from None

    # No ``with im``: closing would free the pixels of the image returned for RGB input.
    width, height = im.size
    if width * height > limits.effective_max_pixels:
        raise ImageRejected(
            TOO_LARGE, f"{width}x{height} = {width * height} pixels exceeds the limit of {limits.effective_max_pixels}"
        )
    if min(width, height) < limits.min_side:
        raise ImageRejected(TOO_SMALL, f"{width}x{height} is below the minimum side of {limits.min_side} pixels")
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(TOO_LARGE, f"decompression-bomb check: {exc}") from None
    except Exception as exc:
        raise _failure(exc, data) from None
    return im


def _decode(data: bytes, limits: DecodeLimits) -> tuple[Image.Image, str, str, list[str], JpegSettings | None]:
    """The decoded, oriented image, its original format and mode, the notes so far and, for a JPEG,
    its encoder settings (read before orientation makes a new image without them)."""
    im = _open(data, limits)
    orig_format, orig_mode = str(im.format), im.mode
    jpeg = jpeg_settings(im)
    notes: list[str] = []
    if getattr(im, "n_frames", 1) > 1:
        notes.append("first_frame")
    return _apply_orientation(im, notes), orig_format, orig_mode, notes, jpeg


def _apply_orientation(im: Image.Image, notes: list[str]) -> Image.Image:
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # unreadable EXIF: the pixels are still good, keep them as stored
        notes.append("exif_unreadable")
        return im
    if orientation in (None, 1):
        return im
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:
        notes.append("exif_orientation_invalid")
        return im
    notes.append(f"exif_orientation_{orientation}")
    return out


# ---------------------------------------------------------------- catalog: 8-bit RGB


def decode_image(data: bytes, name: str, limits: DecodeLimits = DecodeLimits()) -> DecodedImage:
    """Decode and normalise one upload (``name`` is used only for its extension)."""
    _check_bytes(len(data), limits)
    check_name(name)
    im, orig_format, orig_mode, notes, jpeg = _decode(data, limits)
    rgb = to_rgb(im, notes)
    passthrough = canonical_png(data) if orig_format == "PNG" and orig_mode == "RGB" and not notes else None
    return DecodedImage(image=rgb, orig_format=orig_format, orig_mode=orig_mode, notes=tuple(notes),
                        canonical_png=passthrough, jpeg=jpeg.to_json() if jpeg else None)


def decode_file(path: str | Path, limits: DecodeLimits = DecodeLimits()) -> DecodedImage:
    """Read a regular file and decode it (callers must reject symlinks and special files first)."""
    path, data = _read_capped(path, limits)
    return decode_image(data, path.name, limits)


def canonical_png(data: bytes) -> bytes | None:
    """An 8-bit RGB PNG reduced to IHDR + IDAT + IEND (fresh CRCs), or None for any other PNG.

    Dropping the ancillary chunks (text, time, gamma, ...) matches what decoding kept; the
    compressed pixel stream is copied unchanged, so it decodes to exactly the same pixels.
    Palette, alpha, 16-bit, colour-key transparency and colour profiles are not plain RGB (their
    normalisation changed the pixels) and return None.
    """
    if not data.startswith(PNG_SIGNATURE):
        return None
    pos, ihdr, idat = 8, None, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            return None
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind in (b"tRNS", b"iCCP", b"PLTE", b"eXIf", b"acTL"):
            return None
        elif kind == b"IEND":
            break
        pos += 12 + length
    # width, height, bit depth 8, colour type 2 (RGB), compression 0, filter 0, interlace 0/1
    if ihdr is None or len(ihdr) != 13 or ihdr[8:12] != b"\x08\x02\x00\x00" or not idat:
        return None
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(idat)) + png_chunk(b"IEND", b"")


def _on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")


def _has_alpha(im: Image.Image) -> bool:
    """Alpha channel, or a transparency entry (palette or RGB colour key)."""
    return im.mode in ("LA", "La", "PA", "RGBA", "RGBa") or (im.mode in ("P", "RGB") and "transparency" in im.info)


def _grey16(im: Image.Image) -> np.ndarray:
    """``I;16*``/``I`` pixels as uint16, refusing ``I`` values outside 0..65535."""
    values = np.asarray(im)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ImageRejected(UNSUPPORTED_MODE, f"integer mode {im.mode} with values outside 0..65535")
    return values.astype(np.uint16)


def _unit_float(im: Image.Image) -> np.ndarray:
    """``F`` pixels, refusing anything outside [0, 1]."""
    values = np.asarray(im, dtype=np.float64)
    if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
        raise ImageRejected(UNSUPPORTED_MODE, "floating-point image with values outside [0, 1]")
    return values


def _icc_to_srgb(im: Image.Image, out_mode: str, notes: list[str]) -> Image.Image | None:
    icc = im.info.get("icc_profile")
    if not icc:
        return None
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        out = ImageCms.profileToProfile(im, src, dst, outputMode=out_mode)
    except Exception:  # a broken or unsupported profile: fall back to the plain conversion
        notes.append("icc_ignored")
        return None
    notes.append("icc_to_srgb")
    return out


def to_rgb(im: Image.Image, notes: list[str] | None = None) -> Image.Image:
    """Convert a decoded Pillow image of any supported mode to 8-bit RGB (rules in the module doc)."""
    notes = notes if notes is not None else []
    mode = im.mode
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:  # an alpha channel or colour key no pixel uses changes nothing
            notes.append("alpha_on_white")
        return _on_white(rgba)
    if mode == "RGB":
        converted = _icc_to_srgb(im, "RGB", notes)
        return converted if converted is not None else im
    if mode in ("1", "L", "P"):
        return im.convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        values = _grey16(im).astype(np.int64)
        notes.append("16bit_scaled")
        return _grey_to_rgb(((values * 255 + 32767) // 65535).astype(np.uint8))
    if mode == "F":
        values = _unit_float(im)
        notes.append("float_scaled")
        return _grey_to_rgb(np.rint(values * 255.0).astype(np.uint8))
    if mode == "CMYK":
        converted = _icc_to_srgb(im, "RGB", notes)
        return converted if converted is not None else im.convert("RGB")
    try:  # YCbCr, RGBX, HSV, ...: Pillow knows these conversions
        return im.convert("RGB")
    except Exception as exc:
        raise ImageRejected(UNSUPPORTED_MODE, f"image mode {mode} cannot be converted to RGB ({exc})") from None


# ---------------------------------------------------------------- upscaling: grey, alpha, 16 bits kept


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


UPSCALE_LIMITS = DecodeLimits(min_side=1)  # ingestion's size limits, but any small image may be upscaled


def _png_colour_16bit(data: bytes) -> bool:
    # IHDR: bit depth at byte 24, colour type at 25 (2 RGB, 6 RGBA).
    return data.startswith(PNG_SIGNATURE) and len(data) > 26 and data[24] == 16 and data[25] in (2, 6)


def decode_for_upscale(data: bytes, limits: DecodeLimits = UPSCALE_LIMITS) -> SourceImage:
    """Decode file bytes keeping grey, alpha and 16-bit grey (rules in the module docstring)."""
    _check_bytes(len(data), limits)
    im, orig_format, orig_mode, notes, _ = _decode(data, limits)
    if _png_colour_16bit(data):
        notes.append("16bit_colour_reduced")
    colour, alpha = _upscale_pixels(im, notes)
    if colour.ndim == 2:
        colour = colour[:, :, None]
    sha = hashlib.sha256(data).hexdigest()
    return SourceImage(np.ascontiguousarray(colour), alpha, orig_format, orig_mode, sha, notes)


def _upscale_pixels(im: Image.Image, notes: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im.convert("L")), None
    if mode in ("LA", "La"):
        la = im.convert("LA")
        return np.asarray(la.getchannel("L")), np.array(la.getchannel("A"))
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        colour_im = rgba.convert("RGB")
        colour_im.info = dict(im.info)  # keeps the ICC profile for to_rgb; the alpha is split off here
        colour_im.info.pop("transparency", None)
        return np.asarray(to_rgb(colour_im, notes)), np.array(rgba.getchannel("A"))
    if mode.startswith("I;16") or mode == "I":
        return _grey16(im), None
    if mode == "F":
        notes.append("float_to_16bit")
        return np.rint(_unit_float(im) * 65535.0).astype(np.uint16), None
    return np.asarray(to_rgb(im, notes)), None


def read_image(path: str | Path, limits: DecodeLimits = UPSCALE_LIMITS) -> SourceImage:
    """Read and decode one file for upscaling."""
    return decode_for_upscale(_read_capped(path, limits)[1], limits)


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
