"""Promotion: which student the archive serves for each field camera, and the only two ways that changes.

Students are trained, gated and promoted per field camera (the camera is in the student's
training.json). The promotion log (``models/promotions.json``, :mod:`sr_pipeline.storage.registry`) is written by
1. the ``promoted_student`` asset, after the blocking checks of ``promotion_gate`` passed in its run:
   :func:`promote_after_gate` reads the gate's kept decision for the candidate and records it, unless
   an operator rolled back from this student earlier (never re-promoted automatically);
2. ``sr-pipeline promote VERSION`` (a rollback or a manual choice): :func:`promote_version` records
   it, and the command (:mod:`sr_pipeline.defs.evaluation.promotion_events`) reports a runless materialisation
   of ``promoted_student`` whose data version is the promoted model's version to the Dagster instance
   of ``$DAGSTER_HOME``, so the UI marks archive partitions made by another student stale.
The evaluation report only reads the log. :func:`served_student` says which student upscales a
camera's images: its own promoted one, or, only where ``configs/cameras.yaml`` names a
``fallback_camera``, that camera's while it has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sr_pipeline.evaluation.gate import choose_action
from sr_pipeline.common.cameras import CameraRegistry
from sr_pipeline.sr.models.checkpoints import model_version, read_info
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.storage.registry import (
    list_models, missing_folder_message, promoted_student_dir, promotions, record_promotion,
)


class PromotionError(RuntimeError):
    """No promotion can be recorded; the message says why."""


class ForeignInstance(ValueError):
    """The orchestrator's instance records another data root's students: a promotion is not reported there; the
    message says which and what to do."""


@dataclass(frozen=True)
class Promotion:
    action: str  # promoted | already_promoted | not_repromoted
    version: str  # the promoted student now (after the action)
    path: Path
    entry: dict | None  # the log entry recorded now


@dataclass(frozen=True)
class ServedStudent:
    path: Path
    camera: str  # the field camera whose images the student was trained on
    fallback: bool  # True when the camera has no promoted student of its own

    @property
    def version(self) -> str:
        return model_version(self.path)


def model_camera(model_dir: Path) -> str | None:
    """The field camera a student or downsampler was trained for (None for models from before cameras)."""
    return read_info(Path(model_dir)).get("camera")


def _fallback_camera(registry: CameraRegistry, camera: str) -> str | None:
    return registry.get(camera).fallback_camera if camera in registry else None


def served_student(layout: DataLayout, registry: CameraRegistry, camera: str) -> ServedStudent | None:
    """The student that upscales ``camera``'s images, or None when it has none and no fallback is configured."""
    own = promoted_student_dir(layout, camera)
    if own is not None:
        return ServedStudent(own, camera, False)
    fallback = _fallback_camera(registry, camera)
    if fallback is not None:
        theirs = promoted_student_dir(layout, fallback)
        if theirs is not None:
            return ServedStudent(theirs, fallback, True)
    return None


def no_student_message(registry: CameraRegistry, camera: str) -> str:
    """Why a camera's images cannot be upscaled yet, and what to do."""
    fallback = _fallback_camera(registry, camera)
    text = (f"no student has been promoted for field camera {camera!r}: materialise co_trained_student and "
            f"promoted_student for partition {camera!r} (a student that passes the promotion gate on this camera's "
            "calibration pairs) or promote one with `sr-pipeline promote`")
    if fallback is not None:
        return text + f"; its fallback camera {fallback!r} has no promoted student either"
    return text + (f"; to use another camera's student meanwhile, set fallback_camera for {camera!r} in "
                   "configs/cameras.yaml")


def reference_student(layout: DataLayout, candidate_version: str, camera: str | None = None) -> dict | None:
    """The promoted student a candidate is compared with: the camera's newest promotion of another version
    whose folder still exists (for the promoted candidate itself, the one promoted before it)."""
    for entry in reversed(promotions(layout, camera)):
        if entry["version"] != candidate_version and Path(entry["path"]).is_dir():
            return entry
    return None


def promote_after_gate(layout: DataLayout, candidate_dir: Path, camera: str | None = None) -> Promotion:
    """Record the candidate as the promoted student of ``camera`` (default: the camera it was trained for)
    if the gate's kept decision for it passed (see module doc)."""
    from sr_pipeline.evaluation.calibration import calibration_pairs, pairs_fingerprint, read_gate_record

    version = model_version(candidate_dir)
    trained_for = model_camera(candidate_dir)
    if camera is not None and trained_for is not None and trained_for != camera:
        raise PromotionError(f"student {version} was trained for field camera {trained_for!r}, not {camera!r}")
    camera = camera or trained_for
    record = read_gate_record(layout, version)
    if record is None:
        raise PromotionError(f"no promotion gate result for student {version}: materialise co_trained_student "
                             "with its promotion_gate checks (or use `sr-pipeline promote`)")
    if not record["decision"]["passed"]:
        raise PromotionError(f"student {version} did not pass the promotion gate: "
                             + "; ".join(c["message"] for c in record["decision"]["criteria"] if not c["passed"]))
    if record["key"]["pairs"] != pairs_fingerprint(calibration_pairs(layout, camera)):
        raise PromotionError(f"the calibration pairs changed since the promotion gate judged student {version}; "
                             "run its promotion_gate checks again")
    # The gate judged (and would promote) the best of the co-learned candidate, its unpaired twin (a camera with fit
    # pairs) and the fixed-degradation challenger.
    served = record["decision"].get("served") or version
    served_path = record.get("served_path") or str(Path(candidate_dir).resolve())
    # Only the shared fixed-degradation baseline may be served again after the camera moved on from it.
    winner = (record["decision"].get("challenge") or {}).get("winner", "challenger" if served != version else "candidate")
    action, _ = choose_action(promotions(layout, camera), served, True, promote=True, baseline=winner == "challenger")
    entry = None
    if action == "already_promoted" and promoted_student_dir(layout, camera) is None and Path(served_path).is_dir():
        action = "promoted"  # its promotion names a folder that is gone: record it again with the folder it has now
    if action == "promoted":
        entry = record_promotion(layout, served, served_path, record["reason"], camera)
    current = promoted_student_dir(layout, camera)
    if current is None:
        raise PromotionError(missing_folder_message(layout, promotions(layout, camera)[-1]))
    return Promotion(action, model_version(current), current, entry)


def find_student(layout: DataLayout, name: str) -> dict | None:
    """The student whose version (as ``sr-pipeline models`` shows it) or folder name is ``name``."""
    found = [r for r in list_models(layout, kind="student") if name in (r["version"], Path(r["path"]).name)]
    return found[-1] if found else None


def promote_version(layout: DataLayout, row: dict, reason: str) -> dict | None:
    """Record ``row`` (a :func:`find_student` result) as promoted for its camera; None if it already is
    (the camera's newest promotion names this version in a folder that exists: one whose folder is missing
    serves nothing, so promoting the student again records it, with its folder now)."""
    camera = row.get("camera")
    entries = promotions(layout, camera)
    if (entries and entries[-1]["version"] == row["version"] and Path(entries[-1]["path"]).is_dir()
            and Path(entries[-1]["path"]).resolve() == Path(row["path"]).resolve()):
        return None
    return record_promotion(layout, row["version"], str(Path(row["path"]).resolve()), reason, camera)
