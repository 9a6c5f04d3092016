"""The weekly evaluation report: one standalone HTML page for management first, engineers second.

It opens with a plain-language summary (how much better than plain enlargement, in dB and in
LPIPS; this week against the last reports; whether the new model was promoted and why), then the
tables (per method, the learned downsampler's LR realism, the promotion gate), a trend plot across
past reports, side-by-side crops for the best, median and worst images, and the per-image table.
Everything is inline (base64 PNGs, no scripts, no external files), so the page can be mailed.

The input is the ``summary`` dict that :mod:`sr_pipeline.evaluation.calibration` writes as ``summary.json``
plus the in-memory :class:`~sr_pipeline.sr.judge.scoring.Scores`; past reports are read back from their
``summary.json`` files. Every metric column comes from the registry (:mod:`.scoring`). The same
tables make the plain benchmark page of ``sr-pipeline evaluate`` (:func:`render_benchmark_page`).
Rendering only: the caller writes the files. No Dagster import here.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from sr_pipeline.evaluation.consistency_page import ArchiveConsistency, link_list, section_html, weekly_markdown
from sr_pipeline.sr.images.figures import figure_png, figures_html, grid_png, png_data_uri
from sr_pipeline.sr.judge.scoring import Scores, metric, metrics
from sr_pipeline.sr.judge.wording import compare, count, model_label, readable_time

SUMMARY_FILE = "summary.json"
CROP_METHODS = ("bicubic", "teacher", "candidate", "promoted")
CAMERALESS_ROLES = ("teacher", "challenger")

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}.sub{color:#555;margin-top:0}section{margin:1.5em 0}
#headline{background:#f3f7fb;border-left:5px solid #3a78b5;padding:.6em 1.2em}
#headline.fail{border-left-color:#b5473a;background:#fbf4f3}#headline li{margin:.35em 0}
table{border-collapse:collapse;margin:.8em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}td.pass{color:#1b6e2d}td.detail,th.detail{text-align:left}td.fail{color:#a32a1d;font-weight:600}
figure{display:inline-block;margin:4px;text-align:center}figure img{width:150px;height:150px;
image-rendering:pixelated}img.plot{max-width:100%}.note{color:#555}
img.map{width:auto;height:auto;max-width:320px;image-rendering:auto}div.flagged{border-top:1px solid #ddd}"""


# --- history --------------------------------------------------------------------------------------

def load_history(reports_dir: Path, exclude: Path | None = None) -> list[dict[str, Any]]:
    """Past reports' summaries (``<reports>/<date>[-n]/summary.json``), oldest first.

    Unreadable or foreign files are skipped; temp folders (names starting with ``.``) are ignored.
    """
    reports_dir = Path(reports_dir)
    found = []
    if not reports_dir.is_dir():
        return found
    for path in reports_dir.glob(f"*/{SUMMARY_FILE}"):
        if path.parent.name.startswith(".") or (exclude is not None and path.parent == Path(exclude)):
            continue
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(summary, dict) and summary.get("report_date") and "methods" in summary:
            found.append(summary)
    found.sort(key=lambda s: (str(s["report_date"]), str(s.get("created", ""))))
    return found


# --- numbers the summary is written from ------------------------------------------------------------

def _metric(summary: dict[str, Any], method: str | None, key: str) -> float | None:
    if method is None:
        return None
    value = summary.get("methods", {}).get(method, {}).get(key)
    return None if value is None or not math.isfinite(value) else float(value)


def gains(summary: dict[str, Any], method: str | None = None) -> dict[str, float | None]:
    """PSNR-Y gain (dB) and LPIPS drop of ``method`` (default: the served model) over bicubic."""
    method = method or summary.get("served")
    psnr, base_psnr = _metric(summary, method, "psnr_y"), _metric(summary, "bicubic", "psnr_y")
    lp, base_lp = _metric(summary, method, "lpips"), _metric(summary, "bicubic", "lpips")
    return {
        "psnr_gain_db": None if psnr is None or base_psnr is None else psnr - base_psnr,
        "lpips": lp,
        "lpips_bicubic": base_lp,
        "lpips_drop": None if lp is None or base_lp is None else base_lp - lp,
        "lpips_drop_pct": None if lp is None or not base_lp else 100.0 * (base_lp - lp) / base_lp,
    }


def headline_gain(summary: dict[str, Any], method: str | None = None) -> tuple[float | None, str]:
    """The PSNR-Y gain over bicubic (dB) of ``method`` (default: the served model) that the headline leads
    with, and its statistic: the median per image (``per_image_gain``), else, for summaries written before
    it was kept, the mean (the difference of the mean PSNR-Y). The trend sentence and plot use the same."""
    method = method or summary.get("served")
    spread = (summary.get("per_image_gain") or {}).get(method) if method else None
    median = spread.get("median_db") if isinstance(spread, dict) else None
    if isinstance(median, (int, float)) and math.isfinite(median):
        return float(median), "median"
    return gains(summary, method)["psnr_gain_db"], "mean"


def _signed(x: float, digits: int = 2) -> str:
    return f"{x:+.{digits}f}"


def model_name(summary: dict[str, Any], role: str) -> str:
    """The readable name of a role's model (camera, training date, short id), never a raw id or a path."""
    info = summary.get("models", {}).get(role) or {}
    # The teacher and the fixed-degradation challenger serve every camera: they are nobody's own.
    camera = None if role in CAMERALESS_ROLES else summary.get("camera")
    return model_label(info.get("version"), summary.get("labels", {}).get(role, role), camera)


def gain_spread(rows: list[dict[str, Any]], method: str, tolerances: dict[str, float] | None = None
                ) -> dict[str, Any] | None:
    """Per image, ``method`` against bicubic: the median and mean PSNR-Y gain (dB), on how many images
    it is better by the wording rule (:func:`~sr_pipeline.sr.judge.wording.compare`, PSNR-Y and LPIPS), and
    the worst image by PSNR-Y gain. None when the rows hold no such images."""
    base = {r["image"]: r for r in rows if r["method"] == "bicubic"}
    mine = [r for r in rows if r["method"] == method and r["image"] in base]
    gains_db = [(r["image"], r["psnr_y"] - base[r["image"]]["psnr_y"]) for r in mine
                if r.get("psnr_y") is not None and math.isfinite(r["psnr_y"] - base[r["image"]]["psnr_y"])]
    if not gains_db:
        return None
    keys = ("psnr_y", "lpips")
    better = sum(compare({k: r.get(k) for k in keys}, {k: base[r["image"]].get(k) for k in keys},
                         tolerances).verdict == "better" for r in mine)
    worst = min(gains_db, key=lambda x: x[1])
    values = [g for _, g in gains_db]
    return {"median_db": float(np.median(values)), "mean_db": float(np.mean(values)), "better": int(better),
            "images": len(mine), "worst_image": worst[0], "worst_db": float(worst[1])}


def _quality_line(summary: dict[str, Any], shown: str, who: str, g: dict[str, float | None]) -> str:
    n = summary.get("pairs", 0)
    source = f"field camera {summary['camera']}" if summary.get("camera") else "the plant's field cameras"
    spread = (summary.get("per_image_gain") or {}).get(shown)
    tol = _tolerances(summary)
    said = compare({"psnr_y": _metric(summary, shown, "psnr_y"), "lpips": _metric(summary, shown, "lpips")},
                   {"psnr_y": _metric(summary, "bicubic", "psnr_y"), "lpips": _metric(summary, "bicubic", "lpips")},
                   tol)
    if spread:
        text = (f"**Image quality.** On {count(n, 'calibration pair')} from {source}, {who} gains a median "
                f"{_signed(spread['median_db'])} dB PSNR-Y over plain enlargement and is better on "
                f"{spread['better']} of {count(spread['images'], 'image')} (mean {_signed(spread['mean_db'])} dB; worst image "
                f"{spread['worst_image']}, {_signed(spread['worst_db'])} dB). Over all pairs "
                f"{said.sentence('it', 'plain enlargement')}")
    else:
        text = (f"**Image quality.** On {count(n, 'calibration pair')} from {source}, "
                f"{said.sentence(who, 'plain enlargement')}")
    text += (f": PSNR-Y {_metric(summary, shown, 'psnr_y'):.2f} dB against "
             f"{_metric(summary, 'bicubic', 'psnr_y'):.2f} dB (higher is better)")
    if g["lpips"] is not None and g["lpips_bicubic"] is not None:
        text += f", LPIPS {g['lpips']:.3f} against {g['lpips_bicubic']:.3f} (lower is better)."
    else:
        text += f". LPIPS was not measured: {summary.get('lpips', {}).get('reason')}."
    return text


def _tolerances(summary: dict[str, Any]) -> dict[str, float]:
    t = (summary.get("gate") or {}).get("thresholds") or {}
    return {k: v for k, v in (("psnr_y", t.get("psnr_tolerance_db")), ("lpips", t.get("lpips_tolerance")))
            if v is not None}


def headline(summary: dict[str, Any], history: list[dict[str, Any]],
             archive: ArchiveConsistency | None = None) -> list[str]:
    """The plain-language summary, one short paragraph per topic (markdown: only ``**bold**``); with
    the archive, how many of the images restored in the last 7 days need a person's look. Every
    comparison is worded by :func:`~sr_pipeline.sr.judge.wording.compare`."""
    lines = []
    served = summary.get("served")
    shown = served or "candidate"  # with no model in use, describe the rejected candidate
    who = f"the model now in use ({model_name(summary, served)})" if served else \
        f"the {model_name(summary, 'candidate')} (not in use)"
    g = gains(summary, shown)
    n = summary.get("pairs", 0)
    if g["psnr_gain_db"] is None:
        lines.append("**Image quality.** No model could be compared with plain enlargement on the "
                     f"{count(n, 'calibration pair')}.")
    else:
        lines.append(_quality_line(summary, shown, who, g))

    # the same statistic as the image-quality line (the median gain per image, where kept)
    previous = [h for h in history if headline_gain(h)[0] is not None]
    gain, stat = headline_gain(summary, shown)
    if not history:
        lines.append("**Trend.** This is the first report; later reports will be compared with it.")
    elif not previous or g["psnr_gain_db"] is None or gain is None:
        lines.append(f"**Trend.** {count(len(history), 'earlier report')}, none with a comparable model.")
    else:
        last = previous[-1]
        lg = gains(last)
        last_gain, last_stat = headline_gain(last)
        # the gains as printed (2 decimals), so the difference said is the difference of the figures shown
        said = compare({"psnr_y": round(gain, 2), "lpips": g["lpips"]},
                       {"psnr_y": round(last_gain, 2), "lpips": lg["lpips"]}, _tolerances(summary),
                       labels={"psnr_y": f"{_stat_word(stat)}PSNR-Y gain"})
        text = (f"**Trend.** Last report ({last['report_date']}, {count(last.get('pairs') or 0, 'pair')}): "
                f"{_stat_word(last_stat)}{_signed(last_gain)} dB over plain enlargement; this report: "
                f"{_stat_word(stat)}{_signed(gain)} dB. {said.sentence('This report', 'the last')}")
        if lg["lpips_drop_pct"] is not None and g["lpips_drop_pct"] is not None:
            text += (f"; LPIPS {abs(g['lpips_drop_pct']):.0f}% {'lower' if g['lpips_drop_pct'] >= 0 else 'higher'} "
                     f"than plain enlargement (last time {abs(lg['lpips_drop_pct']):.0f}% "
                     f"{'lower' if lg['lpips_drop_pct'] >= 0 else 'higher'})")
        text += "."
        if last.get("pairs") != summary.get("pairs"):
            text += " The calibration set changed in between, so part of the difference is the images."
        best = max(previous, key=lambda h: headline_gain(h)[0])
        if len(previous) > 1:
            best_gain, best_stat = headline_gain(best)
            text += (f" Best of {len(previous)} earlier reports: {_stat_word(best_stat)}{_signed(best_gain)} dB "
                     f"({best['report_date']}).")
        lines.append(text)

    gate = summary.get("gate") or {}
    lines.append("**Promotion.** " + gate.get("plain", "The promotion gate did not run."))
    duel = gate.get("challenge")
    if duel and duel.get("winner") == "candidate":  # another winner is already named in the promotion line
        title = ("With and without fit pairs, against the fixed degradation" if "unpaired" in (duel.get("roles") or [])
                 else "Learned camera model against the fixed degradation")
        lines.append(f"**{title}.** " + duel["message"])

    speed = []
    for role in (served_role(summary), "teacher"):
        s = summary.get("methods", {}).get(role)
        if s and s.get("mp_per_s"):
            speed.append(f"{summary.get('labels', {}).get(role, role)}: {s['ms_per_image']:.0f} ms per image "
                         f"({s['mp_per_s']:.3g} megapixels of output per second)")
    if speed:
        lines.append(f"**Speed** on {summary.get('device', 'this machine')}: " + "; ".join(speed) + ".")

    sentence = realism_sentence(summary)
    if sentence:
        lines.append(f"**Camera model.** {sentence}")
    if archive is not None:
        lines.append(archive.manager_line())
    return lines


def _stat_word(stat: str) -> str:
    """``median `` before a median gain; nothing before the mean of older summaries (as they were worded)."""
    return "median " if stat == "median" else ""


def _md_to_html(text: str) -> str:
    return link_list(re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text)))


# --- pictures -------------------------------------------------------------------------------------

def trend_gain_title(stats: set[str]) -> str:
    """The gain plot's title, naming its statistic (the headline's: :func:`headline_gain`)."""
    if stats <= {"median"}:
        return "median PSNR-Y gain per image over plain enlargement (dB, higher is better)"
    if stats == {"mean"}:
        return "mean PSNR-Y gain over plain enlargement (dB, higher is better)"
    return "PSNR-Y gain over plain enlargement (dB; median per image, mean for older reports)"


def trend_png(history: list[dict[str, Any]], current: dict[str, Any]) -> bytes:
    """PSNR-Y gain over bicubic (the headline's statistic, :func:`headline_gain`, named in the title) and
    LPIPS, per report (past ones plus the current), as a PNG: the new student, the teacher, the promoted
    student where it stayed in use, and bicubic's LPIPS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = [*history, current]
    labels = [str(r["report_date"]) for r in reports]
    x = list(range(len(reports)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    series = [("new student", lambda r: "candidate"), ("teacher", lambda r: "teacher"),
              ("promoted student (in use)", lambda r: "promoted" if r.get("served") == "promoted" else None)]
    stats = set()
    for name, pick in series:
        pts = [(i, gains(r, pick(r)), headline_gain(r, pick(r))) for i, r in zip(x, reports) if pick(r)]
        psnr = [(i, gain) for i, _, (gain, _) in pts if gain is not None]
        stats |= {stat for _, _, (gain, stat) in pts if gain is not None}
        lp = [(i, g["lpips"]) for i, g, _ in pts if g["lpips"] is not None]
        if psnr:
            ax1.plot(*zip(*psnr), marker="o", label=name)
        if lp:
            ax2.plot(*zip(*lp), marker="o", label=name)
    base = [(i, _metric(r, "bicubic", "lpips")) for i, r in zip(x, reports)]
    base = [(i, v) for i, v in base if v is not None]
    if base:
        ax2.plot(*zip(*base), marker="o", linestyle="--", color="grey", label="plain enlargement")
    ax1.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    ax1.set_title(trend_gain_title(stats), fontsize=9)
    ax2.set_title("LPIPS (lower is better)", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return figure_png(fig)


def served_role(summary: dict[str, Any]) -> str:
    """The model the report is about: the one in use when it was scored (the promoted student an operator kept in
    use over the gate's choice), else the one the gate judged and serves (the winner of its comparison with the
    unpaired twin and the fixed-degradation challenger), else the new student."""
    if summary.get("served") in (summary.get("methods") or {}):
        return summary["served"]
    duel = (summary.get("gate") or {}).get("challenge") or {}
    winner = duel.get("winner")
    return winner if winner in (summary.get("methods") or {}) else "candidate"


def ranked_images(scores: Scores, focus: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(label, row) for the best, median and worst image of ``focus`` (default, or when it was not scored: the
    candidate, else the first model) by PSNR-Y gain over bicubic (by PSNR-Y when the focus is bicubic itself)."""
    focus = focus if focus in scores.methods else next((m for m in ("candidate", "promoted", "teacher") if m in scores.methods),
                          next((m for m in scores.methods if m != "bicubic"), "bicubic"))
    bicubic = {r["image"]: r["psnr_y"] if focus != "bicubic" else 0.0 for r in scores.rows if r["method"] == "bicubic"}
    ranked = sorted((r for r in scores.rows if r["method"] == focus),
                    key=lambda r: r["psnr_y"] - bicubic[r["image"]], reverse=True)
    picks = [("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])]
    return [(label, {**row, "gain": row["psnr_y"] - bicubic[row["image"]]}) for label, row in picks]


def crop_columns(scores: Scores, image: str, methods: list[str] | tuple[str, ...] | None = None,
                 labels: dict[str, str] | None = None) -> list[tuple[str, np.ndarray]]:
    """LR | the methods (default: all, in order) | HR crops of one image, with their captions."""
    lr, hr = scores.refs[image]
    labels = labels or {}
    chosen = [m for m in (methods or scores.methods) if m in scores.crops[image]]
    return [("LR (field camera)", lr), *((labels.get(m, m), scores.crops[image][m]) for m in chosen),
            ("HR (reference)", hr)]


def crop_strip_png(columns: list[tuple[str, np.ndarray]], size: int = 112) -> bytes:
    """One PNG of the crops side by side under their captions (for Dagster metadata)."""
    return grid_png([[img for _, img in columns]], cell=size, pad=4, labels=[c for c, _ in columns])


# --- tables (one column per registered metric) --------------------------------------------------------

def fmt(x: Any, digits: int) -> str:
    """A number for HTML: fixed digits, an en dash for missing, infinity as the sign."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "&ndash;"
    if isinstance(x, float) and math.isinf(x):
        return "&infin;"
    return f"{x:.{digits}f}"


def summary_table_html(summary: dict[str, Any], methods: list[str], labels: dict[str, str] | None = None) -> str:
    """``<table id='summary'>``: per method n, every metric's mean and median, ms/image, MP/s."""
    esc, labels = html.escape, labels or {}
    head = "".join(f"<th>{esc(m.heading)} mean</th><th>{esc(m.heading)} median</th>" for m in metrics())
    parts = [f"<table id='summary'><tr><th>method</th><th>n</th>{head}<th>ms / image</th><th>MP/s</th></tr>"]
    for name in methods:
        s = summary["methods"][name]
        cells = "".join(f"<td>{fmt(s.get(m.name), m.digits)}</td><td>{fmt(s.get('median', {}).get(m.name), m.digits)}</td>"
                        for m in metrics())
        parts.append(f"<tr><td>{esc(labels.get(name, name))}</td><td>{s['n']}</td>{cells}"
                     f"<td>{fmt(s['ms_per_image'], 1)}</td><td>{fmt(s['mp_per_s'], 2)}</td></tr>")
    parts.append("</table>")
    return "\n".join(parts)


def per_image_table_html(rows: list[dict[str, Any]], methods: list[str], labels: dict[str, str] | None = None) -> str:
    """``<table id='per-image'>``: one row per image, every metric of every method."""
    esc, labels = html.escape, labels or {}
    head = "".join(f"<th>{esc(labels.get(name, name))} {esc(m.label)}</th>" for name in methods for m in metrics())
    parts = [f"<table id='per-image'><tr><th>image</th>{head}</tr>"]
    by_key = {(r["image"], r["method"]): r for r in rows}
    for image in dict.fromkeys(r["image"] for r in rows):
        cells = "".join(f"<td>{fmt(by_key[(image, name)].get(m.name), m.digits)}</td>"
                        for name in methods for m in metrics())
        parts.append(f"<tr><td>{esc(image)}</td>{cells}</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def markdown_table(summary: dict[str, Any], methods: list[str], archive: ArchiveConsistency | None = None) -> str:
    """The per-method table as markdown (for the Dagster UI), then the archive's flagged share per
    camera and week when there is one."""
    labels = summary.get("labels", {})
    out = ["| method | " + " | ".join(m.heading for m in metrics()) + " | ms / image | MP/s |",
           "|---|" + "---|" * (len(metrics()) + 2)]
    for name in methods:
        s = summary["methods"][name]
        cells = " | ".join(m.text(s.get(m.name)) for m in metrics())
        out.append(f"| {labels.get(name, name)} | {cells} | {_txt(s['ms_per_image'], 1)} | {_txt(s['mp_per_s'], 2)} |")
    weekly = weekly_markdown(archive)
    return "\n".join(out + (["", weekly] if weekly else []))


def text_table(summary: dict[str, Any]) -> str:
    """The per-method table as plain text (the command line)."""
    lines = [f"{count(summary['pairs'], 'pair')}, split {summary['split']}, x{summary['scale']}",
             f"{'method':<20} " + " ".join(f"{m.label:>8}" for m in metrics()) + f" {'ms/img':>9} {'MP/s':>7}"]
    for name, s in summary["methods"].items():
        lines.append(f"{name:<20} " + " ".join(f"{m.text(s.get(m.name)):>8}" for m in metrics())
                     + f" {_txt(s['ms_per_image'], 1):>9} {_txt(s['mp_per_s'], 2):>7}")
    lines += [f"{need.upper()} unavailable: {summary[need]['reason']}" for need in _needs(summary)]
    return "\n".join(lines)


def _txt(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _needs(summary: dict[str, Any]) -> list[str]:
    """The models a metric needed that were unavailable in this scoring pass."""
    needs = dict.fromkeys(m.needs for m in metrics() if m.needs)
    return [n for n in needs if not summary.get(n, {}).get("available", False)]


def _unavailable_html(summary: dict[str, Any]) -> str:
    return "".join(f"<p class='note'>{html.escape(n.upper())} unavailable: {html.escape(str(summary.get(n, {}).get('reason')))}</p>"
                   for n in _needs(summary))


REALISM_ROLES = {"realism": "the camera model fitted with the camera's fit pairs",
                 "realism_unpaired": "the camera model learned without them"}
_BAND_WORDS = {"inside": "inside the target band", "too blurry": "too blurry", "too sharp": "too sharp",
               "not measured": "not measured"}


def realisms(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The measured camera models' paired realism, by summary key (``realism``: the candidate's G, with fit
    pairs when the camera has them; ``realism_unpaired``: its unpaired twin's)."""
    return {k: summary[k] for k in REALISM_ROLES if (summary.get(k) or {}).get("available")}


def _g_name(summary: dict[str, Any], key: str) -> str:
    n = (summary.get(key) or {}).get("fit_pairs")
    if key == "realism" and n:  # reports from before the count say "the camera's fit pairs"
        return f"the camera model fitted with the camera's {count(n, 'fit pair')}"
    return REALISM_ROLES[key] if "realism_unpaired" in realisms(summary) else "the learned camera model"


def _ratio(r: dict[str, Any], key: str = "learned") -> str:
    return _times(r.get(f"{key}_lap_ratio"))


def _times(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.2f}x"


_GRAIN = " (with the model's grain and compression, as the camera's images carry theirs)"


def _has_noise_free(r: dict[str, Any]) -> bool:
    """Whether the ratio judged is of G's LR with its noise (reports from before judged it noise-free)."""
    return r.get("learned_lap_ratio_noise_free") is not None


def realism_sentence(summary: dict[str, Any]) -> str | None:
    """One sentence a manager can read: how closely each camera model's LR of the gate pairs' HR images matches
    the camera's real LR (PSNR-Y, against plain shrinking's) and whether it blurs as much as the camera
    (fine-detail energy over the real LR's, median; 0.8-1.25x is the target band)."""
    found = realisms(summary)
    if not found:
        return None
    tol = _tolerances(summary)
    first = next(iter(found.values()))
    band = first.get("band") or [0.8, 1.25]
    parts = []
    for key, r in found.items():
        said = compare({"psnr_y": r["learned_psnr"]}, {"psnr_y": r["bicubic_psnr"]}, tol)
        how = {"better": "more closely than", "worse": "less closely than"}.get(said.verdict, "about as closely as")
        text = (f"{_g_name(summary, key)} imitates the field camera's real low-resolution images {how} plain "
                f"shrinking (PSNR-Y {r['learned_psnr']:.2f} against {r['bicubic_psnr']:.2f} dB, higher is closer)")
        if r.get("learned_lap_ratio") is not None:  # reports from before the ratio have PSNR-Y only
            text += (f" and keeps {_ratio(r)} of their fine detail{_GRAIN if _has_noise_free(r) else ''}, "
                     f"{_BAND_WORDS.get(r.get('sharpness', 'not measured'), r.get('sharpness'))}")
        parts.append(text)
    text = f"On {count(first['pairs'], 'gate pair')}, " + "; ".join(parts)
    if first.get("bicubic_lap_ratio") is None:
        return text + "."
    smoother = ("its images are smoother than the camera's, above it sharper or grainier" if _has_noise_free(first)
                else "the model blurs more than the camera, above it less")
    return (text + f" ({band[0]:g}-{band[1]:g}x is the target band: below it {smoother}; "
            f"plain shrinking keeps {_ratio(first, 'bicubic')}, "
            f"{_BAND_WORDS.get(first.get('bicubic_sharpness', 'not measured'), first.get('bicubic_sharpness'))}).")


def _realism_html(summary: dict[str, Any]) -> str:
    realism = summary.get("realism")
    if not realism:
        return "<p class='note'>No learned downsampler was evaluated.</p>"
    if not realism.get("available"):
        return f"<p class='note'>LR realism not measured: {html.escape(str(realism.get('reason')))}</p>"
    esc = html.escape
    m = metric(realism.get("metric", "psnr_y"))
    found = realisms(summary)
    table = [f"<table id='realism'><tr><th>LR made from the gate pairs' HR images by</th><th>{esc(m.heading)} against "
             "the real LR (mean)</th><th>fine-detail (Laplacian) energy over the real LR's (median; G with its "
             "noise and compression)</th><th>target band</th><th>the same, G without noise</th></tr>"]
    for key, r in found.items():
        label = {"realism": "G(HR), fitted with the fit pairs", "realism_unpaired": "G(HR), learned without them"
                 }[key] if len(found) > 1 else "learned downsampler G(HR)"
        table.append(f"<tr><td>{esc(label)}</td><td>{fmt(r['learned_psnr'], m.digits)}</td><td>{_ratio(r)}</td>"
                     f"<td>{esc(r.get('sharpness', 'not measured'))}</td><td>{_times(r.get('learned_lap_ratio_noise_free'))}"
                     "</td></tr>")
    table.append(f"<tr><td>bicubic down(HR)</td><td>{fmt(realism['bicubic_psnr'], m.digits)}</td>"
                 f"<td>{_ratio(realism, 'bicubic')}</td><td>{esc(realism.get('bicubic_sharpness', 'not measured'))}</td>"
                 f"<td>{_ratio(realism, 'bicubic')}</td></tr></table>")
    sentence = realism_sentence(summary)
    per = [(key, r) for key, r in found.items()]
    head = "".join(f"<th>G(HR){'' if len(per) == 1 else (' with pairs' if k == 'realism' else ' without pairs')} "
                   f"{esc(m.label)}</th><th>ratio (with its noise)</th>" for k, _ in per)
    by_image = {k: {row["image"]: row for row in r["per_image"]} for k, r in per}
    rows = "".join(f"<tr><td>{esc(row['image'])}</td>"
                   + "".join(f"<td>{fmt(by_image[k].get(row['image'], {}).get('learned_psnr'), m.digits)}</td>"
                             f"<td>{fmt(by_image[k].get(row['image'], {}).get('learned_lap_ratio'), 2)}</td>" for k, _ in per)
                   + f"<td>{fmt(row['bicubic_psnr'], m.digits)}</td><td>{fmt(row.get('bicubic_lap_ratio'), 2)}</td></tr>"
                   for row in realism["per_image"])
    warning = (found.get("realism") or {}).get("fit_pairs_warning")
    return ("".join(table) + (f"<p id='realism-sentence'>{esc(sentence)}</p>" if sentence else "")
            + (f"<p class='note' id='fit-pairs-warning'>Fit pairs: {esc(warning)}.</p>" if warning else "")
            + "<details><summary>per pair</summary><table id='realism-per-image'><tr><th>pair</th>"
            f"{head}<th>down(HR) {esc(m.label)}</th><th>ratio</th></tr>{rows}</table></details>")


def _gate_html(gate: dict[str, Any] | None) -> str:
    if not gate:
        return "<p class='note'>The promotion gate did not run.</p>"
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(c['name'].replace('_', ' '))}</td>"
                   f"<td class='{'pass' if c['passed'] else 'fail'}'>{'pass' if c['passed'] else 'FAIL'}</td>"
                   f"<td class='detail'>{esc(c['message'])}</td></tr>" for c in gate["criteria"])
    t = gate.get("thresholds", {})
    return (f"<table id='gate'><tr><th>criterion</th><th>result</th><th class='detail'>detail</th></tr>{rows}</table>"
            f"<p class='note'>Tolerances against the promoted student: {t.get('psnr_tolerance_db')} dB PSNR-Y, "
            f"{t.get('lpips_tolerance')} LPIPS. Roll back with <code>sr-pipeline promote VERSION</code>.</p>")


# --- the page -------------------------------------------------------------------------------------

def render_report(summary: dict[str, Any], scores: Scores, history: list[dict[str, Any]],
                  lines: list[str] | None = None, archive: ArchiveConsistency | None = None) -> str:
    """The standalone HTML page (see the module docstring). ``archive``: the archive's consistency
    verdicts (None: not read; the section then shows only the fitted thresholds)."""
    esc = html.escape
    lines = headline(summary, history, archive) if lines is None else lines
    gate = summary.get("gate") or {}
    labels = summary.get("labels", {})
    camera = f"field camera {summary['camera']}, " if summary.get("camera") else ""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Image restoration report "
             f"{esc(camera)}{esc(str(summary.get('report_date')))}</title><style>{_STYLE}</style></head><body>",
             f"<h1>Image restoration report, {esc(camera)}{esc(str(summary.get('report_date')))}</h1>",
             f"<p class='sub'>{summary.get('pairs')} calibration pairs, x{summary.get('scale')}, on "
             f"{esc(str(summary.get('device')))}. Generated {esc(readable_time(summary.get('created')))}.</p>",
             f"<section id='headline' class='{'pass' if gate.get('passed', True) else 'fail'}'>"
             "<h2>Summary</h2><ul>" + "".join(f"<li>{_md_to_html(t)}</li>" for t in lines) + "</ul></section>"]

    parts.append("<section><h2>Quality and speed per method</h2>"
                 + summary_table_html(summary, scores.methods, labels)
                 + f"<p class='note'>{esc(summary.get('protocol', ''))}. Times include tiling and the copy back to "
                 "the host, after one warm-up image. A median here is of each method's own scores; the summary's median "
                 "gain is the median of the per-image gains, which need not equal the difference of two medians.</p>")
    parts.append(_unavailable_html(summary) + "</section>")
    parts.append("<section><h2>Promotion gate</h2>" + _gate_html(gate) + "</section>")
    parts.append("<section><h2>Realism of the learned camera model (LR)</h2>"
                 + _realism_html(summary) + "</section>")

    parts.append("<section><h2>Trend across reports</h2>"
                 f"<img class='plot' id='trend' alt='trend across reports' "
                 f"src='{png_data_uri(trend_png(history, summary))}'></section>")
    parts.append(section_html(archive, summary.get("consistency"), camera=summary.get("camera")))

    focus = served_role(summary)
    parts.append("<section><h2>Side by side: best, median and worst image</h2>"
                 f"<p class='note'>Ranked by the PSNR-Y gain of the {esc(labels.get(focus, focus))} over plain "
                 "enlargement; the most detailed square of each image, enlarged without smoothing.</p>")
    for label, row in ranked_images(scores, focus):
        parts.append(f"<h3>{label}: {esc(row['image'])} ({_signed(row['gain'])} dB over bicubic)</h3>"
                     + figures_html(crop_columns(scores, row["image"], CROP_METHODS, labels)))
    parts.append("</section>")

    models = summary.get("models", {})
    rows = "".join(f"<tr><td>{esc(role)}</td><td>{esc(model_name(summary, role))}</td>"
                   f"<td>{esc(str(m.get('version')))}</td><td>{esc(str(m.get('steps', '')))}</td>"
                   f"<td class='detail'>{esc(str(m.get('folder') or Path(str(m.get('path'))).name))}</td></tr>"
                   for role, m in models.items() if m)
    parts.append("<section><h2>For engineers</h2><h3>Models</h3><table id='models'><tr><th>role</th><th>model</th>"
                 "<th>version</th><th>steps</th><th class='detail'>folder (under the data root)</th></tr>"
                 f"{rows}</table><h3>Per image</h3>"
                 + per_image_table_html(scores.rows, scores.methods, labels) + "</section></body></html>")
    return "\n".join(parts)


_BENCH_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;
margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th:first-child,td:first-child
{text-align:left}figure{display:inline-block;margin:4px;text-align:center}figure img{width:192px;
height:192px;image-rendering:pixelated}.note{color:#555}"""


def render_benchmark_page(scores: Scores) -> str:
    """The plain page of ``sr-pipeline evaluate``: summary table, best/median/worst crops of the first
    model next to bicubic, the per-image table (inline PNGs, no external files)."""
    esc = html.escape
    summary, methods = scores.summary, scores.methods
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>SR evaluation</title>"
             f"<style>{_BENCH_STYLE}</style></head><body><h1>Super-resolution evaluation</h1>",
             f"<p>{count(summary['pairs'], 'pair')}, split <b>{esc(str(summary['split']))}</b>, x{summary['scale']}. "
             f"{esc(summary['protocol'])}.</p>", _unavailable_html(summary),
             "<h2>Summary</h2>" + summary_table_html(summary, methods)]
    focus = next((m for m in methods if m != "bicubic"), "bicubic")
    parts.append(f"<h2>Crops: best, median and worst image of {esc(focus)} by PSNR-Y gain over bicubic</h2>")
    for label, r in ranked_images(scores, focus):
        parts.append(f"<h3>{label}: {esc(r['image'])} (PSNR-Y {fmt(r['psnr_y'], 2)} dB)</h3>"
                     + figures_html(crop_columns(scores, r["image"], list(dict.fromkeys(["bicubic", focus])))))
    parts.append("<h2>Per image</h2>" + per_image_table_html(scores.rows, methods))
    parts.append("</body></html>")
    return "\n".join(parts)
