"""The scoring pass's border convention: the SR literature's crop by default, the whole image on request."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sr_pipeline.evaluation import commands
from sr_pipeline.evaluation.commands import evaluate_pairs
from sr_pipeline.sr.data import pairs as ev
from sr_pipeline.sr.judge.metrics import psnr_y, ssim_y


def write_pairs(root: Path, count: int = 2, size: int = 48) -> Path:
    """Pairs whose HR differs most from bicubic's enlargement at the border, so the crop matters."""
    (root / "HR").mkdir(parents=True)
    (root / "LR").mkdir()
    rng = np.random.default_rng(1)
    for n in range(1, count + 1):
        ramp = np.linspace(60, 200, size)[None, :, None] + 10 * n
        hr = np.broadcast_to(ramp, (size, size, 3)).astype(np.uint8).copy()
        hr[:4] = rng.integers(0, 256, (4, size, 3))  # detail only in the border rows
        Image.fromarray(hr).save(root / "HR" / f"Cam_{n:03d}.png")
        Image.fromarray(hr).resize((size // 4, size // 4), Image.Resampling.BICUBIC).save(root / "LR" / f"Cam_{n:03d}.png")
    return root


def bicubic_psnr(root: Path, border: int) -> float:
    values = []
    for pair in ev.find_pairs(root):
        hr, lr = ev.load_rgb(pair.hr_path), ev.load_rgb(pair.lr_path)
        values.append(psnr_y(ev.bicubic_upscale(lr, 4), hr, border))
    return float(np.mean(values))


def test_whole_image_scoring_on_request(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "p")
    pairs = ev.find_pairs(root)
    cropped = evaluate_pairs(pairs, {}, 4, tmp_path / "a")
    whole = evaluate_pairs(pairs, {}, 4, tmp_path / "b", crop_border=0)
    assert cropped["crop_border"] == 4 and "4 px border cropped" in cropped["protocol"]
    assert whole["crop_border"] == 0 and "0 px border cropped" in whole["protocol"]
    assert cropped["methods"]["bicubic"]["psnr_y"] == pytest.approx(bicubic_psnr(root, 4))
    assert whole["methods"]["bicubic"]["psnr_y"] == pytest.approx(bicubic_psnr(root, 0))
    assert whole["methods"]["bicubic"]["psnr_y"] < cropped["methods"]["bicubic"]["psnr_y"] - 0.5
    hr, lr = ev.load_rgb(pairs[0].hr_path), ev.load_rgb(pairs[0].lr_path)
    row = pd.read_parquet(tmp_path / "b" / "metrics.parquet").iloc[0]
    assert row["ssim_y"] == pytest.approx(ssim_y(ev.bicubic_upscale(lr, 4), hr, 0))
    with pytest.raises(ev.EvaluationError, match="crop_border"):
        evaluate_pairs(pairs, {}, 4, tmp_path / "c", crop_border=-1)


def test_cli_flag_reaches_the_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    import torch

    from sr_pipeline.cli import build_parser

    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)  # restored after the test
    torch.hub.set_dir(str(tmp_path / "empty-hub"))  # no AlexNet weights: LPIPS is reported unavailable, fast

    root = write_pairs(tmp_path / "p")
    args = build_parser().parse_args(["evaluate", "--pairs", str(root), "--out", str(tmp_path / "o"),
                                      "--no-border-crop", "--json"])
    assert args.no_border_crop is True
    assert commands.evaluate_cli(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["crop_border"] == 0
    assert printed["methods"]["bicubic"]["psnr_y"] == pytest.approx(bicubic_psnr(root, 0))
    default = argparse.Namespace(pairs=root, split="all", out=tmp_path / "o2", json=True, scale=4)
    assert commands.evaluate_cli(default) == 0
    assert json.loads(capsys.readouterr().out)["crop_border"] == 4
