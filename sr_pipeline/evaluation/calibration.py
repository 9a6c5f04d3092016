"""Evaluate the models on the plant's calibration pairs, write the dated report, decide promotion.

:func:`run_evaluation` scores plain enlargement (bicubic), the teacher with its T steps, the
candidate student and the promoted one (one step each) on every calibration pair in the catalog,
measures the learned downsampler's LR realism on the same pairs, and writes
``<data>/reports/<YYYY-MM-DD>/`` (``-2``, ``-3``, ... when that day already has a report): the
management page ``index.html``, ``summary.json`` and ``metrics.parquet``.

The promotion gate (fidelity first, method.md section 8) passes a candidate when
1. its outputs are valid: no NaN or infinity from the network, no blank (constant) image;
2. it is not worse than plain enlargement: mean PSNR-Y >= bicubic's and mean LPIPS <= bicubic's;
3. it is not worse than the promoted student beyond the tolerances (PSNR-Y and LPIPS).
Only a candidate that passes is recorded as promoted, and only once: a student that an operator
rolled back (``sr-pipeline promote OLDER``) is never re-promoted automatically. The Dagster checks
(:mod:`sr_pipeline.defs.evaluation`) and the report apply the same :func:`decide` to the same
numbers, so they always agree. Torch is imported only inside functions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.storage.registry import promotions, record_promotion

if TYPE_CHECKING:  # the scoring stack (scipy, PIL) loads only when an evaluation runs
    from sr_pipeline.sr.evaluate import Pair, Scores

PLANT_TZ_ENV = "SR_PIPELINE_PLANT_TZ"
CRITERIA = ("valid_outputs", "not_worse_than_bicubic", "not_worse_than_promoted")
BLANK_STD = 1.0  # an output whose pixels vary less than this (0-255 scale) is blank...
BLANK_RELATIVE = 0.05  # ...or less than this fraction of its HR reference's variation


def plant_timezone(name: str | None = None) -> ZoneInfo:
    """The plant's time zone: ``name``, else ``$SR_PIPELINE_PLANT_TZ``, else UTC."""
    name = name or os.environ.get(PLANT_TZ_ENV) or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (set {PLANT_TZ_ENV} to an IANA name such as "
                         "Europe/Berlin)") from exc


def plant_today(tz: str | None = None) -> date:
    return datetime.now(plant_timezone(tz)).date()


# --- the gate -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GateThresholds:
    psnr_tolerance_db: float = 0.05
    lpips_tolerance: float = 0.005
    require_lpips: bool = True  # without LPIPS, criterion 2 cannot be verified and fails


@dataclass(frozen=True)
class Criterion:
    name: str
    passed: bool
    message: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GateDecision:
    candidate: str  # version
    reference: str | None  # the promoted student it was compared with
    criteria: tuple[Criterion, ...]
    action: str  # promoted | would_promote | already_promoted | rejected | not_repromoted
    promotion: dict | None  # the promotions.json entry recorded now
    thresholds: GateThresholds
    promoted_since: str | None = None  # for already_promoted: when the candidate was promoted

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    def failures(self) -> list[str]:
        return [c.message for c in self.criteria if not c.passed]

    def plain(self) -> str:
        """One sentence a manager can read."""
        who = f"The new student {self.candidate}"
        if self.action == "promoted":
            return (f"{who} was promoted: it passed all {len(self.criteria)} checks of the promotion gate, "
                    "so the archive now uses it.")
        if self.action == "would_promote":
            return f"{who} passes the promotion gate (not recorded: this was a dry run)."
        if self.action == "already_promoted":
            if self.passed:
                return (f"Student {self.candidate} has been the promoted model since {self.promoted_since} (the "
                        f"archive uses it) and passes all {len(self.criteria)} checks of the promotion gate.")
            return (f"The promoted student {self.candidate} no longer passes the gate ("
                    + "; ".join(self.failures()) + "). It stays in use; consider a rollback.")
        if self.action == "not_repromoted":
            return (f"{who} passes the gate but was rolled back by an operator earlier, so it is not promoted "
                    "again automatically (`sr-pipeline promote` restores it).")
        kept = f"the archive keeps using {self.reference}" if self.reference else "no student is in use yet"
        return f"{who} was not promoted: " + "; ".join(self.failures()) + f". So {kept}."

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "action": self.action, "candidate": self.candidate, "reference": self.reference,
            "criteria": [asdict(c) for c in self.criteria], "thresholds": asdict(self.thresholds),
            "promotion": self.promotion, "promoted_since": self.promoted_since, "plain": self.plain(),
        }


@dataclass
class OutputWatch:
    """Non-finite network outputs (a forward hook) and blank images seen while scoring a method."""

    nonfinite_calls: int = 0
    network_calls: int = 0
    blank: list[str] = field(default_factory=list)
    images: int = 0

    def hook(self, module: Any, inputs: Any, output: Any) -> None:
        import torch

        self.network_calls += 1
        if not bool(torch.isfinite(output).all()):
            self.nonfinite_calls += 1

    def see(self, image: str, sr: np.ndarray, hr: np.ndarray) -> None:
        self.images += 1
        if float(sr.std()) < max(BLANK_STD, BLANK_RELATIVE * float(hr.std())):
            self.blank.append(image)


def _mean(rows: list[dict[str, Any]], method: str, key: str) -> float | None:
    vals = [r[key] for r in rows if r["method"] == method]
    if not vals or any(isinstance(v, float) and math.isnan(v) for v in vals):
        return None
    return float(np.mean(vals))  # may be inf (an output identical to its HR)


def decide(rows: list[dict[str, Any]], lpips_info: dict[str, Any], watch: OutputWatch,
           thresholds: GateThresholds, reference: str | None, candidate: str = "candidate",
           promoted: str = "promoted") -> tuple[Criterion, ...]:
    """The three gate criteria from per-image rows (methods ``bicubic``, ``candidate``, ``promoted``)."""
    if watch.nonfinite_calls or watch.blank or not watch.images:
        problems = []
        if watch.nonfinite_calls:
            problems.append(f"{watch.nonfinite_calls} of {watch.network_calls} network calls returned NaN or infinity")
        if watch.blank:
            problems.append(f"{len(watch.blank)} of {watch.images} outputs are blank ({', '.join(watch.blank[:3])})")
        if not watch.images:
            problems.append("no output was produced")
        valid = Criterion("valid_outputs", False, "; ".join(problems),
                          {"nonfinite_calls": watch.nonfinite_calls, "blank_images": len(watch.blank)})
    else:
        valid = Criterion("valid_outputs", True, f"all {watch.images} outputs are finite and not blank",
                          {"nonfinite_calls": 0, "blank_images": 0})

    lp_on = bool(lpips_info.get("available"))
    c_psnr, b_psnr = _mean(rows, candidate, "psnr_y"), _mean(rows, "bicubic", "psnr_y")
    c_lp, b_lp = (_mean(rows, candidate, "lpips"), _mean(rows, "bicubic", "lpips")) if lp_on else (None, None)
    values = {"psnr_y": c_psnr, "bicubic_psnr_y": b_psnr, "lpips": c_lp, "bicubic_lpips": b_lp}
    problems = []
    if c_psnr is None or b_psnr is None or c_psnr < b_psnr:
        problems.append(f"PSNR-Y {_f(c_psnr)} dB is below plain enlargement's {_f(b_psnr)} dB")
    if lp_on:
        if c_lp is None or b_lp is None or c_lp > b_lp:
            problems.append(f"LPIPS {_f(c_lp, 4)} is above plain enlargement's {_f(b_lp, 4)}")
    elif thresholds.require_lpips:
        problems.append(f"LPIPS could not be measured ({lpips_info.get('reason')})")
    if problems:
        beats = Criterion("not_worse_than_bicubic", False, "; ".join(problems), values)
    else:
        lp_text = f", LPIPS {_f(c_lp, 4)} <= {_f(b_lp, 4)}" if lp_on else " (LPIPS not measured)"
        beats = Criterion("not_worse_than_bicubic", True, f"PSNR-Y {_f(c_psnr)} >= {_f(b_psnr)} dB{lp_text}", values)

    if reference is None:
        versus = Criterion("not_worse_than_promoted", True, "no promoted student to compare with (first promotion)")
    else:
        r_psnr = _mean(rows, promoted, "psnr_y")
        r_lp = _mean(rows, promoted, "lpips") if lp_on else None
        values = {"psnr_y": c_psnr, "promoted_psnr_y": r_psnr, "lpips": c_lp, "promoted_lpips": r_lp,
                  "promoted": reference}
        problems = []
        if c_psnr is None or r_psnr is None or c_psnr < r_psnr - thresholds.psnr_tolerance_db:
            problems.append(f"PSNR-Y {_f(c_psnr)} dB is more than {thresholds.psnr_tolerance_db} dB below the "
                            f"promoted student's {_f(r_psnr)} dB")
        if lp_on and (c_lp is None or r_lp is None or c_lp > r_lp + thresholds.lpips_tolerance):
            problems.append(f"LPIPS {_f(c_lp, 4)} is more than {thresholds.lpips_tolerance} above the promoted "
                            f"student's {_f(r_lp, 4)}")
        if problems:
            versus = Criterion("not_worse_than_promoted", False, "; ".join(problems), values)
        else:
            versus = Criterion("not_worse_than_promoted", True,
                               f"within tolerance of the promoted student {reference} (PSNR-Y {_f(c_psnr)} vs "
                               f"{_f(r_psnr)} dB" + (f", LPIPS {_f(c_lp, 4)} vs {_f(r_lp, 4)})" if lp_on else ")"),
                               values)
    return valid, beats, versus


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def reference_student(layout: DataLayout, candidate_version: str) -> dict | None:
    """The promoted student a candidate is compared with: the newest promotion of another version
    whose folder still exists (for the promoted candidate itself, the one promoted before it)."""
    for entry in reversed(promotions(layout)):
        if entry["version"] != candidate_version and Path(entry["path"]).is_dir():
            return entry
    return None


def apply_decision(layout: DataLayout, candidate_dir: Path, criteria: tuple[Criterion, ...],
                   reference: str | None, thresholds: GateThresholds, promote: bool, reason: str) -> GateDecision:
    """Record the promotion if the gate passed and the candidate was never promoted before."""
    version = model_version(candidate_dir)
    entries = promotions(layout)
    current = entries[-1]["version"] if entries else None
    passed = all(c.passed for c in criteria)
    entry = None
    if current == version:
        action = "already_promoted"
    elif not passed:
        action = "rejected"
    elif any(e["version"] == version for e in entries):
        action = "not_repromoted"
    elif not promote:
        action = "would_promote"
    else:
        entry = record_promotion(layout, version, str(Path(candidate_dir).resolve()), reason)
        action = "promoted"
    since = entries[-1]["promoted_at"] if action == "already_promoted" else None
    return GateDecision(version, reference, criteria, action, entry, thresholds, since)


# --- scoring --------------------------------------------------------------------------------------

def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def device_label(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads != 1 else ''})"


def model_version(model_dir: Path) -> str:
    """The version recorded in a model folder's training.json (else the folder name)."""
    from sr_pipeline.sr.checkpoints import read_info

    return str(read_info(Path(model_dir)).get("version", Path(model_dir).name))


def calibration_pairs(layout: DataLayout) -> list[Pair]:
    from sr_pipeline.sr.evaluate import Pair
    from sr_pipeline.storage.store import calibration_pairs as catalog_pairs

    return [Pair(name, Path(hr), Path(lr)) for name, hr, lr in catalog_pairs(layout)]


@dataclass
class _Model:
    role: str
    path: Path
    steps: int
    upscaler: Any
    watch: OutputWatch


def _load(role: str, model_dir: Path, device: str, pairs: list[Pair], teacher: bool = False) -> _Model:
    from sr_pipeline.sr.checkpoints import load_sr_model
    from sr_pipeline.sr.infer import Upscaler

    model = load_sr_model(Path(model_dir), device)
    steps = model.schedule.num_steps if teacher else 1
    up = Upscaler(model, steps=steps, device=device)
    watch = OutputWatch()
    model.net.register_forward_hook(watch.hook)
    return _Model(role, Path(model_dir), steps, up, watch)


def _score(models: list[_Model], pairs: list[Pair], scale: int, lpips: Any) -> Scores:
    from sr_pipeline.sr.evaluate import score_pairs

    watches = {m.role: m.watch for m in models}

    def on_output(method: str, image: str, lr: np.ndarray, sr: np.ndarray, hr: np.ndarray) -> None:
        if method in watches:
            watches[method].see(image, sr, hr)

    return score_pairs(pairs, {m.role: m.upscaler for m in models}, scale, lpips=lpips, on_output=on_output)


def _lpips(lpips: Any, device: str) -> Any:
    if lpips is not None:
        return lpips
    from sr_pipeline.sr import lpips_weights

    return lpips_weights.load_lpips(device)


def downsampler_realism(pairs: list[Pair], downsampler_dir: Path, device: str = "cpu",
                        psnr: Callable[[np.ndarray, np.ndarray], float] | None = None) -> dict[str, Any]:
    """PSNR of G(HR) and of bicubic down(HR) against each pair's real LR (method.md claim 4).

    ``psnr(a, b)`` defaults to RGB PSNR over the whole LR image.
    """
    import torch

    from sr_pipeline.sr.downsampler import load_downsampler
    from sr_pipeline.sr.evaluate import load_rgb
    from sr_pipeline.sr.imageops import downsample, to_tensor, to_uint8
    from sr_pipeline.sr.metrics import psnr_rgb

    psnr = psnr or psnr_rgb

    g = load_downsampler(Path(downsampler_dir), device)
    s = int(g.config.scale)
    per_image, skipped = [], []
    with torch.inference_mode():
        for p in pairs:
            hr, lr = load_rgb(p.hr_path), load_rgb(p.lr_path)
            if hr.shape[0] % s or hr.shape[1] % s or lr.shape[:2] != (hr.shape[0] // s, hr.shape[1] // s):
                skipped.append(p.name)
                continue
            x = to_tensor(hr).to(device)
            per_image.append({"image": p.name, "learned_psnr": psnr(to_uint8(g(x)), lr),
                              "bicubic_psnr": psnr(to_uint8(downsample(x, s)), lr)})
    if not per_image:
        return {"available": False, "reason": f"no pair is an exact x{s} HR/LR pair", "pairs": 0}
    learned = float(np.mean([r["learned_psnr"] for r in per_image]))
    bicubic = float(np.mean([r["bicubic_psnr"] for r in per_image]))
    return {"available": True, "reason": None, "pairs": len(per_image), "learned_psnr": learned,
            "bicubic_psnr": bicubic, "learned_closer": learned > bicubic, "skipped": skipped,
            "per_image": per_image, "version": model_version(Path(downsampler_dir))}


def _finite_json(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    return obj


def _promotion_reason(criteria: tuple[Criterion, ...], pairs: int) -> str:
    return f"promotion gate passed on {pairs} calibration pairs: " + "; ".join(c.message for c in criteria)


def evaluate_gate(layout: DataLayout, candidate_dir: Path, promoted_dir: Path | None, thresholds: GateThresholds,
                  *, lpips: Any = None, device: str = "auto", promote: bool = True) -> GateDecision:
    """The gate alone (no teacher, no report): bicubic, the candidate and the promoted student on the
    calibration pairs; records the promotion if it passes (unless ``promote`` is False)."""
    pairs = calibration_pairs(layout)
    reference = model_version(promoted_dir) if promoted_dir is not None else None
    if not pairs:
        missing = "no calibration pairs in the catalog (upload them under a field camera's pairs/<name>/{hr,lr}/)"
        criteria = tuple(Criterion(name, False, missing) for name in CRITERIA)
        return apply_decision(layout, candidate_dir, criteria, reference, thresholds, promote, "")
    device = resolve_device(device)
    metric = _lpips(lpips, device)
    models = [_load("candidate", candidate_dir, device, pairs)]
    if promoted_dir is not None:
        models.append(_load("promoted", promoted_dir, device, pairs))
    scores = _score(models, pairs, int(models[0].upscaler.scale), metric)
    criteria = decide(scores.rows, scores.summary["lpips"], models[0].watch, thresholds, reference)
    return apply_decision(layout, candidate_dir, criteria, reference, thresholds, promote,
                          _promotion_reason(criteria, len(pairs)))


# --- the report -----------------------------------------------------------------------------------

@dataclass
class EvaluationOutcome:
    report_dir: Path
    summary: dict[str, Any]
    decision: GateDecision
    headline: list[str]
    table_md: str
    crops_png: bytes  # the median image: LR | bicubic | teacher | student(s) | HR
    trend_png: bytes

    @property
    def report_path(self) -> Path:
        return self.report_dir / "index.html"


def _publish(tmp: Path, reports: Path, name: str) -> Path:
    """Rename the finished temp folder to ``name`` (or ``name-2``, ...): never over an existing report."""
    for i in range(1, 1000):
        target = reports / (name if i == 1 else f"{name}-{i}")
        if target.exists():
            continue
        try:
            os.rename(tmp, target)  # atomic; fails if another report took the name meanwhile
            return target
        except OSError:
            continue
    raise FileExistsError(f"too many reports named {name}* in {reports}")


def run_evaluation(layout: DataLayout, teacher_dir: Path, candidate_dir: Path, promoted_dir: Path | None,
                   downsampler_dir: Path | None, report_date: date, thresholds: GateThresholds = GateThresholds(),
                   *, lpips: Any = None, device: str = "auto", promote: bool = True) -> EvaluationOutcome:
    """Evaluate, decide the gate (recording a promotion if it passes), write the report folder."""
    from sr_pipeline.sr import report
    from sr_pipeline.sr.evaluate import EvaluationError, write_json, write_metrics_parquet

    pairs = calibration_pairs(layout)
    if not pairs:
        raise EvaluationError("no calibration pairs in the catalog: upload HR/LR pairs under a field camera "
                              "(pairs/<name>/hr/ + pairs/<name>/lr/) before evaluating")
    device = resolve_device(device)
    metric = _lpips(lpips, device)
    candidate = _load("candidate", candidate_dir, device, pairs)
    teacher = _load("teacher", teacher_dir, device, pairs, teacher=True)
    models = [teacher, candidate]
    reference = None
    if promoted_dir is not None and Path(promoted_dir).resolve() != Path(candidate_dir).resolve():
        models.append(_load("promoted", promoted_dir, device, pairs))
        reference = model_version(promoted_dir)
    scale = int(candidate.upscaler.scale)
    scores = _score(models, pairs, scale, metric)
    realism = downsampler_realism(pairs, downsampler_dir, device) if downsampler_dir is not None else None

    criteria = decide(scores.rows, scores.summary["lpips"], candidate.watch, thresholds, reference)
    decision = apply_decision(layout, candidate_dir, criteria, reference, thresholds, promote,
                              _promotion_reason(criteria, len(pairs)))
    served = "candidate" if decision.action in ("promoted", "already_promoted", "would_promote") else (
        "promoted" if reference is not None else None)

    def model_info(m: _Model) -> dict[str, Any]:
        return {"version": model_version(m.path), "path": str(m.path.resolve()), "steps": m.steps}

    summary = {
        "schema": "sr_pipeline.evaluation/1",
        "report_date": report_date.isoformat(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_label(device),
        **scores.summary,
        "labels": {"bicubic": "plain enlargement (bicubic)", "teacher": f"teacher ({teacher.steps} steps)",
                   "candidate": "new student", "promoted": "promoted student"},
        "models": {m.role: model_info(m) for m in models}
        | {"downsampler": ({"version": model_version(downsampler_dir), "path": str(Path(downsampler_dir).resolve())}
                           if downsampler_dir is not None else None)},
        "realism": realism,
        "gate": decision.to_dict(),
        "served": served,
    }
    summary = _finite_json(summary)

    layout.reports.mkdir(parents=True, exist_ok=True)
    history = report.load_history(layout.reports)
    lines = report.headline(summary, history)
    summary["headline"] = lines
    summary["previous_reports"] = len(history)
    tmp = Path(tempfile.mkdtemp(dir=layout.reports, prefix=f".{report_date.isoformat()}."))
    try:
        write_metrics_parquet(scores.rows, tmp / "metrics.parquet")
        write_json(tmp / "summary.json", summary)
        report.write_report(tmp / "index.html", summary, scores, history, lines)
        os.chmod(tmp, 0o755)
        final = _publish(tmp, layout.reports, report_date.isoformat())
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    median = report.ranked_images(summary, scores)[1][1]["image"]
    return EvaluationOutcome(
        report_dir=final, summary=summary, decision=decision, headline=lines,
        table_md=report.markdown_table(summary, scores.methods),
        crops_png=report.comparison_strip_png(report.crop_columns(summary, scores, median)),
        trend_png=report.trend_png(history, summary),
    )


# --- rollback -------------------------------------------------------------------------------------

def promote_cli(args: argparse.Namespace) -> int:
    """``sr-pipeline promote VERSION [--reason TEXT] [--json]``: make an existing student the promoted
    one (the rollback: promote the previous version). Recorded in the append-only promotions log."""
    from sr_pipeline.storage.registry import list_models

    layout = args.layout
    # The version `sr-pipeline models` shows (training.json), or the folder's name.
    found = [r for r in list_models(layout, kind="student") if args.version in (r["version"], Path(r["path"]).name)]
    if not found:
        print(f"error: no student {args.version!r} under {layout.models / 'student'} (see `sr-pipeline models`)",
              file=sys.stderr)
        return 2
    version, folder = found[-1]["version"], Path(found[-1]["path"])
    entries = promotions(layout)
    if entries and entries[-1]["version"] == version:
        print(f"{version} is already the promoted student; nothing recorded")
        return 0
    reason = getattr(args, "reason", None) or "manual promotion (rollback) with sr-pipeline promote"
    entry = record_promotion(layout, version, str(folder.resolve()), reason)
    if getattr(args, "json", False):
        print(json.dumps(entry, indent=2))
    else:
        print(f"promoted student {version} ({reason}); the archive uses it from now on")
    return 0
