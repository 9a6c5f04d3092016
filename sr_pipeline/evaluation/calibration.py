"""Evaluate the models on the plant's calibration pairs: load them, score once, decide, write the report.

:func:`evaluate_gate` scores bicubic, the candidate student and the promoted one (one step each),
applies the gate policy (:mod:`.gate`) and keeps the scores and the decision under
``<data>/runs/gate/<candidate version>/`` keyed by a fingerprint of the calibration pairs and of the
metrics. :func:`run_evaluation` scores the teacher with its T steps (and the promoted student unless
the kept scores compared the same one), reuses the kept candidate scores when their key matches
instead of scoring the candidate again, measures the camera models' paired realism on the gate pairs
(:func:`downsampler_realism`: PSNR-Y and the Laplacian-energy ratio to the real LR, for the candidate's G and,
for a camera with fit pairs, its unpaired twin's), and
writes ``<data>/reports/<YYYY-MM-DD>/`` (``-2``, ``-3``, ... when that day already has a report): the
management page ``index.html``, ``summary.json`` and ``metrics.parquet``. Neither records a
promotion (:mod:`.promotion` does); the report reads the promotion log. Wherever the candidate is
scored, its outputs also fit its consistency thresholds (:mod:`.consistency_fit`, ``consistency.json``
in its folder); a report that reuses the gate's scores refits only when they are missing or were
fitted on other pairs. Torch is imported only inside functions.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from sr_pipeline.evaluation.archive_consistency import archive_consistency
from sr_pipeline.evaluation.files import finite_json, publish_dir, write_bytes, write_json, write_metrics_parquet
from sr_pipeline.evaluation.gate import (
    GateDecision,
    GateThresholds,
    OutputWatch,
    challenge,
    choose_action,
    decide,
    no_pairs_criteria,
    promotion_reason,
)
from sr_pipeline.sr.models.checkpoints import model_version, read_info, root_relative
from sr_pipeline.sr.data.pairs import EvaluationError, Pair
from sr_pipeline.sr.judge.scoring import Scores, metrics, model_state
from sr_pipeline.common.atomic import temp_dir
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.storage.registry import challenger_dir, promotions, unpaired_twin_dir

if TYPE_CHECKING:
    from sr_pipeline.evaluation.consistency_fit import CalibrationConsistency

GATE_FILE = "gate.json"
CROPS_FILE = "crops.npz"
KEPT_METHODS = ("bicubic", "candidate", "unpaired", "challenger", "promoted")
MODEL_ROLES = ("teacher", "candidate", "unpaired", "challenger", "promoted")


def split_calibration_pairs(layout: DataLayout, camera: str | None = None, registry: Any = None
                            ) -> tuple[list[Pair], list[Pair]]:
    """(fit, gate): the catalog's complete calibration pairs (one field camera's when given) split by each
    camera's ``fit_pairs`` in the camera registry (default: the configured file). Fit pairs pin the camera
    model G in co-learning; only gate pairs judge students."""
    from sr_pipeline.common.cameras import load_registry
    from sr_pipeline.storage.store import calibration_pairs as catalog_pairs

    cameras = [camera] if camera is not None else None
    pairs = [Pair(name, Path(hr), Path(lr)) for name, hr, lr in catalog_pairs(layout, cameras)]
    if not pairs:
        return [], []
    registry = registry if registry is not None else load_registry()
    owner = {p.name: camera for p in pairs} if camera is not None else pair_cameras(layout)
    fit_names: set[str] = set()
    for cam in sorted(set(owner.values())):
        # names are "<camera>/<pair>" when pairs of several cameras are listed together
        own = {p.name: p.name.removeprefix(f"{cam}/") for p in pairs if owner.get(p.name) == cam}
        try:
            fit, _ = registry.split_pairs(cam, list(own.values()))
        except ValueError as exc:  # a split that leaves no gate pair: nothing can be judged, say so in one sentence
            raise EvaluationError(f"{cam}: {exc}") from exc
        fit_names |= {label for label, name in own.items() if name in set(fit)}
    fit = [p for p in pairs if p.name in fit_names]
    # a fit pair uploaded again under another name is stored once (the store keeps one copy of an image):
    # the copy shows the same scene, so it cannot gate the student it trained
    fit_files = {f for p in fit for f in (p.hr_path, p.lr_path)}
    gate = [p for p in pairs if p.name not in fit_names and not {p.hr_path, p.lr_path} & fit_files]
    return fit, gate


def calibration_pairs(layout: DataLayout, camera: str | None = None) -> list[Pair]:
    """The catalog's complete calibration pairs that gate students (one field camera's when given) as
    :class:`~sr_pipeline.sr.data.pairs.Pair`: every pair except the fit pairs of the camera registry."""
    return split_calibration_pairs(layout, camera)[1]


def fit_pairs_overlap(candidate_dir: Path, pairs: list[Pair]) -> list[str]:
    """The pairs among ``pairs`` that fitted the candidate's camera model (its ``training.json`` lists them):
    a pair that trained G must never judge its student."""
    try:
        fitted = set(read_info(Path(candidate_dir)).get("fit_pairs") or [])
    except FileNotFoundError:
        return []
    return sorted(p.name for p in pairs if p.name in fitted or p.name.split("/", 1)[-1] in fitted)


def reports_root(layout: DataLayout, camera: str | None = None) -> Path:
    """Where a camera's dated reports go: ``reports/<camera>/<date>/`` (``reports/<date>/`` without one)."""
    return layout.reports / camera if camera is not None else layout.reports


def pair_cameras(layout: DataLayout) -> dict[str, str]:
    """The field camera that uploaded each calibration pair, by pair name."""
    from sr_pipeline.storage.store import CALIB_HR, CALIB_LR, read_catalog
    from sr_pipeline.storage.store import calibration_pairs as catalog_pairs

    rows = read_catalog(layout, columns=["camera", "role"])
    by_files: dict[tuple[Path, Path], str] = {}
    for camera in sorted(set(rows.loc[rows["role"].isin([CALIB_HR, CALIB_LR]), "camera"])):
        for _, hr, lr in catalog_pairs(layout, [camera]):
            by_files.setdefault((hr, lr), camera)
    return {name: by_files[(hr, lr)] for name, hr, lr in catalog_pairs(layout) if (hr, lr) in by_files}


def pairs_fingerprint(pairs: list[Pair]) -> str:
    """A hash of the pairs' names and image bytes."""
    h = hashlib.sha256()
    for p in pairs:
        for part in (p.name.encode(), p.hr_path.read_bytes(), p.lr_path.read_bytes()):
            h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def scores_key(pairs: list[Pair], availability: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What kept scores are valid for: the pairs, the metrics and which of them could be measured."""
    return {"pairs": pairs_fingerprint(pairs), "metrics": [m.name for m in metrics()],
            "measured": {need: bool(info.get("available")) for need, info in availability.items()}}


# --- models ---------------------------------------------------------------------------------------

@dataclass
class _Model:
    role: str
    path: Path
    steps: int
    upscaler: Any
    watch: OutputWatch


def _load(role: str, model_dir: Path, device: str, teacher: bool = False) -> _Model:
    from sr_pipeline.sr.models.checkpoints import load_sr_model
    from sr_pipeline.sr.serve.upscaler import Upscaler

    model = load_sr_model(Path(model_dir), device)
    steps = model.schedule.num_steps if teacher else 1
    watch = OutputWatch()
    model.net.register_forward_hook(watch.hook)
    # reject_nonfinite off: the watch counts NaN outputs, and the gate blocks such a model with its reason
    upscaler = Upscaler(model, steps=steps, device=device, reject_nonfinite=False)
    return _Model(role, Path(model_dir), steps, upscaler, watch)


def _score(models: list[_Model], pairs: list[Pair], scale: int, lpips: Any, reuse: dict[str, None] | None = None,
           kept: Scores | None = None, consistency: CalibrationConsistency | None = None) -> Scores:
    """Score the models; ``consistency`` also measures each of the candidate's outputs."""
    from sr_pipeline.sr.judge.scoring import score_pairs

    watches = {m.role: m.watch for m in models}

    def on_output(method: str, image: str, lr: np.ndarray, sr: np.ndarray, hr: np.ndarray) -> None:
        if method in watches:
            watches[method].see(image, sr, hr)
        if consistency is not None and method == "candidate":
            consistency.see(image, lr, sr, hr)

    methods = {**(reuse or {}), **{m.role: m.upscaler for m in models}}
    order = [r for r in MODEL_ROLES if r in methods]
    return score_pairs(pairs, {r: methods[r] for r in order}, scale, lpips=lpips, on_output=on_output, reuse=kept)


def _lpips(lpips: Any, device: str) -> Any:
    if lpips is not None:
        return lpips
    from sr_pipeline.sr.judge import lpips_weights

    return lpips_weights.load_lpips(device)


# The Laplacian-energy ratio of a camera model's LR to the real LR that counts as blurring like the camera.
SHARPNESS_BAND = (0.8, 1.25)


def sharpness_words(ratio: float | None, band: tuple[float, float] = SHARPNESS_BAND) -> str:
    """Whether an LR's Laplacian energy over the real LR's lies in the target band, in words."""
    if ratio is None or not np.isfinite(ratio):
        return "not measured"
    if ratio < band[0]:
        return "too blurry"
    if ratio > band[1]:
        return "too sharp"
    return "inside"


def downsampler_realism(pairs: list[Pair], downsampler_dir: Path, device: str = "cpu",
                        psnr: Callable[[np.ndarray, np.ndarray], float] | None = None) -> dict[str, Any]:
    """How closely the camera model G imitates the field camera on registered pairs (method.md claim 4): per
    pair, PSNR-Y of G(HR) (eps' = 0, through G's JPEG stage when the camera uploads JPEG, as its real LR is
    stored) and of bicubic down(HR) against the real LR, and the Laplacian (fine detail) energy of each over
    the real LR's; means of the PSNR-Y, medians of the ratios, and whether G's ratio lies in
    :data:`SHARPNESS_BAND` (``sharpness``: inside, too blurry or too sharp). PSNR alone rewards a G that
    blurs a noisy camera's LR; the ratio says whether G's LR carries as much fine detail as the camera's.

    The ratio judged (``learned_lap_ratio``) is of G's LR as the camera stores one: with a seeded draw of its
    noise and through its JPEG stage, since the real LR carries the camera's grain too (the demo's grainy
    camera: its G with the right blur, 0.87 HR px against 0.8, read 0.71x noise-free and 0.98x with its
    noise). ``learned_lap_ratio_noise_free`` (eps' = 0) is G's blur alone, comparable on cameras with little noise.

    ``psnr(a, b)`` defaults to the registry's PSNR-Y over the whole LR image (no border cropped),
    the convention of the quality benchmark.
    """
    import torch

    from sr_pipeline.sr.images.tensors import downsample, to_tensor, to_uint8
    from sr_pipeline.sr.judge.metrics import laplacian_energy
    from sr_pipeline.sr.models.downsampler import load_downsampler
    from sr_pipeline.sr.data.pairs import load_rgb
    from sr_pipeline.sr.judge.scoring import metric

    if psnr is None:
        psnr_y = metric("psnr_y").fn
        psnr = lambda a, b: psnr_y(a, b, 0)  # noqa: E731

    def ratio(a: np.ndarray, real: float) -> float:
        return laplacian_energy(a) / real if real > 0 else float("inf")

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
            out = g.as_stored(g(x))  # a JPEG camera's G compresses as the camera does (at eps' = 0: no noise)
            eps = torch.randn(g.lr_shape(x), generator=torch.Generator().manual_seed(len(per_image))).to(device)
            stored = to_uint8(g(x, eps))  # with its noise, and compressed (block grid at the corner in eval mode)
            learned, bicubic = to_uint8(out), to_uint8(downsample(x, s))
            real = laplacian_energy(lr)
            per_image.append({"image": p.name, "learned_psnr": psnr(learned, lr), "bicubic_psnr": psnr(bicubic, lr),
                              "learned_lap_ratio": ratio(stored, real), "learned_lap_ratio_noise_free": ratio(learned, real),
                              "bicubic_lap_ratio": ratio(bicubic, real)})
    if not per_image:
        return {"available": False, "reason": f"no pair is an exact x{s} HR/LR pair", "pairs": 0}
    learned = float(np.mean([r["learned_psnr"] for r in per_image]))
    bicubic = float(np.mean([r["bicubic_psnr"] for r in per_image]))
    lap = float(np.median([r["learned_lap_ratio"] for r in per_image]))
    lap_noise_free = float(np.median([r["learned_lap_ratio_noise_free"] for r in per_image]))
    lap_bicubic = float(np.median([r["bicubic_lap_ratio"] for r in per_image]))
    info = read_info(Path(downsampler_dir))
    return {"fit_pairs": len(info.get("fit_pairs") or []), "fit_pairs_warning": info.get("fit_pairs_warning"),
            "available": True, "reason": None, "metric": "psnr_y", "pairs": len(per_image), "learned_psnr": learned,
            "bicubic_psnr": bicubic, "learned_closer": learned > bicubic, "learned_lap_ratio": lap,
            "learned_lap_ratio_noise_free": lap_noise_free,
            "bicubic_lap_ratio": lap_bicubic, "band": list(SHARPNESS_BAND), "sharpness": sharpness_words(lap),
            "bicubic_sharpness": sharpness_words(lap_bicubic), "skipped": skipped,
            "per_image": per_image, "version": model_version(Path(downsampler_dir))}


def camera_model_dir(layout: DataLayout, student_dir: Path) -> Path | None:
    """The camera model G co-learned with a student (same version, ``models/downsampler/<version>``), or None."""
    path = layout.model_dir("downsampler", model_version(Path(student_dir)))
    return path if (path / "training.json").is_file() else None


def camera_models_realism(layout: DataLayout, pairs: list[Pair], judged: dict[str, Path], device: str
                          ) -> dict[str, Any] | None:
    """:func:`downsampler_realism` of the camera model of each co-learned student judged (role ``candidate``:
    with fit pairs, ``unpaired``: its twin without), by role; None when none has a camera model."""
    out = {}
    for role, student in judged.items():
        g = camera_model_dir(layout, student)
        if g is not None:
            out[role] = downsampler_realism(pairs, g, device)
    return out or None


def _consistency(layout: DataLayout, candidate_dir: Path, scale: int, key: dict) -> CalibrationConsistency:
    from sr_pipeline.evaluation.consistency_fit import CalibrationConsistency

    return CalibrationConsistency(candidate_dir, scale, pair_cameras(layout), key["pairs"])


def ensure_consistency(layout: DataLayout, candidate_dir: Path, pairs: list[Pair], key: dict, device: str) -> None:
    """Fit the candidate's consistency thresholds unless they were fitted on these pairs (the gate's
    scores were reused, so no output was seen): the candidate upscales each pair once more."""
    from sr_pipeline.evaluation.consistency_fit import fitted_on
    from sr_pipeline.sr.data.pairs import load_rgb

    if fitted_on(candidate_dir, key["pairs"]):
        return
    model = _load("candidate", candidate_dir, device)
    fit = _consistency(layout, candidate_dir, int(model.upscaler.scale), key)
    for p in pairs:
        lr = load_rgb(p.lr_path)
        fit.see(p.name, lr, model.upscaler(lr), load_rgb(p.hr_path))
    fit.save()


# --- the gate's kept scores -----------------------------------------------------------------------

def gate_dir(layout: DataLayout, version: str) -> Path:
    return layout.run_dir("gate", version)


def _keep(layout: DataLayout, version: str, key: dict, scores: Scores, watch: OutputWatch,
          decision: GateDecision, reason: str, served_path: Path) -> None:
    kept = scores.only(list(KEPT_METHODS))
    folder = gate_dir(layout, version)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"{i}/{m}": c for i, (img, crops) in enumerate(kept.crops.items())
                                for m, c in crops.items()})
    write_bytes(folder / CROPS_FILE, buf.getvalue())
    record = {"candidate": version, "key": key, "reference": decision.reference, "decision": decision.to_dict(),
              "reason": reason, "served_path": layout.relative(Path(served_path).resolve()), "watch": asdict(watch),
              "methods": kept.methods, "rows": kept.rows,
              "images": list(kept.crops), "summary": kept.summary,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_bytes(folder / GATE_FILE, json.dumps(record, indent=2).encode())  # NaN/inf kept as in the rows


def read_gate_record(layout: DataLayout, version: str) -> dict | None:
    """The gate's kept decision and scores for a candidate version, or None; its ``served_path`` (stored
    relative to the data root) as this root resolves it."""
    path = gate_dir(layout, version) / GATE_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(record, dict) and record.get("served_path"):
        record["served_path"] = str(layout.resolve(record["served_path"]))
    return record


def _kept_scores(layout: DataLayout, version: str, key: dict) -> tuple[Scores, OutputWatch, dict] | None:
    record = read_gate_record(layout, version)
    if record is None or record.get("key") != key:
        return None
    try:
        with np.load(gate_dir(layout, version) / CROPS_FILE) as npz:
            crops = {img: {m: npz[f"{i}/{m}"] for m in record["methods"]} for i, img in enumerate(record["images"])}
    except (OSError, KeyError, ValueError):
        return None
    scores = Scores(record["summary"], record["rows"], {}, crops, record["methods"])
    return scores, OutputWatch(**record["watch"]), record


# --- the gate -------------------------------------------------------------------------------------

def evaluate_gate(layout: DataLayout, candidate_dir: Path, promoted_dir: Path | None, thresholds: GateThresholds,
                  *, lpips: Any = None, device: str = "auto", camera: str | None = None) -> GateDecision:
    """The gate alone (no teacher, no report): bicubic, the candidate and the promoted student on the
    calibration pairs of the candidate's field camera (``camera``; every pair when None), with the
    fixed-degradation challenger and, for a candidate fitted on fit pairs, its unpaired twin: the gate's
    checks judge the winner of :func:`~.gate.challenge`, and the decision carries the realism of each judged
    student's camera model. Keeps the
    scores and the decision for the report and ``promoted_student``; records nothing in the promotion
    log (the action says what the log allows)."""
    from sr_pipeline.sr.models.devices import resolve_device

    version = model_version(candidate_dir)
    pairs = calibration_pairs(layout, camera)
    overlap = fit_pairs_overlap(candidate_dir, pairs)
    if overlap:
        raise EvaluationError(f"student {version}'s camera model was fitted on calibration pair(s) "
                              f"{', '.join(overlap)}, which the camera's fit/gate split now puts among the gate "
                              "pairs (the registry's fit_pairs changed, or, with fit_pairs as a count, a new pair "
                              "sorting before them moved the split): a pair cannot serve both; list the fit pairs "
                              "by name in the registry or co-learn a new student")
    reference = model_version(promoted_dir) if promoted_dir is not None else None
    if not pairs:
        criteria = no_pairs_criteria()
        action, since = choose_action(promotions(layout, camera), version, False, promote=False)
        return GateDecision(version, reference, criteria, action, thresholds, since)
    device = resolve_device(device)
    metric = _lpips(lpips, device)
    key = scores_key(pairs, model_state({"lpips": metric})[1])
    models = {"candidate": _load("candidate", candidate_dir, device)}
    twin = unpaired_twin(layout, candidate_dir)
    if twin is not None:
        models["unpaired"] = _load("unpaired", twin, device)
    fixed = fixed_degradation_challenger(layout, candidate_dir)
    if fixed is not None:
        models["challenger"] = _load("challenger", fixed, device)
    if promoted_dir is not None:
        models["promoted"] = _load("promoted", promoted_dir, device)
    scale = int(models["candidate"].upscaler.scale)
    fit = _consistency(layout, candidate_dir, scale, key)
    scores = _score(list(models.values()), pairs, scale, metric, consistency=fit)
    fit.save()
    duel = None
    if fixed is not None or twin is not None:
        duel = challenge(scores.rows, thresholds, version, model_version(fixed) if fixed is not None else None,
                         model_version(twin) if twin is not None else None)
    winner = duel["winner"] if duel else "candidate"
    served_dir = models[winner].path
    criteria = decide(scores.rows, scores.summary, models[winner].watch, thresholds, reference, candidate=winner)
    passed = all(c.passed for c in criteria)
    served = model_version(served_dir)
    action, since = choose_action(promotions(layout, camera), served, passed, promote=False,
                                  baseline=winner == "challenger")
    judged = {"candidate": Path(candidate_dir)} | ({"unpaired": twin} if twin is not None else {})
    realism = camera_models_realism(layout, pairs, judged, device)
    decision = GateDecision(version, reference, criteria, action, thresholds, since, served, duel, realism)
    if winner != "candidate":  # it may be served: its consistency thresholds come from these pairs too
        ensure_consistency(layout, served_dir, pairs, key, device)
    reason = promotion_reason(criteria, len(pairs)) + (f". {duel['message']}" if duel else "")
    _keep(layout, version, key, scores, models[winner].watch, decision, reason, served_dir)
    return decision


def unpaired_twin(layout: DataLayout, candidate_dir: Path) -> Path | None:
    """The candidate's unpaired twin (the same co-learning without the camera's fit pairs), when the candidate
    was fitted on fit pairs and the twin was trained."""
    info = read_info(Path(candidate_dir))
    if not info.get("fit_pairs") or info.get("challenger"):
        return None
    version = model_version(Path(candidate_dir))
    path = unpaired_twin_dir(layout, version)
    try:
        twin_of = read_info(path).get("unpaired_twin_of")
    except FileNotFoundError:
        return None
    return path if twin_of == version else None


def fixed_degradation_challenger(layout: DataLayout, candidate_dir: Path) -> Path | None:
    """The fixed-degradation challenger distilled from the candidate's teacher, when one was trained (and the
    candidate is not itself a challenger)."""
    from sr_pipeline.sr.models.checkpoints import read_info

    info = read_info(Path(candidate_dir))
    teacher = (info.get("teacher") or {}).get("version")
    if info.get("challenger") or not teacher:
        return None
    path = challenger_dir(layout, teacher)
    return path if (path / "training.json").is_file() else None


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
    reused: list[str]  # methods whose scores were taken from the gate instead of scoring again

    @property
    def report_path(self) -> Path:
        return self.report_dir / "index.html"


def _models_info(models: list[_Model], candidate_dir: Path, downsampler_dir: Path | None,
                 challenger: Path | None = None, root: Path | None = None, unpaired: Path | None = None,
                 unpaired_downsampler: Path | None = None) -> dict[str, Any]:
    """Per role: version, ``path`` as stored under the data root (``root``): relative to it, so a moved
    data root's summaries still name its models (absolute only for a model outside it; read back with
    :meth:`DataLayout.resolve`), and ``folder``, the shorter form pages and metadata show."""

    def info(path: Path, steps: int | None = None) -> dict[str, Any]:
        resolved = Path(path).resolve()
        out = {"version": model_version(path), "path": root_relative(resolved, root) if root else str(resolved),
               "folder": data_relative(path, root)}
        return out | ({"steps": steps} if steps is not None else {})

    by_role = {m.role: info(m.path, m.steps) for m in models}
    by_role.setdefault("candidate", info(candidate_dir, 1))
    if challenger is not None:
        by_role.setdefault("challenger", info(challenger, 1))
    if unpaired is not None:
        by_role.setdefault("unpaired", info(unpaired, 1))
    order = [r for r in MODEL_ROLES if r in by_role]
    return ({r: by_role[r] for r in order} | {"downsampler": info(downsampler_dir) if downsampler_dir else None}
            | ({"unpaired_downsampler": info(unpaired_downsampler)} if unpaired_downsampler else {}))


def data_relative(path: Path | str, root: Path | None) -> str:
    """``path`` as the pages show it: under the data root, relative to it (``models/student/<v>``);
    elsewhere only its last two parts, never a machine's absolute path."""
    p = Path(path).resolve()
    if root is not None:
        try:
            return p.relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return Path(*p.parts[-2:]).as_posix() if len(p.parts) > 2 else p.name


def _without_machine_path(fit: dict[str, Any], root: Path) -> dict[str, Any]:
    """The consistency fit's summary with its file (and a reason naming it) under the data root."""
    if not fit.get("path"):
        return fit
    shown = data_relative(fit["path"], root)
    reason = fit.get("reason")
    return fit | {"path": shown, "reason": reason.replace(str(fit["path"]), shown) if isinstance(reason, str) else reason}


def run_evaluation(layout: DataLayout, teacher_dir: Path, candidate_dir: Path, promoted_dir: Path | None,
                   downsampler_dir: Path | None, report_date: date, thresholds: GateThresholds = GateThresholds(),
                   *, lpips: Any = None, device: str = "auto", camera: str | None = None) -> EvaluationOutcome:
    """Evaluate (reusing the gate's scores of the candidate when they match), decide, write the report:
    one field camera's (``camera``: its calibration pairs, promotions, archive and ``reports/<camera>/``)
    or, without one, every pair's."""
    from sr_pipeline.evaluation.consistency_fit import consistency_summary
    from sr_pipeline.evaluation import report_page as report
    from sr_pipeline.sr.models.devices import device_label, resolve_device

    pairs = calibration_pairs(layout, camera)
    if not pairs:
        where = f"field camera {camera!r}" if camera is not None else "a field camera"
        raise EvaluationError(f"no calibration pairs in the catalog: upload HR/LR pairs under {where} "
                              "(pairs/<name>/hr/ + pairs/<name>/lr/) before evaluating")
    device = resolve_device(device)
    metric = _lpips(lpips, device)
    version = model_version(candidate_dir)
    key = scores_key(pairs, model_state({"lpips": metric})[1])
    kept = _kept_scores(layout, version, key)
    # The promoted student to compare with: never this candidate, nor the model its own gate served in its place
    # (its unpaired twin or the challenger), which the gate compared with nothing but its rivals.
    winner = (kept[2]["decision"].get("served") if kept is not None else None) or version
    reference = None
    if promoted_dir is not None and Path(promoted_dir).resolve() != Path(candidate_dir).resolve() \
            and model_version(promoted_dir) != winner:
        reference = model_version(promoted_dir)
    teacher = _load("teacher", teacher_dir, device, teacher=True)
    scale = int(teacher.upscaler.scale)
    models, reuse, watch, kept_scores, fit = [teacher], {}, None, None, None
    duel, served_version = None, version
    if kept is not None:
        kept_scores, watch, record = kept  # the watch of the model the gate judged (the duel's winner)
        duel = record["decision"].get("challenge")
        served_version = record["decision"].get("served") or version
        keep = (["bicubic", "candidate"] + [m for m in ("unpaired", "challenger") if m in record["methods"]]
                + (["promoted"] if reference and record["reference"] == reference else []))
        kept_scores = kept_scores.only(keep)
        reuse = {m: None for m in keep if m != "bicubic"}
    else:
        candidate = _load("candidate", candidate_dir, device)
        models.append(candidate)
        watch = candidate.watch
        fit = _consistency(layout, candidate_dir, scale, key)
    if reference is not None and "promoted" not in reuse:
        models.append(_load("promoted", promoted_dir, device))  # type: ignore[arg-type]
    scores = _score(models, pairs, scale, metric, reuse, kept_scores, consistency=fit)
    if fit is not None:
        fit.save()
    else:
        ensure_consistency(layout, candidate_dir, pairs, key, device)
    realism = downsampler_realism(pairs, downsampler_dir, device) if downsampler_dir is not None else None
    twin = unpaired_twin(layout, candidate_dir)
    fixed = fixed_degradation_challenger(layout, candidate_dir)
    twin_g = camera_model_dir(layout, twin) if twin is not None else None
    realism_unpaired = downsampler_realism(pairs, twin_g, device) if twin_g is not None else None
    realisms = {k: v for k, v in (("candidate", realism), ("unpaired", realism_unpaired)) if v is not None}

    judged = duel["winner"] if duel and duel["winner"] in scores.methods else "candidate"
    criteria = decide(scores.rows, scores.summary, watch, thresholds, reference, candidate=judged)
    action, since = choose_action(promotions(layout, camera), served_version, all(c.passed for c in criteria),
                                  promote=False, baseline=judged == "challenger")
    decision = GateDecision(version, reference, criteria, action, thresholds, since, served_version, duel,
                            realisms or None)
    served = judged if action == "already_promoted" else ("promoted" if reference is not None else None)

    summary = finite_json({
        "schema": "sr_pipeline.evaluation/1",
        "report_date": report_date.isoformat(),
        "camera": camera,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_label(device),
        **scores.summary,
        "labels": {"bicubic": "plain enlargement (bicubic)", "teacher": f"teacher ({teacher.steps} steps)",
                   "candidate": "new student", "unpaired": "new student without fit pairs",
                   "challenger": "fixed-degradation student",
                   "promoted": "promoted student"},
        "models": _models_info(models, candidate_dir, downsampler_dir,
                               fixed if "challenger" in scores.methods else None, layout.root, twin if "unpaired" in scores.methods else None,
                               twin_g if "unpaired" in scores.methods else None),
        "realism": realism,
        "realism_unpaired": realism_unpaired,
        # the limits of the model in use, which judged the archive's outputs
        "consistency": _without_machine_path(
            consistency_summary({"unpaired": twin, "challenger": fixed}.get(judged) or candidate_dir), layout.root),
        "gate": decision.to_dict(),
        "served": served,
        "reused": scores.reused,
        "per_image_gain": {m: report.gain_spread(scores.rows, m, {"psnr_y": thresholds.psnr_tolerance_db,
                                                                  "lpips": thresholds.lpips_tolerance})
                           for m in scores.methods if m != "bicubic"},
    })
    root = reports_root(layout, camera)
    root.mkdir(parents=True, exist_ok=True)
    history = report.load_history(root)
    archive = archive_consistency(layout, report_date, camera=camera)
    lines = report.headline(summary, history, archive)
    summary["headline"] = lines
    summary["previous_reports"] = len(history)
    tmp = temp_dir(root, f".{report_date.isoformat()}.")
    try:
        write_metrics_parquet(scores.rows, tmp / "metrics.parquet")
        write_json(tmp / "summary.json", summary)
        write_bytes(tmp / "index.html", report.render_report(summary, scores, history, lines, archive).encode("utf-8"))
        final = publish_dir(tmp, root, report_date.isoformat())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    focus = report.served_role(summary)
    median = report.ranked_images(scores, focus)[1][1]["image"]
    crops = report.crop_columns(scores, median, report.CROP_METHODS, summary["labels"])
    return EvaluationOutcome(
        report_dir=final, summary=summary, decision=decision, headline=lines,
        table_md=report.markdown_table(summary, scores.methods, archive), crops_png=report.crop_strip_png(crops),
        trend_png=report.trend_png(history, summary), reused=scores.reused,
    )
