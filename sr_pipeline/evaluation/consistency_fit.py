"""Consistency thresholds learned from the plant's calibration pairs, stored with the model.

While the gate scores a candidate student on the calibration pairs, :class:`CalibrationConsistency`
sees each of its outputs (the scoring hook, outside the timed region: one camera pass per output, no
second upscale), measures it against its LR with the candidate's co-trained camera model (bicubic-down
when it has none), and keeps the LR-sized residual map and the output's true PSNR-Y against the HR.
From those, :func:`sr_pipeline.sr.serve.consistency.fit_thresholds` fits thresholds per field camera and,
when the camera model is a G, a second set for bicubic-down from the same outputs (``--camera-model
bicubic`` never borrows G's limits), per field camera (for a
camera with at least :data:`MIN_CAMERA_PAIRS` pairs; the others use the ``all`` entry, always fitted
on every pair). They are published atomically as ``consistency.json`` in the candidate's folder, where
:func:`sr_pipeline.serving.consistency.load_check` finds them, and carry the fingerprint of the pairs
they were fitted on, so a report that reuses the gate's scores refits only when they are missing or
were fitted on other pairs. :func:`consistency_summary` is the report's view of the fit.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from sr_pipeline.serving.consistency import BICUBIC, co_trained_downsampler, load_check
from sr_pipeline.sr.models.checkpoints import model_version
from sr_pipeline.sr.serve.consistency import (
    THRESHOLDS_FILE, BicubicCamera, CalibrationSample, Thresholds, camera_model_kind, fit_thresholds,
    load_thresholds, measure, save_thresholds,
)
from sr_pipeline.common.atomic import atomic_write

ALL = "all"
MIN_CAMERA_PAIRS = 3  # fewer pairs than this: a camera's own fit would rest on one or two outputs
SPEARMAN = "spearman_consistency_vs_true_psnr"  # fit_thresholds' name for it
PAIRS_KEY = "pairs_key"  # in each entry's ``fit``: the fingerprint of the pairs it was fitted on


def thresholds_path(model_dir: Path) -> Path:
    return Path(model_dir) / THRESHOLDS_FILE


class CalibrationConsistency:
    """Measures a model's calibration outputs as they are scored; :meth:`save` fits and publishes.

    ``cameras``: the field camera of each pair (by pair name; None when unknown). ``pairs_key``: the
    fingerprint of the pairs, recorded with the fit.
    """

    def __init__(self, model_dir: Path, scale: int, cameras: dict[str, str | None], pairs_key: str):
        g_dir = co_trained_downsampler(model_dir)
        # The check alone (no thresholds file): the fit only needs the residuals.
        self.check = load_check(None, scale, camera_model=str(g_dir) if g_dir else BICUBIC)
        # Bicubic-down (`--camera-model bicubic`) gets limits of its own: its residuals are not G's.
        self.second = BicubicCamera(scale) if g_dir else None
        self.model_dir, self.scale, self.cameras, self.pairs_key = Path(model_dir), scale, cameras, pairs_key
        self.samples: dict[str, CalibrationSample] = {}
        self.second_samples: dict[str, CalibrationSample] = {}

    def see(self, image: str, lr: np.ndarray, sr: np.ndarray, hr: np.ndarray) -> None:
        from sr_pipeline.sr.judge.scoring import metric

        true_psnr = float(metric("psnr_y").fn(sr, hr, self.scale))
        for camera, samples in ((self.check.camera, self.samples), (self.second, self.second_samples)):
            if camera is not None:
                found = measure(camera, sr, lr, Thresholds(), keep_map=True)
                found.map = None  # the fit reads the residual in levels; half the memory per pair
                samples[image] = CalibrationSample(found, true_psnr)

    def _fit(self, samples: dict[str, CalibrationSample], camera_model: str) -> dict[str, Thresholds]:
        by_camera: dict[str, list[CalibrationSample]] = {}
        for image, sample in samples.items():
            camera = self.cameras.get(image)
            if camera is not None and camera != ALL:
                by_camera.setdefault(camera, []).append(sample)
        groups = {cam: s for cam, s in by_camera.items() if len(s) >= MIN_CAMERA_PAIRS}
        groups[ALL] = list(samples.values())
        fitted = {}
        for cam, group in sorted(groups.items()):
            t = fit_thresholds(group, cam)
            rho = t.fit.get(SPEARMAN)
            extra = {PAIRS_KEY: self.pairs_key, "camera_model": camera_model,
                     SPEARMAN: rho if rho is not None and math.isfinite(rho) else None}  # strict JSON
            fitted[cam] = dataclasses.replace(t, fit={**t.fit, **extra})
        return fitted

    def fit(self) -> dict[str, Thresholds]:
        """Per-camera thresholds (cameras with enough pairs) and the ``all`` entry, for the model's own
        camera model (its G, else bicubic-down)."""
        return self._fit(self.samples, self.check.camera.name)

    def fit_second(self) -> dict[str, dict[str, Thresholds]]:
        """The same for bicubic-down when the own camera model is a G (``{}`` otherwise), by kind."""
        if self.second is None:
            return {}
        return {camera_model_kind(self.second.name): self._fit(self.second_samples, self.second.name)}

    def save(self) -> Path:
        """Fit and publish ``consistency.json`` in the model's folder (atomically); its path."""
        path = thresholds_path(self.model_dir)
        save_thresholds(path, self.fit(), lambda p, data: atomic_write(p, data), self.fit_second())
        return path


def fitted_on(model_dir: Path, pairs_key: str) -> bool:
    """Whether the model's ``consistency.json`` is readable and was fitted on these pairs, for its own
    camera model and for bicubic-down."""
    try:
        fitted = load_thresholds(thresholds_path(model_dir))
        bicubic = load_thresholds(thresholds_path(model_dir), BICUBIC)
    except ValueError:
        return False
    return (ALL in fitted and ALL in bicubic
            and all(t.fit.get(PAIRS_KEY) == pairs_key for t in [*fitted.values(), *bicubic.values()]))


def consistency_summary(model_dir: Path) -> dict[str, Any]:
    """The fit as the report shows it (``summary.json["consistency"]``): always the keys
    ``available``, ``reason``, ``path``, ``model_version``, ``camera_model``, ``pairs`` and ``cameras``
    (per camera id and ``all``: ``pairs``, ``spearman``, ``worst_calibration``, ``worst_calibration_local``,
    ``thresholds`` (``local_peak`` / ``border_peak`` 0: no local limit), ``source``; empty when not available)."""
    path = thresholds_path(model_dir)
    out: dict[str, Any] = {"available": False, "reason": None, "path": str(path),
                           "model_version": model_version(Path(model_dir)), "camera_model": None, "pairs": None,
                           "cameras": {}}
    if not path.is_file():
        return out | {"reason": f"no {THRESHOLDS_FILE} in {Path(model_dir).name}"}
    try:
        fitted = load_thresholds(path)
    except ValueError as exc:
        return out | {"reason": str(exc)}
    names = ("pixel", "peak", "share", "psnr", "colour", "local_floor", "local_slope", "local_peak", "border_peak")
    cameras = {cam: {"pairs": t.fit.get("pairs"), "spearman": t.fit.get(SPEARMAN),
                     "worst_calibration": t.fit.get("worst_calibration"),
                     "worst_calibration_local": t.fit.get("worst_calibration_local"),
                     "thresholds": {n: getattr(t, n) for n in names}, "source": t.source}
               for cam, t in sorted(fitted.items())}
    reference = fitted.get(ALL) or next(iter(fitted.values()), None)
    return out | {"available": bool(fitted), "reason": None if fitted else f"{path} holds no camera",
                  "camera_model": reference.fit.get("camera_model") if reference else None,
                  "pairs": reference.fit.get("pairs") if reference else None, "cameras": cameras}
