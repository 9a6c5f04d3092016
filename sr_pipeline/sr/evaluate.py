"""Evaluate upscalers on paired HR/LR folders: per-image metrics, a summary and an HTML report.

A *method* is any callable ``LR uint8 HxWx3 -> SR uint8 (scale*H)x(scale*W)x3``; bicubic (PIL) is
always included. PSNR-Y and SSIM-Y crop ``scale`` pixels at each border (see :mod:`.metrics`);
LPIPS-alex is reported only from the real ImageNet trunk, otherwise as unavailable with the reason.
Outputs, each written atomically: ``metrics.parquet`` (one row per method and image),
``summary.json`` and a self-contained ``index.html``.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from sr_pipeline.storage.atomic import atomic_write as _atomic_write
from sr_pipeline.sr.metrics import psnr_y, rgb_to_y, ssim_y

Method = Callable[[np.ndarray], np.ndarray]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
SPLITS = ("all", "even", "odd")
_CROP = 128  # HR pixels per side of the report's side-by-side crops


class EvaluationError(ValueError):
    """The pairs or a method's output cannot be evaluated; the message says what to fix."""


@dataclass(frozen=True)
class Pair:
    name: str
    hr_path: Path
    lr_path: Path


# --- pairs ----------------------------------------------------------------------------------------

def _subdir(root: Path, name: str) -> Path | None:
    for cand in (root / name.upper(), root / name.lower()):
        if cand.is_dir():
            return cand
    return None


def _images_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in found:
                raise EvaluationError(f"two images named {p.stem!r} in {folder}: {found[p.stem].name}, {p.name}")
            found[p.stem] = p
    return found


def first_number(name: str) -> int | None:
    """The first run of digits in a file name (``Canon_004_LR4.png`` -> 4), or None."""
    m = re.search(r"\d+", name)
    return int(m.group()) if m else None


def find_pairs(pairs_dir: Path, split: str = "all") -> list[Pair]:
    """HR/LR pairs under ``pairs_dir`` (``HR/`` and ``LR/``, matched by file name; the extension may
    differ in case or kind). ``split`` keeps files whose first number is even or odd (RealSR protocol).
    """
    if split not in SPLITS:
        raise EvaluationError(f"split must be one of {SPLITS}, got {split!r}")
    pairs_dir = Path(pairs_dir)
    hr_dir, lr_dir = _subdir(pairs_dir, "hr"), _subdir(pairs_dir, "lr")
    if hr_dir is None or lr_dir is None:
        raise EvaluationError(f"{pairs_dir} must hold HR/ and LR/ folders of images matched by file name")
    hr, lr = _images_by_stem(hr_dir), _images_by_stem(lr_dir)
    stems = sorted(hr.keys() & lr.keys())
    if not stems:
        raise EvaluationError(f"no file name is in both {hr_dir} ({len(hr)} images) and {lr_dir} ({len(lr)} images)")
    if split != "all":
        unnumbered = [s for s in stems if first_number(s) is None]
        if unnumbered:
            raise EvaluationError(f"--split {split} needs a number in every file name; none in {unnumbered[:5]}")
        parity = 0 if split == "even" else 1
        stems = [s for s in stems if first_number(s) % 2 == parity]  # type: ignore[operator]
        if not stems:
            raise EvaluationError(f"no pair in {pairs_dir} has an {split} first number")
    return [Pair(hr[s].name, hr[s], lr[s]) for s in stems]


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """PIL bicubic enlargement by ``scale`` (the plain-enlargement baseline)."""
    h, w = lr.shape[:2]
    return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), Image.Resampling.BICUBIC))


# --- evaluation -----------------------------------------------------------------------------------

def _check_output(sr: Any, expected: tuple[int, ...], method: str, image: str) -> np.ndarray:
    if not isinstance(sr, np.ndarray) or sr.dtype != np.uint8:
        kind = sr.dtype if isinstance(sr, np.ndarray) else type(sr).__name__
        raise EvaluationError(f"method {method!r} returned {kind} for {image}; expected a uint8 numpy array")
    if sr.shape != expected:
        raise EvaluationError(f"method {method!r} returned an image of shape {sr.shape} for {image}; "
                              f"the HR image is {expected}")
    return sr


def _crop_box(hr: np.ndarray, scale: int) -> tuple[int, int, int]:
    """(top, left, size) of the most detailed scale-aligned square of the HR, for the report."""
    h, w = hr.shape[:2]
    size = max(scale, (min(_CROP, h, w) // scale) * scale)
    y = rgb_to_y(hr)
    best, box = -1.0, (0, 0)
    step = max(scale, (size // 2 // scale) * scale)
    for top in range(0, h - size + 1, step):
        for left in range(0, w - size + 1, step):
            v = float(y[top:top + size, left:left + size].var())
            if v > best:
                best, box = v, (top, left)
    return box[0], box[1], size


def _lpips_state(lpips: Any) -> tuple[Any, dict[str, Any]]:
    if lpips is None:
        return None, {"available": False, "reason": "LPIPS was not computed (no metric was given)"}
    if not getattr(lpips, "available", True):
        return None, {"available": False, "reason": str(getattr(lpips, "reason", "unavailable"))}
    return lpips, {"available": True, "reason": None}


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _stats(rows: list[dict[str, Any]], lpips_on: bool) -> dict[str, Any]:
    def col(k: str) -> list[float]:
        return [r[k] for r in rows]

    ms = col("ms")
    pixels = sum(r["pixels"] for r in rows)
    out: dict[str, Any] = {
        "psnr_y": _finite(float(np.mean(col("psnr_y")))),
        "ssim_y": _finite(float(np.mean(col("ssim_y")))),
        "lpips": _finite(float(np.mean(col("lpips")))) if lpips_on else None,
        "ms_per_image": float(np.mean(ms)),
        "mp_per_s": pixels / 1e6 / (sum(ms) / 1e3) if sum(ms) > 0 else None,
        "n": len(rows),
        "median": {
            "psnr_y": _finite(statistics.median(col("psnr_y"))),
            "ssim_y": _finite(statistics.median(col("ssim_y"))),
            "lpips": _finite(statistics.median(col("lpips"))) if lpips_on else None,
        },
    }
    return out


@dataclass
class Scores:
    """Everything one scoring pass measured, before anything is written.

    ``rows``: one dict per (method, image) with psnr_y, ssim_y, lpips (NaN when not computed), ms and
    pixels; ``refs``: image -> (LR crop enlarged by pixel repetition, HR crop); ``crops``: image ->
    method -> SR crop (the same box); ``methods``: method names in order, bicubic first.
    """

    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    refs: dict[str, tuple[np.ndarray, np.ndarray]]
    crops: dict[str, dict[str, np.ndarray]]
    methods: list[str]


OutputHook = Callable[[str, str, np.ndarray, np.ndarray, np.ndarray], None]


def score_pairs(pairs: list[Pair], methods: dict[str, Method], scale: int, lpips: Any = None,
                split: str | None = None, on_output: OutputHook | None = None) -> Scores:
    """Score bicubic and every method on ``pairs`` in memory (see :func:`evaluate_pairs`).

    ``on_output(method, image, lr, sr, hr)`` is called for every output, outside the timed region.
    """
    if not pairs:
        raise EvaluationError("no pairs to evaluate")
    if "bicubic" in methods:
        raise EvaluationError("'bicubic' is always evaluated; give other methods other names")
    all_methods: dict[str, Method] = {"bicubic": lambda lr: bicubic_upscale(lr, scale), **methods}
    metric, lpips_info = _lpips_state(lpips)

    first_lr = load_rgb(pairs[0].lr_path)
    for fn in all_methods.values():
        fn(first_lr)  # warm-up, not timed

    rows: list[dict[str, Any]] = []
    refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # image -> (LR crop enlarged, HR crop)
    crops: dict[str, dict[str, np.ndarray]] = {}  # image -> method -> SR crop
    for pair in pairs:
        hr, lr = load_rgb(pair.hr_path), load_rgb(pair.lr_path)
        if hr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
            raise EvaluationError(f"{pair.name}: HR {hr.shape[1]}x{hr.shape[0]} is not x{scale} of "
                                  f"LR {lr.shape[1]}x{lr.shape[0]}")
        top, left, size = _crop_box(hr, scale)
        lr_crop = lr[top // scale:(top + size) // scale, left // scale:(left + size) // scale]
        refs[pair.name] = (np.repeat(np.repeat(lr_crop, scale, 0), scale, 1), hr[top:top + size, left:left + size])
        crops[pair.name] = {}
        for name, fn in all_methods.items():
            t0 = time.perf_counter()
            sr = fn(lr)
            ms = (time.perf_counter() - t0) * 1e3
            sr = _check_output(sr, hr.shape, name, pair.name)
            if on_output is not None:
                on_output(name, pair.name, lr, sr, hr)
            rows.append({
                "method": name, "image": pair.name, "psnr_y": psnr_y(sr, hr, scale),
                "ssim_y": ssim_y(sr, hr, scale), "lpips": metric(sr, hr) if metric is not None else math.nan,
                "ms": ms, "pixels": sr.shape[0] * sr.shape[1],
            })
            crops[pair.name][name] = sr[top:top + size, left:left + size]

    summary = {
        "methods": {m: _stats([r for r in rows if r["method"] == m], metric is not None) for m in all_methods},
        "lpips": lpips_info,
        "pairs": len(pairs),
        "split": split,
        "scale": scale,
        "protocol": f"PSNR/SSIM on Y (BT.601), {scale} px border cropped, SSIM Gaussian 11x11 sigma 1.5; "
                    "LPIPS v0.1 AlexNet on RGB in [-1, 1]; bicubic = PIL BICUBIC",
    }
    return Scores(summary=summary, rows=rows, refs=refs, crops=crops, methods=list(all_methods))


def evaluate_pairs(pairs: list[Pair], methods: dict[str, Method], scale: int, out_dir: Path,
                   lpips: Any = None, split: str | None = None) -> dict[str, Any]:
    """Score bicubic and every method on ``pairs``; write parquet, summary.json and index.html.

    ``lpips`` is an :class:`~sr_pipeline.sr.lpips_weights.LPIPSMetric`, an ``Unavailable`` (its
    reason is reported) or None (not computed). Each method is warmed up once on the first pair and
    then timed per image (wall clock around the call, which returns a host array). Returns the summary.
    """
    scores = score_pairs(pairs, methods, scale, lpips=lpips, split=split)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics_parquet(scores.rows, out_dir / "metrics.parquet")
    write_json(out_dir / "summary.json", scores.summary)
    atomic_write(out_dir / "index.html",
                 render_html(scores.summary, scores.rows, scores.refs, scores.crops, scores.methods).encode())
    return scores.summary


def evaluate_folder(pairs_dir: Path, out_dir: Path, split: str = "all", scale: int = 4,
                    extra_methods: dict[str, Method] | None = None, lpips: Any = None) -> dict[str, Any]:
    """:func:`find_pairs` + :func:`evaluate_pairs`, loading LPIPS-alex unless a metric is given."""
    pairs = find_pairs(pairs_dir, split)
    if lpips is None:
        from sr_pipeline.sr.lpips_weights import load_lpips

        lpips = load_lpips()
    return evaluate_pairs(pairs, dict(extra_methods or {}), scale, out_dir, lpips=lpips, split=split)


# --- files ----------------------------------------------------------------------------------------

def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by all (the report is served as a file)."""
    def write(fh) -> None:
        fh.write(data)
        os.fchmod(fh.fileno(), 0o644)

    _atomic_write(path, write, durable=False)


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON (no NaN or infinity: :func:`_stats` turns those into null), written atomically."""
    atomic_write(path, json.dumps(obj, indent=2, allow_nan=False).encode())


def write_metrics_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    """One row per (method, image): method, image, psnr_y, ssim_y, lpips, ms."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=["method", "image", "psnr_y", "ssim_y", "lpips", "ms"])
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write(path, buf.getvalue())


# --- HTML report ----------------------------------------------------------------------------------

def png_data_uri(img: np.ndarray) -> str:
    """An inline ``data:`` URI of an RGB array as PNG (reports carry no external files)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def fmt(x: Any, digits: int) -> str:
    """A metric for HTML: fixed digits, an en dash for missing, infinity as the sign."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "&ndash;"
    if isinstance(x, float) and math.isinf(x):
        return "&infin;"
    return f"{x:.{digits}f}"


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;
margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th:first-child,td:first-child
{text-align:left}figure{display:inline-block;margin:4px;text-align:center}figure img{width:192px;
height:192px;image-rendering:pixelated}.note{color:#555}"""


def render_html(summary: dict[str, Any], rows: list[dict[str, Any]], refs: dict[str, tuple[np.ndarray, np.ndarray]],
                crops: dict[str, dict[str, np.ndarray]], methods: list[str]) -> str:
    """A standalone report: summary table, per-image table, best/median/worst crops (inline PNG)."""
    esc = html.escape
    lp = summary["lpips"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>SR evaluation</title>"
             f"<style>{_STYLE}</style></head><body><h1>Super-resolution evaluation</h1>",
             f"<p>{summary['pairs']} pairs, split <b>{esc(str(summary['split']))}</b>, x{summary['scale']}. "
             f"{esc(summary['protocol'])}.</p>"]
    if not lp["available"]:
        parts.append(f"<p class='note'>LPIPS unavailable: {esc(str(lp['reason']))}</p>")
    parts.append("<h2>Summary</h2>" + summary_table_html(summary, methods))

    focus = next((m for m in methods if m != "bicubic"), "bicubic")
    ranked = sorted((r for r in rows if r["method"] == focus), key=lambda r: r["psnr_y"], reverse=True)
    picks = [("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])]
    parts.append(f"<h2>Crops: best, median and worst image of {esc(focus)} by PSNR-Y</h2>")
    for label, r in picks:
        lr_crop, hr_crop = refs[r["image"]]
        shown = [("LR", lr_crop)] + [(m, crops[r["image"]][m]) for m in dict.fromkeys(["bicubic", focus])]
        parts.append(f"<h3>{label}: {esc(r['image'])} (PSNR-Y {fmt(r['psnr_y'], 2)} dB)</h3><div>")
        for caption, img in shown + [("HR", hr_crop)]:
            parts.append(f"<figure><img alt='{esc(caption)}' src='{png_data_uri(img)}'>"
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
        parts.append("</div>")

    parts.append("<h2>Per image</h2>" + per_image_table_html(rows, methods))
    parts.append("</body></html>")
    return "\n".join(parts)


def summary_table_html(summary: dict[str, Any], methods: list[str], labels: dict[str, str] | None = None) -> str:
    """``<table id='summary'>``: per method n, PSNR-Y, SSIM-Y, LPIPS (means and medians), ms/image, MP/s."""
    esc, labels = html.escape, labels or {}
    parts = ["<table id='summary'><tr><th>method</th><th>n</th><th>PSNR-Y mean</th>"
             "<th>PSNR-Y median</th><th>SSIM-Y mean</th><th>SSIM-Y median</th><th>LPIPS mean</th>"
             "<th>LPIPS median</th><th>ms / image</th><th>MP/s</th></tr>"]
    for m in methods:
        s = summary["methods"][m]
        parts.append(f"<tr><td>{esc(labels.get(m, m))}</td><td>{s['n']}</td><td>{fmt(s['psnr_y'], 2)}</td>"
                     f"<td>{fmt(s['median']['psnr_y'], 2)}</td><td>{fmt(s['ssim_y'], 4)}</td>"
                     f"<td>{fmt(s['median']['ssim_y'], 4)}</td><td>{fmt(s['lpips'], 4)}</td>"
                     f"<td>{fmt(s['median']['lpips'], 4)}</td><td>{fmt(s['ms_per_image'], 1)}</td>"
                     f"<td>{fmt(s['mp_per_s'], 2)}</td></tr>")
    parts.append("</table>")
    return "\n".join(parts)


def per_image_table_html(rows: list[dict[str, Any]], methods: list[str], labels: dict[str, str] | None = None) -> str:
    """``<table id='per-image'>``: one row per image, PSNR-Y / SSIM-Y / LPIPS of every method."""
    esc, labels = html.escape, labels or {}
    parts = ["<table id='per-image'><tr><th>image</th>"]
    for m in methods:
        name = esc(labels.get(m, m))
        parts.append(f"<th>{name} PSNR-Y</th><th>{name} SSIM-Y</th><th>{name} LPIPS</th>")
    parts.append("</tr>")
    by_key = {(r["image"], r["method"]): r for r in rows}
    for image in dict.fromkeys(r["image"] for r in rows):
        parts.append(f"<tr><td>{esc(image)}</td>")
        for m in methods:
            r = by_key[(image, m)]
            parts.append(f"<td>{fmt(r['psnr_y'], 2)}</td><td>{fmt(r['ssim_y'], 4)}</td>"
                         f"<td>{fmt(r['lpips'], 4)}</td>")
        parts.append("</tr>")
    parts.append("</table>")
    return "\n".join(parts)


# --- command line ---------------------------------------------------------------------------------

def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['pairs']} pairs, split {summary['split']}, x{summary['scale']}",
             f"{'method':<20} {'PSNR-Y':>8} {'SSIM-Y':>8} {'LPIPS':>8} {'ms/img':>9} {'MP/s':>7}"]
    for m, s in summary["methods"].items():
        lines.append(f"{m:<20} {_txt(s['psnr_y'], 2):>8} {_txt(s['ssim_y'], 4):>8} {_txt(s['lpips'], 4):>8} "
                     f"{_txt(s['ms_per_image'], 1):>9} {_txt(s['mp_per_s'], 2):>7}")
    if not summary["lpips"]["available"]:
        lines.append(f"LPIPS unavailable: {summary['lpips']['reason']}")
    return "\n".join(lines)


def _txt(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def run_cli(args: argparse.Namespace) -> int:
    """``sr-pipeline evaluate``: args ``pairs``, ``split``, ``out``, ``json``, ``scale`` (default 4)
    and optionally ``methods`` (name -> callable LR -> SR) injected by the caller."""
    try:
        summary = evaluate_folder(Path(args.pairs), Path(args.out), split=getattr(args, "split", "all") or "all",
                                  scale=int(getattr(args, "scale", 4) or 4),
                                  extra_methods=getattr(args, "methods", None))
    except (EvaluationError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
        print(f"report: {Path(args.out) / 'index.html'}")
    return 0
