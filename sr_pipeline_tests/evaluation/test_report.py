"""The management report: history, the plain-language summary, the trend plot and the standalone page."""

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sr_pipeline.evaluation import report_page as report
from sr_pipeline.sr.data.pairs import Pair
from sr_pipeline.sr.judge.scoring import score_pairs


class FakeLPIPS:
    available = True

    def __call__(self, sr: np.ndarray, hr: np.ndarray) -> float:
        return float(np.abs(sr.astype(float) - hr).mean() / 255)


def nearest(lr: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1)


def oracle_for(hrs: dict[bytes, np.ndarray]):
    """Returns the true HR image plus a little noise: a model that is clearly better than bicubic."""
    rng = np.random.default_rng(0)

    def up(lr: np.ndarray) -> np.ndarray:
        hr = hrs[lr.tobytes()]
        return np.clip(hr + rng.normal(0, 3, hr.shape), 0, 255).astype(np.uint8)

    return up


def make_scores(tmp_path: Path, n: int = 4):
    pairs, hrs = [], {}
    yy, xx = np.mgrid[0:48, 0:48]
    rng = np.random.default_rng(1)
    for i in range(n):
        base = (np.sin(xx / (2 + i)) + np.cos(yy / 3)) * 60 + 128
        hr = np.clip(base[..., None] + rng.normal(0, 12, (48, 48, 3)), 0, 255).astype(np.uint8)
        lr = np.asarray(Image.fromarray(hr).resize((12, 12), Image.Resampling.BICUBIC))
        hrs[lr.tobytes()] = hr
        for side, img in (("HR", hr), ("LR", lr)):
            (tmp_path / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(tmp_path / side / f"img{i}.png")
        pairs.append(Pair(f"img{i}.png", tmp_path / "HR" / f"img{i}.png", tmp_path / "LR" / f"img{i}.png"))
    methods = {"teacher": oracle_for(hrs), "candidate": oracle_for(hrs), "promoted": nearest}
    return score_pairs(pairs, methods, 4, lpips=FakeLPIPS())


def make_summary(scores, day: str, served: str | None = "candidate", promoted: bool = True, **extra) -> dict:
    gate = {"passed": promoted, "action": "promoted" if promoted else "rejected",
            "criteria": [{"name": "valid_outputs", "passed": True, "message": "all fine", "values": {}},
                         {"name": "not_worse_than_bicubic", "passed": promoted, "message": "PSNR-Y ok", "values": {}}],
            "thresholds": {"psnr_tolerance_db": 0.05, "lpips_tolerance": 0.005},
            "plain": "The new student s9 was promoted." if promoted else "The new student s9 was not promoted: worse."}
    return {**scores.summary, "report_date": day, "created": f"{day}T06:00:00+00:00", "device": "cpu (1 thread)",
            "labels": {"bicubic": "plain enlargement (bicubic)", "teacher": "teacher (15 steps)",
                       "candidate": "new student", "promoted": "promoted student"},
            "models": {"candidate": {"version": "s9", "path": "/m/s9", "steps": 1}},
            "realism": {"available": True, "pairs": 4, "learned_psnr": 31.0, "bicubic_psnr": 30.0,
                        "per_image": [{"image": "img0.png", "learned_psnr": 31.0, "bicubic_psnr": 30.0}]},
            "gate": gate, "served": served, **extra}


def test_history_is_sorted_and_skips_temp_foreign_and_broken_files(tmp_path):
    reports = tmp_path / "reports"
    for name, body in [("2026-03-09", {"report_date": "2026-03-09", "methods": {}}),
                       ("2026-03-02", {"report_date": "2026-03-02", "methods": {}}),
                       ("2026-03-02-2", {"report_date": "2026-03-02", "created": "z", "methods": {}}),
                       (".2026-03-16.tmp", {"report_date": "2026-03-16", "methods": {}}),
                       ("notes", {"something": "else"})]:
        (reports / name).mkdir(parents=True)
        (reports / name / "summary.json").write_text(json.dumps(body))
    (reports / "broken").mkdir()
    (reports / "broken" / "summary.json").write_text("{not json")
    dates = [(h["report_date"], h.get("created")) for h in report.load_history(reports)]
    assert dates == [("2026-03-02", None), ("2026-03-02", "z"), ("2026-03-09", None)]
    assert len(report.load_history(reports, exclude=reports / "2026-03-09")) == 2
    assert report.load_history(tmp_path / "missing") == []


def test_headline_in_plain_language(tmp_path):
    scores = make_scores(tmp_path)
    now = make_summary(scores, "2026-03-09")
    g = report.gains(now)
    assert g["psnr_gain_db"] == pytest.approx(now["methods"]["candidate"]["psnr_y"] - now["methods"]["bicubic"]["psnr_y"])
    assert g["psnr_gain_db"] > 1 and g["lpips_drop"] > 0

    first = report.headline(now, [])
    assert first[0].startswith("**Image quality.** On 4 calibration pairs")
    assert f"is better than plain enlargement ({g['psnr_gain_db']:+.2f} dB PSNR-Y, " in first[0]
    assert f"LPIPS {g['lpips']:.3f} against {g['lpips_bicubic']:.3f}" in first[0]
    assert "first report" in first[1]
    assert first[2] == "**Promotion.** The new student s9 was promoted."
    assert first[3].startswith("**Speed** on cpu (1 thread): new student:") and "megapixels" in first[3]
    assert "more closely than plain shrinking (PSNR-Y 31.00 against 30.00 dB" in first[4]
    level = dict(now, realism={**now["realism"], "learned_psnr": 34.006, "bicubic_psnr": 34.013})
    assert "about as closely as plain shrinking (PSNR-Y 34.01 against 34.01 dB" in report.headline(level, [])[4]
    assert "fine detail" not in first[4]  # a summary without the Laplacian ratio says nothing of it
    sharp = dict(now, realism={**now["realism"], "learned_lap_ratio": 1.4, "bicubic_lap_ratio": 2.0,
                               "sharpness": "too sharp", "bicubic_sharpness": "too sharp", "band": [0.8, 1.25]})
    assert "keeps 1.40x of their fine detail, too sharp (0.8-1.25x is the target band" in report.headline(sharp, [])[4]

    last = dict(now, report_date="2026-03-02", pairs=3)
    last["methods"] = {**now["methods"], "candidate": {**now["methods"]["candidate"],
                                                        "psnr_y": now["methods"]["candidate"]["psnr_y"] - 0.5}}
    trend = report.headline(now, [last])[1]
    assert trend.startswith("**Trend.** Last report (2026-03-02, 3 pairs)")
    assert "This report is better than the last (+0.50 dB PSNR-Y gain, LPIPS level" in trend
    assert "calibration set changed" in trend

    rejected = make_summary(scores, "2026-03-09", served="promoted", promoted=False)
    lines = report.headline(rejected, [])
    assert "(promoted student" in lines[0] and "is worse than plain enlargement" in lines[0]  # nearest is worse
    assert "not promoted" in lines[2]

    no_lpips = dict(now, lpips={"available": False, "reason": "no weights"})
    no_lpips["methods"] = {m: {**s, "lpips": None} for m, s in now["methods"].items()}
    assert "LPIPS was not measured: no weights." in report.headline(no_lpips, [])[0]


def test_trend_plot_and_comparison_strip_are_real_pictures(tmp_path):
    scores = make_scores(tmp_path)
    history = [make_summary(scores, f"2026-02-{d:02d}") for d in (16, 23)]
    png = report.trend_png(history, make_summary(scores, "2026-03-02"))
    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert img.shape == (320, 900) and img.std() > 10  # lines and labels, not an empty canvas

    summary = make_summary(scores, "2026-03-02")
    cols = report.crop_columns(scores, "img0.png", report.CROP_METHODS, summary["labels"])
    assert [c for c, _ in cols] == ["LR (field camera)", "plain enlargement (bicubic)", "teacher (15 steps)",
                                    "new student", "promoted student", "HR (reference)"]
    strip = Image.open(io.BytesIO(report.crop_strip_png(cols, size=64)))
    assert strip.size == (6 * 68 + 4, 14 + 64 + 8)  # captions above, 4 px around each crop
    pixels = np.asarray(strip.convert("RGB"))
    assert not (pixels[18:82, 4:68] == 255).all() and (pixels[18:82, 4:68] != pixels[18:82, -68:-4]).any()


def test_best_median_worst_are_ranked_by_gain_over_bicubic(tmp_path):
    scores = make_scores(tmp_path, n=5)
    picks = report.ranked_images(scores)
    assert [label for label, _ in picks] == ["best", "median", "worst"]
    gains = [row["gain"] for _, row in picks]
    assert gains == sorted(gains, reverse=True)
    bicubic = {r["image"]: r["psnr_y"] for r in scores.rows if r["method"] == "bicubic"}
    cand = sorted(r["psnr_y"] - bicubic[r["image"]] for r in scores.rows if r["method"] == "candidate")
    assert gains[0] == pytest.approx(cand[-1]) and gains[-1] == pytest.approx(cand[0])


def test_the_page_is_standalone_and_opens_with_the_summary(tmp_path):
    scores = make_scores(tmp_path / "pairs")
    summary = make_summary(scores, "2026-03-09")
    history = [make_summary(scores, "2026-03-02")]
    page = report.render_report(summary, scores, history)
    assert "http://" not in page and "https://" not in page and "<script" not in page and "<link" not in page
    order = [page.index(f"id='{i}'") for i in ("headline", "summary", "gate", "realism", "trend", "models", "per-image")]
    assert order == sorted(order)
    headline = page[page.index("id='headline'"):page.index("</section>")]
    assert "<b>Image quality.</b>" in headline and "<b>Trend.</b> Last report (2026-03-02" in headline
    # 3 images (best, median, worst) x (LR, bicubic, teacher, candidate, promoted, HR) + the trend plot
    assert page.count("src='data:image/png;base64,") == 3 * 6 + 1
    assert re.search(r"<td class='pass'>pass</td><td class='detail'>all fine</td>", page)
    assert "learned downsampler G(HR)</td><td>31.00</td>" in page
    assert "<table id='per-image'>" in page and "img3.png" in page
    md = report.markdown_table(summary, scores.methods)
    assert md.splitlines()[0] == "| method | PSNR-Y (dB) | SSIM-Y | LPIPS | HF energy / HR (x) | ms / image | MP/s |"
    assert "| plain enlargement (bicubic) |" in md and len(md.splitlines()) == 2 + 4


def test_benchmark_page_and_text_table_follow_the_registry(tmp_path):
    scores = make_scores(tmp_path)
    page = report.render_benchmark_page(scores)
    assert "<table id='summary'>" in page and "<table id='per-image'>" in page and "<script" not in page
    assert page.count("data:image/png;base64,") == 3 * 4  # best/median/worst x (LR, bicubic, teacher, HR)
    assert "best, median and worst image of teacher" in page
    text = report.text_table(scores.summary).splitlines()
    assert text[1].split()[:4] == ["method", "PSNR-Y", "SSIM-Y", "LPIPS"] and len(text) == 2 + 4


def _rows(gains_db: list[float], lpips_delta: float = -0.02) -> list[dict]:
    """Per-image rows: bicubic at 28 dB / 0.40 LPIPS, the candidate ``gains_db`` above it."""
    rows = []
    for i, g in enumerate(gains_db):
        rows.append({"method": "bicubic", "image": f"img{i}.png", "psnr_y": 28.0, "lpips": 0.40})
        rows.append({"method": "candidate", "image": f"img{i}.png", "psnr_y": 28.0 + g, "lpips": 0.40 + lpips_delta})
    return rows


def test_the_headline_leads_with_the_median_and_names_the_worst_image(tmp_path):
    # One image carries the mean (+6.81 dB); the median is about 0.5 dB and one image of eight is worse.
    gains_db = [6.81, 0.52, 0.49, 0.55, 0.47, 0.51, 0.60, -0.40]
    spread = report.gain_spread(_rows(gains_db), "candidate")
    assert spread["median_db"] == pytest.approx(0.515) and spread["mean_db"] == pytest.approx(np.mean(gains_db))
    assert spread["better"] == 7 and spread["images"] == 8 and spread["worst_image"] == "img7.png"
    summary = make_summary(make_scores(tmp_path), "2026-03-09", per_image_gain={"candidate": spread})
    line = report.headline(summary, [])[0]
    median, mean = line.index("median +0.52 dB PSNR-Y"), line.index(f"mean {np.mean(gains_db):+.2f} dB")
    assert median < line.index("better on 7 of 8 images") < mean
    assert "worst image img7.png, -0.40 dB" in line
    # A better PSNR-Y beside a worse LPIPS is a trade image by image, never counted as better.
    assert report.gain_spread(_rows(gains_db, lpips_delta=+0.02), "candidate")["better"] == 0


def test_the_trend_plot_and_sentence_use_the_headlines_median_and_say_so(tmp_path, monkeypatch):
    import matplotlib.axes

    scores = make_scores(tmp_path)
    skewed = [6.81, 0.52, 0.49, 0.55, 0.47, 0.51, 0.60, -0.40]  # the mean (+1.19) is not what the headline says
    def spread(gains_db):  # as the evaluation keeps it, for every model it scored
        one = report.gain_spread(_rows(gains_db), "candidate")
        return {"candidate": one, "teacher": one}

    last = make_summary(scores, "2026-03-02", per_image_gain=spread(skewed))
    now = make_summary(scores, "2026-03-09", per_image_gain=spread([g + 0.3 for g in skewed]))
    assert report.headline_gain(now) == (pytest.approx(0.815), "median")
    trend = report.headline(now, [last])[1]
    assert "2026-03-02, 4 pairs): median +0.52 dB over plain enlargement; this report: median +0.81 dB" in trend
    assert report.headline(now, [last])[0].count("median +0.81 dB") == 1  # the image-quality line says the same

    plotted, titles = [], []
    real_plot, real_title = matplotlib.axes.Axes.plot, matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda ax, *a, **k: plotted.append((k.get("label"), a)) or real_plot(ax, *a, **k))
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda ax, text, **k: titles.append(text) or real_title(ax, text, **k))
    report.trend_png([last], now)
    xs, ys = next(a for label, a in plotted if label == "new student")
    assert list(ys) == [pytest.approx(0.515), pytest.approx(0.815)]  # the medians, not the means
    assert titles[0].startswith("median PSNR-Y gain per image")
    old = {k: v for k, v in last.items() if k != "per_image_gain"}  # a summary from before per-image gains
    assert report.headline_gain(old)[1] == "mean" and "mean for older reports" in report.trend_gain_title(
        {"median", "mean"})


def test_the_page_names_models_readably_and_shows_no_machine_path(tmp_path):
    scores = make_scores(tmp_path / "pairs")
    summary = make_summary(scores, "2026-03-09", camera="field_cam", consistency={
        "available": False, "path": "models/student/20260309T060000Z-ab12cd/consistency.json", "reason": "not fitted"})
    summary["models"] = {"candidate": {"version": "20260309T060000Z-ab12cd", "steps": 1,
                                       "path": "/srv/plant/secret/models/student/20260309T060000Z-ab12cd",
                                       "folder": "models/student/20260309T060000Z-ab12cd"}}
    page = report.render_report(summary, scores, [])
    assert "/srv/plant" not in page and "secret" not in page
    assert "new student of field_cam trained 2026-03-09 (ab12cd)" in page
    assert "<td class='detail'>models/student/20260309T060000Z-ab12cd</td>" in page


def test_the_gate_says_better_when_the_candidate_beats_the_promoted_student_beyond_the_tolerances():
    from sr_pipeline.evaluation.gate import GateThresholds, _versus_promoted
    from sr_pipeline.sr.judge.scoring import metric

    measured = [metric("psnr_y"), metric("lpips")]

    def criterion(c_psnr, c_lpips):
        rows = [{"method": "cand", "psnr_y": c_psnr, "lpips": c_lpips}, {"method": "prom", "psnr_y": 28.124,
                                                                          "lpips": 0.44061}]
        return _versus_promoted(rows, measured, GateThresholds(), "s-old", "cand", "prom")

    assert criterion(28.746, 0.40700).message.startswith("better than the promoted student s-old (PSNR-Y 28.746 dB")
    assert criterion(28.150, 0.44000).message.startswith("within tolerance of the promoted student s-old")
    assert criterion(28.746, 0.44300).message.startswith("not worse, beyond the tolerances, than the promoted")
    assert not criterion(27.0, 0.40700).passed


def test_the_speed_line_is_the_model_in_use(tmp_path):
    scores = make_scores(tmp_path)
    kept = make_summary(scores, "2026-03-01", served="promoted", promoted=False)  # the promoted student stays
    line = next(t for t in report.headline(kept, []) if t.startswith("**Speed**"))
    assert line.startswith("**Speed** on cpu (1 thread): promoted student: ") and "new student" not in line
    assert report.served_role(kept) == "promoted"
    line = next(t for t in report.headline(make_summary(scores, "2026-03-01"), []) if t.startswith("**Speed**"))
    assert line.startswith("**Speed** on cpu (1 thread): new student: ")
