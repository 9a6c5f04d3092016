"""The evaluation report's "Consistency with the camera" section, from the archive's verdicts.

Input: one dict per archived output with the manifest's columns (``batch``, ``camera``,
``source_name``, ``output_path``, ``upscaled_at``, ``consistency_*``) plus ``consistency_map_file``,
the heat map's absolute path (the caller resolves ``consistency_map`` against the data root).
Outputs whose manifest predates the consistency check carry no verdict: they are counted as "not
measured", never as ok. The sentences count the last 7 days up to the report date in the plant's time
zone and say so (the ISO week of a Monday report's date would hold a few hours); the table and trend are
per ISO week of the plant's calendar; nothing restored after the report date counts.

Managers get one plain line (also in the report's headline) and the images to look at, worst first,
with their maps; engineers get the flagged share per field camera and week (table and plot) and the
thresholds the evaluation fitted (``summary["consistency"]``). Rendering only; no storage import.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, Iterable

from sr_pipeline.sr.images.figures import figure_png, png_data_uri
from sr_pipeline.sr.judge.wording import PEAK_DECIMALS, PSNR_DECIMALS, fixed, percent

FLAGGED = "check"
MEASURED = ("ok", FLAGGED)
WEEK_DAYS = 7
WEEKS_SHOWN = 12
WORST_SHOWN = 8
LISTED_MAX = 200
NAMED_MAX = 6  # flagged images named in the manager's line (the list in the report holds them all)
ALL_CAMERAS = "all cameras"
SEE_LIST = "see the list in the report"
NOT_MEASURED_WHY = "restored before the consistency check existed"
FIT_ALL = "all"  # consistency_fit.ALL: the entry fitted on every pair, for cameras without their own
# The last 7 days' flagged share from which the section says what so many flags can mean: the limits sit beyond the
# worst calibration output, so on images like the calibration pairs few should break them.
MANY_FLAGGED = 0.10


# --- one archived output --------------------------------------------------------------------------

def _missing(value: Any) -> bool:
    """None, NaN, NaT or pandas' NA (whose comparisons have no truth value)."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return True


def _text(value: Any) -> str | None:
    return None if _missing(value) or str(value) == "" else str(value)


def _number(value: Any, least: float = -math.inf, most: float = math.inf) -> float | None:
    """A finite number from ``least`` to ``most`` (an output's figures: what the check can have made); anything
    else reads as none."""
    if _missing(value) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and least <= number <= most else None


def _moment(value: Any) -> datetime | None:
    """An aware datetime from a datetime (pandas Timestamps are ones) or an ISO string; naive is UTC."""
    if _missing(value):
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class ArchivedOutput:
    """One archived output and its consistency verdict (``None``: not measured)."""

    batch: str
    camera: str
    source_name: str
    output_path: str
    upscaled_at: datetime | None
    day: date | None  # the plant's calendar day of upscaled_at
    verdict: str | None
    flagged_share: float | None
    peak: float | None
    psnr_y: float | None
    model_camera: str | None  # the camera model that judged it: "bicubic" or "G <version>"
    reasons: str
    map_ref: str | None  # as in the manifest: relative to the data root
    map_file: Path | None

    @classmethod
    def from_row(cls, row: dict[str, Any], tz: tzinfo) -> "ArchivedOutput":
        when = _moment(row.get("upscaled_at"))
        verdict = _text(row.get("consistency_verdict"))
        map_file = _text(row.get("consistency_map_file"))
        return cls(
            batch=_text(row.get("batch")) or "?", camera=_text(row.get("camera")) or "unknown camera",
            source_name=_text(row.get("source_name")) or _text(row.get("source_image_id")) or "?",
            output_path=_text(row.get("output_path")) or "", upscaled_at=when,
            day=when.astimezone(tz).date() if when is not None else None,
            verdict=verdict if verdict in MEASURED else None,
            flagged_share=_number(row.get("consistency_flagged_share"), 0.0, 1.0),
            peak=_number(row.get("consistency_peak"), 0.0), psnr_y=_number(row.get("consistency_psnr_y"), 0.0),
            model_camera=_text(row.get("consistency_camera")), reasons=_text(row.get("consistency_reasons")) or "",
            map_ref=_text(row.get("consistency_map")), map_file=Path(map_file) if map_file else None)

    @property
    def flagged(self) -> bool:
        return self.verdict == FLAGGED

    @property
    def severity(self) -> tuple[float, float]:
        """Worst first: the share of input pixels the output contradicts, then the largest residual."""
        return (self.flagged_share or 0.0, self.peak or 0.0)


@dataclass
class Counts:
    """Outputs restored, measured (with a verdict) and flagged ``check``."""

    total: int = 0
    measured: int = 0
    flagged: int = 0

    def add(self, out: ArchivedOutput) -> None:
        self.total += 1
        self.measured += out.verdict is not None
        self.flagged += out.flagged

    @property
    def not_measured(self) -> int:
        return self.total - self.measured

    @property
    def share(self) -> float | None:
        """Flagged share of the measured outputs (None when none was measured)."""
        return self.flagged / self.measured if self.measured else None


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


@dataclass
class WeeklyShares:
    """Counts per (ISO week, field camera), weeks oldest first (contiguous), cameras sorted."""

    weeks: list[date]  # each week's Monday
    cameras: list[str]
    counts: dict[tuple[date, str], Counts]

    def cell(self, week: date, camera: str) -> Counts:
        return self.counts.get((week, camera), Counts())


# --- the archive as the report sees it ---------------------------------------------------------------

@dataclass
class ArchiveConsistency:
    """The archive's outputs restored up to the report date, and the batches that could not be read."""

    report_date: date
    outputs: list[ArchivedOutput]
    unread: dict[str, str] = field(default_factory=dict)  # batch -> why its manifest was skipped
    later: int = 0  # outputs restored after the report date, left out
    read_at: datetime | None = None  # when the manifests were read: the archive state the report describes

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, Any]], report_date: date, tz: tzinfo,
                  unread: dict[str, str] | None = None, read_at: datetime | None = None) -> "ArchiveConsistency":
        every = [ArchivedOutput.from_row(r, tz) for r in rows]
        kept = [o for o in every if o.day is None or o.day <= report_date]
        return cls(report_date, kept, dict(unread or {}), len(every) - len(kept), read_at)

    def state_text(self) -> str:
        """Which archive state the report describes: when it was read, its batches and newest output."""
        when = f"as read at {_utc(self.read_at)}" if self.read_at else "as read for this report"
        if not self.outputs:
            return f"The archive {when} held no restored image."
        batches = len({o.batch for o in self.outputs})
        newest = max((o.upscaled_at for o in self.outputs if o.upscaled_at), default=None)
        return (f"The archive {when}: {_count(len(self.outputs), 'restored image')} in {batches:,} "
                f"batch{'' if batches == 1 else 'es'}" + (f", the newest restored {_utc(newest)}." if newest else "."))

    @property
    def week_start(self) -> date:
        return self.report_date - timedelta(days=WEEK_DAYS - 1)

    def this_week(self) -> list[ArchivedOutput]:
        """The outputs restored in the last 7 days (:meth:`span`), not the report date's ISO week."""
        return [o for o in self.outputs if o.day is not None and self.week_start <= o.day <= self.report_date]

    def span(self) -> str:
        """The days :meth:`this_week` covers, as the sentences name them."""
        return f"in the last 7 days ({self.week_start.isoformat()} to {self.report_date.isoformat()})"

    def flagged(self, outputs: list[ArchivedOutput] | None = None) -> list[ArchivedOutput]:
        """The flagged outputs (default: the whole archive), worst first."""
        chosen = self.outputs if outputs is None else outputs
        return sorted((o for o in chosen if o.flagged), key=lambda o: o.severity, reverse=True)

    def worst(self, n: int = WORST_SHOWN) -> list[ArchivedOutput]:
        """The last 7 days' flagged outputs, worst first, at most ``n``."""
        return self.flagged(self.this_week())[:n]

    def weekly(self, weeks: int = WEEKS_SHOWN) -> WeeklyShares:
        """Counts per ISO week and field camera, from the first dated output's week (at most ``weeks``
        weeks back) to the report's week."""
        dated = [o for o in self.outputs if o.day is not None]
        if not dated:
            return WeeklyShares([], [], {})
        last = _monday(self.report_date)
        first = max(_monday(min(o.day for o in dated)), last - timedelta(weeks=weeks - 1))
        mondays = [first + timedelta(weeks=i) for i in range((last - first).days // 7 + 1)]
        counts: dict[tuple[date, str], Counts] = {}
        for o in dated:
            week = _monday(o.day)
            if week >= first:
                for camera in (o.camera, ALL_CAMERAS):
                    counts.setdefault((week, camera), Counts()).add(o)
        cameras = sorted({o.camera for o in dated if _monday(o.day) >= first})
        return WeeklyShares(mondays, cameras, counts)

    def many_flagged_text(self, fitted: bool = True) -> str:
        """What a high flagged share in the last 7 days can mean ("" below :data:`MANY_FLAGGED` or with nothing checked).
        ``fitted``: the limits were fitted on calibration pairs (else they are built-in defaults)."""
        week = Counts()
        for o in self.this_week():
            week.add(o)
        if week.share is None or week.share < MANY_FLAGGED:
            return ""
        share = f"{_images_share(week)} of the checked images restored {self.span()} are flagged"
        if not fitted:
            return (f"{share}. No calibration pairs fitted the limits they "
                    "were judged by (built-in defaults), so this share says little about invented detail until "
                    "calibration pairs are uploaded and an evaluation fits limits to this camera.")
        return (f"{share}. The limits were set beyond the worst of the "
                "calibration outputs, whose true error was measured, so these images disagree with what the camera "
                "recorded (seen through the camera model) more than any of those did: the student may be inventing "
                "detail on them, or they may be unlike the calibration pairs (other scenes, lighting or "
                "compression). If their maps show no invented detail, upload calibration pairs that resemble these "
                "images: the next evaluation fits limits to them, and later restorations are judged by those.")

    def manager_line(self) -> str:
        """The plain-language line for the headline (markdown: only ``**bold**``)."""
        return "**Consistency with the camera.** " + self.manager_text()

    def manager_text(self) -> str:
        """How many of the images restored in the last 7 days need a person's look, in plain words."""
        if not self.outputs and self.unread:
            n = len(self.unread)
            return (f"{n:,} archive {'batch' if n == 1 else 'batches'} could not be read "
                    "(listed below with what to do), so no restored image could be counted.")
        if not self.outputs:
            return "No image has been restored into the archive yet, so none has been checked."
        week = Counts()
        for o in self.this_week():
            week.add(o)
        span = self.span()
        if not week.total:
            older = self.flagged()
            return f"No image was restored {span}" + (
                f"; {_count(len(older), 'earlier image')} in the archive {_be(len(older))} still flagged "
                f"for a person's look ({SEE_LIST})." if older else ".")
        if not week.measured:
            return (f"{_count(week.total, 'image')} restored {span} {_be(week.total, past=True)} not checked "
                    f"against the camera ({NOT_MEASURED_WHY}).")
        checked = _count(week.measured, ("checked " if week.not_measured else "") + "image")
        if week.flagged:
            names = [o.source_name for o in self.flagged(self.this_week())]
            shown = ", ".join(names[:NAMED_MAX]) + (f" and {len(names) - NAMED_MAX} more" if len(names) > NAMED_MAX else "")
            text = (f"{week.flagged:,} of {checked} restored {span} {'needs' if week.flagged == 1 else 'need'} "
                    f"a person's look ({shown}); {SEE_LIST}.")
        else:
            text = (f"None of the {checked} restored {span} needs a person's look: "
                    f"{'it agrees' if week.measured == 1 else 'each one agrees'} with what the camera recorded.")
        if week.not_measured:
            text += (f" {week.not_measured:,} more {_be(week.not_measured, past=True)} not checked "
                     f"({NOT_MEASURED_WHY}).")
        return text


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _be(n: int, past: bool = False) -> str:
    return ("was" if n == 1 else "were") if past else ("is" if n == 1 else "are")


def link_list(text_html: str) -> str:
    """The manager line's "see the list" as a link to the list in the page."""
    return text_html.replace(SEE_LIST, "<a href='#consistency-flagged'>see the list</a>")


# --- pictures and tables --------------------------------------------------------------------------

def _images_share(c: Counts) -> str:
    """The flagged share of ``c``'s checked images, one decimal rounded half up as every figure here (1 of 16 is
    6.3%); 100.0% only when all are, 0.0% only when none is (1 of 3000 is <0.1%)."""
    percent_ = 100 * (c.share or 0.0)
    if c.flagged and percent_ < 0.05:
        return "<0.1%"
    text = fixed(percent_, 1)
    return ("99.9" if c.flagged < c.measured and text == "100.0" else text) + "%"


def _share_text(c: Counts, markdown: bool = False) -> str:
    if not c.total:
        return "-" if markdown else "&ndash;"
    text = "not measured" if c.share is None else f"{_images_share(c)} ({c.flagged} of {c.measured})"
    if c.share is not None and c.not_measured:
        text += f", {c.not_measured} not measured"
    return text


def weekly_trend_png(weekly: WeeklyShares) -> bytes | None:
    """The flagged share (%) per week, a line per field camera and one for all; None with nothing measured."""
    series = [(camera, [weekly.cell(w, camera).share for w in weekly.weeks]) for camera in [*weekly.cameras, ALL_CAMERAS]]
    if all(s is None for _, shares in series for s in shares):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    for camera, shares in series:
        if any(s is not None for s in shares):  # NaN breaks the line where a week measured nothing
            style = {"color": "black", "linestyle": "--"} if camera == ALL_CAMERAS else {}
            ax.plot([math.nan if s is None else 100 * s for s in shares], marker="o", label=camera, **style)
    ax.set_xticks(range(len(weekly.weeks)))
    ax.set_xticklabels([iso_week(w) for w in weekly.weeks], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("flagged (%)")
    ax.set_title("Share of restored images that need a person's look, per ISO week", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure_png(fig)


def weekly_table_html(weekly: WeeklyShares) -> str:
    esc = html.escape
    columns = [*weekly.cameras, ALL_CAMERAS]
    parts = ["<table id='consistency-weekly'><tr><th>ISO week (from Monday)</th>"
             + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"]
    for week in reversed(weekly.weeks):
        parts.append(f"<tr><td>{iso_week(week)} ({week.isoformat()})</td>"
                     + "".join(f"<td>{_share_text(weekly.cell(week, c))}</td>" for c in columns) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def weekly_markdown(archive: ArchiveConsistency | None) -> str:
    """The per-week, per-camera flagged share as markdown (for the Dagster UI); "" without outputs."""
    weekly = archive.weekly() if archive is not None else WeeklyShares([], [], {})
    if not weekly.weeks:
        return ""
    columns = [*weekly.cameras, ALL_CAMERAS]
    out = ["**Consistency with the camera**: share of restored images flagged `check`, per ISO week", "",
           "| ISO week | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for week in reversed(weekly.weeks):
        out.append(f"| {iso_week(week)} | " + " | ".join(_share_text(weekly.cell(week, c), True) for c in columns) + " |")
    return "\n".join(out)


def _fmt(x: float | None, digits: int, kept: int | None = None) -> str:
    """``x`` rounded half up as :func:`fixed` does (``kept``: the decimals its record keeps), so an image's
    figures read as its verdict's reason gives them and a limit as the reason's "(limit ...)"."""
    return "&ndash;" if x is None else fixed(x, digits, kept)


def _pixels_share(out: ArchivedOutput) -> str:
    """The share of input pixels ``out`` contradicts, as its verdict's reason says it."""
    return "&ndash;" if out.flagged_share is None else percent(out.flagged_share)


def _map_html(out: ArchivedOutput) -> str:
    esc = html.escape
    if out.map_file is None:
        return "<p class='note'>No heat map was written for this image.</p>"
    try:
        png = out.map_file.read_bytes()
    except OSError:
        return f"<p class='note'>Heat map not found: {esc(out.map_ref or str(out.map_file))}</p>"
    return (f"<figure><img class='map' alt='consistency map of {esc(out.source_name)}' src='{png_data_uri(png)}'>"
            f"<figcaption>{esc(out.map_ref or out.map_file.name)}</figcaption></figure>")


def _day(out: ArchivedOutput) -> str:
    return out.day.isoformat() if out.day else "&ndash;"


def worst_html(archive: ArchiveConsistency, n: int = WORST_SHOWN) -> str:
    """The last 7 days' worst flagged images, each with its figures, reasons and heat map."""
    esc = html.escape
    worst = archive.worst(n)
    flagged_week = len(archive.flagged(archive.this_week()))
    if not worst:
        return f"<p class='note'>No image restored {archive.span()} was flagged.</p>"
    shown = ("the one shown, with the share of input pixels it contradicts" if len(worst) == 1 else
             f"the {len(worst)} worst shown, by the share of input pixels they contradict, then by the largest "
             "disagreement")
    intro = (f"<p class='note'>{flagged_week} flagged {archive.span()}; {shown}. Bright regions on a map are where the "
             "restored image disagrees with what the camera recorded: distrust detail there.</p>")
    items = []
    for o in worst:
        items.append(
            f"<div class='flagged'><h4>{esc(o.source_name)} <span class='note'>(batch {esc(o.batch)}, camera "
            f"{esc(o.camera)}, restored {_day(o)})</span></h4><p>{esc(o.reasons or 'no reason recorded')}. "
            f"Flagged share {_pixels_share(o)}, largest disagreement {_fmt(o.peak, 0, PEAK_DECIMALS)} levels, "
            f"consistency PSNR-Y {_fmt(o.psnr_y, 1, PSNR_DECIMALS)} dB "
            f"(judged with {esc(o.model_camera or 'unknown camera model')}). "
            f"Output: <code>{esc(o.output_path)}</code></p>{_map_html(o)}</div>")
    return intro + "<div id='consistency-worst'>" + "".join(items) + "</div>"


def flagged_list_html(archive: ArchiveConsistency, limit: int = LISTED_MAX) -> str:
    """Every flagged image up to the report date, newest first (nothing flagged is hidden)."""
    esc = html.escape
    flagged = sorted(archive.flagged(), key=lambda o: (o.day or date.min, o.severity), reverse=True)
    if not flagged:
        return ""
    rows = "".join(f"<tr><td>{_day(o)}</td><td>{esc(o.batch)}</td><td>{esc(o.source_name)}</td><td>{esc(o.camera)}</td>"
                   f"<td>{_pixels_share(o)}</td><td>{_fmt(o.peak, 0, PEAK_DECIMALS)}</td>"
                   f"<td class='detail'>{esc(o.reasons)}</td><td class='detail'>{esc(o.output_path)}</td></tr>"
                   for o in flagged[:limit])
    more = (f"<p class='note'>{len(flagged) - limit} older flagged images are not listed here; the archive "
            "manifests list every one.</p>" if len(flagged) > limit else "")
    every = "The one flagged image" if len(flagged) == 1 else f"All {len(flagged)} flagged images"
    return (f"<details><summary>{every} in the archive, newest first</summary>"
            "<table id='consistency-flagged-all'><tr><th>restored</th><th>batch</th><th>image</th><th>camera</th>"
            "<th>flagged share</th><th>largest disagreement (levels)</th><th class='detail'>reasons</th>"
            f"<th class='detail'>output</th></tr>{rows}</table>{more}</details>")


# --- the engineering view of the fitted thresholds ---------------------------------------------------

_THRESHOLD_COLUMNS = (("pixel", "pixel (levels)", 1), ("peak", "peak (levels)", 1), ("share", "share", 4),
                      ("psnr", "PSNR-Y (dB)", 1), ("colour", "colour (levels)", 1),
                      ("local_floor", "local floor (levels)", 2), ("local_slope", "local slope", 4),
                      ("local_peak", "local (x)", 2), ("border_peak", "edge ring (x)", 2))


def _limit_cell(key: str, limits: dict[str, Any], digits: int) -> str:
    """A threshold in the engineers' table. The local limits read "off" where ``local_peak`` is 0 or less (files
    fitted before them); a ring limit of 0 means the inside's applies there too."""
    value = _number(limits.get(key))
    if key in ("local_floor", "local_slope", "local_peak", "border_peak"):
        inside = _number(limits.get("local_peak"))
        if inside is not None and inside <= 0:  # the check applies it only above 0
            return "off"
        if key == "border_peak" and not value:
            value = inside
    return _fmt(value, digits)


def _spearman(entry: dict[str, Any]) -> float | None:
    fit = entry.get("fit") if isinstance(entry.get("fit"), dict) else {}
    for value in (entry.get("spearman"), fit.get("spearman_consistency_vs_true_psnr"), fit.get("spearman")):
        if _number(value) is not None:
            return _number(value)
    return None


def _pairs(entry: dict[str, Any]) -> float | None:
    fit = entry.get("fit") if isinstance(entry.get("fit"), dict) else {}
    return _number(entry.get("pairs", fit.get("pairs")))


def _fit_rows(fitted: dict[str, Any], cameras: Iterable[str], camera: str | None) -> list[tuple[str, Any]]:
    """(label, entry) per field camera (``camera``, the report's, else the fit's and ``cameras``): its own
    entry, else the ``all`` one, which says it was fitted on all cameras' pairs; then, in every camera's
    report, the ``all`` entry for the other cameras where no row shows it."""
    fallback = fitted.get(FIT_ALL)
    rows = []
    for name in sorted({str(k) for k in fitted if k != FIT_ALL} | ({camera} if camera else set(cameras))):
        if name in fitted:
            rows.append((name, fitted[name]))
        elif fallback is not None:  # one camera's evaluation fits `all` on that camera's pairs alone
            rows.append((name if name == camera else f"{name} (fitted on all cameras' pairs)", fallback))
    if fallback is not None and camera is None and all(entry is not fallback for _, entry in rows):
        rows.append(("other cameras (fitted on all cameras' pairs)", fallback))
    return rows


def fit_html(fit: Any, cameras: Iterable[str] = (), camera: str | None = None) -> str:
    """``summary["consistency"]`` as a short table: per field camera (:func:`_fit_rows`), its pairs, the
    Spearman correlation of consistency against true error on them, and its thresholds (in ``thresholds`` or
    flat in the entry), then the fit's other plain fields; a note when it is absent, not available or has no
    cameras."""
    esc = html.escape
    if not isinstance(fit, dict) or not fit:
        return ("<p class='note'>This evaluation fitted no consistency thresholds; the archive's verdicts use the "
                "thresholds stored with the model that restored each image.</p>")
    if fit.get("available") is False:
        return f"<p class='note'>Consistency thresholds not fitted: {esc(str(fit.get('reason')))}</p>"
    fitted = fit.get("cameras") if isinstance(fit.get("cameras"), dict) else {}
    notes = [f"{esc(str(k).replace('_', ' '))}: {esc(str(v))}" for k, v in fit.items()  # no file paths on the page
             if k not in ("cameras", "available", "path") and isinstance(v, (str, int, float)) and not isinstance(v, bool)]
    if not fitted:
        return "<p class='note'>" + ("; ".join(notes) or "The consistency fit recorded no cameras.") + "</p>"
    head = "".join(f"<th>{label}</th>" for _, label, _ in _THRESHOLD_COLUMNS)
    rows = []
    for label, entry in _fit_rows(fitted, cameras, camera):
        entry = entry if isinstance(entry, dict) else {}
        limits = entry["thresholds"] if isinstance(entry.get("thresholds"), dict) else entry
        cells = "".join(f"<td>{_limit_cell(key, limits, digits)}</td>" for key, _, digits in _THRESHOLD_COLUMNS)
        pairs = _pairs(entry)
        rows.append(f"<tr><td>{esc(label)}</td><td>{'&ndash;' if pairs is None else int(pairs)}</td>"
                    f"<td>{_fmt(_spearman(entry), 2)}</td>{cells}<td class='detail'>{esc(str(entry.get('source', '')))}</td></tr>")
    return ("<table id='consistency-fit'><tr><th>camera</th><th>pairs</th><th>Spearman (consistency vs true "
            f"error)</th>{head}<th class='detail'>source</th></tr>{''.join(rows)}</table>"
            "<p class='note'>An output is flagged when it breaks any limit: a smoothed residual above <i>peak</i>, "
            "more than <i>share</i> of its input pixels above <i>pixel</i>, a consistency PSNR-Y below <i>PSNR-Y</i>, "
            "a mean colour shift above <i>colour</i>, or a region that disagrees more than the <i>local</i> figure "
            "times what the input's local structure explains (<i>local floor</i> + <i>local slope</i> x the input's "
            "local gradient, in levels), or the <i>edge ring</i> figure times on the outermost pixel ring (equal to "
            "<i>local</i> where the ring has no limit of its own). The local columns read off for limits fitted before "
            "that check existed. Each limit is set beyond the worst of the calibration outputs, whose true "
            "error was measured: a flagged image disagrees with its input, on that measure, more than any of them "
            "did. Spearman near 1: images less consistent with the "
            "camera were the ones further from the truth on the calibration pairs.</p>"
            + (f"<p class='note'>{'; '.join(notes)}</p>" if notes else ""))


# --- the section -----------------------------------------------------------------------------------

def section_html(archive: ArchiveConsistency | None, fit: Any = None, worst: int = WORST_SHOWN,
                 camera: str | None = None) -> str:
    """``<section id='consistency'>``: the managers' line and list first, the engineers' tables after;
    ``camera``: the report's field camera (None: every camera's report)."""
    esc = html.escape
    parts = ["<section id='consistency'><h2>Consistency with the camera</h2>"]
    if archive is None:
        parts.append("<p class='note'>The archive was not read for this report.</p>")
    else:
        parts.append(f"<p>{link_list(esc(archive.manager_text()))} An image is flagged <code>check</code> when the camera model, applied to the "
                     "restored image, does not give back what the camera recorded: some of its detail may be "
                     "invented. The archive keeps every flagged image; each counts once, in the ISO week it was last restored.</p>")
        if many := archive.many_flagged_text(isinstance(fit, dict) and fit.get("available") is True):
            parts.append(f"<p id='many-flagged'>{esc(many)}</p>")
        parts.append(f"<p class='note' id='archive-state'>{esc(archive.state_text())}</p>")
        parts += [f"<p class='note'>Batch {esc(b)} skipped: {esc(why)}</p>" for b, why in archive.unread.items()]
        if archive.later:
            parts.append(f"<p class='note'>{_count(archive.later, 'image')} restored after "
                         f"{archive.report_date.isoformat()} {_be(archive.later)} left out.</p>")
        weekly = archive.weekly()
        if weekly.weeks:
            plot = weekly_trend_png(weekly)
            parts.append("<h3>Share flagged per field camera and ISO week</h3>" + weekly_table_html(weekly)
                         + (f"<img class='plot' id='consistency-trend' alt='share flagged per week' "
                            f"src='{png_data_uri(plot)}'>" if plot else
                            f"<p class='note'>Nothing measured yet: every image was {NOT_MEASURED_WHY}.</p>"))
        parts.append(f"<h3 id='consistency-flagged'>Images restored {esc(archive.span())} that need a person's look, "
                     "worst first</h3>"
                     + worst_html(archive, worst) + flagged_list_html(archive))
    parts.append("<h3>For engineers: consistency thresholds fitted on the calibration pairs</h3>"
                 + fit_html(fit, sorted({o.camera for o in archive.outputs}) if archive else (), camera)
                 + "</section>")
    return "".join(parts)
