"""Tiled inference and `sr-pipeline upscale` with a teacher (--steps T) or a student."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sr_pipeline.cli import main
from sr_pipeline.sr.checkpoints import load_sr_model
from sr_pipeline.sr.diffusion import ResShiftSchedule
from sr_pipeline.sr.infer import TileSettings, Upscaler, block_noise
from sr_pipeline.sr.nets import SRUNet
from sr_pipeline.sr.training import save_model_dir


@pytest.fixture
def teacher_dir(tmp_path):
    torch.manual_seed(0)
    net = SRUNet(scale=4, block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4,
                 num_train_timesteps=4)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    schedule = ResShiftSchedule(num_steps=4, kappa=1.0)

    def save(tmp):
        net.save_pretrained(tmp)
        schedule.save_config(tmp)

    return save_model_dir(tmp_path / "teacher" / "v1", save, {"kind": "teacher", "version": "v1"})


def lr_image(h=40, w=52, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([np.sin(x / 3 + c) * 80 + np.cos(y / 4) * 40 + 128 for c in range(3)], -1)
    return np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)


def test_tiled_matches_untiled(teacher_dir):
    model = load_sr_model(teacher_dir)
    lr = lr_image()
    whole = Upscaler(model, steps=4, tiles=TileSettings(tile=64, overlap=0, batch=1))(lr)
    tiled = Upscaler(model, steps=4, tiles=TileSettings(tile=16, overlap=8, batch=3))(lr)
    assert whole.shape == tiled.shape == (160, 208, 3)
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 6


def test_start_noise_is_seeded_and_consistent_across_tiles(teacher_dir):
    a = block_noise(3, 10, 20, 70, 90)
    b = block_noise(3, 0, 0, 200, 200)[:, 10:80, 20:110]
    assert torch.equal(a, b)
    model = load_sr_model(teacher_dir)
    lr = lr_image(seed=1)
    one = Upscaler(model, steps=4, seed=5, noise_scale=1.0, tiles=TileSettings(tile=16, overlap=8))(lr)
    same = Upscaler(model, steps=4, seed=5, noise_scale=1.0, tiles=TileSettings(tile=16, overlap=8))(lr)
    other = Upscaler(model, steps=4, seed=6, noise_scale=1.0, tiles=TileSettings(tile=16, overlap=8))(lr)
    assert np.array_equal(one, same) and not np.array_equal(one, other)


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
    assert report["ok"] == 1 and report["failed"] == 1
    assert Image.open(out / "a_x4.png").size == (208, 160)
    # An existing output is never overwritten without --overwrite.
    before = (out / "a_x4.png").read_bytes()
    code = main(["upscale", str(src / "a.png"), "--out", str(out), "--model", str(teacher_dir), "--steps", "4"])
    assert code == 1 and (out / "a_x4.png").read_bytes() == before
    assert main(["upscale", str(src / "a.png"), "--out", str(out), "--model", str(teacher_dir), "--steps", "4",
                 "--overwrite"]) == 0
