"""Tiled inference and `sr-pipeline upscale` with a teacher (--steps T) or a student."""

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_sr_model
from sr_pipeline.cli import main
from sr_pipeline.sr.models.checkpoints import load_sr_model
from sr_pipeline.sr.images.png_stream import PngStreamWriter
from sr_pipeline.sr.serve.upscaler import TileSettings, Upscaler, block_noise, quantise, upscale_alpha_rows


@pytest.fixture
def teacher_dir(tmp_path):
    return tiny_sr_model(tmp_path / "teacher" / "v1", {"kind": "teacher", "version": "v1"})


def lr_image(h=40, w=52, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([np.sin(x / 3 + c) * 80 + np.cos(y / 4) * 40 + 128 for c in range(3)], -1)
    return np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)


def test_tiled_matches_untiled(teacher_dir):
    model = load_sr_model(teacher_dir)
    lr = lr_image(32, 44)
    whole = Upscaler(model, steps=4, tiles=TileSettings(tile=64, overlap=0, batch=1))(lr)
    tiled = Upscaler(model, steps=4, tiles=TileSettings(tile=16, overlap=8, batch=3))(lr)
    assert whole.shape == tiled.shape == (128, 176, 3)
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 6


def test_start_noise_is_seeded_and_consistent_across_tiles(teacher_dir):
    a = block_noise(3, 10, 20, 70, 90)
    b = block_noise(3, 0, 0, 200, 200)[:, 10:80, 20:110]
    assert torch.equal(a, b)
    model = load_sr_model(teacher_dir)
    lr = lr_image(24, 28, seed=1)
    one = Upscaler(model, steps=4, seed=5, noise_scale=1.0, tiles=TileSettings(tile=16, overlap=8))(lr)
    same = Upscaler(model, steps=4, seed=5, noise_scale=1.0, tiles=TileSettings(tile=16, overlap=8))(lr)
    other = Upscaler(model, steps=4, seed=6, noise_scale=1.0, tiles=TileSettings(tile=16, overlap=8))(lr)
    assert np.array_equal(one, same) and not np.array_equal(one, other)


def test_a_student_is_served_at_the_start_noise_it_was_distilled_at(tmp_path, teacher_dir):
    noisy = tiny_sr_model(tmp_path / "student" / "n1", {"kind": "student", "version": "n1",
                                                         "profile": {"colearn": {"start_noise_scale": 1.0}}})
    mean = tiny_sr_model(tmp_path / "student" / "n0", {"kind": "student", "version": "n0", "profile": {}})
    lr = lr_image(24, 28, seed=2)
    assert Upscaler(load_sr_model(noisy)).noise_scale == 1.0
    assert Upscaler(load_sr_model(mean)).noise_scale == 0.0  # older students carry no start_noise_scale
    assert Upscaler(load_sr_model(teacher_dir)).noise_scale == 0.0
    # an explicit scale wins, and the default output is the one at the distillation scale
    assert Upscaler(load_sr_model(noisy), noise_scale=0.0).noise_scale == 0.0
    default = Upscaler(load_sr_model(noisy), seed=3)(lr)
    assert np.array_equal(default, Upscaler(load_sr_model(noisy), seed=3, noise_scale=1.0)(lr))
    assert not np.array_equal(default, Upscaler(load_sr_model(noisy), seed=3, noise_scale=0.0)(lr))


def test_self_ensemble_averages_the_turned_back_outputs_and_commutes_with_flips(teacher_dir):
    model = load_sr_model(teacher_dir)
    lr = lr_image(16, 16, seed=4)
    one_tile = TileSettings(tile=16, overlap=0, batch=1)
    x8 = Upscaler(model, steps=2, tiles=one_tile, self_ensemble=8)
    alone = Upscaler(model, steps=2, tiles=one_tile)
    # x8 is the mean of the model run on each of the square's eight symmetries, each turned back
    expected = np.mean([np.rot90(alone(np.ascontiguousarray(np.rot90(lr[:, ::-1] if flip else lr, k)))
                                 .astype(np.float64), -k)[:, ::-1 if flip else 1]
                        for flip in (False, True) for k in range(4)], axis=0)
    out = x8(lr)
    assert np.abs(out - expected).max() <= 1.0  # each single output was rounded to 8 bits
    # so flipping or turning the input flips or turns the output (up to rounding), unlike the model alone
    assert np.abs(x8(np.ascontiguousarray(lr[:, ::-1])).astype(int) - out[:, ::-1]).max() <= 1
    assert np.abs(x8(np.ascontiguousarray(np.rot90(lr))).astype(int) - np.rot90(out)).max() <= 1
    assert not np.array_equal(out, alone(lr))
    # with start noise the result is still fixed by the seed, and tiles still agree where they overlap
    noisy = dict(steps=2, noise_scale=1.0, seed=7, self_ensemble=4)
    big = lr_image(24, 28, seed=5)
    a = Upscaler(model, tiles=TileSettings(tile=16, overlap=8), **noisy)(big)
    assert np.array_equal(a, Upscaler(model, tiles=TileSettings(tile=16, overlap=8), **noisy)(big))
    with pytest.raises(ValueError, match="self_ensemble"):
        Upscaler(model, self_ensemble=3)
    from sr_pipeline.cli import SELF_ENSEMBLE_CHOICES
    from sr_pipeline.sr.serve.upscaler import SELF_ENSEMBLE_SIZES

    assert SELF_ENSEMBLE_CHOICES == SELF_ENSEMBLE_SIZES  # the command line offers what the upscaler takes


def test_small_images_and_bad_settings(teacher_dir):
    model = load_sr_model(teacher_dir)
    assert Upscaler(model, steps=1, tiles=TileSettings(tile=16, overlap=4))(lr_image(5, 7)).shape == (20, 28, 3)
    with pytest.raises(ValueError, match="steps"):
        Upscaler(model, steps=5)
    with pytest.raises(ValueError, match="multiple"):
        Upscaler(model, tiles=TileSettings(tile=15, overlap=4))
    with pytest.raises(ValueError, match="overlap"):
        Upscaler(model, tiles=TileSettings(tile=16, overlap=16))


def test_upscale_cli_with_the_teacher(teacher_dir, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(lr_image()).save(src / "a.png")
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = main(["upscale", str(src), "--out", str(out), "--model", str(teacher_dir), "--steps", "4", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1  # one bad file: reported, skipped, non-zero exit
    assert report["succeeded"] == 1 and report["failed"] == 1
    assert Image.open(out / "a_x4.png").size == (208, 160)
    # An existing output is never overwritten without --overwrite: kept when it is this source's, else a failure.
    before = (out / "a_x4.png").read_bytes()
    code = main(["upscale", str(src / "a.png"), "--out", str(out), "--model", str(teacher_dir), "--steps", "4"])
    assert code == 0 and (out / "a_x4.png").read_bytes() == before
    code = main(["upscale", str(src / "a.png"), "--out", str(out), "--model", str(teacher_dir), "--steps", "2"])
    assert code == 1 and (out / "a_x4.png").read_bytes() == before
    assert main(["upscale", str(src / "a.png"), "--out", str(out), "--model", str(teacher_dir), "--steps", "4",
                 "--overwrite"]) == 0


# ---------------------------------------------------------------- bands, modes and PNG output


@pytest.fixture
def student_dir(tmp_path, teacher_dir):
    import shutil

    out = tmp_path / "student" / "s1"
    shutil.copytree(teacher_dir, out)
    info = json.loads((out / "training.json").read_text())
    (out / "training.json").write_text(json.dumps({**info, "kind": "student", "version": "s1"}))
    return out


def test_bands_stream_the_same_image_as_whole_calls(teacher_dir):
    model = load_sr_model(teacher_dir)
    lr = lr_image(45, 37)
    up = Upscaler(model, steps=1, tiles=TileSettings(tile=16, overlap=6, batch=2))
    bands = list(up.iter_rows(lr))
    assert all(b.dtype == np.float32 and b.shape[1:] == (148, 3) for b in bands)
    assert len(bands) > 2 and sum(len(b) for b in bands) == 180 and max(len(b) for b in bands) <= 16 * 4
    assert np.array_equal(quantise(np.concatenate(bands), np.uint8), up(lr))
    # 16-bit and grey inputs run through the same path.
    wide = up((lr.astype(np.uint16) * 257))
    assert wide.dtype == np.uint16 and np.abs(wide.astype(int) // 257 - up(lr).astype(int)).max() <= 1
    grey = lr[:, :, 1]
    assert np.array_equal(up(grey), up(np.repeat(grey[:, :, None], 3, axis=2)))


def test_alpha_bands_equal_the_whole_bicubic_upscale():
    alpha = np.random.default_rng(0).integers(0, 256, (23, 17), dtype=np.uint8)
    whole = torch.nn.functional.interpolate(torch.from_numpy(alpha).float().div(255)[None, None], scale_factor=4,
                                            mode="bicubic", align_corners=False)[0, 0].clamp(0, 1).numpy()
    bands = [upscale_alpha_rows(alpha, 4, r, min(r + 20, 92)) for r in range(0, 92, 20)]
    assert np.allclose(np.concatenate(bands), whole, atol=1e-6)


def test_png_stream_writer_round_trips_every_layout():
    rng = np.random.default_rng(1)
    for mode, channels, depth, pil_mode in [("L", 1, 8, "L"), ("LA", 2, 8, "LA"), ("RGB", 3, 8, "RGB"),
                                            ("RGBA", 4, 8, "RGBA"), ("L16", 1, 16, "I;16")]:
        dtype = np.uint16 if depth == 16 else np.uint8
        img = rng.integers(0, 2**depth, (29, 31, channels)).astype(dtype)
        buf = io.BytesIO()
        writer = PngStreamWriter(buf, 31, 29, channels, depth, text={"sr_pipeline:k": "välue"}, compress_level=1)
        for r in range(0, 29, 8):
            writer.write_rows(img[r:r + 8])
        writer.close()
        im = Image.open(io.BytesIO(buf.getvalue()))
        assert im.mode == pil_mode and im.info["sr_pipeline:k"] == "välue", mode
        assert np.array_equal(np.asarray(im).reshape(img.shape), img), mode
    with pytest.raises(ValueError, match="rows"):
        PngStreamWriter(io.BytesIO(), 4, 4, 3).close()


def _upscale_file(tmp_path, teacher_dir, name, data, *extra):
    src = tmp_path / "modes"
    src.mkdir(exist_ok=True)
    (src / name).write_bytes(data)
    out = tmp_path / "modes_out"
    assert main(["upscale", str(src / name), "--out", str(out), "--model", str(teacher_dir), "--steps", "1",
                 "--tile", "16", "--overlap", "4", "--overwrite", *extra]) == 0
    return Image.open(out / f"{Path(name).stem}_x4.png")


def _png(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def test_modes_grey_alpha_16bit_and_exif(teacher_dir, tmp_path):
    rgb = lr_image(20, 24)
    grey = Image.fromarray(rgb[:, :, 0])
    out = _upscale_file(tmp_path, teacher_dir, "grey.png", _png(grey))
    assert out.mode == "L" and out.size == (96, 80)
    direct = Upscaler(load_sr_model(teacher_dir), steps=1, tiles=TileSettings(16, 4))(np.asarray(grey))
    luma = direct.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    assert np.abs(np.asarray(out).astype(int) - luma).max() <= 1  # the luma of the RGB result

    alpha = np.tile(np.linspace(0, 255, 24, dtype=np.uint8), (20, 1))
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    out = _upscale_file(tmp_path, teacher_dir, "cut.png", _png(rgba))
    assert out.mode == "RGBA" and out.size == (96, 80)
    expected = upscale_alpha_rows(alpha, 4, 0, 80)
    assert np.abs(np.asarray(out)[:, :, 3].astype(int) - np.rint(expected * 255)).max() <= 1
    assert "alpha_bicubic" in out.info["sr_pipeline:notes"]
    dropped = _upscale_file(tmp_path, teacher_dir, "cut.png", _png(rgba), "--drop-alpha")
    assert dropped.mode == "RGB" and "alpha_dropped" in dropped.info["sr_pipeline:notes"]
    assert np.array_equal(np.asarray(dropped), np.asarray(out)[:, :, :3])

    deep = (rgb[:, :, 2].astype(np.uint16) * 257 + 3)
    out16 = _upscale_file(tmp_path, teacher_dir, "deep.png", _png(Image.fromarray(deep)))
    assert out16.mode == "I;16" and out16.size == (96, 80)  # 16 bits in, 16 bits out
    values = np.asarray(out16)
    assert values.dtype == np.uint16 and values.max() > 255

    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # stored sideways: display rotates 90 degrees clockwise
    buf = io.BytesIO()
    rotated.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    out = _upscale_file(tmp_path, teacher_dir, "turned.jpg", buf.getvalue())
    assert out.size == (80, 96) and "exif_orientation_6" in out.info["sr_pipeline:notes"]


def test_output_metadata_names_the_model_and_source(teacher_dir, tmp_path):
    data = _png(Image.fromarray(lr_image(20, 20)))
    out = _upscale_file(tmp_path, teacher_dir, "meta.png", data)
    assert out.info["sr_pipeline:model_version"] == "v1" and out.info["sr_pipeline:model_kind"] == "teacher"
    assert out.info["sr_pipeline:source_sha256"] == hashlib.sha256(data).hexdigest()
    assert out.info["sr_pipeline:steps"] == "1" and out.info["sr_pipeline:source_name"] == "meta.png"
    assert "sr_pipeline:self_ensemble" not in out.info
    # an output made with self-ensemble says so, and is not taken for one made without it
    again = _upscale_file(tmp_path, teacher_dir, "meta.png", data, "--self-ensemble", "2")
    assert again.info["sr_pipeline:self_ensemble"] == "2"
    src = tmp_path / "modes" / "meta.png"
    assert main(["upscale", str(src), "--out", str(tmp_path / "modes_out"), "--model", str(teacher_dir),
                 "--steps", "1", "--tile", "16", "--overlap", "4"]) == 1


def test_cli_steps_rules_and_folders(teacher_dir, student_dir, tmp_path, capsys):
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(lr_image(20, 20)).save(src / "a.png")
    Image.fromarray(lr_image(20, 20, seed=2)).save(src / "sub" / "a.png")  # same stem, other folder
    Image.fromarray(lr_image(20, 20, seed=3)).save(src / "sub" / "a.jpg")  # same output name as sub/a.png
    out = tmp_path / "tree_out"
    assert main(["upscale", str(src), "--out", str(out), "--model", str(student_dir), "--steps", "2"]) == 2
    capsys.readouterr()
    code = main(["upscale", str(src), "--out", str(out), "--model", str(student_dir), "--tile", "16", "--overlap", "4",
                 "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["succeeded"] == 2 and report["failed"] == 1 and report["steps"] == 1
    assert (out / "a_x4.png").is_file() and (out / "sub" / "a_x4.png").is_file()
    [bad] = [f for f in report["files"] if f["status"] == "failed"]
    assert "already writes" in bad["reason"]
    # A teacher runs its full sampler (T = 4) unless --steps says otherwise.
    code = main(["upscale", str(src / "a.png"), "--out", str(tmp_path / "t"), "--model", str(teacher_dir), "--json",
                 "--tile", "16", "--overlap", "4"])
    assert code == 0 and json.loads(capsys.readouterr().out)["steps"] == 4
    if not torch.cuda.is_available():  # asking for a missing GPU is a usage error, not a silent CPU run
        assert main(["upscale", str(src / "a.png"), "--out", str(tmp_path / "t"), "--model", str(teacher_dir),
                     "--device", "cuda", "--overwrite"]) == 2


def test_the_memory_budget_lowers_the_batch_or_refuses(teacher_dir):
    model = load_sr_model(teacher_dir)
    big = Upscaler(model, tiles=TileSettings(tile=64, overlap=8, batch=8), memory_budget=None)
    plan = big.plan(3000, 4000)
    taller = big.plan(30000, 4000)  # only the input grows with the height, never the working set
    assert plan.batch == 8 and {k: v for k, v in taller.parts.items() if k != "input"} == \
        {k: v for k, v in plan.parts.items() if k != "input"}
    assert plan.total < 16000 * 12000 * 3  # less than the uint8 output alone
    one_tile = plan.parts["tiles"] // 8
    fixed = plan.total - plan.parts["tiles"]
    tight = Upscaler(model, tiles=TileSettings(tile=64, overlap=8, batch=8), memory_budget=fixed + 3 * one_tile)
    assert tight.plan(3000, 4000).batch == 3
    with pytest.raises(MemoryError, match="budget"):
        Upscaler(model, tiles=TileSettings(tile=64, overlap=8), memory_budget=2**20)(lr_image())


def test_an_image_smaller_than_a_tile_is_not_padded_to_the_whole_tile(teacher_dir):
    model = load_sr_model(teacher_dir)
    lr = lr_image(30, 22)  # the tiny net's multiple is 2: one 30 px tile covers it
    big_tile = Upscaler(model, steps=2, tiles=TileSettings(tile=128, overlap=16))(lr)
    snug = Upscaler(model, steps=2, tiles=TileSettings(tile=30, overlap=4))(lr)
    assert np.array_equal(big_tile, snug)
