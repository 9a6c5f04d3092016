"""The report's "Consistency with the camera" section, read from synthetic archive manifests.

Two batches, two field cameras, four ISO weeks, some outputs flagged ``check``; the plant is in
Berlin (UTC+1 in winter), so outputs near midnight UTC fall on the next local day. Report date:
Wednesday 2026-03-04, so the last 7 days are 2026-02-26 .. 2026-03-04 local time (ISO week 2026-W10 starts
on Monday 2026-03-02).
"""

import base64
import re
from datetime import date, datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import encode, pixels
from test_report import make_scores, make_summary
from sr_pipeline.evaluation.archive_consistency import archive_consistency, archived_batches
from sr_pipeline.evaluation import report_page as report
from sr_pipeline.evaluation.consistency_page import ArchiveConsistency, Counts, _share_text, fit_html, section_html
from sr_pipeline.sr.judge.wording import percent

DAY = date(2026, 3, 4)
TZ = "Europe/Berlin"
BASE_FIELDS = [("source_image_id", pa.string()), ("batch", pa.string()), ("camera", pa.string()),
               ("source_name", pa.string()), ("output_path", pa.string()), ("model_version", pa.string()),
               ("upscaled_at", pa.timestamp("us", tz="UTC"))]
CONSISTENCY_FIELDS = [("consistency_verdict", pa.string()), ("consistency_psnr_y", pa.float64()),
                      ("consistency_flagged_share", pa.float64()), ("consistency_peak", pa.float64()),
                      ("consistency_colour_shift", pa.list_(pa.float64())), ("consistency_camera", pa.string()),
                      ("consistency_reasons", pa.string()), ("consistency_map", pa.string())]

# (batch, image, camera, UTC time, verdict, flagged share, peak, writes a map)
OUTPUTS = [
    ("b1", "a-late-local", "cam-a", "2026-03-04T22:30", "ok", 0.0, 3.0, False),        # 23:30 local: the last 7 days
    ("b1", "a-next-day", "cam-a", "2026-03-04T23:30", "check", 0.9, 99.0, True),      # 00:30 on 5 March: left out
    ("b1", "b-mid", "cam-b", "2026-03-01T10:00", "check", 0.05, 40.0, True),
    ("b2", "a-worst", "cam-a", "2026-03-02T10:00", "check", 0.20, 30.0, True),
    ("b2", "a-ok", "cam-a", "2026-03-03T10:00", "ok", 0.0, 5.0, False),
    ("b2", "b-spot", "cam-b", "2026-02-25T23:30", "check", 0.01, 90.0, False),        # 26 Feb local: the last 7 days
    ("b1", "b-older", "cam-b", "2026-02-25T22:30", "check", 0.50, 60.0, True),        # 25 Feb local: last week
    ("b1", "a-feb10", "cam-a", "2026-02-10T09:00", "ok", 0.0, 2.0, False),
    ("b1", "a-feb11", "cam-a", "2026-02-11T09:00", "check", 0.02, 25.0, True),
    ("b2", "b-feb17", "cam-b", "2026-02-17T09:00", "ok", 0.0, 4.0, False),
    *[("b2", f"a-bulk{i}", "cam-a", "2026-03-03T12:00", "ok", 0.0, 1.0, False) for i in range(6)],
]


def _row(layout, batch, image, camera, when, verdict=None, share=None, peak=None, with_map=False):
    row = {"source_image_id": image, "batch": batch, "camera": camera, "source_name": f"{image}.png",
           "output_path": f"archive/{batch}/{image}_x4.png", "model_version": "s1",
           "upscaled_at": datetime.fromisoformat(when).replace(tzinfo=timezone.utc)}
    if verdict is None:
        return row
    ref = None
    if with_map:
        ref = f"archive/{batch}/consistency_maps/{image}_consistency.png"
        (layout.root / ref).parent.mkdir(parents=True, exist_ok=True)
        (layout.root / ref).write_bytes(encode(pixels(24, 16, seed=len(image))))
    reasons = "" if verdict == "ok" else f"{100 * share:.2f}% of input pixels disagree (limit 1.00%)"
    return row | {"consistency_verdict": verdict, "consistency_psnr_y": 35.0, "consistency_flagged_share": share,
                  "consistency_peak": peak, "consistency_colour_shift": [0.1, -0.2, 0.0],
                  "consistency_camera": "G s1", "consistency_reasons": reasons, "consistency_map": ref}


def write_manifest(layout, batch, rows, measured=True):
    schema = pa.schema(BASE_FIELDS + (CONSISTENCY_FIELDS if measured else []))
    folder = layout.archive / batch
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "manifest.parquet")


@pytest.fixture
def archive(layout):
    for batch in ("b1", "b2"):
        write_manifest(layout, batch, [_row(layout, *o[:4], *o[4:]) for o in OUTPUTS if o[0] == batch])
    return layout


def test_the_manager_line_counts_this_weeks_outputs_in_the_plants_time_zone(archive):
    view = archive_consistency(archive, DAY, TZ)
    assert archived_batches(archive) == ["b1", "b2"]
    assert view.later == 1 and len(view.outputs) == len(OUTPUTS) - 1
    assert {o.source_name for o in view.this_week()} == {
        "a-late-local.png", "b-mid.png", "a-worst.png", "a-ok.png", "b-spot.png", *(f"a-bulk{i}.png" for i in range(6))}
    state = view.state_text()  # which archive the report describes: when it was read, what it held
    assert state.startswith("The archive as read at ") and f"{len(view.outputs)} restored images in 2 batches" in state
    line = view.manager_line()
    assert line == ("**Consistency with the camera.** 3 of 11 images restored in the last 7 days (2026-02-26 to 2026-03-04) "
                    "need a person's look (a-worst.png, b-mid.png, b-spot.png); see the list in the report.")
    scores = make_scores(archive.root / "pairs")
    lines = report.headline(make_summary(scores, DAY.isoformat()), [], view)
    assert lines[-1] == line
    page = report.render_report(make_summary(scores, DAY.isoformat()), scores, [], lines, view)
    headline = page[page.index("id='headline'"):page.index("</section>")]
    assert "look (a-worst.png, b-mid.png, b-spot.png); <a href='#consistency-flagged'>see the list</a>." in headline
    assert "id='archive-state'>The archive as read at " in page and "id='consistency-flagged'" in page
    # 3 of 11 is a share that needs saying what it can mean; a week with none flagged says nothing of it
    assert ("<p id='many-flagged'>27.3% of the checked images restored in the last 7 days (2026-02-26 to "
            "2026-03-04) are flagged. No calibration pairs") in page
    assert archive_consistency(archive, date(2026, 2, 20), TZ).many_flagged_text() == ""
    assert view.many_flagged_text().startswith("27.3% of the checked images restored in the last 7 days (2026-02-26 "
                                               "to 2026-03-04) are flagged. The limits were set")
    # In UTC the late outputs move a day back: "a-next-day" (flagged) joins the week, "b-spot" leaves it.
    utc = archive_consistency(archive, DAY, "UTC")
    assert utc.later == 0 and "3 of 11 images" in utc.manager_line()
    assert {o.source_name for o in utc.this_week()} ^ {o.source_name for o in view.this_week()} == {
        "a-next-day.png", "b-spot.png"}


def test_flagged_share_per_camera_and_iso_week(archive):
    weekly = archive_consistency(archive, DAY, TZ).weekly()
    assert [w.isoformat() for w in weekly.weeks] == ["2026-02-09", "2026-02-16", "2026-02-23", "2026-03-02"]
    assert weekly.cameras == ["cam-a", "cam-b"]
    table = {(w.isoformat(), cam): (c.total, c.measured, c.flagged) for (w, cam), c in weekly.counts.items()}
    assert table == {
        ("2026-02-09", "cam-a"): (2, 2, 1), ("2026-02-09", "all cameras"): (2, 2, 1),
        ("2026-02-16", "cam-b"): (1, 1, 0), ("2026-02-16", "all cameras"): (1, 1, 0),
        ("2026-02-23", "cam-b"): (3, 3, 3), ("2026-02-23", "all cameras"): (3, 3, 3),
        ("2026-03-02", "cam-a"): (9, 9, 1), ("2026-03-02", "all cameras"): (9, 9, 1)}
    assert weekly.cell(weekly.weeks[2], "cam-a").share is None
    assert weekly.cell(weekly.weeks[3], "cam-a").share == pytest.approx(1 / 9)

    page = section_html(archive_consistency(archive, DAY, TZ))
    html_table = page[page.index("id='consistency-weekly'"):page.index("</table>", page.index("id='consistency-weekly'"))]
    rows = re.findall(r"<tr><td>(\d{4}-W\d\d) [^<]*</td>((?:<td>[^<]*</td>)+)</tr>", html_table.replace("&ndash;", "-"))
    assert [(week, re.findall(r"<td>([^<]*)</td>", cells)) for week, cells in rows] == [
        ("2026-W10", ["11.1% (1 of 9)", "-", "11.1% (1 of 9)"]),
        ("2026-W09", ["-", "100.0% (3 of 3)", "100.0% (3 of 3)"]),
        ("2026-W08", ["-", "0.0% (0 of 1)", "0.0% (0 of 1)"]),
        ("2026-W07", ["50.0% (1 of 2)", "-", "50.0% (1 of 2)"])]
    trend = re.search(r"id='consistency-trend' alt='[^']*' src='data:image/png;base64,([^']+)'", page)
    assert trend and base64.b64decode(trend.group(1)).startswith(b"\x89PNG")

    md = report.markdown_table(make_summary(make_scores(archive.root / "pairs"), DAY.isoformat()),
                               ["bicubic", "candidate"], archive_consistency(archive, DAY, TZ))
    assert "| 2026-W10 | 11.1% (1 of 9) | - | 11.1% (1 of 9) |" in md
    assert md.index("| method |") < md.index("| ISO week | cam-a | cam-b | all cameras |")


def test_the_worst_flagged_images_of_the_week_come_with_their_maps(archive):
    (archive.root / "archive/b1/consistency_maps/b-mid_consistency.png").unlink()  # a map gone missing
    page = section_html(archive_consistency(archive, DAY, TZ), worst=8)
    worst = page[page.index("id='consistency-worst'"):]
    names = re.findall(r"<h4>([^ <]+) <span", worst)
    assert names == ["a-worst.png", "b-mid.png", "b-spot.png"]  # by flagged share; last week's b-older is not here
    first = worst[:worst.index("<h4>b-mid.png")]
    expected = (archive.root / "archive/b2/consistency_maps/a-worst_consistency.png").read_bytes()
    assert f"src='data:image/png;base64,{base64.b64encode(expected).decode()}'" in first
    assert "20.00% of input pixels disagree" in first and "archive/b2/a-worst_x4.png" in first
    assert "Heat map not found: archive/b1/consistency_maps/b-mid_consistency.png" in worst
    assert "No heat map was written for this image." in worst[worst.index("<h4>b-spot.png"):]
    top_one = section_html(archive_consistency(archive, DAY, TZ), worst=1)
    assert re.findall(r"<h4>([^ <]+) <span", top_one) == ["a-worst.png"] and "3 flagged in the last 7 days (2026-02-26 to 2026-03-04)" in top_one
    # Every flagged image up to the report date stays listed, last week's included.
    listing = page[page.index("id='consistency-flagged-all'"):]
    assert {"b-older.png", "a-feb11.png", "a-worst.png"} <= set(re.findall(r"<td>([\w-]+\.png)</td>", listing))
    assert "a-next-day.png" not in page


def test_an_images_flagged_share_reads_the_same_in_its_reason_and_on_the_page():
    """1.12502% of pixels measured: the reason said 1.13%, the page 1.12% from the manifest's 0.011250."""
    from sr_pipeline.serving.audit import _line
    from sr_pipeline.sr.serve.consistency import Consistency, Thresholds, verdict

    share = 0.0112502
    _, reasons = verdict(40.0, share, 5.0, (0.0,), Thresholds(share=0.005))
    record = Consistency(40.0, share, 5.0, (0.0,), 0.0, "G s1", "check", reasons).record()
    assert record["consistency_flagged_share"] == 0.01125
    row = {"batch": "b1", "camera": "cam-a", "source_name": "spot.png", "upscaled_at": "2026-03-03T10:00:00"} | record
    page = section_html(ArchiveConsistency.from_rows([row], DAY, timezone.utc))
    assert "1.13% of input pixels disagree (limit 0.50%)" in page
    assert "Flagged share 1.13%," in page and "<td>1.13%</td>" in page
    assert "1.13% of input pixels disagree" in _line({"status": "scored", "sr": "spot_x4.png"} | record)
    assert "1.13% flagged)" in _line({"status": "scored", "sr": "spot_x4.png"} | record)
    # A hair above its limit: 4 decimals, all the manifest keeps, which round to the page's 1.12% (1.125% would not).
    _, close = verdict(40.0, 0.011249, 5.0, (0.0,), Thresholds(share=0.01123))
    assert close == ["1.1249% of input pixels disagree (limit 1.1230%)"] and percent(0.011249) == "1.12%"


# figure: (measured PSNR-Y, peak and colour shift; limits; the digits reason, page and audit all print; the
# reason; where the page prints the figure; where the audit line does). Each measured value rounded differently
# in a reason (Python's format of the measured figure) than on the page and in the audit (of the recorded one).
FIGURES = {
    # measured 40.504: the reason said 41, the page and audit 40 from the recorded 40.5 (half to even)
    "peak": ((40.0, 40.504, (0.0,)), {"peak": 20.0}, "41", "a region disagrees with the input by {} levels (limit 20)",
             ("largest disagreement {} levels,", "<td>{}</td><td class='detail'>"), "peak {} levels,"),
    # measured 40.46: 40 everywhere, also through the PNG text, which kept 1 decimal (40.5: 41 on the page)
    "peak kept to 2 decimals": ((40.0, 40.46, (0.0,)), {"peak": 20.0}, "40",
                                "a region disagrees with the input by {} levels (limit 20)",
                                ("largest disagreement {} levels,", "<td>{}</td><td class='detail'>"), "peak {} levels,"),
    # measured 30.2504 dB: the reason said 30.3, the page and audit 30.2 from the recorded 30.25
    "psnr_y": ((30.2504, 5.0, (0.0,)), {"psnr": 35.0}, "30.3", "consistency PSNR-Y {} dB is below 35.0 dB",
               ("consistency PSNR-Y {} dB (",), "consistency PSNR-Y {} dB,"),
    # measured 3.0496 levels: the reason said 3.0 of the 3.05 the record keeps; no page or audit line prints it
    "colour": ((40.0, 5.0, (3.0496, -0.5, 0.2)), {"colour": 2.0}, "3.1",
               "colour/intensity shifted by {} levels (limit 2.0)", (), None),
}


@pytest.mark.parametrize("via", ["manifest", "png text"])
@pytest.mark.parametrize("figure", sorted(FIGURES))
def test_an_images_figures_read_the_same_in_its_reason_on_the_page_and_in_the_audit(figure, via):
    """Every figure of a verdict's reason is rounded half up from the value as the manifest keeps it (written
    by ``record()``, or read back from the output's PNG text when the archive kept the file), as the page and
    ``sr-pipeline consistency`` print it: never "41 levels" in the reason beside "largest disagreement 40 levels"."""
    from decimal import ROUND_HALF_UP, Decimal

    from sr_pipeline.serving.audit import _line
    from sr_pipeline.serving.consistency import consistency_text, stored_consistency
    from sr_pipeline.sr.serve.consistency import Consistency, Thresholds, verdict

    (psnr_y, peak, colour), limits, digits, reason, on_page, in_audit = FIGURES[figure]
    kind, reasons = verdict(psnr_y, 0.0, peak, colour, Thresholds(**limits))
    assert (kind, reasons) == ("check", [reason.format(digits)])
    result = Consistency(psnr_y, 0.0, peak, colour, 0.0, "G s1", kind, reasons)
    record = result.record() if via == "manifest" else stored_consistency(consistency_text(result))
    row = {"batch": "b1", "camera": "cam-a", "source_name": "spot.png", "upscaled_at": "2026-03-03T10:00:00"} | record
    page = section_html(ArchiveConsistency.from_rows([row], DAY, timezone.utc))
    audit = _line({"status": "scored", "sr": "spot_x4.png"} | record)
    assert reason.format(digits) in page and reason.format(digits) in audit
    for where in on_page:
        assert where.format(digits) in page
    if in_audit:
        assert in_audit.format(digits) in audit
    if figure == "colour":  # the largest channel shift as recorded, rounded half up to the reason's decimal
        kept = max(abs(c) for c in record["consistency_colour_shift"])
        assert f"{Decimal(repr(kept)).quantize(Decimal('0.1'), ROUND_HALF_UP):f}" == digits


def test_a_figure_given_with_more_digits_still_rounds_to_the_pages():
    """12.46 levels against a limit of 12: 0 decimals say 12 for both, so the reason gives more; 12.5 would read
    13 half up beside the page's 12, so it gives all the manifest keeps, 12.46."""
    from sr_pipeline.serving.audit import _line
    from sr_pipeline.sr.serve.consistency import Consistency, Thresholds, verdict

    kind, reasons = verdict(40.0, 0.0, 12.46, (0.0,), Thresholds(peak=12.0))
    assert reasons == ["a region disagrees with the input by 12.46 levels (limit 12.00)"]
    record = Consistency(40.0, 0.0, 12.46, (0.0,), 0.0, "G s1", kind, reasons).record()
    assert "peak 12 levels," in _line({"status": "scored", "sr": "spot_x4.png"} | record)
    # 12.3 keeps its one extra decimal: it rounds to the page's 12
    assert verdict(40.0, 0.0, 12.3, (0.0,), Thresholds(peak=12.0))[1] == [
        "a region disagrees with the input by 12.3 levels (limit 12.0)"]


def test_the_sentences_say_which_days_they_count_and_the_table_its_iso_weeks(archive):
    view = archive_consistency(archive, DAY, TZ)
    page = section_html(view)
    assert "this week" not in page.lower()
    # the sentence's figure is the last 7 days' (3 of 11), which it names; the table's is its ISO week's (1 of 9)
    days = Counts()
    for o in view.outputs:
        if date(2026, 2, 26) <= o.day <= DAY:
            days.add(o)
    assert (days.flagged, days.measured) == (3, 11)
    assert ("<p id='many-flagged'>27.3% of the checked images restored in the last 7 days (2026-02-26 to 2026-03-04) "
            "are flagged.") in page
    assert "Share flagged per field camera and ISO week" in page and "in the ISO week it was last restored" in page
    assert "<tr><td>2026-W10 (2026-03-02)</td><td>11.1% (1 of 9)</td>" in page
    assert ("Images restored in the last 7 days (2026-02-26 to 2026-03-04) that need a person's look, worst "
            "first") in page
    # one rounding for a share of images: 9,999 of 10,000 is not all of them, in the table as in the sentence
    assert _share_text(Counts(10_000, 10_000, 9_999)) == "99.9% (9999 of 10000)"
    assert _share_text(Counts(3, 3, 3)) == "100.0% (3 of 3)"
    assert _share_text(Counts(16, 16, 1)) == "6.3% (1 of 16)"  # half up, as every figure of the section
    assert _share_text(Counts(3000, 3000, 1)) == "<0.1% (1 of 3000)"  # one flagged image is never 0.0%
    assert _share_text(Counts(5, 5, 0)) == "0.0% (0 of 5)"


def test_each_thresholds_row_names_its_camera_and_says_where_the_all_camera_fit_stands_in(tmp_path):
    own = {"pairs": 12, "thresholds": {"pixel": 9.5, "peak": 31.2, "share": 0.004, "psnr": 33.0, "colour": 2.5}}
    every = {"pairs": 14, "thresholds": {"pixel": 10.0, "peak": 30.0, "share": 0.005, "psnr": 32.0, "colour": 3.0}}
    labels = lambda page: re.findall(r"<tr><td>([^<]*)</td><td>(\d+)</td>", page)  # noqa: E731
    # every camera's report: cam-b restored images but had too few pairs for limits of its own
    fit = {"available": True, "cameras": {"cam-a": own, "all": every}}
    assert labels(fit_html(fit, ["cam-a", "cam-b"])) == [
        ("cam-a", "12"), ("cam-b (fitted on all cameras&#x27; pairs)", "14")]
    assert labels(fit_html(fit)) == [("cam-a", "12"), ("other cameras (fitted on all cameras&#x27; pairs)", "14")]
    # one camera's report: its evaluation fitted `all` on that camera's pairs alone, so the row is the camera's
    assert labels(fit_html({"available": True, "cameras": {"all": every | {"pairs": 2}}}, camera="field_cam")) == [
        ("field_cam", "2")]
    assert labels(fit_html({"available": True, "cameras": {"field_cam": own, "all": every}}, camera="field_cam")) == [
        ("field_cam", "12")]
    scores = make_scores(tmp_path)
    summary = make_summary(scores, DAY.isoformat()) | {"camera": "field_cam",
                                                       "consistency": {"available": True, "cameras": {"all": every}}}
    page = report.render_report(summary, scores, [])
    assert labels(page[page.index("id='consistency-fit'"):]) == [("field_cam", "14")]


def test_manifests_written_before_the_check_count_as_not_measured(archive):
    old = [_row(archive, "b0", f"old{i}", "cam-c", "2026-03-03T08:00") for i in range(2)]
    old.append(_row(archive, "b0", "old-feb", "cam-c", "2026-02-12T08:00"))
    write_manifest(archive, "b0", old, measured=False)
    view = archive_consistency(archive, DAY, TZ)
    assert view.manager_text() == ("3 of 11 checked images restored in the last 7 days (2026-02-26 to 2026-03-04) need a "
                                   "person's look (a-worst.png, b-mid.png, b-spot.png); see the list in the report. "
                                   "2 more were not checked (restored "
                                   "before the consistency check existed).")
    weekly = view.weekly()
    c = weekly.cell(weekly.weeks[-1], "cam-c")
    assert (c.total, c.measured, c.flagged, c.share) == (2, 0, 0, None)
    page = section_html(view)
    assert "<td>not measured</td>" in page and "11.1% (1 of 9), 2 not measured" in page

    only_old = ArchiveConsistency.from_rows(old, DAY, timezone.utc)
    assert only_old.manager_text() == ("2 images restored in the last 7 days (2026-02-26 to 2026-03-04) were not checked "
                                       "against the camera (restored before the consistency check existed).")
    assert "Nothing measured yet" in section_html(only_old)


def test_a_broken_manifest_is_skipped_and_nan_or_missing_values_do_not_crash(archive):
    (archive.archive / "b3").mkdir()
    (archive.archive / "b3" / "manifest.parquet").write_bytes(b"not parquet")
    (archive.archive / ".b4.tmp").mkdir()
    view = archive_consistency(archive, DAY, TZ)
    assert set(view.unread) == {"b3"} and "3 of 11 images" in view.manager_line()
    assert "Batch b3 skipped: its manifest could not be read" in section_html(view)
    odd = ArchiveConsistency.from_rows([{"consistency_verdict": float("nan"), "upscaled_at": None},
                                        {"consistency_verdict": "check", "consistency_flagged_share": float("nan"),
                                         "upscaled_at": "2026-03-03T10:00:00"}], DAY, timezone.utc)
    assert [o.verdict for o in odd.outputs] == [None, "check"] and odd.outputs[1].severity == (0.0, 0.0)
    assert "1 of 1 image restored in the last 7 days (2026-02-26 to 2026-03-04) needs a person's look" in odd.manager_text()
    assert "<h4>?" in section_html(odd)
    garbage = ArchiveConsistency.from_rows([{"consistency_verdict": "check", "consistency_flagged_share": -0.05,
                                             "consistency_peak": -3.0, "consistency_psnr_y": -1.0,
                                             "upscaled_at": "2026-03-03T10:00:00"},
                                            {"consistency_verdict": "check", "consistency_flagged_share": 7.0,
                                             "upscaled_at": "2026-03-03T11:00:00"}], DAY, timezone.utc)
    assert all(o.flagged_share is None and o.peak is None for o in garbage.outputs)  # no check makes these
    assert garbage.outputs[0].psnr_y is None and "-5.00%" not in section_html(garbage)


def test_the_report_renders_without_an_archive_and_with_the_fitted_thresholds(layout, tmp_path):
    scores = make_scores(tmp_path)
    summary = make_summary(scores, DAY.isoformat())
    page = report.render_report(summary, scores, [])
    assert "id='consistency'" in page and "The archive was not read for this report." in page
    assert "This evaluation fitted no consistency thresholds" in page
    assert "the summary's median gain is the median of the per-image gains" in page
    assert page.index("id='trend'") < page.index("id='consistency'") < page.index("id='models'")
    assert not any("Consistency" in line for line in report.headline(summary, []))

    empty = archive_consistency(layout, DAY)  # no archive folder at all
    assert empty.outputs == [] and empty.unread == {}
    lines = report.headline(summary, [], empty)
    assert lines[-1] == ("**Consistency with the camera.** No image has been restored into the archive yet, so "
                         "none has been checked.")
    assert report.markdown_table(summary, scores.methods, empty) == report.markdown_table(summary, scores.methods)

    # The shape evaluation/consistency_fit.consistency_summary writes; a flat entry is read too.
    fit = {"available": True, "reason": None, "camera_model": "G s9", "pairs": 20,
           "cameras": {"cam-a": {"pairs": 12, "spearman": 0.71, "source": "calibration (12 pairs)",
                                 "worst_calibration": {"peak": 25.0, "share": 0.003, "psnr_y": 34.0, "colour": 2.0},
                                 "thresholds": {"pixel": 9.5, "peak": 31.2, "share": 0.004, "psnr": 33.0, "colour": 2.5,
                                                "local_floor": 3.79, "local_slope": 0.0154, "local_peak": 2.75,
                                                "border_peak": 0.0}},
                       "cam-b": {"pairs": 3, "thresholds": {"pixel": 9.0, "peak": 30.0, "share": 0.004, "psnr": 33.0,
                                                            "colour": 2.0, "local_peak": 0.0, "border_peak": 0.0}},
                       "all": {"pixel": 10.0, "peak": 30.0, "share": 0.005, "psnr": 32.0, "colour": 3.0,
                               "fit": {"pairs": 20, "spearman_consistency_vs_true_psnr": 0.64}}}}
    page = report.render_report(summary | {"consistency": fit}, scores, [], archive=empty)
    table = page[page.index("id='consistency-fit'"):page.index("</table>", page.index("id='consistency-fit'"))]
    assert "<tr><td>cam-a</td><td>12</td><td>0.71</td><td>9.5</td><td>31.2</td><td>0.0040</td><td>33.0</td>" in table
    # the local limit, and on the edge ring the inside's where the ring has none of its own
    assert "<td>2.5</td><td>3.79</td><td>0.0154</td><td>2.75</td><td>2.75</td>" in table
    assert "<th>local floor (levels)</th><th>local slope</th><th>local (x)</th><th>edge ring (x)</th>" in table
    # no archive camera lacks its own limits: the `all` entry is there for the others, and says so
    assert ("<tr><td>other cameras (fitted on all cameras&#x27; pairs)</td><td>20</td><td>0.64</td><td>10.0</td>"
            in table and "camera model: G s9" in page)
    assert "<td>2.0</td><td>off</td><td>off</td><td>off</td><td>off</td>" in table  # a file fitted before the local limit
    assert "<td>3.0</td><td>&ndash;</td><td>&ndash;</td><td>&ndash;</td><td>&ndash;</td>" in table  # a summary written before the local limits
    assert "more than any of them did" in page
    assert "No image has been restored into the archive yet" in page
    page = report.render_report(summary | {"consistency": {"available": False, "reason": "no pairs"}}, scores, [])
    assert "Consistency thresholds not fitted: no pairs" in page


def test_run_evaluation_puts_the_archive_section_in_the_report_folder(archive, registry, tmp_path, monkeypatch):
    from sr_pipeline.evaluation import calibration as ev
    from test_evaluation import STRICT, FakeLPIPS, add_pairs, save_sr

    from sr_pipeline.common.clock import PLANT_TZ_ENV

    monkeypatch.setenv(PLANT_TZ_ENV, TZ)
    add_pairs(archive, registry, tmp_path, [1, 2], "calib-1")
    out = ev.run_evaluation(archive, save_sr(archive, "teacher", "t1"), save_sr(archive, "student", "s1"), None, None,
                            DAY, STRICT, lpips=FakeLPIPS(), device="cpu")
    line = "**Consistency with the camera.** 3 of 11 images restored in the last 7 days (2026-02-26 to 2026-03-04)"
    assert out.headline[-1].startswith(line) and out.summary["headline"] == out.headline
    assert "| 2026-W10 | 11.1% (1 of 9) | - | 11.1% (1 of 9) |" in out.table_md
    page = out.report_path.read_text()
    expected = (archive.root / "archive/b2/consistency_maps/a-worst_consistency.png").read_bytes()
    assert base64.b64encode(expected).decode() in page[page.index("id='consistency-worst'"):]
