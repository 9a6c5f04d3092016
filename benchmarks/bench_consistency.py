"""Does the consistency check find the bad outputs, catch a planted defect, and what does it cost?

Protocol (../shared/datasets/README.md, as bench_quality): the student and its co-trained
downsampler G come from a bench_quality data root (``--work``). Thresholds are FITTED with
``sr.consistency.fit_thresholds`` on the student's outputs for RealSR's ODD LR images (the
calibration split; their HR is never read, the thresholds do not need it); every figure is
REPORTED on RealSR's 50 EVEN pairs (the pairs bench_quality scores). The student runs one step
(``sr.infer.Upscaler``). Each figure is given for two camera models: G at eps' = 0 (the learned
camera) and bicubic-down (the model-free second opinion).

1. image level: Spearman, across the even images, of the consistency RMSE-Y against the true
   RMSE-Y of the output (against HR, 4 px border cropped as metrics.psnr_y); target >= 0.6;
2. pixel level: per image, the ROC AUC of the heat map (LR-sized, enlarged to HR by nearest
   neighbour) for the pixels whose true |Y error| is above that image's 90th percentile; mean and
   median over images; target >= 0.75;
3. planted hallucination: ``--trials`` seeded trials paste a thin dark line or a bright spot that
   the LR does not support into an even output; the verdict must say ``check`` in >= 95 %; false
   alarms (untouched even outputs judged ``check``) <= 5 %;
4. cost: the upscaler's time per image (``serving.upscale.write_upscaled_png`` into a temp
   folder) with and without the consistency pass, 64 -> 256 and one 1024 x 1024 LR image;
   target <= 15 % added;
5. ``--enforce-consistency``: PSNR-Y, LPIPS, consistency PSNR-Y and time per image for the plain
   output against 1 and 3 iterations of back-projection through each camera model.

``--test-set city100`` measures on crops of City100's two cameras instead of RealSR's even pairs (the
thresholds are still fitted on RealSR's odd LR): false alarms and planted-defect detection on cameras
the thresholds were not fitted on, for G and bicubic-down, each with its own fitted thresholds.

Design choices are selected with ``--select R`` and never on the reported figures: thresholds are
fitted on the odd LR images whose number % 4 == R and the planted-defect detection and the false
alarms are measured on the other odd half (number % 4 != R); the even pairs are not read. Each camera
is also judged without the local limit (``<camera> w/o local``), the design before it.

    .venv/bin/python benchmarks/bench_consistency.py ../shared/datasets --work /work/bench/seed0 \\
        --report docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from sr_pipeline.serving.consistency import co_trained_downsampler
from sr_pipeline.serving.upscale import write_upscaled_png
from sr_pipeline.sr.models.checkpoints import load_sr_model
from sr_pipeline.sr.serve.consistency import (
    BicubicCamera, CalibrationSample, Camera, ConsistencyPass, LearnedCamera, Thresholds, enforce_consistency,
    fit_thresholds, measure, spearman,
)
from sr_pipeline.sr.images.decode import SourceImage
from sr_pipeline.sr.images.tensors import to_tensor, to_uint8
from sr_pipeline.sr.serve.upscaler import Upscaler
from sr_pipeline.sr.judge.lpips_weights import load_lpips
from sr_pipeline.sr.judge.metrics import rgb_to_y
from sr_pipeline.sr.data.pairs import find_pairs, first_number, load_rgb
from sr_pipeline.sr.judge.scoring import metric

from report_md import append_section, command, machine  # benchmarks/report_md.py (the script's folder)

CROP = 4  # HR border cropped from every true-error figure, as metrics.psnr_y at x4
WORST = 0.10  # the share of an image's pixels whose true error counts as "bad" for the pixel AUC
SECTIONS = ("quality", "planted", "enforce", "cost")
TARGETS = {"spearman": 0.6, "auc": 0.75, "detection": 0.95, "false_alarms": 0.05, "cost": 0.15}


# ---------------------------------------------------------------- models and outputs


def pick_models(work: Path, student: Path | None) -> tuple[Path, Path]:
    """(student folder, its co-trained G): ``student`` or the newest student under ``work`` with a G."""
    candidates = [student] if student else sorted((work / "models" / "student").glob("*"), reverse=True)
    for s in candidates:
        g = co_trained_downsampler(s)
        if g is not None:
            return s, g
    raise SystemExit(f"no student with a co-trained downsampler under {work / 'models' / 'student'}")


@dataclass
class Output:
    """One LR image, the student's output for it, its HR (even pairs only) and the student's time."""

    name: str
    lr: np.ndarray
    sr: np.ndarray | None  # None when only the cost is measured
    hr: np.ndarray | None
    ms: float


def upscale_pairs(upscaler: Upscaler, pairs, with_hr: bool) -> list[Output]:
    out = []
    for p in pairs:
        lr = load_rgb(p.lr_path)
        t0 = time.perf_counter()
        sr = upscaler(lr)
        ms = 1e3 * (time.perf_counter() - t0)
        out.append(Output(p.name, lr, sr, load_rgb(p.hr_path) if with_hr else None, ms))
    return out


def city100_crops(datasets: Path, side: int = 128) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, LR, HR) crops of City100's two cameras (``city100_pairs.make_pair``: the registered LR
    box-averaged by 4), ``side`` LR pixels square, the left and right of each image's top: real cameras
    no threshold was fitted on."""
    from city100_pairs import SOURCE, make_pair  # benchmarks/city100_pairs.py (the script's folder)
    from PIL import Image

    out = []
    for cam in sorted(d for d in (datasets / SOURCE).iterdir() if (d / "LR_aligned").is_dir()):
        for hr_path in sorted((cam / "HR").glob("*.png")):
            hr, lr = make_pair(np.asarray(Image.open(hr_path).convert("RGB")),
                               np.asarray(Image.open(cam / "LR_aligned" / hr_path.name).convert("RGB")))
            for k, left in enumerate((0, lr.shape[1] - side)):
                out.append((f"{cam.name}_{hr_path.stem}_{k}", np.ascontiguousarray(lr[:side, left:left + side]),
                            np.ascontiguousarray(hr[:side * 4, left * 4:(left + side) * 4])))
    return out


def upscale_crops(upscaler: Upscaler, crops) -> list[Output]:
    out = []
    for name, lr, hr in crops:
        t0 = time.perf_counter()
        sr = upscaler(lr)
        out.append(Output(name, lr, sr, hr, 1e3 * (time.perf_counter() - t0)))
    return out


def fit(camera: Camera, calibration: list[Output]) -> Thresholds:
    """Thresholds from the odd outputs; their HR is not read (true error unknown: the fit needs none)."""
    samples = [CalibrationSample(measure(camera, o.sr, o.lr, Thresholds(), keep_map=True), None)
               for o in calibration]
    return fit_thresholds(samples, camera.name)


# ---------------------------------------------------------------- 1 and 2: does it find the bad outputs?


def true_error(sr: np.ndarray, hr: np.ndarray) -> np.ndarray:
    """|Y(x_hat) - Y(x_HR)| at HR size, border cropped."""
    return np.abs(rgb_to_y(sr) - rgb_to_y(hr))[CROP:-CROP, CROP:-CROP]


def rmse_from_psnr(psnr: float) -> float:
    return 255.0 * 10.0 ** (-psnr / 20.0)


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve by the rank (Mann-Whitney) formula; ties count one half."""
    ranks = rankdata(score.ravel())
    pos = positive.ravel()
    n_pos, n_neg = int(pos.sum()), int(pos.size - pos.sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def to_hr(lr_map: np.ndarray, scale: int) -> np.ndarray:
    return lr_map.repeat(scale, axis=0).repeat(scale, axis=1)


def finds_bad_outputs(camera: Camera, t: Thresholds, test: list[Output]) -> dict:
    cons_rmse, true_rmse, peaks, aucs, verdicts, reasons = [], [], [], [], [], []
    for o in test:
        c = measure(camera, o.sr, o.lr, t, keep_map=True)
        err = true_error(o.sr, o.hr)
        cons_rmse.append(rmse_from_psnr(c.psnr_y))
        true_rmse.append(float(np.sqrt(np.mean(err**2))))
        peaks.append(c.peak)
        heat = to_hr(c.map, camera.scale)[CROP:-CROP, CROP:-CROP]
        aucs.append(roc_auc(heat, err > np.quantile(err, 1.0 - WORST)))
        verdicts.append(c.verdict)
        reasons.append(c.reasons)
    return {"spearman_rmse": spearman(cons_rmse, true_rmse), "spearman_peak": spearman(peaks, true_rmse),
            "auc_mean": float(np.mean(aucs)), "auc_median": float(np.median(aucs)),
            "auc_min": float(np.min(aucs)), "false_alarms": verdicts.count("check") / len(verdicts),
            "false_alarm_images": [o.name for o, v in zip(test, verdicts) if v == "check"],
            "false_alarm_reasons": reason_counts(reasons),
            "cons_psnr_mean": float(np.mean([20 * math.log10(255.0 / r) for r in cons_rmse]))}


# ---------------------------------------------------------------- 3: a planted hallucination


def _share(rows: list[dict], cam: str, key: str, want) -> float | None:
    return sum(r[cam][key] == want for r in rows) / len(rows) if rows else None


def _size(row: dict) -> str:
    return f"line {row['width']} px" if row["kind"] == "line" else f"spot {row['side']}x{row['side']} px"


def reason_counts(reason_lists) -> dict[str, int]:
    """How often each threshold was broken (the verdict's reasons, by the figure they name)."""
    keys = {"region disagrees": "peak", "stands out": "local", "input pixels disagree": "share", "PSNR-Y": "psnr",
            "shifted": "colour"}
    counts = dict.fromkeys(keys.values(), 0)
    for reasons in reason_lists:
        for text in reasons:
            counts[next(v for k, v in keys.items() if k in text)] += 1
    return counts


@dataclass
class Defect:
    kind: str  # "line" or "spot"
    mask: np.ndarray  # HR bool
    detail: dict


def _line_mask(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, dict]:
    length, width = int(rng.integers(12, 33)), int(rng.integers(1, 3))
    direction = str(rng.choice(["horizontal", "vertical", "diagonal"]))
    span_y, span_x = {"horizontal": (width, length), "vertical": (length, width),
                      "diagonal": (length + width, length + width)}[direction]
    top, left = int(rng.integers(2 * CROP, h - 2 * CROP - span_y)), int(rng.integers(2 * CROP, w - 2 * CROP - span_x))
    mask = np.zeros((h, w), dtype=bool)
    if direction == "diagonal":
        i = np.arange(length)
        flip = bool(rng.integers(2))
        for k in range(width):
            cols = left + (length - 1 - i if flip else i) + k
            mask[top + i, cols] = True
    else:
        mask[top:top + span_y, left:left + span_x] = True
    return mask, {"direction": direction, "length": length, "width": width}


def _spot_mask(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, dict]:
    side = int(rng.integers(3, 6))
    top, left = int(rng.integers(2 * CROP, h - 2 * CROP - side)), int(rng.integers(2 * CROP, w - 2 * CROP - side))
    mask = np.zeros((h, w), dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask, {"side": side}


def plant(rng: np.random.Generator, sr: np.ndarray) -> tuple[np.ndarray, Defect]:
    """The output with a dark line (-0.3..-0.6 of full range) or a bright spot (+0.3..+0.6) added to its pixels."""
    kind = str(rng.choice(["line", "spot"]))
    mask, detail = (_line_mask if kind == "line" else _spot_mask)(rng, *sr.shape[:2])
    contrast = float(rng.uniform(0.3, 0.6)) * (-1.0 if kind == "line" else 1.0)
    out = sr.astype(np.float32)
    out[mask] += 255.0 * contrast
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    detail |= {"contrast": round(contrast, 3),
               "effective_contrast": round(float(np.mean(out[mask].astype(np.float32) - sr[mask])) / 255.0, 3)}
    return out, Defect(kind, mask, detail)


def planted(cameras: dict[str, tuple[Camera, Thresholds]], test: list[Output], trials: int, seed: int) -> dict:
    """Per camera: detection rate (all, per kind, on images judged ok untouched) and where the map points."""
    rng = np.random.default_rng(seed)
    untouched = {cam: [measure(c, o.sr, o.lr, t).verdict for o in test] for cam, (c, t) in cameras.items()}
    rows = []
    for _ in range(trials):
        i = int(rng.integers(len(test)))
        img, defect = plant(rng, test[i].sr)
        row = {"image": test[i].name, "kind": defect.kind, **defect.detail}
        for cam, (c, t) in cameras.items():
            res = measure(c, img, test[i].lr, t, keep_map=True)
            flagged = to_hr(res.map > 1.0, c.scale)
            peak_at = np.unravel_index(np.argmax(res.map), res.map.shape)
            s = c.scale  # the map's maximum within one LR pixel of the defect's footprint
            near = defect.mask[max(0, (peak_at[0] - 1) * s):(peak_at[0] + 2) * s,
                               max(0, (peak_at[1] - 1) * s):(peak_at[1] + 2) * s].any()
            row[cam] = {"verdict": res.verdict, "clean_verdict": untouched[cam][i],
                        "overlap": bool((flagged & defect.mask).any()), "peak_on_defect": bool(near),
                        "reasons": res.reasons}
        rows.append(row)
    summary = {}
    for cam in cameras:
        caught = [r for r in rows if r[cam]["verdict"] == "check"]
        summary[cam] = {
            "detection": _share(rows, cam, "verdict", "check"),
            "detection_line": _share([r for r in rows if r["kind"] == "line"], cam, "verdict", "check"),
            "detection_spot": _share([r for r in rows if r["kind"] == "spot"], cam, "verdict", "check"),
            "detection_on_clean_ok": _share([r for r in rows if r[cam]["clean_verdict"] == "ok"], cam, "verdict", "check"),
            "overlap": _share(caught, cam, "overlap", True), "peak_on_defect": _share(caught, cam, "peak_on_defect", True),
            "by_size": {size: _share([r for r in rows if _size(r) == size], cam, "verdict", "check")
                        for size in sorted({_size(r) for r in rows})},
            "reasons_of_caught": reason_counts(r[cam]["reasons"] for r in caught),
            "false_alarms": untouched[cam].count("check") / len(test)}
    summary["clipped"] = sum(abs(r["effective_contrast"]) < abs(r["contrast"]) - 0.05 for r in rows)
    summary["trials"] = rows
    summary["lines"] = sum(r["kind"] == "line" for r in rows)
    return summary


# ---------------------------------------------------------------- 4: cost


def _source(colour: np.ndarray) -> SourceImage:
    return SourceImage(np.ascontiguousarray(colour), None, "PNG", "RGB", "bench")


def _write_seconds(upscaler: Upscaler, sources: list[SourceImage], folder: Path,
                   camera: Camera | None, t: Thresholds | None) -> tuple[float, float]:
    """(wall, CPU) seconds per image to upscale and write ``sources`` as the upscaler does (with the
    pass, if a camera). CPU time (all threads) is steadier than wall time on a shared machine."""
    t0, c0 = time.perf_counter(), time.process_time()
    for k, src in enumerate(sources):
        cp = None if camera is None else ConsistencyPass(camera, src.colour, t)
        write_upscaled_png(upscaler, src, folder / f"{k}.png", {}, overwrite=True, consistency=cp)
    return (time.perf_counter() - t0) / len(sources), (time.process_time() - c0) / len(sources)


def _mosaic(lrs: list[np.ndarray], side: int) -> np.ndarray:
    """A ``side`` x ``side`` LR image tiled from the (128 px) LR images, cycling through them."""
    tile = lrs[0].shape[0]
    per_row = -(-side // tile)
    rows = [np.concatenate([lrs[(r * per_row + c) % len(lrs)] for c in range(per_row)], axis=1)
            for r in range(per_row)]
    return np.concatenate(rows, axis=0)[:side, :side]


def cost(upscaler: Upscaler, cameras: dict[str, tuple[Camera, Thresholds]], lrs: list[np.ndarray],
         repeats: int, big_side: int) -> dict:
    """Median seconds per image without and with each camera's pass, interleaved repeat by repeat
    (the small images at least 5 times: they are quick and their timings scatter most)."""
    small = [_source(lr[32:96, 32:96]) for lr in lrs[:20]]
    sets = {f"{small[0].width}->{small[0].width * upscaler.scale} ({len(small)} images)": (small, max(5, repeats)),
            f"{big_side}->{big_side * upscaler.scale} (1 image)": ([_source(_mosaic(lrs, big_side))], repeats)}
    arms = {"none": (None, None), **cameras}
    result = {"load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-consistency-") as tmp:
        for arm, (c, t) in arms.items():  # warm-up: every code path once
            _write_seconds(upscaler, small[:2], Path(tmp), c, t)
        for label, (sources, n) in sets.items():
            runs = {arm: [] for arm in arms}
            for _ in range(n):
                for arm, (c, t) in arms.items():
                    runs[arm].append(_write_seconds(upscaler, sources, Path(tmp), c, t))
            wall0, cpu0 = (statistics.median(x[i] for x in runs["none"]) for i in (0, 1))
            result[label] = {}
            for arm, v in runs.items():
                wall, cpu = statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)
                result[label][arm] = {"s_per_image": wall, "added": wall / wall0 - 1.0, "cpu_s_per_image": cpu,
                                      "cpu_added": cpu / cpu0 - 1.0, "runs": v}
            print(f"  cost {label}: " + ", ".join(
                f"{a} {r['s_per_image']:.3f} s ({100 * r['added']:+.1f} %; CPU {100 * r['cpu_added']:+.1f} %)"
                for a, r in result[label].items()), flush=True)
    result["load_average_after"] = os.getloadavg()[0]
    return result


def _cpu_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return 1e3 * statistics.median(times)


def pass_work(upscaler: Upscaler, cameras: dict[str, tuple[Camera, Thresholds]], lr: np.ndarray) -> dict:
    """The pass's CPU work relative to the student's, on one thread by thread CPU time: steadier than
    wall time when other work shares the cores (a cross-check of :func:`cost`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = {}
        for img in (lr[32:96, 32:96], lr):
            sr = upscaler(img)
            student = _cpu_ms(lambda: upscaler(img))
            label = f"{img.shape[1]}->{img.shape[1] * upscaler.scale}"
            result[label] = {"student_ms": student, **{
                cam: _cpu_ms(lambda c=c, t=t: measure(c, sr, img, t)) / student for cam, (c, t) in cameras.items()}}
            print(f"  pass work {label}: " + ", ".join(f"{k} {v:.3g}" for k, v in result[label].items()), flush=True)
        return result
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- 5: enforced consistency


def enforced(cameras: dict[str, tuple[Camera, Thresholds]], test: list[Output], lpips) -> dict:
    psnr, lp = metric("psnr_y"), metric("lpips")
    has_lpips = getattr(lpips, "available", False)
    variants = {"plain": None, **{f"{cam} x{n}": (cam, n) for cam in cameras for n in (1, 3)}}
    result = {}
    for label, how in variants.items():
        rows = []
        for o in test:
            t0 = time.perf_counter()
            sr = o.sr
            if how is not None:
                cam, n = how
                sr = to_uint8(enforce_consistency(cameras[cam][0], to_tensor(o.sr), to_tensor(o.lr), iterations=n))
            extra_ms = 1e3 * (time.perf_counter() - t0)
            row = {"psnr_y": psnr.fn(sr, o.hr, 4), "lpips": lp.fn(sr, o.hr, 4, lpips) if has_lpips else math.nan,
                   "ms": o.ms + extra_ms, "extra_ms": extra_ms}
            for cam, (c, t) in cameras.items():
                m = measure(c, sr, o.lr, t)
                row[f"cons_{cam}"], row[f"check_{cam}"] = m.psnr_y, m.verdict == "check"
            rows.append(row)
        result[label] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(f"  enforce {label}: " + ", ".join(f"{k} {v:.4g}" for k, v in result[label].items()), flush=True)
    result["lpips_note"] = None if has_lpips else str(getattr(lpips, "reason", "LPIPS unavailable"))
    return result


# ---------------------------------------------------------------- the report


def _met(value: float | None, target: float, higher: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return "met" if (value >= target if higher else value <= target) else "MISSED"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _md_findings(s: dict, cams: list[str]) -> str:
    """Sections 1-3: one row per figure, one column per camera model."""
    q, p = s.get("quality"), s.get("planted")

    def row(label, fn):
        return f"| {label} | " + " | ".join(fn(c) for c in cams) + " |\n"

    table = "| figure (target) | " + " | ".join(cams) + " |\n|---|" + "---|" * len(cams) + "\n"
    if q:
        table += row("Spearman, consistency RMSE-Y vs true RMSE-Y (>= 0.6)",
                     lambda c: f"{q[c]['spearman_rmse']:.3f} ({_met(q[c]['spearman_rmse'], TARGETS['spearman'])})")
        table += row("pixel ROC AUC, worst 10 % true error, mean / median (>= 0.75)",
                     lambda c: f"{q[c]['auc_mean']:.3f} / {q[c]['auc_median']:.3f} "
                               f"({_met(q[c]['auc_mean'], TARGETS['auc'])})")
    if p:
        table += row(f"planted defect flagged, {s['args']['trials']} trials (>= 95 %)",
                     lambda c: f"{_pct(p[c]['detection'])} ({_met(p[c]['detection'], TARGETS['detection'])})")
        table += row(f"  dark line ({p['lines']}) / bright spot ({s['args']['trials'] - p['lines']})",
                     lambda c: f"{_pct(p[c]['detection_line'])} / {_pct(p[c]['detection_spot'])}")
        table += row("  by size: " + ", ".join(p[cams[0]]["by_size"]),
                     lambda c: ", ".join(_pct(v) for v in p[c]["by_size"].values()))
        table += row(f"  trials whose contrast was cut by more than 0.05 by the 0-255 range: {p['clipped']}",
                     lambda c: "")
        table += row("  on images judged ok untouched", lambda c: _pct(p[c]["detection_on_clean_ok"]))
        table += row("  flagged map region overlaps the defect / map maximum on it (of those flagged)",
                     lambda c: f"{_pct(p[c]['overlap'])} / {_pct(p[c]['peak_on_defect'])}")
        table += row("  thresholds broken by the caught defects: peak / local / share / PSNR / colour",
                     lambda c: "{peak} / {local} / {share} / {psnr} / {colour}".format(**p[c]["reasons_of_caught"]))
    if q:
        table += row(f"false alarms, {s['n_test']} untouched test outputs (<= 5 %)",
                     lambda c: f"{_pct(q[c]['false_alarms'])} "
                               f"({_met(q[c]['false_alarms'], TARGETS['false_alarms'], False)})")
        table += row("  thresholds broken by the false alarms: peak / local / share / PSNR / colour",
                     lambda c: "{peak} / {local} / {share} / {psnr} / {colour}".format(**q[c]["false_alarm_reasons"]))
        table += row("mean consistency PSNR-Y of the test outputs (dB)", lambda c: f"{q[c]['cons_psnr_mean']:.2f}")
    if p and not q:
        table += row(f"false alarms, {s['n_test']} untouched outputs (<= 5 %)",
                     lambda c: f"{_pct(p[c]['false_alarms'])} "
                               f"({_met(p[c]['false_alarms'], TARGETS['false_alarms'], False)})")
    return table + row("fitted thresholds: pixel / peak (levels), share, PSNR (dB), colour; local: floor (levels) "
                       "+ slope x structure, limit inside / on the edge ring",
                       lambda c: ("{pixel:.2f} / {peak:.2f}, {share:.4f}, {psnr:.2f}, {colour:.2f}; {local_floor:.2f} + "
                                  "{local_slope:.3f} x, {local_peak:.2f} / {border_peak:.2f}").format(
                           **(Thresholds().to_dict() | s["thresholds"][c])))


def _md_cost(s: dict, cams: list[str]) -> str:
    c = s["cost"]
    rows = [f"Cost (the upscaler writing PNGs, median of repeats, {s['args']['threads']} threads; 1-minute load "
            f"average {c['load_average_before']:.1f} before, {c['load_average_after']:.1f} after):", "",
            "| image | no check (s/image) | " + " | ".join(f"{cam} (s/image, added; CPU time added)" for cam in cams)
            + " |", "|---|---|" + "---|" * len(cams)]
    for label, r in c.items():
        if not label.startswith("load_average"):
            rows.append(f"| {label} | {r['none']['s_per_image']:.3f} | " + " | ".join(
                f"{r[cam]['s_per_image']:.3f}, {100 * r[cam]['added']:+.1f} % "
                f"({_met(r[cam]['added'], TARGETS['cost'], False)}); {100 * r[cam]['cpu_added']:+.1f} %"
                for cam in cams) + " |")
    rows += ["", "The pass's CPU work alone against the student's (1 thread, thread CPU time, one even image): "
             + "; ".join(f"{label}: " + ", ".join(f"{cam} {100 * w[cam]:.1f} %" for cam in cams)
                         for label, w in s["pass_work"].items()) + "."]
    return "\n".join(rows) + "\n"


def _md_enforce(s: dict, cams: list[str]) -> str:
    rows = ["`--enforce-consistency` on the even pairs (`G x3` = 3 back-projection iterations through G):", "",
            "| output | PSNR-Y (dB) | LPIPS | " + " | ".join(f"consistency PSNR-Y {c} (dB) | check {c}" for c in cams)
            + " | ms/image (of which projection) |", "|---|---|---|" + "---|---|" * len(cams) + "---|"]
    for label, r in s["enforce"].items():
        if label != "lpips_note":
            lp = "n/a" if math.isnan(r["lpips"]) else f"{r['lpips']:.4f}"
            rows.append(f"| {label} | {r['psnr_y']:.3f} | {lp} | " + " | ".join(
                f"{r[f'cons_{c}']:.2f} | {_pct(r[f'check_{c}'])}" for c in cams)
                + f" | {r['ms']:.0f} ({r['extra_ms']:.0f}) |")
    return "\n".join(rows) + "\n"


def markdown(s: dict) -> str:
    """The sections that ran, as markdown."""
    cams = list(s["thresholds"])
    parts = [_md_findings(s, cams)] if {"quality", "planted", "enforce"} & set(s) else []
    if "cost" in s:
        parts.append(_md_cost(s, cams))
    if "enforce" in s:
        parts.append(_md_enforce(s, cams))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", type=Path, nargs="?", default=Path("../shared/datasets"),
                    help="folder holding realsr_x4 (HR/ and LR/)")
    ap.add_argument("--work", type=Path, required=True,
                    help="a bench_quality data root holding models/student/<v> and models/downsampler/<v>")
    ap.add_argument("--student", type=Path, default=None,
                    help="the student folder (default: the newest student under --work that has a co-trained G)")
    ap.add_argument("--trials", type=int, default=200, help="planted-defect trials (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the planted defects (default 0)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timing repeats per cost arm for the large image (at least 5 for the small ones); the median "
                         "is kept")
    ap.add_argument("--big-side", type=int, default=1024, help="side of the large LR image timed (default 1024)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: the machine's cores)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N odd and N even pairs (quick checks)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                    help="what to measure (default: all): quality = 1 and 2 with the false alarms, planted = 3, "
                         "cost = 4, enforce = 5")
    ap.add_argument("--select", type=int, choices=(1, 3), default=None, metavar="R",
                    help="selection run on the odd split only: fit on the odd images whose number %% 4 == R (1 or 3), "
                         "measure planted defects and false alarms on the other odd half; the even pairs are not read")
    ap.add_argument("--test-set", choices=("realsr-even", "city100"), default="realsr-even",
                    help="what the figures are measured on: RealSR's even pairs (default), or crops of City100's two "
                         "cameras (Nikon D5500, iPhone X; thresholds still fitted on RealSR's odd LR): cameras the "
                         "thresholds were not fitted on")
    ap.add_argument("--report", type=Path, default=None,
                    help="markdown file the section is appended to; the JSON summary is written next to it")
    args = ap.parse_args(argv)
    if not (args.datasets / "realsr_x4" / "HR").is_dir():
        ap.error(f"{args.datasets} lacks realsr_x4/HR and realsr_x4/LR (see ../shared/datasets/README.md)")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    student_dir, g_dir = pick_models(args.work, args.student)
    upscaler = Upscaler(load_sr_model(student_dir), steps=1)
    odd = find_pairs(args.datasets / "realsr_x4", "odd")[:args.limit]
    if args.select is not None:
        if set(args.sections) != {"planted"}:
            ap.error("--select measures the planted defects and false alarms only: add --sections planted")
        # the held-out odd half stands in for the even pairs; its HR is not read either
        even = [p for p in odd if first_number(p.name) % 4 != args.select]
        odd = [p for p in odd if first_number(p.name) % 4 == args.select]
    elif args.test_set == "city100":
        if "cost" in args.sections:
            ap.error("--test-set city100 measures quality, planted defects and enforcing: leave out cost")
        even = city100_crops(args.datasets)[:args.limit]
    else:
        even = find_pairs(args.datasets / "realsr_x4", "even")[:args.limit]
    # the cost alone needs no outputs: the thresholds decide the verdict, not the work (built-in defaults then)
    scored = bool(set(args.sections) - {"cost"})
    split = (f"fit on {len(odd)} odd LR images (HR not read); " + (
        f"SELECTION: measured on the other {len(even)} odd images (number % 4 != {args.select}; even pairs not read)"
        if args.select is not None else
        f"reported on {len(even)} crops of City100's NikonD5500 and iPhoneX ({even[0][1].shape[0]} px LR, an unseen "
        "camera; RealSR's even pairs not read)" if args.test_set == "city100" else
        f"reported on {len(even)} even pairs"))
    print(f"student {student_dir}\nG {g_dir}\n" + (split if scored else "cost only") + f"; {args.threads} threads",
          flush=True)
    calibration = upscale_pairs(upscaler, odd, with_hr=False) if scored else []
    test = upscale_crops(upscaler, even) if args.test_set == "city100" else \
        upscale_pairs(upscaler, even, with_hr=args.select is None) if scored else [
        Output(p.name, load_rgb(p.lr_path), None, None, math.nan) for p in even]
    cameras: dict[str, tuple[Camera, Thresholds]] = {}
    for camera in (LearnedCamera.from_dir(g_dir), BicubicCamera(upscaler.scale)):
        key = "G" if isinstance(camera, LearnedCamera) else "bicubic"
        cameras[key] = (camera, fit(camera, calibration) if scored else Thresholds(camera=camera.name))
        print(f"  thresholds {key}: {cameras[key][1].to_dict()}", flush=True)
        if args.select is not None:  # the design before the local limit, judged on the same outputs
            cameras[f"{key} w/o local"] = (camera, replace(cameras[key][1], local_peak=0.0, border_peak=0.0))
    if args.test_set == "city100" and scored:  # the pipeline before each camera model had its own limits
        cameras["bicubic with G's limits"] = (cameras["bicubic"][0], cameras["G"][1])
    summary = {"student": str(student_dir), "G": str(g_dir), "n_calibration": len(odd), "n_test": len(even),
               "args": {"trials": args.trials, "seed": args.seed, "repeats": args.repeats, "threads": args.threads,
                        "big_side": args.big_side, "limit": args.limit, "select": args.select},
               "targets": TARGETS, "thresholds": {cam: t.to_dict() for cam, (_, t) in cameras.items()}}
    json_path = None if args.report is None else args.report.with_name(args.report.stem + ".consistency.json")

    def save(key: str, value) -> None:  # the JSON grows section by section, so a stopped run keeps its figures
        summary[key] = value
        summary["seconds"] = time.perf_counter() - started
        if json_path is not None:
            json_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")

    if "quality" in args.sections:
        save("quality", {cam: finds_bad_outputs(c, t, test) for cam, (c, t) in cameras.items()})
        for cam, q in summary["quality"].items():
            print(f"  {cam}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in q.items()), flush=True)
    if "planted" in args.sections:
        save("planted", planted(cameras, test, args.trials, args.seed))
        for cam in cameras:
            print(f"  planted {cam}: " + ", ".join(f"{k} {v}" for k, v in summary["planted"][cam].items()), flush=True)
    if "enforce" in args.sections:
        save("enforce", enforced(cameras, test, load_lpips()))
    if "cost" in args.sections:
        save("pass_work", pass_work(upscaler, cameras, test[0].lr))
        save("cost", cost(upscaler, cameras, [o.lr for o in test], args.repeats, args.big_side))
    body = markdown(summary)
    print("\n" + body)
    if args.report is not None:
        title = "Consistency with the camera" + (" on cameras the thresholds were not fitted on (City100)"
                                                 if args.test_set == "city100" else "")
        append_section(args.report, title, [
            f"machine: {machine('cpu')}, {args.threads} torch threads",
            f"student: {student_dir} (1 step); camera models: G {g_dir.name} at eps' = 0, and bicubic-down",
            f"split: thresholds fitted (sr.consistency.fit_thresholds) on the student's outputs; {split}" if scored else
            "cost only: built-in default thresholds (they decide the verdict, not the work); LR from RealSR's even pairs",
            f"planted defects: {args.trials} trials, seed {args.seed}; cost: median of {args.repeats} repeats",
            f"command: `{command('bench_consistency.py', argv)}`",
            f"total time: {summary['seconds']:.0f} s",
        ], body)
        print(f"appended to {args.report}; summary in {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
