"""Scoring upscalers against HR references: the metric registry and one scoring pass.

A metric is ONE registry entry (:class:`Metric`: its function, whether higher is better, display
digits, unit, label, and whether the promotion gate compares it). The registry drives the per-image
rows, the summary statistics, the parquet columns, every table (:mod:`.report`) and the gate's
comparisons (:mod:`sr_pipeline.evaluation.gate`), so adding a metric is one :func:`register` call.

A *method* is any callable ``LR uint8 HxWx3 -> SR uint8 (scale*H)x(scale*W)x3``; bicubic (PIL) is
always included. PSNR-Y and SSIM-Y crop ``scale`` pixels at each border (see :mod:`.metrics`), or
``crop_border`` pixels when given (0 is the convention of pyiqa's defaults and of OSEDiff's RealSR table). A
metric that needs a model (LPIPS needs AlexNet, :mod:`.lpips_weights`) is scored only when that
model is given and available; otherwise its values are NaN and the reason is reported.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from sr_pipeline.sr.judge.metrics import hf_ratio, psnr_y, rgb_to_y, ssim_y
from sr_pipeline.sr.data.pairs import EvaluationError, Pair, bicubic_upscale, load_rgb

Method = Callable[[np.ndarray], np.ndarray]
OutputHook = Callable[[str, str, np.ndarray, np.ndarray, np.ndarray], None]
ROW_KEYS = ("method", "image", "ms", "pixels")  # the per-image row's fields besides the metrics
_CROP = 128  # HR pixels per side of the reports' side-by-side crops


@dataclass(frozen=True)
class Metric:
    """A full-reference metric. ``fn(sr, hr, border)``, or ``fn(sr, hr, border, model)`` when ``needs``
    names the model (given to :func:`score_pairs` under that name) it is computed with; ``border`` is the
    pixels cropped at each border (the scale factor unless the scoring pass says otherwise)."""

    name: str
    label: str
    fn: Callable[..., float]
    higher_is_better: bool
    digits: int
    unit: str = ""
    needs: str | None = None
    gate: bool = False  # compared by the promotion gate (against bicubic and the promoted student)

    @property
    def heading(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def text(self, x: float | None, extra_digits: int = 0) -> str:
        """Plain text: fixed digits, ``-`` for missing."""
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "-"
        if isinstance(x, float) and math.isinf(x):
            return "inf"
        return f"{x:.{self.digits + extra_digits}f}"

    def worse(self, value: float | None, reference: float | None, tolerance: float = 0.0) -> bool:
        """Whether ``value`` is worse than ``reference`` by more than ``tolerance`` (missing: worse)."""
        if value is None or reference is None:
            return True
        return value < reference - tolerance if self.higher_is_better else value > reference + tolerance


_REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add (or replace) a metric; it appears in every row, table and, with ``gate=True``, in the gate."""
    if metric.name in ROW_KEYS or metric.name == "median":
        raise ValueError(f"{metric.name!r} is a reserved column name")
    _REGISTRY[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def metrics() -> list[Metric]:
    """The registered metrics, in registration order."""
    return list(_REGISTRY.values())


def metric(name: str) -> Metric:
    return _REGISTRY[name]


def row_columns() -> list[str]:
    """The columns of ``metrics.parquet``: method, image, every metric, ms."""
    return ["method", "image", *(m.name for m in metrics()), "ms"]


register(Metric("psnr_y", "PSNR-Y", lambda sr, hr, border: psnr_y(sr, hr, border), True, 2, "dB", gate=True))
register(Metric("ssim_y", "SSIM-Y", lambda sr, hr, border: ssim_y(sr, hr, border), True, 4))
register(Metric("lpips", "LPIPS", lambda sr, hr, border, model: model(sr, hr), False, 4, needs="lpips", gate=True))
# Not compared against bicubic (whose ratio is far below 1): the gate's over-sharpening criterion
# holds its median to GateThresholds.max_hf_ratio instead.
register(Metric("hf_ratio", "HF energy / HR", lambda sr, hr, border: hf_ratio(sr, hr, border), False, 2, "x"))

PROTOCOL = ("PSNR/SSIM on Y (BT.601), {border} px border cropped, SSIM Gaussian 11x11 sigma 1.5; "
            "LPIPS v0.1 AlexNet on RGB in [-1, 1]; HF energy = mean squared Laplacian of Y over the HR's; "
            "bicubic = PIL BICUBIC")


# --- one scoring pass -----------------------------------------------------------------------------

def model_state(models: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The usable models among ``models`` (by the name metrics need) and, per needed name, whether it
    is available and why not: a missing model, or an ``Unavailable`` (falsy ``available``, its reason)."""
    usable, info = {}, {}
    for need in dict.fromkeys(m.needs for m in metrics() if m.needs):
        model = models.get(need)
        if model is None:
            info[need] = {"available": False, "reason": f"{need.upper()} was not computed (no metric was given)"}
        elif not getattr(model, "available", True):
            info[need] = {"available": False, "reason": str(getattr(model, "reason", "unavailable"))}
        else:
            usable[need] = model
            info[need] = {"available": True, "reason": None}
    return usable, info


def measured(summary: dict[str, Any]) -> list[Metric]:
    """The metrics a scoring pass could compute (those whose model was available)."""
    return [m for m in metrics() if m.needs is None or summary.get(m.needs, {}).get("available")]


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def method_stats(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Per metric the mean and median (None where not measured or not finite), time and throughput."""
    def col(k: str) -> list[float]:
        return [r[k] for r in rows]

    ms = col("ms")
    pixels = sum(r["pixels"] for r in rows)
    out: dict[str, Any] = {m.name: _finite(float(np.mean(col(m.name)))) if m.name in names else None
                           for m in metrics()}
    out |= {"ms_per_image": float(np.mean(ms)),
            "mp_per_s": pixels / 1e6 / (sum(ms) / 1e3) if sum(ms) > 0 else None,
            "n": len(rows),
            "median": {m.name: _finite(statistics.median(col(m.name))) if m.name in names else None
                       for m in metrics()}}
    return out


@dataclass
class Scores:
    """Everything one scoring pass measured, before anything is written.

    ``rows``: one dict per (method, image) with every metric (NaN when not computed), ms and pixels;
    ``refs``: image -> (LR crop enlarged by pixel repetition, HR crop); ``crops``: image -> method ->
    SR crop (the same box); ``methods``: method names in order, bicubic first.
    """

    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    refs: dict[str, tuple[np.ndarray, np.ndarray]]
    crops: dict[str, dict[str, np.ndarray]]
    methods: list[str]
    reused: list[str] = field(default_factory=list)

    def only(self, methods: list[str]) -> "Scores":
        """The rows and crops of some methods (to keep and reuse them later)."""
        keep = [m for m in self.methods if m in methods]
        return Scores({**self.summary, "methods": {m: self.summary["methods"][m] for m in keep}},
                      [r for r in self.rows if r["method"] in keep], {},
                      {img: {m: c[m] for m in keep} for img, c in self.crops.items()}, keep)


def _check_output(sr: Any, expected: tuple[int, ...], method: str, image: str) -> np.ndarray:
    if not isinstance(sr, np.ndarray) or sr.dtype != np.uint8:
        kind = sr.dtype if isinstance(sr, np.ndarray) else type(sr).__name__
        raise EvaluationError(f"method {method!r} returned {kind} for {image}; expected a uint8 numpy array")
    if sr.shape != expected:
        raise EvaluationError(f"method {method!r} returned an image of shape {sr.shape} for {image}; "
                              f"the HR image is {expected}")
    return sr


def crop_box(hr: np.ndarray, scale: int) -> tuple[int, int, int]:
    """(top, left, size) of the most detailed scale-aligned square of the HR, for the reports."""
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


def _reused_row(reuse: Scores, method: str, image: str) -> dict[str, Any]:
    for r in reuse.rows:
        if r["method"] == method and r["image"] == image:
            return r
    raise EvaluationError(f"the kept scores of {method!r} have no row for {image}")


def score_pairs(pairs: list[Pair], methods: dict[str, Method | None], scale: int, lpips: Any = None,
                split: str | None = None, on_output: OutputHook | None = None,
                reuse: Scores | None = None, crop_border: int | None = None) -> Scores:
    """Score bicubic and every method on ``pairs`` with every registered metric, in memory.

    ``lpips`` is the model the LPIPS metric needs (an ``LPIPSMetric``, an ``Unavailable`` whose reason
    is reported, or None: not computed). Each method is warmed up once on the first pair and then
    timed per image. ``on_output(method, image, lr, sr, hr)`` is called for every output, outside the
    timed region. The methods in ``reuse`` (scores kept from an earlier pass on the same pairs) are
    not run again: their rows and crops are taken over (their value in ``methods`` may be None).
    ``crop_border`` is the pixels PSNR-Y, SSIM-Y and the HF ratio leave out at each border (default
    ``scale``, the SR literature's convention; 0 scores the whole image, as pyiqa does by default).
    """
    border = scale if crop_border is None else int(crop_border)
    if border < 0:
        raise EvaluationError(f"crop_border must be >= 0, got {crop_border}")
    if not pairs:
        raise EvaluationError("no pairs to evaluate")
    if "bicubic" in methods:
        raise EvaluationError("'bicubic' is always evaluated; give other methods other names")
    reused = [m for m in ("bicubic", *methods) if reuse is not None and m in reuse.methods]
    all_methods: dict[str, Method | None] = {"bicubic": lambda lr: bicubic_upscale(lr, scale), **methods}
    run = {name: fn for name, fn in all_methods.items() if name not in reused}
    if any(fn is None for fn in run.values()):
        raise EvaluationError(f"no upscaler and no kept scores for {[n for n, f in run.items() if f is None]}")
    models, model_info = model_state({"lpips": lpips})
    computed = [m for m in metrics() if m.needs is None or m.needs in models]

    first_lr = load_rgb(pairs[0].lr_path)
    for fn in run.values():
        fn(first_lr)  # warm-up, not timed

    rows: list[dict[str, Any]] = []
    refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    crops: dict[str, dict[str, np.ndarray]] = {}
    for pair in pairs:
        hr, lr = load_rgb(pair.hr_path), load_rgb(pair.lr_path)
        if hr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
            raise EvaluationError(f"{pair.name}: HR {hr.shape[1]}x{hr.shape[0]} is not x{scale} of "
                                  f"LR {lr.shape[1]}x{lr.shape[0]}")
        top, left, size = crop_box(hr, scale)
        lr_crop = lr[top // scale:(top + size) // scale, left // scale:(left + size) // scale]
        refs[pair.name] = (np.repeat(np.repeat(lr_crop, scale, 0), scale, 1), hr[top:top + size, left:left + size])
        crops[pair.name] = {}
        for name, fn in all_methods.items():
            if name in reused:
                rows.append(_reused_row(reuse, name, pair.name))  # type: ignore[arg-type]
                crops[pair.name][name] = reuse.crops[pair.name][name]  # type: ignore[union-attr]
                continue
            t0 = time.perf_counter()
            sr = fn(lr)  # type: ignore[misc]
            ms = (time.perf_counter() - t0) * 1e3
            sr = _check_output(sr, hr.shape, name, pair.name)
            if on_output is not None:
                on_output(name, pair.name, lr, sr, hr)
            values = {m.name: (m.fn(sr, hr, border, models[m.needs]) if m.needs else m.fn(sr, hr, border))
                      if m in computed else math.nan for m in metrics()}
            rows.append({"method": name, "image": pair.name, **values, "ms": ms, "pixels": sr.shape[0] * sr.shape[1]})
            crops[pair.name][name] = sr[top:top + size, left:left + size]

    names = [m.name for m in computed]
    summary = {
        "methods": {m: method_stats([r for r in rows if r["method"] == m], names) for m in all_methods},
        **model_info,
        "pairs": len(pairs),
        "split": split,
        "scale": scale,
        "crop_border": border,
        "protocol": PROTOCOL.format(border=border),
    }
    return Scores(summary=summary, rows=rows, refs=refs, crops=crops, methods=list(all_methods), reused=reused)
