"""The promotion gate's policy (fidelity first, method.md section 8): scores + thresholds -> decision.

A candidate passes when
1. its outputs are valid: no NaN or infinity from the network, no blank (constant) image;
2. it is not worse than plain enlargement on every gate metric of the registry (PSNR-Y, LPIPS);
3. it is not worse than the promoted student beyond the tolerances;
4. it does not over-sharpen: the median, over the pairs, of its outputs' high-frequency (Laplacian)
   energy over their HR's stays at or below ``max_hf_ratio``. A student that learned to undo a blur
   the camera does not have invents texture (measured 1.35x on real cameras no benchmark
   tuned on) while it can still beat bicubic on LPIPS; this criterion stops it.
The criteria judge the winner of :func:`challenge`: the co-learned candidate, the fixed-degradation
challenger or, for a camera with fit pairs, the candidate's unpaired twin (:func:`pick_winner`, fidelity
first; a tie keeps the co-learned student with fit pairs).
Which action follows also depends on the promotion log: a student an operator rolled back from
(``sr-pipeline promote OLDER``) is never re-promoted automatically. Pure: no files, no models; the
Dagster checks, the ``promoted_student`` asset and the report apply the same functions to the same
numbers, so they always agree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sr_pipeline.sr.judge.scoring import Metric, metrics
from sr_pipeline.sr.judge.wording import compare, count, model_label, readable_time

CRITERIA = ("valid_outputs", "not_worse_than_bicubic", "not_worse_than_promoted", "not_over_sharpened")
BLANK_STD = 1.0  # an output whose pixels vary less than this (0-255 scale) is blank...
BLANK_RELATIVE = 0.05  # ...or less than this fraction of its HR reference's variation


@dataclass(frozen=True)
class GateThresholds:
    psnr_tolerance_db: float = 0.05
    lpips_tolerance: float = 0.005
    require_lpips: bool = True  # without LPIPS, criterion 2 cannot be verified and fails
    max_hf_ratio: float = 1.25  # median HF energy of the outputs over their HR's (criterion 4)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_hf_ratio) and self.max_hf_ratio > 0):
            raise ValueError(f"max_hf_ratio must be a finite number > 0, got {self.max_hf_ratio!r}")

    def tolerance(self, m: Metric) -> float:
        """How far a gate metric may be worse than the promoted student's (0 for metrics without one)."""
        return {"psnr_y": self.psnr_tolerance_db, "lpips": self.lpips_tolerance}.get(m.name, 0.0)

    def required(self, m: Metric) -> bool:
        """Whether a gate metric that could not be measured fails the gate."""
        return self.require_lpips if m.needs == "lpips" else True


@dataclass(frozen=True)
class Criterion:
    name: str
    passed: bool
    message: str
    values: dict[str, Any] = field(default_factory=dict)


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


@dataclass(frozen=True)
class GateDecision:
    candidate: str  # version
    reference: str | None  # the promoted student it was compared with
    criteria: tuple[Criterion, ...]
    action: str  # would_promote | already_promoted | rejected | not_repromoted (promoted: promoted_student's)
    thresholds: GateThresholds
    promoted_since: str | None = None  # for already_promoted: when the candidate was promoted
    served: str | None = None  # the version the gate judged and would promote: the candidate, or the challenger that beat it
    challenge: dict[str, Any] | None = None  # the co-learned candidate against the fixed-degradation challenger
    # and, for a camera with fit pairs, its unpaired twin (:func:`challenge`)
    realism: dict[str, Any] | None = None  # per camera model judged (with, without fit pairs): paired realism

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    def failures(self) -> list[str]:
        return [c.message for c in self.criteria if not c.passed]

    def plain(self) -> str:
        """One sentence a manager can read (two when the fixed-degradation challenger won)."""
        if self.challenge and self.challenge["winner"] != "candidate":
            duel = self.challenge["message"] + " "
            served = self.served or self.candidate
            name = (self.challenge.get("names") or {}).get(self.challenge["winner"]) \
                or f"the {model_label(served)}"
            return duel + self._plain(name[0].upper() + name[1:], served)
        return self._plain(f"The new {model_label(self.candidate)}", self.candidate)

    def _plain(self, who: str, version: str) -> str:
        if self.action == "would_promote":
            return (f"{who} passes the promotion gate, so it may be promoted: the promoted_student asset (the next "
                    "step of a camera training run) or `sr-pipeline promote` records the promotion.")
        if self.action == "already_promoted":
            if self.passed:
                return (f"The {model_label(version)} has been the promoted model since {readable_time(self.promoted_since)} (the "
                        f"archive uses it) and passes all {len(self.criteria)} checks of the promotion gate.")
            return (f"The promoted {model_label(version)} no longer passes the gate ("
                    + "; ".join(self.failures()) + "). It stays in use; consider a rollback.")
        if self.action == "not_repromoted":
            return (f"{who} passes the gate but was rolled back by an operator earlier, so it is not promoted "
                    "again automatically (`sr-pipeline promote` restores it).")
        kept = f"the archive keeps using the {model_label(self.reference)}" if self.reference else "no student is in use yet"
        return f"{who} was not promoted: " + "; ".join(self.failures()) + f". So {kept}."

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "action": self.action, "candidate": self.candidate, "reference": self.reference,
            "criteria": [asdict(c) for c in self.criteria], "thresholds": asdict(self.thresholds),
            "promoted_since": self.promoted_since, "plain": self.plain(),
            "served": self.served or self.candidate, "challenge": self.challenge, "realism": self.realism,
        }


def _mean(rows: list[dict[str, Any]], method: str, key: str) -> float | None:
    vals = [r[key] for r in rows if r["method"] == method]
    if not vals or any(isinstance(v, float) and math.isnan(v) for v in vals):
        return None
    return float(np.mean(vals))  # may be inf (an output identical to its HR)


def _validity(watch: OutputWatch) -> Criterion:
    if watch.nonfinite_calls or watch.blank or not watch.images:
        problems = []
        if watch.nonfinite_calls:
            problems.append(f"{watch.nonfinite_calls} of {watch.network_calls} network calls returned NaN or infinity")
        if watch.blank:
            problems.append(f"{len(watch.blank)} of {watch.images} outputs are blank ({', '.join(watch.blank[:3])})")
        if not watch.images:
            problems.append("no output was produced")
        return Criterion("valid_outputs", False, "; ".join(problems),
                         {"nonfinite_calls": watch.nonfinite_calls, "blank_images": len(watch.blank)})
    every = "the" if watch.images == 1 else "all"
    return Criterion("valid_outputs", True, f"{every} {count(watch.images, 'output')} {'is' if watch.images == 1 else 'are'} "
                     "finite and not blank",
                     {"nonfinite_calls": 0, "blank_images": 0})


def _v(m: Metric, x: float | None) -> str:
    """A value in a gate message: one digit more than the tables, since tolerances are fine."""
    return f"{m.text(x, 1)}{' ' + m.unit if m.unit else ''}" if x is not None else "n/a"


def _versus_bicubic(rows, measured: list[Metric], unmeasured: list[tuple[Metric, str]], thresholds,
                    candidate: str) -> Criterion:
    values, problems, shown = {}, [], []
    for m in measured:
        c, b = _mean(rows, candidate, m.name), _mean(rows, "bicubic", m.name)
        values |= {m.name: c, f"bicubic_{m.name}": b}
        if m.worse(c, b):
            side = "below" if m.higher_is_better else "above"
            problems.append(f"{m.label} {_v(m, c)} is {side} plain enlargement's {_v(m, b)}")
        shown.append(f"{m.label} {_v(m, c)} {'>=' if m.higher_is_better else '<='} {_v(m, b)}")
    for m, reason in unmeasured:
        values |= {m.name: None, f"bicubic_{m.name}": None}
        if thresholds.required(m):
            problems.append(f"{m.label} could not be measured ({reason})")
        else:
            shown.append(f"({m.label} not measured)")
    if problems:
        return Criterion("not_worse_than_bicubic", False, "; ".join(problems), values)
    return Criterion("not_worse_than_bicubic", True, ", ".join(shown).replace(", (", " ("), values)


def _versus_promoted(rows, measured: list[Metric], thresholds, reference: str, candidate: str,
                     promoted: str) -> Criterion:
    values: dict[str, Any] = {"promoted": reference}
    problems, shown, better = [], [], []
    for m in measured:
        c, r = _mean(rows, candidate, m.name), _mean(rows, promoted, m.name)
        values |= {m.name: c, f"promoted_{m.name}": r}
        tol = thresholds.tolerance(m)
        better.append(m.worse(r, c, tol))  # the promoted student is worse by more than the tolerance
        if m.worse(c, r, tol):
            side = "below" if m.higher_is_better else "above"
            problems.append(f"{m.label} {_v(m, c)} is more than {tol}{' ' + m.unit if m.unit else ''} {side} the "
                            f"promoted student's {_v(m, r)}")
        shown.append(f"{m.label} {_v(m, c)} vs {_v(m, r)}")
    if problems:
        return Criterion("not_worse_than_promoted", False, "; ".join(problems), values)
    how = ("better than" if better and all(better) else "not worse, beyond the tolerances, than" if any(better)
           else "within tolerance of")
    return Criterion("not_worse_than_promoted", True,
                     f"{how} the promoted student {reference} (" + ", ".join(shown) + ")", values)


def _sharpness(rows, thresholds: GateThresholds, candidate: str) -> Criterion:
    from sr_pipeline.sr.judge.scoring import metric

    m = metric("hf_ratio")
    vals = [r[m.name] for r in rows if r["method"] == candidate and m.name in r]
    vals = [v for v in vals if not (isinstance(v, float) and math.isnan(v))]
    limit = thresholds.max_hf_ratio
    if not vals:
        return Criterion("not_over_sharpened", False, "high-frequency energy could not be measured",
                         {"max_hf_ratio": limit})
    median = float(np.median(vals))
    values = {"hf_ratio_median": median, "max_hf_ratio": limit}
    if median > limit:
        return Criterion("not_over_sharpened", False,
                         f"outputs carry {median:.2f}x the HR's high-frequency energy (median), above the "
                         f"limit of {limit:.2f}x: the student over-sharpens or invents texture", values)
    return Criterion("not_over_sharpened", True,
                     f"high-frequency energy {median:.2f}x the HR's (median), within {limit:.2f}x", values)


def decide(rows: list[dict[str, Any]], availability: dict[str, dict[str, Any]], watch: OutputWatch,
           thresholds: GateThresholds, reference: str | None, candidate: str = "candidate",
           promoted: str = "promoted") -> tuple[Criterion, ...]:
    """The gate criteria (:data:`CRITERIA`) from per-image rows (methods ``bicubic``, ``candidate``, ``promoted``).

    ``availability``: per model a metric needs, ``{"available": bool, "reason": str}`` (a scoring
    pass's summary holds them, e.g. ``summary["lpips"]``).
    """
    gate = [m for m in metrics() if m.gate]
    measured = [m for m in gate if m.needs is None or availability.get(m.needs, {}).get("available")]
    unmeasured = [(m, str(availability.get(m.needs, {}).get("reason"))) for m in gate if m not in measured]
    beats = _versus_bicubic(rows, measured, unmeasured, thresholds, candidate)
    if reference is None:
        versus = Criterion("not_worse_than_promoted", True, "no promoted student to compare with (first promotion)")
    else:
        versus = _versus_promoted(rows, measured, thresholds, reference, candidate, promoted)
    return _validity(watch), beats, versus, _sharpness(rows, thresholds, candidate)


# The tie-break of the duel: the student co-learned with the camera's fit pairs, then its unpaired twin (the same
# profile and seed without fit pairs), then the fixed-degradation challenger.
DUEL_ROLES = ("candidate", "unpaired", "challenger")


def pick_winner(scores: dict[str, dict[str, float | None]], thresholds: GateThresholds) -> str:
    """Fidelity first, over any of :data:`DUEL_ROLES`: the contenders are the models whose PSNR-Y is within the
    PSNR tolerance of the best; among them the lowest LPIPS wins when it is lower by more than the LPIPS
    tolerance than the first contender's in :data:`DUEL_ROLES` order, which otherwise wins. With two models
    this is the duel's rule: the other wins on PSNR-Y by more than its tolerance, or level on PSNR-Y, on
    LPIPS by more than its tolerance; a tie keeps the earlier one. A figure not measured counts as the
    worst (PSNR-Y) or is left out (LPIPS)."""
    roles = [r for r in DUEL_ROLES if r in scores]
    psnr = {r: scores[r].get("psnr_y") or 0.0 for r in roles}
    best = max(psnr.values())
    contenders = [r for r in roles if best - psnr[r] <= thresholds.psnr_tolerance_db]
    first = contenders[0]
    lpips = {r: scores[r].get("lpips") for r in contenders if scores[r].get("lpips") is not None}
    if first in lpips:
        lowest = min(lpips, key=lambda r: (lpips[r], roles.index(r)))
        if lpips[first] - lpips[lowest] > thresholds.lpips_tolerance:
            return lowest
    return first


def duel_names(candidate: str, challenger: str | None, unpaired: str | None) -> dict[str, str]:
    """How messages name the models of the duel (with the twin present, each co-learned one says whether it
    saw the fit pairs)."""
    if unpaired is None:
        names = {"candidate": f"the co-learned {model_label(candidate)}"}
    else:
        names = {"candidate": f"the co-learned {model_label(candidate)} with fit pairs",
                 "unpaired": f"the co-learned {model_label(unpaired)}"}
    if challenger is not None:
        names["challenger"] = f"the {model_label(challenger)}"
    return names


def _figures(s: dict[str, float | None]) -> str:
    from sr_pipeline.sr.judge.scoring import metric

    return ", ".join(f"{metric(k).label} {_v(metric(k), v)}" for k, v in s.items() if v is not None)


def challenge(rows: list[dict[str, Any]], thresholds: GateThresholds, candidate: str, challenger: str | None,
              unpaired: str | None = None) -> dict[str, Any]:
    """The co-learned ``candidate`` against the fixed-degradation ``challenger`` (rows of methods
    ``candidate`` and ``challenger``) and, for a camera with fit pairs, against its ``unpaired`` twin (rows
    of method ``unpaired``): :func:`pick_winner`, fidelity first; a tie keeps the co-learned student (with
    fit pairs before without). The message quotes each model's figures and words the winner against each
    other model by :func:`~sr_pipeline.sr.judge.wording.compare`: a winner with a worse LPIPS is said to trade,
    not to beat. Without a twin the result is the two-model duel's, in its words."""
    roles = ["candidate"] + (["unpaired"] if unpaired is not None else []) + (["challenger"] if challenger else [])
    scores = {role: {"psnr_y": _mean(rows, role, "psnr_y"), "lpips": _mean(rows, role, "lpips")} for role in roles}
    names = duel_names(candidate, challenger, unpaired)
    tol = {"psnr_y": thresholds.psnr_tolerance_db, "lpips": thresholds.lpips_tolerance}
    winner = pick_winner(scores, thresholds)
    out: dict[str, Any] = {"winner": winner, "candidate": candidate, "challenger": challenger,
                           "co_learned": scores["candidate"], "fixed": scores.get("challenger"),
                           "roles": roles, "scores": scores, "names": names}
    if unpaired is None:
        co, fixed = scores["candidate"], scores["challenger"]
        d_psnr = (fixed["psnr_y"] or 0.0) - (co["psnr_y"] or 0.0)
        d_lpips = None if co["lpips"] is None or fixed["lpips"] is None else fixed["lpips"] - co["lpips"]
        loser = "candidate" if winner == "challenger" else "challenger"
        lost = d_psnr < -tol["psnr_y"] or (abs(d_psnr) <= tol["psnr_y"] and d_lpips is not None
                                           and d_lpips > tol["lpips"])
        decided = winner == "challenger" or lost
        said = compare(scores[winner], scores[loser], tol)
        if decided:
            message = (f"On the camera's calibration pairs {said.sentence(names[winner], names[loser])}; fidelity "
                       f"comes first, so the gate picks, and its checks judge, {names[winner]}.")
        else:
            message = (f"On the camera's calibration pairs {said.sentence(names['candidate'], names['challenger'])}; "
                       "the co-learned one is kept.")
        return out | {"psnr_margin_db": abs(d_psnr), "lpips_margin": None if d_lpips is None else abs(d_lpips),
                      "message": message}
    others = [r for r in roles if r != winner]
    quoted = "; ".join(f"{names[r]}: {_figures(scores[r])}" for r in roles)
    against = "; ".join(compare(scores[winner], scores[r], tol).sentence("it", names[r]) for r in others)
    message = (f"On the camera's gate pairs the gate compared {len(roles)} students ({quoted}). Fidelity comes "
               f"first, then LPIPS, and a tie keeps the student co-learned with fit pairs, so the gate picks, and its checks judge, "
               f"{names[winner]}: {against}.")
    runner = max(others, key=lambda r: scores[r]["psnr_y"] or 0.0)
    d_lpips = (None if scores[winner]["lpips"] is None or scores[runner]["lpips"] is None
               else abs(scores[winner]["lpips"] - scores[runner]["lpips"]))
    return out | {"unpaired": unpaired, "without_pairs": scores["unpaired"],
                  "psnr_margin_db": abs((scores[winner]["psnr_y"] or 0.0) - (scores[runner]["psnr_y"] or 0.0)),
                  "lpips_margin": d_lpips, "message": message}


def no_pairs_criteria() -> tuple[Criterion, ...]:
    missing = "no calibration pairs in the catalog (upload them under a field camera's pairs/<name>/{hr,lr}/)"
    return tuple(Criterion(name, False, missing) for name in CRITERIA)


def choose_action(entries: list[dict], version: str, passed: bool, promote: bool,
                  baseline: bool = False) -> tuple[str, str | None]:
    """(action, promoted_since) for a candidate given the promotion log (oldest first).

    ``promote``: whether the caller records a promotion when the gate allows one (the
    ``promoted_student`` asset does; the checks and the report only say what would happen).
    ``baseline``: the version is the fixed-degradation challenger, which the gate may serve again
    after a camera moved on from it (the no-re-promotion rule is for students an operator rolled back).
    """
    current = entries[-1]["version"] if entries else None
    if current == version:
        return "already_promoted", entries[-1]["promoted_at"]
    if not passed:
        return "rejected", None
    if not baseline and any(e["version"] == version for e in entries):
        return "not_repromoted", None
    return ("promoted" if promote else "would_promote"), None


def promotion_reason(criteria: tuple[Criterion, ...], pairs: int) -> str:
    return f"promotion gate passed on {count(pairs, 'calibration pair')}: " + "; ".join(c.message for c in criteria)
