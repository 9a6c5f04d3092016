"""The one wording rule for comparisons: "better" only when no figure is worse beyond its tolerance."""

import pytest

from sr_pipeline.evaluation.gate import GateThresholds, challenge
from sr_pipeline.sr.judge.wording import compare, count, model_label, readable_time


@pytest.mark.parametrize("ours, theirs", [
    ({"psnr_y": 28.29, "lpips": 0.4406}, {"psnr_y": 28.22, "lpips": 0.4179}),  # grey_cam's "beat"
    ({"psnr_y": 30.00, "lpips": 0.30}, {"psnr_y": 28.00, "lpips": 0.31}),
    ({"psnr_y": 27.00, "lpips": 0.20}, {"psnr_y": 28.00, "lpips": 0.25}),
])
def test_better_is_never_said_beside_a_worse_figure(ours, theirs):
    said = compare(ours, theirs)
    text = said.sentence("A", "B")
    if said.worse:
        assert said.verdict != "better" and "better than" not in text
    if said.verdict == "better":
        assert not said.worse


def test_a_trade_names_both_figures():
    said = compare({"psnr_y": 29.46, "lpips": 0.4406}, {"psnr_y": 28.22, "lpips": 0.4179})
    assert said.verdict == "trade" and said.better == ("psnr_y",) and said.worse == ("lpips",)
    assert said.figures == "+1.24 dB PSNR-Y, 0.023 worse LPIPS"
    assert said.sentence("the student", "plain enlargement") == (
        "the student trades against plain enlargement: +1.24 dB PSNR-Y, 0.023 worse LPIPS")


def test_within_the_tolerances_is_level_and_only_clear_gains_are_better():
    assert compare({"psnr_y": 28.26, "lpips": 0.300}, {"psnr_y": 28.22, "lpips": 0.303}).verdict == "level"
    said = compare({"psnr_y": 28.40, "lpips": 0.302}, {"psnr_y": 28.22, "lpips": 0.300})
    assert said.verdict == "better" and said.figures == "+0.18 dB PSNR-Y, LPIPS level (0.3020 against 0.3000)"
    tight = compare({"psnr_y": 28.40, "lpips": 0.302}, {"psnr_y": 28.22, "lpips": 0.300}, {"lpips": 0.001})
    assert tight.verdict == "trade"
    assert compare({"psnr_y": None, "lpips": 0.2}, {"psnr_y": 28.0, "lpips": 0.3}).figures == "0.100 better LPIPS"


def _rows(co: tuple[float, float], fixed: tuple[float, float]) -> list[dict]:
    return [{"method": m, "image": "a.png", "psnr_y": p, "lpips": lp}
            for m, (p, lp) in (("candidate", co), ("challenger", fixed))]


def test_the_challengers_message_says_trade_when_the_winner_has_a_worse_lpips():
    duel = challenge(_rows((28.29, 0.4406), (28.22, 0.4179)), GateThresholds(),
                     "20261207T043320Z-ffd79b", "fixed-20261207T050000Z-0a1b2c")
    assert duel["winner"] == "candidate"  # fidelity first: 0.07 dB is beyond the 0.05 dB tolerance
    assert "beat" not in duel["message"] and "better" not in duel["message"]
    assert ("the co-learned student trained 2026-12-07 (ffd79b) trades against the fixed-degradation student "
            "trained 2026-12-07 (0a1b2c): +0.07 dB PSNR-Y, 0.023 worse LPIPS") in duel["message"]
    clear = challenge(_rows((28.00, 0.30), (28.50, 0.28)), GateThresholds(), "s-co", "fixed-t1")
    assert clear["winner"] == "challenger" and "is better than the co-learned student" in clear["message"]


def test_model_labels_are_readable():
    assert model_label("20261207T043320Z-ffd79b", "student", "field_cam") == (
        "student of field_cam trained 2026-12-07 (ffd79b)")
    assert model_label("fixed-20261207T043320Z-ffd79b-x") == "fixed-degradation student trained 2026-12-07 (ffd79b)"
    assert model_label("unpaired-20261207T043320Z-ffd79b") == "student trained 2026-12-07 (ffd79b), without fit pairs"
    assert model_label("fixed-20261207T043320Z-ffd79b", "fixed-degradation student") == (
        "fixed-degradation student trained 2026-12-07 (ffd79b)")
    assert model_label("s9", "new student") == "new student s9"
    assert model_label(None, "teacher") == "teacher"


def test_counts_and_timestamps_read_as_a_person_says_them():
    assert [count(n, "pair") for n in (0, 1, 2)] == ["0 pairs", "1 pair", "2 pairs"]
    assert count(1, "batch", "batches") == "1 batch" and count(3, "batch", "batches") == "3 batches"
    assert readable_time("2026-12-07T04:31:26.123456+00:00") == "2026-12-07 04:31 UTC"
    assert readable_time("2026-12-07T04:31:26+01:00") == "2026-12-07 04:31 UTC+01:00"
    assert readable_time("2026-12-07T04:31:26") == "2026-12-07 04:31"
    assert readable_time("2026-12-07") == "2026-12-07" and readable_time(None) == "None"
    assert readable_time("not a time at all") == "not a time at all"
