"""The gate judges three for a camera with fit pairs (the co-learned student, its unpaired twin, the
fixed-degradation challenger), and the camera models' paired realism on the gate pairs.

The pairs and tiny models are those of test_evaluation.py: a student whose residual is zero beats bicubic by
several dB there, one with a small constant offset is clearly worse than it but still better than bicubic.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from sr_pipeline.evaluation import calibration as ev
from sr_pipeline.evaluation.gate import GateThresholds, challenge, pick_winner
from sr_pipeline.evaluation.promotion import promote_after_gate
from sr_pipeline.sr.data.pairs import Pair
from sr_pipeline.storage.registry import promotions, unpaired_twin_dir
from test_evaluation import (  # noqa: F401 (one_thread and plant are fixtures)
    DAY, STRICT, FakeLPIPS, offset, one_thread, plant, save_downsampler, save_sr)

T = GateThresholds(psnr_tolerance_db=0.05, lpips_tolerance=0.005)



def rows(**figures):
    """Per-image rows with the given (PSNR-Y, LPIPS) per role, two images each."""
    return [{"method": role, "image": f"i{i}", "psnr_y": p, "lpips": lp}
            for role, (p, lp) in figures.items() for i in range(2)]


# --- the rule -----------------------------------------------------------------------------------------

def _old_duel(co, fixed, t=T):
    """The two-model rule the gate used before it judged the unpaired twin too."""
    d_psnr, d_lpips = fixed[0] - co[0], fixed[1] - co[1]
    tie = abs(d_psnr) <= t.psnr_tolerance_db
    return "challenger" if d_psnr > t.psnr_tolerance_db or (tie and d_lpips < -t.lpips_tolerance) else "candidate"


@pytest.mark.parametrize("dp", [-0.2, -0.06, -0.05, -0.02, 0.0, 0.03, 0.05, 0.051, 0.3])
@pytest.mark.parametrize("dl", [-0.02, -0.006, -0.004, 0.0, 0.004, 0.006, 0.02])
def test_with_two_models_the_rule_is_the_duels(dp, dl):
    co, fixed = (28.0, 0.30), (28.0 + dp, 0.30 + dl)
    scores = {"candidate": {"psnr_y": co[0], "lpips": co[1]}, "challenger": {"psnr_y": fixed[0], "lpips": fixed[1]}}
    assert pick_winner(scores, T) == _old_duel(co, fixed)


@pytest.mark.parametrize("figures, winner", [
    # fidelity first: the highest PSNR-Y beyond the tolerance wins whatever its LPIPS
    ({"candidate": (28.0, 0.30), "unpaired": (28.2, 0.35), "challenger": (27.9, 0.29)}, "unpaired"),
    ({"candidate": (28.0, 0.30), "unpaired": (27.8, 0.30), "challenger": (28.3, 0.40)}, "challenger"),
    ({"candidate": (28.3, 0.40), "unpaired": (28.0, 0.30), "challenger": (28.0, 0.20)}, "candidate"),
    # all level: the student co-learned with fit pairs is kept
    ({"candidate": (28.0, 0.300), "unpaired": (28.03, 0.298), "challenger": (28.04, 0.297)}, "candidate"),
    # level on PSNR-Y: the lowest LPIPS by more than its tolerance
    ({"candidate": (28.0, 0.30), "unpaired": (28.01, 0.29), "challenger": (28.0, 0.31)}, "unpaired"),
    ({"candidate": (28.0, 0.30), "unpaired": (28.01, 0.29), "challenger": (28.02, 0.28)}, "challenger"),
    # the twin and the challenger tie with each other, both beat the candidate: the co-learned twin is kept
    ({"candidate": (27.8, 0.30), "unpaired": (28.0, 0.30), "challenger": (28.03, 0.30)}, "unpaired"),
    # only models within the tolerance of the best PSNR-Y contend: the candidate's better LPIPS does not count
    ({"candidate": (27.9, 0.10), "unpaired": (28.0, 0.30), "challenger": (28.0, 0.31)}, "unpaired"),
])
def test_three_models_fidelity_first_ties_keep_the_co_learned(figures, winner):
    duel = challenge(rows(**figures), T, "s-co", "fixed-t1", "unpaired-s-co")
    assert duel["winner"] == winner and duel["roles"] == ["candidate", "unpaired", "challenger"]
    message = duel["message"]
    for name in ("the co-learned student s-co with fit pairs", "the co-learned student s-co, without fit pairs",
                 "the fixed-degradation student t1"):
        assert name in message
    for psnr, lp in figures.values():  # every model's figures are quoted
        assert f"PSNR-Y {psnr:.3f} dB" in message and f"LPIPS {lp:.4f}" in message
    assert f"so the gate picks, and its checks judge, {duel['names'][winner]}" in message


def test_the_message_never_says_better_while_quoting_a_worse_figure():
    duel = challenge(rows(candidate=(28.0, 0.30), unpaired=(28.2, 0.35), challenger=(27.5, 0.25)), T,
                     "s-co", "fixed-t1", "unpaired-s-co")
    assert duel["winner"] == "unpaired"
    said = duel["message"].split("so the gate picks, and its checks judge,", 1)[1]
    assert "better than" not in said and said.count("it trades against") == 2  # worse LPIPS than both
    clean = challenge(rows(candidate=(28.0, 0.30), unpaired=(28.2, 0.28), challenger=(27.5, 0.35)), T,
                      "s-co", "fixed-t1", "unpaired-s-co")
    assert clean["message"].split("so the gate picks, and its checks judge,", 1)[1].count("is better than") == 2


def test_without_a_challenger_the_twin_and_the_candidate_are_judged_alone():
    duel = challenge(rows(candidate=(28.0, 0.30), unpaired=(28.0, 0.30)), T, "s-co", None, "unpaired-s-co")
    assert duel["winner"] == "candidate" and duel["roles"] == ["candidate", "unpaired"] and duel["fixed"] is None
    assert "compared 2 students" in duel["message"] and "are level within" in duel["message"]


# --- the gate on calibration pairs --------------------------------------------------------------------------

def _camera_with_fit_pairs(plant, candidate_change=offset, twin_change=None, challenger_change=offset):
    save_sr(plant, "teacher", "t1")
    fixed = save_sr(plant, "student", "fixed-t1", challenger_change, challenger=True, teacher={"version": "t1"})
    co = save_sr(plant, "student", "s-co", candidate_change, camera="field_cam", teacher={"version": "t1"},
                 fit_pairs=["fit-1", "fit-2"])  # pairs the gate never sees (not among p1-p3)
    twin = save_sr(plant, "student", "unpaired-s-co", twin_change, camera="field_cam", teacher={"version": "t1"},
                   fit_pairs=[], unpaired_twin_of="s-co")
    save_downsampler(plant, "s-co")
    save_downsampler(plant, "unpaired-s-co")
    return co, twin, fixed


def test_the_gate_serves_the_unpaired_twin_when_it_wins_and_the_report_names_all_three(plant):
    co, twin, fixed = _camera_with_fit_pairs(plant)
    assert ev.unpaired_twin(plant, co) == twin == unpaired_twin_dir(plant, "s-co")
    decision = ev.evaluate_gate(plant, co, None, STRICT, lpips=FakeLPIPS(), device="cpu", camera="field_cam")
    duel = decision.challenge
    assert duel["winner"] == "unpaired" and decision.served == "unpaired-s-co" and decision.passed
    assert decision.action == "would_promote" and set(duel["scores"]) == {"candidate", "unpaired", "challenger"}
    assert "The co-learned student s-co, without fit pairs passes the promotion gate, so it may be promoted: " \
           "the promoted_student asset" in decision.plain()
    assert set(decision.realism) == {"candidate", "unpaired"}
    assert decision.realism["candidate"]["available"] and decision.realism["candidate"]["pairs"] == 3
    assert (twin / "consistency.json").is_file()  # it may be served: thresholds fitted on the same pairs
    done = promote_after_gate(plant, co, "field_cam")
    assert done.version == "unpaired-s-co" and promotions(plant, "field_cam")[-1]["version"] == "unpaired-s-co"
    assert "without fit pairs" in promotions(plant, "field_cam")[-1]["reason"]

    # The report asset passes the promoted student (now the twin) as the one to compare with: never itself.
    out = ev.run_evaluation(plant, plant.models / "teacher" / "t1", co, twin, plant.models / "downsampler" / "s-co",
                            DAY, STRICT, lpips=FakeLPIPS(), device="cpu", camera="field_cam")
    s = out.summary
    assert "promoted" not in s["methods"] and s["gate"]["reference"] is None
    assert "unpaired-s-co" in json.dumps(s["consistency"])  # the limits of the model in use, not the candidate's
    assert {"candidate", "unpaired", "challenger"} <= set(s["methods"]) and "unpaired" in out.reused
    assert s["served"] == "unpaired" and s["models"]["unpaired"]["version"] == "unpaired-s-co"
    assert s["realism_unpaired"]["available"] and s["gate"]["realism"]["unpaired"]["pairs"] == 3
    page = (out.report_dir / "index.html").read_text()
    assert "G(HR), fitted with the fit pairs" in page and "G(HR), learned without them" in page
    assert "target band" in page and "id='realism-sentence'" in page
    assert "Ranked by the PSNR-Y gain of the new student without fit pairs" in page
    from sr_pipeline.defs.evaluation.assets import _report_metadata, duel_metadata, realism_metadata

    md = _report_metadata(out, plant.root)  # the report asset's metadata names all three and both G's
    table = md["judged_students"].value
    assert table.count("| the co-learned student") == 2 and "| the fixed-degradation student t1 |" in table
    assert md["duel_winner"] == "unpaired" and {"candidate_psnr_y", "unpaired_psnr_y", "challenger_lpips"} <= set(md)
    assert {"g_with_pairs_psnr_y", "g_with_pairs_lap_ratio", "g_without_pairs_lap_ratio", "bicubic_down_psnr_y"} <= set(md)
    assert md["g_with_pairs_sharpness"] in ("inside", "too blurry", "too sharp")
    checks = duel_metadata(decision.challenge) | realism_metadata(decision.realism)  # the gate checks' metadata
    assert checks["duel_winner"] == "unpaired" and checks["g_without_pairs_psnr_y"] == pytest.approx(
        decision.realism["unpaired"]["learned_psnr"])
    assert duel_metadata(None) == {} and realism_metadata(None) == {}
    head = " ".join(s["headline"])
    assert "the camera model fitted with the camera's fit pairs imitates" in head
    assert "the camera model learned without them imitates" in head and " beat" not in head


def test_the_candidate_with_fit_pairs_is_kept_on_a_tie(plant):
    co, _, _ = _camera_with_fit_pairs(plant, candidate_change=None, twin_change=None, challenger_change=None)
    decision = ev.evaluate_gate(plant, co, None, STRICT, lpips=FakeLPIPS(), device="cpu", camera="field_cam")
    assert decision.challenge["winner"] == "candidate" and decision.served == "s-co"
    assert re.search(r"are level within the gate's tolerances", decision.challenge["message"])


def test_a_camera_without_fit_pairs_is_judged_against_the_challenger_alone(plant):
    save_sr(plant, "student", "fixed-t1", offset, challenger=True, teacher={"version": "t1"})
    co = save_sr(plant, "student", "s-co", camera="field_cam", teacher={"version": "t1"}, fit_pairs=[])
    # a stray twin folder does not make a camera without fit pairs a three-way case
    save_sr(plant, "student", "unpaired-s-co", offset, camera="field_cam", teacher={"version": "t1"},
            unpaired_twin_of="s-co")
    assert ev.unpaired_twin(plant, co) is None
    decision = ev.evaluate_gate(plant, co, None, STRICT, lpips=FakeLPIPS(), device="cpu", camera="field_cam")
    assert decision.challenge["roles"] == ["candidate", "challenger"] and decision.challenge["winner"] == "candidate"
    assert "unpaired" not in decision.challenge and decision.realism is None  # no G was saved for it
    assert re.search(r"the co-learned student s-co (is better than|trades against) the fixed-degradation student",
                     decision.challenge["message"])


# --- the camera model's paired realism ----------------------------------------------------------------------

def _bicubic_pairs(tmp_path: Path, n: int = 3) -> list[Pair]:
    """Pairs whose real LR is exactly bicubic down(HR): the answer is known."""
    from PIL import Image

    from sr_pipeline.sr.images.tensors import downsample, to_tensor, to_uint8

    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        y, x = np.mgrid[0:64, 0:64]
        hr = np.stack([np.sin(x / (2 + c) + i) * 60 + np.cos(y / 3) * 40 + 128 for c in range(3)], -1)
        hr = np.clip(hr + rng.normal(0, 20, hr.shape), 0, 255).astype(np.uint8)
        lr = to_uint8(downsample(to_tensor(hr), 4))
        for side, img in (("hr", hr), ("lr", lr)):
            (tmp_path / side).mkdir(exist_ok=True)
            Image.fromarray(img).save(tmp_path / side / f"{i}.png")
        pairs.append(Pair(f"p{i}", tmp_path / "hr" / f"{i}.png", tmp_path / "lr" / f"{i}.png"))
    return pairs


def test_a_g_that_is_plain_bicubic_down_scores_as_bicubic_and_sits_in_the_band(layout, tmp_path):
    g = save_downsampler(layout, "g0")  # G starts as bicubic downsampling (zero residual)
    r = ev.downsampler_realism(_bicubic_pairs(tmp_path), g)
    assert r["available"] and r["pairs"] == 3
    assert r["learned_psnr"] == pytest.approx(r["bicubic_psnr"], abs=1e-6)
    assert r["learned_lap_ratio"] == pytest.approx(r["bicubic_lap_ratio"], abs=1e-9)
    assert r["bicubic_lap_ratio"] == pytest.approx(1.0) and r["sharpness"] == r["bicubic_sharpness"] == "inside"
    assert r["per_image"][0]["learned_lap_ratio"] == pytest.approx(1.0)
    assert r["fit_pairs"] == 0 and r["fit_pairs_warning"] is None  # its training.json lists no fit pairs


def test_the_band_is_judged_on_gs_lr_with_its_grain_as_the_camera_stores_its_own(layout, tmp_path):
    from sr_pipeline.sr.train.shared import save_model_dir
    from sr_pipeline.sr.models.downsampler import LearnedDownsampler

    g = LearnedDownsampler(scale=4, channels=8, num_blocks=1, norm_num_groups=4, noise_model="camera")
    g.scale_noise(15.0)  # a grainy camera model (about 15 levels): bicubic-down plus grain
    path = save_model_dir(layout.models / "downsampler" / "grainy", g.save_pretrained,
                          {"kind": "downsampler", "version": "grainy"})
    r = ev.downsampler_realism(_bicubic_pairs(tmp_path), path)
    assert r["learned_lap_ratio_noise_free"] == pytest.approx(1.0, abs=0.01)  # its blur is the camera's
    assert r["learned_lap_ratio"] > 1.1  # its grain is not: the real LR here has none
    assert r["sharpness"] == ev.sharpness_words(r["learned_lap_ratio"])
    again = ev.downsampler_realism(_bicubic_pairs(tmp_path), path)
    assert again["learned_lap_ratio"] == r["learned_lap_ratio"]  # a seeded draw: the same report twice


@pytest.mark.parametrize("ratio, words", [(0.5, "too blurry"), (0.79, "too blurry"), (0.8, "inside"), (1.0, "inside"),
                                          (1.25, "inside"), (1.3, "too sharp"), (None, "not measured"),
                                          (float("inf"), "not measured")])
def test_the_band_in_words(ratio, words):
    assert ev.sharpness_words(ratio) == words


def test_the_report_table_and_sentence_read_the_band(layout):
    from sr_pipeline.evaluation import report_page as report

    def realism(ratio, psnr):
        return {"available": True, "pairs": 4, "metric": "psnr_y", "learned_psnr": psnr, "bicubic_psnr": 30.0,
                "learned_lap_ratio": ratio, "bicubic_lap_ratio": 3.1, "band": [0.8, 1.25],
                "sharpness": ev.sharpness_words(ratio), "bicubic_sharpness": "too sharp",
                "per_image": [{"image": "a", "learned_psnr": psnr, "bicubic_psnr": 30.0, "learned_lap_ratio": ratio,
                               "bicubic_lap_ratio": 3.1}]}

    summary = {"realism": realism(1.02, 32.5), "realism_unpaired": realism(0.41, 31.0),
               "gate": {"thresholds": {"psnr_tolerance_db": 0.05, "lpips_tolerance": 0.005}}}
    sentence = report.realism_sentence(summary)
    assert "fitted with the camera's fit pairs imitates the field camera's real low-resolution images more closely " \
           "than plain shrinking (PSNR-Y 32.50 against 30.00 dB" in sentence
    assert "keeps 1.02x of their fine detail, inside the target band" in sentence
    assert "learned without them" in sentence and "0.41x of their fine detail, too blurry" in sentence
    assert "plain shrinking keeps 3.10x, too sharp" in sentence
    page = report._realism_html(summary)
    assert page.split("</table>")[0].count("<tr>") == 4 and "1.02x" in page and "0.41x" in page and "too blurry" in page
    single = report.realism_sentence({"realism": realism(1.4, 29.0)})
    assert single.startswith("On 4 gate pairs, the learned camera model imitates") and "too sharp" in single
    assert "less closely than plain shrinking" in single
    few = {**summary, "realism": {**realism(1.02, 32.5), "fit_pairs": 2,
                                  "fit_pairs_warning": "only 2 fit pair(s), fewer than the 5 advised"}}
    assert "the camera model fitted with the camera's 2 fit pairs imitates" in report.realism_sentence(few)
    assert "id='fit-pairs-warning'>Fit pairs: only 2 fit pair(s), fewer than the 5 advised.</p>" \
        in report._realism_html(few)
    assert "fit-pairs-warning" not in page

    grain = {**summary, "realism": {**realism(0.98, 32.5), "learned_lap_ratio_noise_free": 0.71}}
    said = report.realism_sentence(grain)
    assert "keeps 0.98x of their fine detail (with the model's grain and compression, as the camera's images carry " \
           "theirs), inside the target band" in said and "below it its images are smoother than the camera's" in said
    assert "<td>0.98x</td><td>inside</td><td>0.71x</td>" in report._realism_html(grain)


# --- training the twin --------------------------------------------------------------------------------------

def test_the_twin_is_trained_only_for_a_camera_with_fit_pairs(layout, monkeypatch):
    """defs/training/assets.py launches one more co-learning run, without the fit pairs, only when the student used some."""
    from sr_pipeline.defs.training import assets as training

    launched = []

    def fake_launch(context, settings, client, kind, lay, args, keys):
        launched.append(args)
        out = Path(args[args.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "training.json").write_text(json.dumps({"unpaired_twin_of": args[args.index("--unpaired-twin-of") + 1]}))

    monkeypatch.setattr(training, "_launch", fake_launch)

    class Log:
        def info(self, message):
            pass

    context = type("Context", (), {"log": Log()})()
    run_dir = layout.run_dir("colearn", "cpu-demo-abc")
    plain = save_sr(layout, "student", "s-plain", camera="field_cam", fit_pairs=[])
    assert training._ensure_unpaired_twin(context, None, None, layout, ["--camera", "field_cam"], run_dir, plain) is None
    assert launched == []
    paired = save_sr(layout, "student", "s-paired", camera="field_cam", fit_pairs=["fit-1", "fit-2"])
    twin = training._ensure_unpaired_twin(context, None, None, layout, ["--camera", "field_cam"], run_dir, paired)
    assert twin == unpaired_twin_dir(layout, "s-paired") and len(launched) == 1
    args = launched[0]
    assert args[:2] == ["--camera", "field_cam"] and "--resume" in args
    assert args[args.index("--downsampler-out") + 1] == str(unpaired_twin_dir(layout, "s-paired", "downsampler"))
    assert Path(args[args.index("--run-dir") + 1]).name == "cpu-demo-abc-unpaired"  # its own resumable state
    assert training._ensure_unpaired_twin(context, None, None, layout, [], run_dir, paired) == twin
    assert len(launched) == 1  # already trained: reused


def test_the_cli_trains_the_twin_without_the_fit_pairs(monkeypatch, tmp_path):
    """``sr-pipeline train colearn --unpaired-twin-of V`` drops the camera's fit pairs and names the twin's origin."""
    from sr_pipeline.cli import build_parser
    from sr_pipeline.training import run

    seen = {}

    def fake_train(profile, teacher, hr, field, run_dir, student, g, **kw):
        seen.update(kw)

    monkeypatch.setattr("sr_pipeline.sr.train.stages.colearn.train_colearn", fake_train)
    monkeypatch.setattr(run, "_teacher_and_references", lambda layout, teacher: (tmp_path, [], []))
    monkeypatch.setattr(run, "field_camera_images", lambda layout, camera, registry: (camera, [], []))
    monkeypatch.setattr(run, "field_camera_jpeg", lambda layout, camera: (None, 0.0))
    pair = (np.zeros((16, 16, 3), np.uint8), np.zeros((4, 4, 3), np.uint8))
    monkeypatch.setattr(run, "field_camera_fit_pairs", lambda layout, camera, registry, warn=True: ([pair], ["fit-1"]))
    from sr_pipeline.common.cameras import load_registry
    from sr_pipeline.sr.train.profile import Profile
    from sr_pipeline.storage.layout import DataLayout

    profile = Profile.from_yaml(Path(__file__).resolve().parents[2] / "configs" / "cpu-demo.yaml")
    layout = DataLayout(tmp_path / "data")
    run.train_colearn_from_catalog(layout, profile, camera="field_cam", registry=load_registry(),
                                   out=tmp_path / "s", downsampler_out=tmp_path / "g", run_dir=tmp_path / "r")
    assert seen["fit_pair_names"] == ["fit-1"] and seen["unpaired_twin_of"] is None
    with pytest.raises(ValueError, match="--unpaired-twin-of s: no student of that version"):
        run.train_colearn_from_catalog(layout, profile, camera="field_cam", registry=load_registry(),
                                       out=tmp_path / "s2", downsampler_out=tmp_path / "g2", unpaired_twin_of="s")
    (layout.model_dir("student", "s")).mkdir(parents=True)
    (layout.model_dir("student", "s") / "training.json").write_text("{}")
    run.train_colearn_from_catalog(layout, profile, camera="field_cam", registry=load_registry(),
                                   out=tmp_path / "s2", downsampler_out=tmp_path / "g2", run_dir=tmp_path / "r2",
                                   unpaired_twin_of="s")
    assert seen["fit_pairs"] == [] and seen["fit_pair_names"] == [] and seen["unpaired_twin_of"] == "s"
    monkeypatch.setattr(run, "field_camera_fit_pairs", lambda layout, camera, registry, warn=True: ([], []))
    with pytest.raises(ValueError, match="field_cam has no fit pairs, so its unpaired twin would be the same run"):
        run.train_colearn_from_catalog(layout, profile, camera="field_cam", registry=load_registry(),
                                       out=tmp_path / "s3", downsampler_out=tmp_path / "g3", unpaired_twin_of="s")
    args = build_parser().parse_args(["train", "colearn", "--config", "x.yaml", "--unpaired-twin-of", "v1"])
    assert args.unpaired_twin_of == "v1"


def test_a_jpeg_cameras_g_is_judged_through_its_compression(layout, tmp_path):
    """A camera that uploads JPEG stores its LR compressed: G's LR is compared as that camera would store it."""
    from sr_pipeline.sr.images.jpeg_settings import JpegSettings, annex_k_luma
    from sr_pipeline.sr.models.downsampler import LearnedDownsampler
    from sr_pipeline.sr.train.shared import save_model_dir

    coarse = JpegSettings((tuple(t * 4 for t in annex_k_luma(30)),), "grey")  # heavy compression
    figures = {}
    for name, jpeg in (("plain", None), ("jpeg", coarse.to_config())):
        g = LearnedDownsampler(scale=4, noise_model="camera", jpeg=jpeg)
        folder = save_model_dir(layout.models / "downsampler" / name, g.save_pretrained, {"kind": "downsampler"})
        figures[name] = ev.downsampler_realism(_bicubic_pairs(tmp_path), folder)
    assert figures["plain"]["learned_lap_ratio"] == pytest.approx(1.0, abs=0.05)
    # The blocks and lost detail of the compression show in both figures: G is no longer plain bicubic-down.
    assert abs(figures["jpeg"]["learned_lap_ratio"] - figures["plain"]["learned_lap_ratio"]) > 0.1
    assert figures["jpeg"]["learned_psnr"] < figures["plain"]["learned_psnr"] - 1
    assert figures["jpeg"]["bicubic_psnr"] == pytest.approx(figures["plain"]["bicubic_psnr"])  # the baseline is plain
