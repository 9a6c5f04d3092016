"""Decoding and normalising one upload: every mode conversion and every rejection reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import encode, pixels
from PIL import Image, ImageCms

from sr_pipeline.sr.images import decode as images
from sr_pipeline.sr.images.decode import DecodeLimits, ImageRejected, decode_image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but holds no pixel data (what a decompression bomb's header says)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _reject(data: bytes, name: str, limits: DecodeLimits = DecodeLimits()) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        decode_image(data, name, limits)
    return info.value


# ---------------------------------------------------------------- accepted inputs


@pytest.mark.parametrize("fmt,name", [("PNG", "a.png"), ("BMP", "a.bmp"), ("TIFF", "a.tif"), ("PPM", "a.ppm"), ("WEBP", "a.webp")])
def test_lossless_rgb_formats_decode_to_the_same_pixels(fmt, name):
    rgb = pixels(40, 32)
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(encode(rgb, fmt, **kwargs), name)
    assert out.image.mode == "RGB"
    assert out.orig_format == fmt and out.orig_mode == "RGB"
    assert (out.width, out.height) == (40, 32)
    np.testing.assert_array_equal(out.array(), rgb)


def test_jpeg_decodes_close_to_the_original():
    rgb = pixels(64, 48)
    out = decode_image(encode(rgb, "JPEG", quality=95), "photo.JPG")
    assert out.orig_format == "JPEG" and out.array().shape == (48, 64, 3)
    assert np.abs(out.array().astype(int) - rgb.astype(int)).mean() < 6


def test_grey_is_repeated_over_three_channels():
    grey = pixels(32, 32)[:, :, 0]
    out = decode_image(encode(Image.fromarray(grey, "L")), "g.png")
    assert out.orig_mode == "L"
    arr = out.array()
    for c in range(3):
        np.testing.assert_array_equal(arr[:, :, c], grey)


def test_bilevel_becomes_black_and_white():
    im = Image.new("1", (20, 20), 0)
    im.paste(1, (0, 0, 10, 20))
    arr = decode_image(encode(im), "b.png").array()
    assert (arr[:, :10] == 255).all() and (arr[:, 10:] == 0).all()


def test_palette_without_transparency_keeps_its_colours():
    rgb = pixels(32, 24)
    pal = Image.fromarray(rgb).quantize(colors=16)
    out = decode_image(encode(pal), "p.png")
    assert out.orig_mode == "P"
    np.testing.assert_array_equal(out.array(), np.asarray(pal.convert("RGB")))
    assert "alpha_on_white" not in out.notes


def test_palette_with_transparency_is_composited_on_white():
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * (254 * 3))
    pal.paste(1, (0, 0, 10, 20))
    out = decode_image(encode(pal, transparency=0), "p.png")
    arr = out.array()
    assert "alpha_on_white" in out.notes
    assert (arr[:, 10:] == 255).all()  # the transparent index
    assert (arr[:, :10] == [200, 10, 10]).all()


def test_an_alpha_that_hides_nothing_is_not_noted_as_transparency():
    rgba = np.dstack([pixels(30, 16), np.full((16, 30), 255, np.uint8)])
    out = decode_image(encode(Image.fromarray(rgba, "RGBA")), "a.png")
    assert out.orig_mode == "RGBA" and "alpha_on_white" not in out.notes
    np.testing.assert_array_equal(out.array(), rgba[..., :3])
    pal = Image.fromarray(pixels(20, 20)).quantize(colors=8)  # a transparency index no pixel uses
    unused = next(i for i in range(256) if i not in set(np.asarray(pal).ravel()))
    out = decode_image(encode(pal, transparency=unused), "p.png")
    assert "alpha_on_white" not in out.notes


def test_rgba_is_composited_on_white():
    rgba = np.zeros((16, 30, 4), np.uint8)
    rgba[..., :3] = [0, 0, 200]
    rgba[:, :10, 3] = 255  # opaque blue
    rgba[:, 10:20, 3] = 128  # half
    rgba[:, 20:, 3] = 0  # transparent
    out = decode_image(encode(Image.fromarray(rgba, "RGBA")), "a.png")
    arr = out.array().astype(int)
    assert out.orig_mode == "RGBA" and "alpha_on_white" in out.notes
    assert (arr[:, :10] == [0, 0, 200]).all()
    assert (arr[:, 20:] == 255).all()
    assert np.abs(arr[:, 10:20] - [127, 127, 227]).max() <= 1


def test_grey_with_alpha_is_composited_on_white():
    la = Image.new("LA", (20, 20), (50, 255))
    la.paste((50, 0), (10, 0, 20, 20))
    arr = decode_image(encode(la), "la.png").array()
    assert (arr[:, :10] == 50).all() and (arr[:, 10:] == 255).all()


@pytest.mark.parametrize("fmt,name", [("PNG", "d.png"), ("TIFF", "d.tiff")])
def test_16_bit_grey_is_scaled_not_clipped(fmt, name):
    values = np.array([[0, 257 * 100, 32768, 65535]] * 16, dtype=np.uint16).repeat(4, axis=1)
    out = decode_image(encode(Image.fromarray(values), fmt), name)
    assert out.orig_mode.startswith("I")
    assert "16bit_scaled" in out.notes
    row = out.array()[0, ::4, 0]
    np.testing.assert_array_equal(row, [0, 100, 128, 255])


def test_float_image_in_unit_range_is_scaled():
    values = np.tile(np.array([0.0, 0.5, 1.0], np.float32).repeat(8), (24, 1))
    out = decode_image(encode(Image.fromarray(values, "F"), "TIFF"), "f.tif")
    np.testing.assert_array_equal(out.array()[0, ::8, 1], [0, 128, 255])


def test_float_image_outside_unit_range_is_rejected():
    values = np.full((24, 24), 300.0, np.float32)
    assert _reject(encode(Image.fromarray(values, "F"), "TIFF"), "f.tif").reason == images.UNSUPPORTED_MODE


@pytest.mark.parametrize("fmt,name,tol", [("TIFF", "c.tif", 0), ("JPEG", "c.jpg", 12)])
def test_cmyk_is_converted_to_rgb(fmt, name, tol):
    cmyk = Image.new("CMYK", (24, 24), (0, 255, 255, 0))  # pure red ink
    out = decode_image(encode(cmyk, fmt), name)
    assert out.orig_mode == "CMYK"
    assert np.abs(out.array().astype(int) - [255, 0, 0]).max() <= tol


def test_embedded_srgb_profile_is_applied():
    rgb = pixels(24, 24)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = decode_image(encode(rgb, "PNG", icc_profile=icc), "icc.png")
    assert "icc_to_srgb" in out.notes
    assert np.abs(out.array().astype(int) - rgb.astype(int)).max() <= 2


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode_image(encode(im, "PNG", exif=exif.tobytes()), "rot.png")
    assert (out.width, out.height) == (20, 40)
    assert "exif_orientation_6" in out.notes
    arr = out.array()
    assert (arr[:20] == [255, 0, 0]).all() and (arr[20:] == [0, 0, 255]).all()  # left went to the top


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue(), "anim.gif")
    assert "first_frame" in out.notes
    assert (out.array() == [255, 0, 0]).all()


def test_extension_does_not_decide_the_recorded_format(make_image):
    out = decode_image(make_image(fmt="JPEG"), "mislabelled.png")
    assert out.orig_format == "JPEG"


# ---------------------------------------------------------------- rejections


def test_empty_file():
    assert _reject(b"", "a.png").reason == images.EMPTY_FILE


@pytest.mark.parametrize("fmt,name", [("PNG", "t.png"), ("JPEG", "t.jpg")])
@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_files(fmt, name, fraction, make_image):
    data = make_image(64, 64, fmt=fmt)
    assert _reject(data[: int(len(data) * fraction)], name).reason == images.TRUNCATED


def test_png_cut_inside_its_header_is_truncated(make_image):
    assert _reject(make_image()[:30], "h.png").reason == images.TRUNCATED


@pytest.mark.parametrize("fmt,name", [("PNG", "c.png"), ("JPEG", "c.jpg")])
def test_corrupt_bytes(fmt, name, make_image):
    # Zeros inside the compressed data. (libjpeg decodes some random garbage in JPEG entropy data
    # without an error: such a file passes as an ugly image, as it would in any viewer.)
    data = bytearray(make_image(64, 64, fmt=fmt))
    data[400:600] = bytes(200)
    assert _reject(bytes(data), name).reason == images.CORRUPT


def test_text_named_png_is_not_an_image():
    rejected = _reject(b"hello, this is a text file\n" * 10, "notes.png")
    assert rejected.reason == images.NOT_AN_IMAGE


def test_bm_text_is_not_mistaken_for_a_bitmap():
    assert _reject(b"BMW maintenance log: nothing to report\n", "x.bmp").reason == images.NOT_AN_IMAGE


@pytest.mark.parametrize("name", ["notes.txt", "scan.xyz", "no_extension", "model.PSD"])
def test_unsupported_extensions(name, make_image):
    assert _reject(make_image(), name).reason == images.UNSUPPORTED_FORMAT


def test_image_in_an_unaccepted_format_is_unsupported():
    buf = io.BytesIO()
    Image.fromarray(pixels(32, 32)).save(buf, "ICO")
    rejected = _reject(buf.getvalue(), "icon.png")
    assert rejected.reason == images.UNSUPPORTED_FORMAT and "ICO" in rejected.message


def test_too_small(make_image):
    assert _reject(make_image(40, 10), "s.png").reason == images.TOO_SMALL
    assert decode_image(make_image(40, 10), "s.png", DecodeLimits(min_side=8)).height == 10


def test_above_the_configured_pixel_limit(make_image):
    rejected = _reject(make_image(100, 100), "big.png", DecodeLimits(max_pixels=5_000))
    assert rejected.reason == images.TOO_LARGE and "10000" in rejected.message


def test_above_pil_limit_is_rejected_from_the_header_even_with_a_higher_own_limit():
    data = _png_header_only(10_000, 10_000)  # 1e8 pixels: above PIL's 89.5 M, below its error level
    with pytest.warns(Image.DecompressionBombWarning):
        rejected = _reject(data, "bomb.png", DecodeLimits(max_pixels=10**12))
    assert rejected.reason == images.TOO_LARGE


def test_decompression_bomb_error_is_a_rejection():
    data = _png_header_only(100_000, 100_000)  # 1e10 pixels: PIL raises DecompressionBombError
    rejected = _reject(data, "bomb.png", DecodeLimits(max_pixels=10**12))
    assert rejected.reason == images.TOO_LARGE and "decompression" in rejected.message


def test_too_many_bytes(make_image):
    assert _reject(make_image(), "b.png", DecodeLimits(max_bytes=100)).reason == images.TOO_LARGE


def test_pil_bomb_check_stays_on():
    assert Image.MAX_IMAGE_PIXELS is not None
    assert DecodeLimits(max_pixels=10**12).effective_max_pixels == Image.MAX_IMAGE_PIXELS


def test_sixteen_bit_int_out_of_range_is_rejected():
    values = np.full((20, 20), 70000, np.int32)
    assert _reject(encode(Image.fromarray(values, "I"), "TIFF"), "i.tif").reason == images.UNSUPPORTED_MODE


# ---------------------------------------------------------------- PNG pass-through


def test_plain_rgb_png_passes_through_without_ancillary_chunks():
    from PIL import PngImagePlugin

    rgb = pixels(40, 30)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "camera 7, operator Smith")
    data = encode(rgb, "PNG", pnginfo=info)
    out = decode_image(data, "plain.png")
    assert out.canonical_png is not None and b"operator" not in out.canonical_png
    assert len(out.canonical_png) < len(data)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(out.canonical_png))), rgb)


@pytest.mark.parametrize(
    "make",
    [
        lambda rgb: encode(Image.fromarray(rgb).quantize(8)),  # palette
        lambda rgb: encode(Image.fromarray(np.dstack([rgb, rgb[:, :, :1]]), "RGBA")),  # alpha
        lambda rgb: encode(Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257)),  # 16-bit
        lambda rgb: encode(rgb, "PNG", transparency=(1, 2, 3)),  # colour key
        lambda rgb: encode(rgb, "BMP"),  # not a PNG
    ],
)
def test_other_inputs_are_encoded_again(make):
    out = decode_image(make(pixels(24, 24)), "x.png")
    assert out.canonical_png is None


def test_rgb_colour_key_is_composited_on_white():
    rgb = pixels(24, 24)
    rgb[:12] = [1, 2, 3]
    out = decode_image(encode(rgb, "PNG", transparency=(1, 2, 3)), "key.png")
    assert "alpha_on_white" in out.notes
    assert (out.array()[:12] == 255).all()
    np.testing.assert_array_equal(out.array()[12:], rgb[12:])


# ---------------------------------------------------------------- the upscaling path shares the checks


def _ico() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels(32, 32)).save(buf, "ICO")
    return buf.getvalue()


@pytest.mark.parametrize("make, reason", [
    (lambda png: b"", images.EMPTY_FILE),
    (lambda png: png[:30], images.TRUNCATED),  # cut inside the header: the upscaler used to say corrupt
    (lambda png: png[: len(png) // 2], images.TRUNCATED),
    (lambda png: b"hello, this is a text file\n" * 10, images.NOT_AN_IMAGE),
    (lambda png: _ico(), images.UNSUPPORTED_FORMAT),  # the upscaler used to say not_an_image
])
def test_upscale_decoding_rejects_with_the_catalogs_reasons(make, reason, make_image):
    data = make(make_image(64, 64))
    assert _reject(data, "x.png").reason == reason
    with pytest.raises(ImageRejected) as info:
        images.decode_for_upscale(data)
    assert info.value.reason == reason


def test_upscale_decoding_keeps_what_the_catalog_normalises():
    deep = (pixels(24, 20)[:, :, 0].astype(np.uint16) * 257 + 3)
    data = encode(Image.fromarray(deep), "PNG")
    src = images.decode_for_upscale(data)
    assert src.colour.dtype == np.uint16 and src.grey and np.array_equal(src.colour[:, :, 0], deep)
    catalog = decode_image(data, "d.png")
    assert np.array_equal(catalog.array()[:, :, 0], ((deep.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8))
    tiny = encode(Image.fromarray(pixels(3, 2)), "PNG")  # below the catalog's minimum side, fine to upscale
    assert images.decode_for_upscale(tiny).width == 3 and _reject(tiny, "t.png").reason == images.TOO_SMALL
