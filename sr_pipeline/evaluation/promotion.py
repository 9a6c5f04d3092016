"""Promotion: which student the archive serves, and the only two ways that changes.

The promotion log (``models/promotions.json``, :mod:`sr_pipeline.storage.registry`) is written by
1. the ``promoted_student`` asset, after the blocking checks of ``promotion_gate`` passed in its run:
   :func:`promote_after_gate` reads the gate's kept decision for the candidate and records it, unless
   an operator rolled back from this student earlier (never re-promoted automatically);
2. ``sr-pipeline promote VERSION`` (a rollback or a manual choice): :func:`promote_version` records
   it, and the command (:mod:`sr_pipeline.defs.promotion_events`) reports a runless materialisation
   of ``promoted_student`` whose data version is the promoted model's version to the Dagster instance
   of ``$DAGSTER_HOME``, so the UI marks archive partitions made by another student stale.
The evaluation report only reads the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sr_pipeline.evaluation.gate import choose_action
from sr_pipeline.sr.checkpoints import model_version
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.storage.registry import list_models, promoted_student_dir, promotions, record_promotion


class PromotionError(RuntimeError):
    """No promotion can be recorded; the message says why."""


@dataclass(frozen=True)
class Promotion:
    action: str  # promoted | already_promoted | not_repromoted
    version: str  # the promoted student now (after the action)
    path: Path
    entry: dict | None  # the log entry recorded now


def reference_student(layout: DataLayout, candidate_version: str) -> dict | None:
    """The promoted student a candidate is compared with: the newest promotion of another version
    whose folder still exists (for the promoted candidate itself, the one promoted before it)."""
    for entry in reversed(promotions(layout)):
        if entry["version"] != candidate_version and Path(entry["path"]).is_dir():
            return entry
    return None


def promote_after_gate(layout: DataLayout, candidate_dir: Path) -> Promotion:
    """Record the candidate as promoted if the gate's kept decision for it passed (see module doc)."""
    from sr_pipeline.evaluation.calibration import calibration_pairs, pairs_fingerprint, read_gate_record

    version = model_version(candidate_dir)
    record = read_gate_record(layout, version)
    if record is None:
        raise PromotionError(f"no promotion gate result for student {version}: materialise co_trained_student "
                             "with its promotion_gate checks (or use `sr-pipeline promote`)")
    if not record["decision"]["passed"]:
        raise PromotionError(f"student {version} did not pass the promotion gate: "
                             + "; ".join(c["message"] for c in record["decision"]["criteria"] if not c["passed"]))
    if record["key"]["pairs"] != pairs_fingerprint(calibration_pairs(layout)):
        raise PromotionError(f"the calibration pairs changed since the promotion gate judged student {version}; "
                             "run its promotion_gate checks again")
    action, _ = choose_action(promotions(layout), version, True, promote=True)
    entry = None
    if action == "promoted":
        entry = record_promotion(layout, version, str(Path(candidate_dir).resolve()), record["reason"])
    current = promoted_student_dir(layout)
    if current is None:
        raise PromotionError(f"the promoted student's folder is missing ({promotions(layout)[-1]['path']})")
    return Promotion(action, model_version(current), current, entry)


def find_student(layout: DataLayout, name: str) -> dict | None:
    """The student whose version (as ``sr-pipeline models`` shows it) or folder name is ``name``."""
    found = [r for r in list_models(layout, kind="student") if name in (r["version"], Path(r["path"]).name)]
    return found[-1] if found else None


def promote_version(layout: DataLayout, row: dict, reason: str) -> dict | None:
    """Record ``row`` (a :func:`find_student` result) as promoted; None if it already is."""
    entries = promotions(layout)
    if entries and entries[-1]["version"] == row["version"]:
        return None
    return record_promotion(layout, row["version"], str(Path(row["path"]).resolve()), reason)
