"""How the project words a comparison of two sets of figures and names a model, in one place.

The rule: one side is "better" only when no figure is worse beyond its tolerance (the promotion
gate's: 0.05 dB PSNR-Y, 0.005 LPIPS by default) and at least one is better beyond it; when one
figure is better and another worse, the sentence names the trade ("+1.24 dB PSNR-Y, 0.023 worse
LPIPS") and never says better, beat or won. The report, the gate's messages and the logs all word
comparisons through :func:`compare`. Counts in sentences go through :func:`count` ("1 pair", "3
pairs"), an output's flagged share through :func:`percent` ("1.13%"), its other consistency figures
(largest disagreement, PSNR-Y, colour shift) through :func:`fixed` ("40.5" -> "41") and timestamps through
:func:`readable_time` ("2026-12-07 04:31 UTC", never a raw ISO string).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

from sr_pipeline.sr.judge.scoring import metric

DEFAULT_TOLERANCES = {"psnr_y": 0.05, "lpips": 0.005}
SHARE_DECIMALS = 6  # an output's flagged share as its record keeps it (the manifest's consistency_flagged_share)
PEAK_DECIMALS = 2  # its largest disagreement in levels, as its record keeps it (consistency_peak)
PSNR_DECIMALS = 3  # its consistency PSNR-Y in dB, as its record keeps it (consistency_psnr_y)
COLOUR_DECIMALS = 3  # its colour shift per channel in levels, as its record keeps it (consistency_colour_shift)
_VERSION = re.compile(r"^(?:(?P<tag>[a-z]+)-)?(?P<date>\d{8})T\d{6}Z-(?P<id>[0-9a-f]{6})")


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare`: ``verdict`` is better, worse, trade or level (for the first
    side); ``parts`` the per-figure phrases, in the order the figures were given."""

    verdict: str
    parts: tuple[str, ...]
    better: tuple[str, ...]  # metric names better beyond their tolerance
    worse: tuple[str, ...]  # metric names worse beyond their tolerance

    @property
    def figures(self) -> str:
        """The per-figure differences, e.g. ``+1.24 dB PSNR-Y, 0.023 worse LPIPS``."""
        return ", ".join(self.parts)

    def sentence(self, subject: str, other: str) -> str:
        """``subject`` against ``other`` in one clause, without a final full stop."""
        if self.verdict == "better":
            return f"{subject} is better than {other} ({self.figures})"
        if self.verdict == "worse":
            return f"{subject} is worse than {other} ({self.figures})"
        if self.verdict == "trade":
            return f"{subject} trades against {other}: {self.figures}"
        return f"{subject} and {other} are level within the gate's tolerances ({self.figures})"


def _phrase(name: str, delta_good: float, value: float, ref: float, tol: float, label: str | None = None) -> str:
    m = metric(name)
    label = label or m.label
    digits = m.digits if name != "lpips" else 3
    if abs(delta_good) <= tol:
        return f"{label} level ({m.text(value)} against {m.text(ref)})"
    if m.unit:  # a signed difference in the unit reads naturally: +1.24 dB PSNR-Y
        return f"{value - ref:+.{digits}f} {m.unit} {label}"
    return f"{abs(value - ref):.{digits}f} {'better' if delta_good > 0 else 'worse'} {label}"


def compare(ours: dict[str, float | None], theirs: dict[str, float | None],
            tolerances: dict[str, float] | None = None, labels: dict[str, str] | None = None) -> Comparison:
    """Compare figures by metric name (registry names: ``psnr_y``, ``lpips``, ...). A figure missing
    or not finite on either side is left out. ``tolerances`` (default: the gate's) per metric name; ``labels``
    name a figure that is not the metric itself (a gain over plain enlargement: "PSNR-Y gain")."""
    tol = DEFAULT_TOLERANCES | (tolerances or {})
    parts, better, worse = [], [], []
    for name, value in ours.items():
        ref = theirs.get(name)
        if value is None or ref is None or not (math.isfinite(value) and math.isfinite(ref)):
            continue
        delta = value - ref if metric(name).higher_is_better else ref - value
        t = tol.get(name, 0.0)
        parts.append(_phrase(name, delta, value, ref, t, (labels or {}).get(name)))
        if delta > t:
            better.append(name)
        elif delta < -t:
            worse.append(name)
    verdict = ("trade" if better and worse else "better" if better else "worse" if worse else "level")
    return Comparison(verdict, tuple(parts), tuple(better), tuple(worse))


def model_label(version: str | None, role: str = "student", camera: str | None = None) -> str:
    """A readable model name: role, camera, training date and short id, e.g. ``student of field_cam
    trained 2026-12-07 (ffd79b)``; a version of another form is kept as it is."""
    if not version:
        return role
    for prefix, kind in (("unpaired-", "without fit pairs"), ("fixed-", "fixed-degradation")):
        if str(version).startswith(prefix):  # the gate's rivals of a student share its date and id: say which
            inner = model_label(str(version)[len(prefix):], role, camera)
            if kind in role:  # the role already says it ("fixed-degradation student")
                return inner
            return f"{inner}, {kind}" if kind.startswith("without") else f"{kind} {inner}"
    found = _VERSION.match(str(version))
    owner = f" of {camera}" if camera else ""
    if not found:
        return f"{role}{owner} {version}"
    d = found["date"]
    return f"{role}{owner} trained {d[:4]}-{d[4:6]}-{d[6:]} ({found['id']})"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and its noun as a sentence says it: ``1 pair``, ``0 pairs``, ``3 batches`` (``plural``
    for nouns that do not take an s)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


def _kept(value: float, kept: int | None) -> Decimal:
    """``value`` as its record keeps it: rounded to ``kept`` decimals (None: as it is), exactly as written."""
    value = float(value)
    return Decimal(repr(value if kept is None else round(value, kept)))


def _half_up(value: Decimal, digits: int) -> str:
    with localcontext() as ctx:  # room for any finite float's digits (1e30 overflows the default 28)
        ctx.prec = 400 + digits
        return f"{value.quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP):f}"


def percent(share: float, digits: int = 2) -> str:
    """A share (0-1) as a percentage with ``digits`` decimals (``1.13%``), rounded half up from the share as
    its record keeps it (:data:`SHARE_DECIMALS`): the verdict's reason, written from the measured share, and
    a page printing the recorded one say the same figure."""
    return _half_up(_kept(share, SHARE_DECIMALS) * 100, digits) + "%"


def fixed(value: float, digits: int, kept: int | None = None) -> str:
    """``value`` with ``digits`` decimals, rounded half up (``40.5`` reads ``41``, ``30.25`` reads ``30.3``;
    Python's format says ``40`` and ``30.2``) from the value as its record keeps it: rounded to ``kept``
    decimals first (:data:`PEAK_DECIMALS`, :data:`PSNR_DECIMALS`, :data:`COLOUR_DECIMALS`; None: as it is).
    A verdict's reason, written from the measured figure, and a page printing the recorded one say the same
    digits (the measured 40.504 levels, kept as 40.5, read 41 in both). Not finite: as Python writes it."""
    if not math.isfinite(value):
        return f"{value:.{digits}f}"
    return _half_up(_kept(value, kept), digits)


def readable_time(stamp: object) -> str:
    """An ISO timestamp as a person reads it: date and time to the minute with the zone
    (``2026-12-07 04:31 UTC``, ``2026-12-07 05:31 UTC+01:00``); anything that is not one is kept as it is."""
    text = str(stamp)
    if len(text) <= 10:  # a date alone (or not a timestamp) reads as it is
        return text
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return text
    text = t.strftime("%Y-%m-%d %H:%M")
    offset = t.utcoffset()
    if offset is None:
        return text
    if offset == timedelta(0):
        return f"{text} UTC"
    minutes = int(offset.total_seconds() // 60)
    sign, minutes = ("+" if minutes >= 0 else "-"), abs(minutes)
    return f"{text} UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"
