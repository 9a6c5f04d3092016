"""The field camera's JPEG stage: settings read from a file's header, a differentiable compression
that reproduces libjpeg's, the catalog column that carries them, and G applying them to its noisy LR
only."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import photos
from sr_pipeline.sr.images.decode import decode_image
from sr_pipeline.sr.models.downsampler import LearnedDownsampler, load_downsampler
from sr_pipeline.sr.models.differentiable_jpeg import jpeg_roundtrip
from sr_pipeline.sr.images.jpeg_settings import JpegSettings, annex_k_luma, common_settings, jpeg_settings


def encode(img: np.ndarray, quality: int, subsampling: int | None = None) -> bytes:
    buf = io.BytesIO()
    kw = {} if subsampling is None else {"subsampling": subsampling}
    Image.fromarray(img).save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def scene(grey=False) -> np.ndarray:
    """A photo with sensor grain, odd-sized so partial blocks are exercised."""
    img = photos(1, 72, seed=3)[0][:69, :71].astype(float)
    img = np.clip(img + np.random.default_rng(0).normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return img[..., 0] if grey else img


def to_tensor(img: np.ndarray) -> torch.Tensor:
    rgb = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img
    return torch.tensor(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).numpy()


@pytest.mark.parametrize("quality,subsampling,grey", [(70, 2, False), (50, 1, False), (90, 0, False), (85, None, True)])
def test_the_compression_reproduces_libjpeg(quality, subsampling, grey):
    img = scene(grey)
    data = encode(img, quality, subsampling)
    with Image.open(io.BytesIO(data)) as im:
        settings = jpeg_settings(im)
        decoded = np.asarray(im.convert("RGB"))
    ours = to_uint8(jpeg_roundtrip(to_tensor(img), settings))
    original = np.repeat(img[..., None], 3, axis=-1) if grey else img
    # libjpeg's integer DCT flips a few roundings; otherwise the same image, far closer than the input is.
    assert psnr(ours, decoded) > 42
    assert psnr(ours, decoded) > psnr(original, decoded) + 10


def test_rounding_passes_the_gradient_so_the_noise_before_it_stays_learnable():
    settings = JpegSettings((annex_k_luma(70), annex_k_luma(70)), "4:2:0")
    x = (torch.rand(1, 3, 24, 24) * 1.6 - 0.8).requires_grad_(True)
    jpeg_roundtrip(x, settings).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().mean() > 0.1


def test_the_block_grid_can_start_anywhere_and_the_size_is_kept():
    settings = JpegSettings((annex_k_luma(40), annex_k_luma(40)), "4:2:0")
    x = torch.rand(2, 3, 19, 21) * 2 - 1
    a, b = jpeg_roundtrip(x, settings), jpeg_roundtrip(x, settings, offset=(3, 5))
    assert a.shape == b.shape == x.shape and not torch.equal(a, b)


def test_settings_are_read_from_a_jpeg_and_none_from_other_formats():
    img = scene()
    with Image.open(io.BytesIO(encode(img, 70))) as im:
        s = jpeg_settings(im)
    assert s.subsampling == "4:2:0" and s.quality() == 70 and s.tables[0] == annex_k_luma(70)
    assert JpegSettings.from_json(s.to_json()) == s
    with Image.open(io.BytesIO(encode(img[..., 1], 85))) as im:
        g = jpeg_settings(im)
    assert g.grey and len(g.tables) == 1 and g.quality() == 85
    png = io.BytesIO()
    Image.fromarray(img).save(png, "PNG")
    with Image.open(io.BytesIO(png.getvalue())) as im:
        assert jpeg_settings(im) is None
    with pytest.raises(ValueError):
        JpegSettings((annex_k_luma(70),), "4:2:0")  # colour needs a chroma table


def test_a_cameras_settings_are_those_most_of_its_files_carry():
    a, b = (JpegSettings((annex_k_luma(q), annex_k_luma(q)), "4:2:0").to_json() for q in (70, 90))
    settings, share = common_settings([a, a, b, None])
    assert settings == JpegSettings.from_json(a) and share == 0.5
    assert common_settings([None, None]) == (None, 0.0)


def test_decoding_an_upload_records_its_jpeg_settings():
    img = scene()
    decoded = decode_image(encode(img, 75), "a.jpg")
    assert JpegSettings.from_json(decoded.jpeg).quality() == 75
    png = io.BytesIO()
    Image.fromarray(img).save(png, "PNG")
    assert decode_image(png.getvalue(), "a.png").jpeg is None


def test_ingestion_puts_the_settings_in_the_catalog_and_training_reads_the_cameras(tmp_path):
    from sr_pipeline.common.cameras import CameraRegistry
    from sr_pipeline.intake.ingest import ingest_folder
    from sr_pipeline.storage.layout import DataLayout
    from sr_pipeline.training.run import field_camera_jpeg

    registry = CameraRegistry.model_validate({"cameras": {"field_cam": {"role": "field_lr"},
                                                          "png_cam": {"role": "field_lr"}}})
    src = tmp_path / "src"
    (src / "field_cam").mkdir(parents=True)
    (src / "png_cam").mkdir(parents=True)
    for i, img in enumerate(photos(3, 64, seed=1)):
        (src / "field_cam" / f"{i}.jpg").write_bytes(encode(img, 65))
        Image.fromarray(img).save(src / "png_cam" / f"{i}.png")
    layout = DataLayout(tmp_path / "data")
    for camera in ("field_cam", "png_cam"):
        ingest_folder(layout, registry, src / camera, camera)
    settings, share = field_camera_jpeg(layout, "field_cam")
    assert share == 1.0 and settings.quality() == 65 and settings.subsampling == "4:2:0"
    assert field_camera_jpeg(layout, "png_cam") == (None, 0.0)


def test_g_compresses_its_noisy_lr_only_and_keeps_the_settings_when_saved(tmp_path):
    settings = JpegSettings((annex_k_luma(30), annex_k_luma(30)), "4:2:0")
    torch.manual_seed(0)
    plain = LearnedDownsampler(noise_model="camera", channels=8, num_blocks=1).eval()
    g = LearnedDownsampler(noise_model="camera", channels=8, num_blocks=1, jpeg=settings.to_config()).eval()
    g.load_state_dict(plain.state_dict())
    x, eps = torch.rand(1, 3, 64, 64) * 2 - 1, torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(g(x), plain(x))  # eps' = 0: the camera's optics and response, not compressed
        noisy, parts = plain(x, eps), g(x, eps, return_parts=True)
    assert torch.allclose(parts.lr, jpeg_roundtrip(noisy, settings))
    assert torch.allclose(parts.noise, noisy - plain(x), atol=1e-6)  # the noise is the sensor's, before compression
    assert g.camera_summary()["jpeg"] == {"subsampling": "4:2:0", "quality_estimate": 30}
    g.save_pretrained(tmp_path / "g")
    assert json.loads((tmp_path / "g" / "config.json").read_text())["jpeg"]["subsampling"] == "4:2:0"
    assert load_downsampler(tmp_path / "g").jpeg == settings
    with pytest.raises(ValueError, match="jpeg"):
        LearnedDownsampler(noise_model="input", jpeg=settings.to_config())


def test_in_training_the_block_grid_phase_is_random(tmp_path):
    settings = JpegSettings((annex_k_luma(30), annex_k_luma(30)), "4:2:0")
    g = LearnedDownsampler(noise_model="camera", channels=8, num_blocks=1, jpeg=settings.to_config()).train()
    phases = {g._block_phase() for _ in range(40)}
    assert len(phases) > 5 and all(0 <= r < 16 and 0 <= c < 16 for r, c in phases)
    assert g.eval()._block_phase() == (0, 0)


def test_a_grey_g_compresses_only_the_luma_even_when_its_files_were_colour_jpegs():
    settings = JpegSettings((annex_k_luma(50), annex_k_luma(50)), "4:2:0")
    g = LearnedDownsampler(noise_model="camera", channels=8, num_blocks=1, grey=True, jpeg=settings.to_config()).eval()
    assert g.jpeg == JpegSettings(settings.tables[:1], "grey")
    with torch.no_grad():
        y = g(torch.rand(1, 3, 64, 64) * 2 - 1, torch.randn(1, 3, 16, 16))
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])


def test_a_malformed_header_gives_no_settings_rather_than_an_error():
    class Broken:
        format, mode = "JPEG", "RGB"

        @property
        def quantization(self):
            raise OSError("truncated DQT segment")

    assert jpeg_settings(Broken()) is None


def test_the_compression_ignores_autocast():
    settings = JpegSettings((annex_k_luma(70), annex_k_luma(70)), "4:2:0")
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = jpeg_roundtrip(x, settings)
    assert y.dtype == x.dtype and torch.equal(y, jpeg_roundtrip(x, settings))
