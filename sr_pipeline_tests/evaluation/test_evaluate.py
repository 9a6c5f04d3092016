"""Pair discovery, the split rule, the metric registry, and the files an evaluation writes (tiny
synthetic pairs)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sr_pipeline.evaluation import commands
from sr_pipeline.evaluation.commands import evaluate_pairs
from sr_pipeline.sr.data import pairs as ev
from sr_pipeline.evaluation import report_page as report
from sr_pipeline.sr.judge import scoring
from sr_pipeline.sr.judge.lpips_weights import Unavailable


def write_pairs(root: Path, numbers: list[int], size: int = 32) -> Path:
    (root / "HR").mkdir(parents=True)
    (root / "LR").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for n in numbers:
        base = (np.sin(xx / (2 + n % 5)) + np.cos(yy / 3)) * 60 + 128
        hr = np.clip(base[..., None] + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(hr).save(root / "HR" / f"Cam_{n:03d}_LR4.png")
        lr = Image.fromarray(hr).resize((size // 4, size // 4), Image.Resampling.BICUBIC)
        suffix = ".PNG" if n == 2 else ".png"  # extension case may differ between the folders
        lr.save(root / "LR" / f"Cam_{n:03d}_LR4{suffix}", format="PNG")
    return root


def nearest(lr: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1)


class FakeLPIPS:
    available = True

    def __call__(self, sr: np.ndarray, hr: np.ndarray) -> float:
        return float(np.abs(sr.astype(float) - hr).mean() / 255)


def test_first_number_and_split(tmp_path: Path) -> None:
    assert ev.first_number("Canon_004_LR4.png") == 4 and ev.first_number("Nikon_051_LR4") == 51
    assert ev.first_number("nothing.png") is None
    root = write_pairs(tmp_path / "p", [1, 2, 3, 4, 10])
    (root / "HR" / "Cam_099_LR4.png").write_bytes((root / "HR" / "Cam_001_LR4.png").read_bytes())  # no LR
    (root / "LR" / "notes.txt").write_text("not an image")

    every = ev.find_pairs(root)
    assert [p.name for p in every] == [f"Cam_{n:03d}_LR4.png" for n in (1, 2, 3, 4, 10)]
    assert every[1].lr_path.name == "Cam_002_LR4.PNG" and every[1].hr_path.parent.name == "HR"
    assert [ev.first_number(p.name) for p in ev.find_pairs(root, "even")] == [2, 4, 10]
    assert [ev.first_number(p.name) for p in ev.find_pairs(root, "odd")] == [1, 3]


def test_find_pairs_errors(tmp_path: Path) -> None:
    with pytest.raises(ev.EvaluationError, match="HR/ and LR/"):
        ev.find_pairs(tmp_path)
    (tmp_path / "HR").mkdir()
    (tmp_path / "LR").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "HR" / "a_1.png")
    Image.new("RGB", (2, 2)).save(tmp_path / "LR" / "b_1.png")
    with pytest.raises(ev.EvaluationError, match="no file name is in both"):
        ev.find_pairs(tmp_path)
    Image.new("RGB", (2, 2)).save(tmp_path / "LR" / "a_1.png")
    with pytest.raises(ev.EvaluationError, match="even first number"):
        ev.find_pairs(tmp_path, "even")
    with pytest.raises(ev.EvaluationError, match="split must be"):
        ev.find_pairs(tmp_path, "third")
    Image.new("RGB", (8, 8)).save(tmp_path / "HR" / "plain.png")
    Image.new("RGB", (2, 2)).save(tmp_path / "LR" / "plain.png")
    with pytest.raises(ev.EvaluationError, match="needs a number"):
        ev.find_pairs(tmp_path, "odd")


def test_evaluation_writes_summary_parquet_and_html(tmp_path: Path) -> None:
    pairs = ev.find_pairs(write_pairs(tmp_path / "p", [1, 2, 3, 4]))
    out = tmp_path / "out"
    summary = evaluate_pairs(pairs, {"nearest": nearest}, 4, out, lpips=FakeLPIPS(), split="all")

    assert json.loads((out / "summary.json").read_text()) == summary
    assert list(summary["methods"]) == ["bicubic", "nearest"]
    assert summary["pairs"] == 4 and summary["split"] == "all" and summary["scale"] == 4
    assert summary["lpips"] == {"available": True, "reason": None}
    for stats in summary["methods"].values():
        assert set(stats) == {"psnr_y", "ssim_y", "lpips", "hf_ratio", "ms_per_image", "mp_per_s", "n", "median"}
        assert set(stats["median"]) == {"psnr_y", "ssim_y", "lpips", "hf_ratio"} and stats["n"] == 4
        assert 0 < stats["ssim_y"] <= 1 and stats["psnr_y"] > 10 and stats["ms_per_image"] > 0
        assert stats["lpips"] > 0 and stats["mp_per_s"] > 0

    df = pd.read_parquet(out / "metrics.parquet")
    assert list(df.columns) == ["method", "image", "psnr_y", "ssim_y", "lpips", "hf_ratio", "ms"]
    assert len(df) == 8 and set(df["method"]) == {"bicubic", "nearest"}
    bic = df[df["method"] == "bicubic"]
    assert summary["methods"]["bicubic"]["psnr_y"] == pytest.approx(bic["psnr_y"].mean())
    assert summary["methods"]["bicubic"]["median"]["ssim_y"] == pytest.approx(bic["ssim_y"].median())

    page = (out / "index.html").read_text()
    assert "<table id='summary'>" in page and "<table id='per-image'>" in page
    assert "nearest" in page and "Cam_004_LR4.png" in page
    assert page.count("data:image/png;base64,") == 3 * 4  # best/median/worst x (LR, bicubic, nearest, HR)
    assert page.count("<th>nearest ") == len(scoring.metrics())  # one per-image column per metric
    assert "http://" not in page and "https://" not in page
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_lpips_unavailable_is_reported_not_faked(tmp_path: Path) -> None:
    pairs = ev.find_pairs(write_pairs(tmp_path / "p", [1, 2]))
    summary = evaluate_pairs(pairs, {}, 4, tmp_path / "o1", lpips=Unavailable("no weights here"))
    assert summary["lpips"] == {"available": False, "reason": "no weights here"}
    assert summary["methods"]["bicubic"]["lpips"] is None and summary["methods"]["bicubic"]["median"]["lpips"] is None
    assert pd.read_parquet(tmp_path / "o1" / "metrics.parquet")["lpips"].isna().all()
    assert "LPIPS unavailable: no weights here" in (tmp_path / "o1" / "index.html").read_text()

    summary = evaluate_pairs(pairs, {}, 4, tmp_path / "o2", lpips=None)
    assert summary["lpips"]["available"] is False and "not computed" in summary["lpips"]["reason"]


def test_bad_method_outputs_are_clear_errors(tmp_path: Path) -> None:
    pairs = ev.find_pairs(write_pairs(tmp_path / "p", [1]))
    with pytest.raises(ev.EvaluationError, match=r"'x2'.*shape \(16, 16, 3\).*\(32, 32, 3\)"):
        evaluate_pairs(pairs, {"x2": lambda lr: np.repeat(np.repeat(lr, 2, 0), 2, 1)}, 4, tmp_path / "o")
    with pytest.raises(ev.EvaluationError, match="uint8"):
        evaluate_pairs(pairs, {"f": lambda lr: nearest(lr).astype(np.float32)}, 4, tmp_path / "o")
    with pytest.raises(ev.EvaluationError, match="always evaluated"):
        evaluate_pairs(pairs, {"bicubic": nearest}, 4, tmp_path / "o")
    with pytest.raises(ev.EvaluationError, match="not x2"):
        evaluate_pairs(pairs, {}, 2, tmp_path / "o")
    assert not (tmp_path / "o" / "summary.json").exists()


def test_identical_output_gives_null_not_infinity_in_json(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "p", [1])
    hr = ev.load_rgb(root / "HR" / "Cam_001_LR4.png")
    summary = evaluate_pairs(ev.find_pairs(root), {"oracle": lambda lr: hr.copy()}, 4, tmp_path / "o")
    assert summary["methods"]["oracle"]["psnr_y"] is None and summary["methods"]["oracle"]["ssim_y"] == 1.0
    assert math.isinf(pd.read_parquet(tmp_path / "o" / "metrics.parquet").query("method == 'oracle'")["psnr_y"][1])


def test_run_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)  # restored after the test
    torch.hub.set_dir(str(tmp_path / "empty-hub"))  # no AlexNet weights: LPIPS must say unavailable
    root = write_pairs(tmp_path / "p", [1, 2, 3])
    args = argparse.Namespace(pairs=root, split="odd", out=tmp_path / "out", json=True, scale=4)
    assert commands.evaluate_cli(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["pairs"] == 2 and printed["split"] == "odd" and printed["lpips"]["available"] is False
    assert "lpips-weights" in printed["lpips"]["reason"]

    args.methods = {"nearest": nearest}
    args.json = False
    assert commands.evaluate_cli(args) == 0
    text = capsys.readouterr().out
    assert "nearest" in text and "bicubic" in text and "LPIPS unavailable" in text

    assert commands.evaluate_cli(argparse.Namespace(pairs=tmp_path / "missing", split="all", out=tmp_path / "o",
                                         json=False, scale=4)) == 2
    assert "HR/ and LR/" in capsys.readouterr().err


def test_a_registered_metric_reaches_the_parquet_the_tables_and_the_gate(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(scoring, "_REGISTRY", dict(scoring._REGISTRY))  # the extra metric is gone after the test
    mae = scoring.register(scoring.Metric("mae", "MAE", lambda sr, hr, scale: float(np.abs(sr.astype(float) - hr).mean()),
                                          higher_is_better=False, digits=3, unit="grey levels", gate=True))
    pairs = ev.find_pairs(write_pairs(tmp_path / "p", [1, 2]))
    summary = evaluate_pairs(pairs, {"nearest": nearest}, 4, tmp_path / "o", lpips=FakeLPIPS())

    df = pd.read_parquet(tmp_path / "o" / "metrics.parquet")
    assert list(df.columns) == ["method", "image", "psnr_y", "ssim_y", "lpips", "hf_ratio", "mae", "ms"]
    assert (df["mae"] > 0).all()
    assert summary["methods"]["nearest"]["mae"] == pytest.approx(df[df["method"] == "nearest"]["mae"].mean())
    assert summary["methods"]["nearest"]["median"]["mae"] == pytest.approx(df[df["method"] == "nearest"]["mae"].median())
    page = (tmp_path / "o" / "index.html").read_text()
    assert "<th>MAE (grey levels) mean</th>" in page and "<th>nearest MAE</th>" in page
    assert f"{summary['methods']['nearest']['mae']:.3f}" in page
    md = report.markdown_table(summary, ["bicubic", "nearest"])
    assert md.splitlines()[0] == "| method | PSNR-Y (dB) | SSIM-Y | LPIPS | HF energy / HR (x) | MAE (grey levels) | ms / image | MP/s |"
    assert f"| {summary['methods']['nearest']['mae']:.3f} |" in md.splitlines()[3]
    assert "MAE" in report.text_table(summary).splitlines()[1]

    from sr_pipeline.evaluation.gate import GateThresholds, OutputWatch, decide

    rows = [dict(r, method="candidate" if r["method"] == "nearest" else r["method"]) for r in
            pd.read_parquet(tmp_path / "o" / "metrics.parquet").to_dict("records")]
    watch = OutputWatch(images=2)
    beats = decide(rows, summary, watch, GateThresholds(), None)[1]
    assert beats.values["mae"] == pytest.approx(summary["methods"]["nearest"]["mae"])
    assert "bicubic_mae" in beats.values and ("MAE" in beats.message)
    assert mae in scoring.metrics()


def test_metric_directions_and_reserved_names() -> None:
    psnr, lp = scoring.metric("psnr_y"), scoring.metric("lpips")
    assert psnr.worse(30.0, 30.1) and not psnr.worse(30.0, 30.1, tolerance=0.2) and psnr.worse(None, 1.0)
    assert lp.worse(0.2, 0.1) and not lp.worse(0.1, 0.2) and not lp.worse(0.104, 0.1, tolerance=0.005)
    assert psnr.heading == "PSNR-Y (dB)" and psnr.text(math.inf) == "inf" and lp.text(None) == "-"
    with pytest.raises(ValueError, match="reserved"):
        scoring.register(scoring.Metric("ms", "time", lambda sr, hr, scale: 0.0, False, 1))


def test_hf_ratio_measures_sharpening_against_the_hr() -> None:
    from sr_pipeline.sr.judge.metrics import hf_ratio

    rng = np.random.default_rng(0)
    hr = np.clip(rng.normal(128, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(hr).resize((16, 16), Image.BICUBIC).resize((64, 64), Image.BICUBIC))
    grainy = np.clip(hr.astype(float) + rng.normal(0, 30, hr.shape), 0, 255).astype(np.uint8)
    assert hf_ratio(hr, hr) == pytest.approx(1.0)
    assert hf_ratio(blurred, hr) < 0.3 < 1.5 < hf_ratio(grainy, hr)


def test_gate_fails_an_over_sharpening_student() -> None:
    from sr_pipeline.evaluation.gate import CRITERIA, GateThresholds, OutputWatch, decide

    def rows(ratios: list[float]) -> list[dict]:
        out = []
        for i, r in enumerate(ratios):
            out.append({"method": "bicubic", "image": f"i{i}", "psnr_y": 25.0, "lpips": 0.4, "hf_ratio": 0.1})
            out.append({"method": "candidate", "image": f"i{i}", "psnr_y": 26.0, "lpips": 0.3, "hf_ratio": r})
        return out

    avail = {"lpips": {"available": True, "reason": None}}
    ok = decide(rows([0.9, 1.2, 3.0]), avail, OutputWatch(images=3), GateThresholds(), None)
    assert [c.name for c in ok] == list(CRITERIA) and all(c.passed for c in ok)
    assert ok[-1].values["hf_ratio_median"] == pytest.approx(1.2)
    sharp = decide(rows([1.1, 1.4, 1.5]), avail, OutputWatch(images=3), GateThresholds(), None)[-1]
    assert not sharp.passed and "1.40x" in sharp.message and "over-sharpens" in sharp.message
    assert decide(rows([1.1, 1.4, 1.5]), avail, OutputWatch(images=3), GateThresholds(max_hf_ratio=1.5), None)[-1].passed
    with pytest.raises(ValueError, match="max_hf_ratio"):
        GateThresholds(max_hf_ratio=float("nan"))


def test_models_are_scored_at_each_noise_scale_asked_for(tmp_path: Path) -> None:
    from conftest import tiny_sr_model

    student = tiny_sr_model(tmp_path / "student" / "v1", {"kind": "student", "version": "v1",
                                                          "profile": {"colearn": {"start_noise_scale": 1.0}}})
    teacher = tiny_sr_model(tmp_path / "teacher" / "t1", {"kind": "teacher", "version": "t1"})
    own = commands.model_methods([student], teacher, steps=2)
    assert {n: m.noise_scale for n, m in own.items()} == {"student:v1": 1.0, "teacher-2step": 0.0}
    swept = commands.model_methods([student], teacher, steps=2, noise_scales=[0.0, 0.5])
    assert {n: m.noise_scale for n, m in swept.items()} == {
        "student:v1 noise 0": 0.0, "student:v1 noise 0.5": 0.5,
        "teacher-2step noise 0": 0.0, "teacher-2step noise 0.5": 0.5}
    root = write_pairs(tmp_path / "p", [2, 4])
    lr = np.asarray(Image.open(next((root / "LR").iterdir())).convert("RGB"))
    assert not np.array_equal(swept["student:v1 noise 0"](lr), swept["student:v1 noise 0.5"](lr))
    args = argparse.Namespace(pairs=root, split="all", out=tmp_path / "o", json=False, scale=4, model=[student],
                              noise_scale=[-1.0])
    assert commands.evaluate_cli(args) == 2


def test_models_are_scored_alone_and_at_each_self_ensemble_asked_for(tmp_path: Path) -> None:
    from conftest import tiny_sr_model

    student = tiny_sr_model(tmp_path / "student" / "v1", {"kind": "student", "version": "v1"})
    methods = commands.model_methods([student], noise_scales=[0.0], self_ensembles=[1, 8])
    assert {n: m.self_ensemble for n, m in methods.items()} == {"student:v1 noise 0": 1,
                                                                "student:v1 noise 0 x8 ensemble": 8}
    assert commands.model_methods([student])["student:v1"].self_ensemble == 1
