"""The evaluation run, its report folder, the promotion gate and promotion, on tiny models and
catalogued pairs.

The calibration pairs are made so that the right answer is known without training: each HR image is
the network's own bicubic enlargement (torch, a=-0.75) of its LR plus a little noise, so a student
whose residual is zero (an untrained one) beats PIL's bicubic (a=-0.5) by several dB, a student
with a small constant offset is still better than bicubic but clearly worse than the zero one, and
NaN or wild weights are far worse.
"""

import argparse
import json
import re
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch
from dagster import DagsterInstance, materialize
from PIL import Image

from conftest import encode
from sr_pipeline.evaluation import calibration as ev
from sr_pipeline.evaluation.commands import promote_cli
from sr_pipeline.evaluation.gate import CRITERIA, GateThresholds
from sr_pipeline.evaluation.promotion import PromotionError, promote_after_gate, reference_student
from sr_pipeline.defs.evaluation.resources import GateSettings
from sr_pipeline.defs.evaluation.assets import evaluation_report, promoted_student, promotion_gate
from sr_pipeline.defs.plant.partitions import field_cameras
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.intake.ingest import ingest_folder
from sr_pipeline.storage.registry import promotions, record_promotion
from sr_pipeline.sr.judge import lpips_weights
from sr_pipeline.sr.models.diffusion import ResShiftSchedule
from sr_pipeline.sr.models.downsampler import LearnedDownsampler
from sr_pipeline.sr.data.pairs import EvaluationError
from sr_pipeline.sr.images.tensors import to_tensor, to_uint8, upsample
from sr_pipeline.sr.judge.lpips_weights import Unavailable
from sr_pipeline.sr.models.upsampler import SRUNet
from sr_pipeline.sr.train.shared import save_model_dir

DAY = date(2026, 3, 2)
STRICT = GateThresholds(psnr_tolerance_db=0.05, lpips_tolerance=0.005, require_lpips=True)


class FakeLPIPS:
    """A stand-in perceptual distance (mean absolute difference), so tests need no AlexNet weights."""

    available = True

    def __call__(self, sr: np.ndarray, hr: np.ndarray) -> float:
        return float(np.abs(sr.astype(float) - hr).mean() / 255)


# --- tiny plant ------------------------------------------------------------------------------------

def lr_texture(seed: int, h: int = 16, w: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / (2 + c) + seed) * 50 + np.cos(y / 3) * 40 + 128 for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)


def add_pairs(layout, registry, tmp_path: Path, seeds: list[int], batch: str, camera: str = "field_cam") -> None:
    """Calibration pairs uploaded by a field camera: pairs/<name>/{hr,lr}/."""
    src = tmp_path / f"upload-{batch}"
    rng = np.random.default_rng(len(seeds))
    for seed in seeds:
        lr = lr_texture(seed, 16, 16 + 4 * (seed % 2))
        hr = to_uint8(upsample(to_tensor(lr), 4).clamp(-1, 1)).astype(float)
        hr = np.clip(hr + rng.normal(0, 1, hr.shape), 0, 255).astype(np.uint8)
        for side, img in (("hr", hr), ("lr", lr)):
            (src / "pairs" / f"p{seed}" / side).mkdir(parents=True)
            (src / "pairs" / f"p{seed}" / side / "x.png").write_bytes(encode(img))
    ingest_folder(layout, registry, src, camera, batch_key=batch)


def save_sr(layout, kind: str, version: str, change=None, steps: int = 4, **info) -> Path:
    torch.manual_seed(0)
    net = SRUNet(scale=4, block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4,
                 num_train_timesteps=steps)
    if change is not None:
        with torch.no_grad():
            change(net)
    schedule = ResShiftSchedule(num_steps=steps, kappa=1.0)

    def save(tmp):
        net.save_pretrained(tmp)
        schedule.save_config(tmp)

    return save_model_dir(layout.models / kind / version, save, {"kind": kind, "version": version, **info})


def save_downsampler(layout, version: str) -> Path:
    g = LearnedDownsampler(scale=4, channels=8, num_blocks=1, norm_num_groups=4)
    return save_model_dir(layout.models / "downsampler" / version, g.save_pretrained,
                          {"kind": "downsampler", "version": version})


def nan_weights(net: SRUNet) -> None:
    net.unet.conv_out.bias.fill_(float("nan"))


def wild_weights(net: SRUNet) -> None:
    for p in net.parameters():
        p.normal_(0, 0.5)


def offset(net: SRUNet) -> None:
    net.unet.conv_out.bias.fill_(0.004)  # about 0.5 grey levels: still far better than bicubic here


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks gain nothing from threads, and on a busy 2-core machine OpenMP threads that
    wait for each other make every call ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def plant(layout, registry, tmp_path):
    add_pairs(layout, registry, tmp_path, [1, 2, 3], "calib-1")
    return layout


# --- the gate --------------------------------------------------------------------------------------

def test_gate_passes_a_good_student_and_blocks_a_nan_or_wild_one(plant):
    good = save_sr(plant, "student", "s-good")
    nan = save_sr(plant, "student", "s-nan", nan_weights)
    wild = save_sr(plant, "student", "s-wild", wild_weights)

    with pytest.warns(RuntimeWarning):  # NaN pixels cast to uint8
        blocked = ev.evaluate_gate(plant, nan, None, STRICT, lpips=FakeLPIPS(), device="cpu")
    assert not blocked.passed and blocked.action == "rejected"
    with pytest.raises(PromotionError, match="did not pass the promotion gate"):
        promote_after_gate(plant, nan)
    valid = blocked.criteria[0]
    assert valid.name == "valid_outputs" and not valid.passed
    assert "NaN or infinity" in valid.message and "blank" in valid.message

    worse = ev.evaluate_gate(plant, wild, None, STRICT, lpips=FakeLPIPS(), device="cpu")
    by_name = {c.name: c for c in worse.criteria}
    assert by_name["valid_outputs"].passed and not by_name["not_worse_than_bicubic"].passed
    assert by_name["not_worse_than_bicubic"].values["psnr_y"] < by_name["not_worse_than_bicubic"].values["bicubic_psnr_y"]
    assert "below plain enlargement" in by_name["not_worse_than_bicubic"].message
    assert promotions(plant) == []
    assert "not promoted" in worse.plain() and "no student is in use yet" in worse.plain()

    with pytest.raises(PromotionError, match="no promotion gate result"):
        promote_after_gate(plant, good)  # the gate has not judged it yet
    passed = ev.evaluate_gate(plant, good, None, STRICT, lpips=FakeLPIPS(), device="cpu")
    assert passed.passed and passed.action == "would_promote" and promotions(plant) == []  # the gate only decides
    values = passed.criteria[1].values
    assert values["psnr_y"] > values["bicubic_psnr_y"] + 3 and values["lpips"] < values["bicubic_lpips"]
    assert passed.criteria[2].message.startswith("no promoted student")
    kept = json.loads((plant.run_dir("gate", "s-good") / "gate.json").read_text())
    assert kept["served_path"] == "models/student/s-good"  # relative to the data root, which can move
    done = promote_after_gate(plant, good)
    assert (done.action, done.version, done.path) == ("promoted", "s-good", good.resolve())
    [entry] = promotions(plant)
    assert entry["version"] == "s-good" and Path(entry["path"]) == good.resolve()
    assert "promotion gate passed on 3 calibration pairs" in entry["reason"]

    again = ev.evaluate_gate(plant, good, None, STRICT, lpips=FakeLPIPS(), device="cpu")
    assert again.action == "already_promoted" and len(promotions(plant)) == 1
    assert promote_after_gate(plant, good).action == "already_promoted" and len(promotions(plant)) == 1


def test_promotion_needs_the_gate_to_have_judged_the_current_pairs(plant, registry, tmp_path):
    good = save_sr(plant, "student", "s1")
    assert ev.evaluate_gate(plant, good, None, STRICT, lpips=FakeLPIPS(), device="cpu").passed
    add_pairs(plant, registry, tmp_path, [4], "calib-2")
    with pytest.raises(PromotionError, match="calibration pairs changed"):
        promote_after_gate(plant, good)
    assert promotions(plant) == []


def test_tolerance_against_the_promoted_student(plant):
    first = save_sr(plant, "student", "s1")
    record_promotion(plant, "s1", str(first), "test")
    second = save_sr(plant, "student", "s2", offset)
    ref = reference_student(plant, "s2")
    assert ref["version"] == "s1"

    worse = ev.evaluate_gate(plant, second, Path(ref["path"]), STRICT, lpips=FakeLPIPS(), device="cpu")
    assert [c.passed for c in worse.criteria] == [True, True, False, True]
    assert "below the promoted student's" in worse.criteria[2].message
    assert worse.action == "rejected" and "the archive keeps using the student s1" in worse.plain()

    lenient = GateThresholds(psnr_tolerance_db=20.0, lpips_tolerance=0.5)
    ok = ev.evaluate_gate(plant, second, Path(ref["path"]), lenient, lpips=FakeLPIPS(), device="cpu")
    assert ok.passed and ok.action == "would_promote" and promotions(plant)[-1]["version"] == "s1"
    assert promote_after_gate(plant, second).action == "promoted" and promotions(plant)[-1]["version"] == "s2"
    assert reference_student(plant, "s2")["version"] == "s1"  # compared with the one before it


def test_lpips_unavailable_fails_the_gate_only_when_required(plant):
    good = save_sr(plant, "student", "s1")
    missing = Unavailable("no AlexNet weights here")
    strict = ev.evaluate_gate(plant, good, None, STRICT, lpips=missing, device="cpu")
    assert not strict.criteria[1].passed and "no AlexNet weights here" in strict.criteria[1].message
    relaxed = GateThresholds(require_lpips=False)
    ok = ev.evaluate_gate(plant, good, None, relaxed, lpips=missing, device="cpu")
    assert ok.passed and "LPIPS not measured" in ok.criteria[1].message


def test_rollback_with_promote_cli_is_not_undone_by_the_gate(plant, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # no instance to report to (test_archive covers that)
    s1 = save_sr(plant, "student", "s1")
    s2 = save_sr(plant, "student", "s2")
    record_promotion(plant, "s1", str(s1), "first")
    record_promotion(plant, "s2", str(s2), "second")

    assert promote_cli(argparse.Namespace(version="s1", reason="s2 blurs welds", json=False, layout=plant)) == 0
    assert "promoted student s1" in capsys.readouterr().out
    assert [e["version"] for e in promotions(plant)] == ["s1", "s2", "s1"]
    assert promotions(plant)[-1]["reason"] == "s2 blurs welds"

    again = ev.evaluate_gate(plant, s2, s1, STRICT, lpips=FakeLPIPS(), device="cpu")
    assert again.passed and again.action == "not_repromoted" and promotions(plant)[-1]["version"] == "s1"
    assert "rolled back" in again.plain()
    kept = promote_after_gate(plant, s2)  # promoted_student keeps the operator's choice
    assert (kept.action, kept.version, kept.entry) == ("not_repromoted", "s1", None) and len(promotions(plant)) == 3

    assert promote_cli(argparse.Namespace(version="s1", reason=None, json=False, layout=plant)) == 0
    assert "already the promoted" in capsys.readouterr().out and len(promotions(plant)) == 3
    assert promote_cli(argparse.Namespace(version="nope", reason=None, json=False, layout=plant)) == 2
    assert "no student 'nope'" in capsys.readouterr().err


def test_no_calibration_pairs_is_a_clear_failure(layout):
    good = save_sr(layout, "student", "s1")
    teacher = save_sr(layout, "teacher", "t1")
    blocked = ev.evaluate_gate(layout, good, None, STRICT, lpips=FakeLPIPS(), device="cpu")
    assert not any(c.passed for c in blocked.criteria) and "no calibration pairs" in blocked.criteria[1].message
    with pytest.raises(EvaluationError, match="no calibration pairs"):
        ev.run_evaluation(layout, teacher, good, None, None, DAY, lpips=FakeLPIPS(), device="cpu")


def test_plant_timezone():
    from sr_pipeline.common.clock import plant_timezone

    assert plant_timezone("Europe/Berlin").key == "Europe/Berlin"
    with pytest.raises(ValueError, match="SR_PIPELINE_PLANT_TZ"):
        plant_timezone("Mars/Olympus")


# --- the report folder -----------------------------------------------------------------------------

SUMMARY_KEYS = {"schema", "report_date", "camera", "created", "device", "methods", "lpips", "pairs", "split", "scale",
                "protocol", "labels", "models", "realism", "realism_unpaired", "consistency", "gate", "served", "headline",
                "previous_reports", "reused", "per_image_gain", "crop_border"}
STATS_KEYS = {"psnr_y", "ssim_y", "lpips", "hf_ratio", "ms_per_image", "mp_per_s", "n", "median"}


def test_run_evaluation_writes_the_dated_report_reusing_the_gate_scores(plant):
    teacher = save_sr(plant, "teacher", "t1")
    good = save_sr(plant, "student", "s1")
    down = save_downsampler(plant, "s1")
    gate = ev.evaluate_gate(plant, good, None, STRICT, lpips=FakeLPIPS(), device="cpu")
    for weights in good.rglob("*.safetensors"):  # the report must not load (let alone run) the candidate again
        weights.unlink()
    before = ev.run_evaluation(plant, teacher, good, None, None, date(2026, 3, 1), STRICT, lpips=FakeLPIPS(),
                               device="cpu")
    assert before.reused == ["bicubic", "candidate"] and before.summary["gate"]["action"] == "would_promote"
    assert before.summary["served"] is None and promotions(plant) == []  # the report reads, never records
    promote_after_gate(plant, good)
    out = ev.run_evaluation(plant, teacher, good, None, down, DAY, STRICT, lpips=FakeLPIPS(), device="cpu")
    assert out.reused == ["bicubic", "candidate"]
    assert [c.message for c in out.decision.criteria] == [c.message for c in gate.criteria]  # the same numbers

    assert out.report_dir == plant.reports / "2026-03-02"
    assert sorted(p.name for p in out.report_dir.iterdir()) == ["index.html", "metrics.parquet", "summary.json"]
    assert not [p for p in plant.reports.iterdir() if p.name.startswith(".")]  # no temp folder left
    summary = json.loads((out.report_dir / "summary.json").read_text())
    assert summary == out.summary and set(summary) == SUMMARY_KEYS
    assert summary["report_date"] == "2026-03-02" and summary["pairs"] == 3 and summary["scale"] == 4
    assert list(summary["methods"]) == ["bicubic", "teacher", "candidate"]
    for stats in summary["methods"].values():
        assert set(stats) == STATS_KEYS and stats["n"] == 3 and stats["mp_per_s"] > 0
    assert summary["models"]["teacher"] == {"version": "t1", "path": "models/teacher/t1", "steps": 4,
                                            "folder": "models/teacher/t1"}  # under the data root, never absolute
    assert summary["models"]["candidate"]["steps"] == 1 and summary["models"]["downsampler"]["version"] == "s1"
    assert summary["device"].startswith("cpu")
    gate = summary["gate"]
    assert gate["passed"] and gate["action"] == "already_promoted" and [c["name"] for c in gate["criteria"]] == list(CRITERIA)
    assert summary["served"] == "candidate" and promotions(plant)[-1]["version"] == "s1"
    # An untrained downsampler is exactly bicubic down(x): the same distance to the real LR.
    realism = summary["realism"]
    assert realism["available"] and realism["pairs"] == 3
    assert realism["learned_psnr"] == pytest.approx(realism["bicubic_psnr"]) and len(realism["per_image"]) == 3
    assert realism["learned_lap_ratio"] == pytest.approx(realism["bicubic_lap_ratio"])  # and as much fine detail
    assert summary["realism_unpaired"] is None  # no fit pairs, no twin
    # The gate fitted the consistency thresholds on its outputs; the report (which never ran the
    # candidate) shows the fit per camera.
    cons = summary["consistency"]
    assert cons["available"] and cons["pairs"] == 3
    assert cons["path"] == (good / "consistency.json").resolve().relative_to(plant.root.resolve()).as_posix()
    assert set(cons["cameras"]) == {"all", "field_cam"} and cons["camera_model"] == "G s1"
    assert set(cons["cameras"]["all"]) == {"pairs", "spearman", "worst_calibration", "worst_calibration_local",
                                           "thresholds", "source"}
    assert {"local_peak", "border_peak"} <= set(cons["cameras"]["all"]["thresholds"])
    assert "has been the promoted model since" in " ".join(summary["headline"])
    assert "1 earlier report, none with a comparable model" in " ".join(summary["headline"])

    df = pd.read_parquet(out.report_dir / "metrics.parquet")
    assert list(df.columns) == ["method", "image", "psnr_y", "ssim_y", "lpips", "hf_ratio", "ms"] and len(df) == 9
    cand = df[df["method"] == "candidate"]["psnr_y"].to_numpy()
    bic = df[df["method"] == "bicubic"]["psnr_y"].to_numpy()
    assert (cand > bic).all()

    page = (out.report_dir / "index.html").read_text()
    assert page.index("id='headline'") < page.index("id='summary'") < page.index("id='trend'")
    assert out.crops_png.startswith(b"\x89PNG") and out.trend_png.startswith(b"\x89PNG")
    assert "| new student |" in out.table_md


def test_a_second_report_the_same_day_gets_a_suffix_and_compares_with_the_first(plant, registry, tmp_path):
    teacher = save_sr(plant, "teacher", "t1")
    s1 = save_sr(plant, "student", "s1")
    record_promotion(plant, "s1", str(s1), "test")
    first = ev.run_evaluation(plant, teacher, s1, None, None, DAY, STRICT, lpips=FakeLPIPS(), device="cpu")
    assert first.reused == [] and first.summary["gate"]["action"] == "already_promoted"  # no gate ran: scored here
    before = (first.report_dir / "index.html").read_bytes()

    s2 = save_sr(plant, "student", "s2", offset)
    ev.evaluate_gate(plant, s2, s1, STRICT, lpips=FakeLPIPS(), device="cpu")
    add_pairs(plant, registry, tmp_path, [4], "calib-2")  # the gate's scores no longer match the pairs
    second = ev.run_evaluation(plant, teacher, s2, s1, None, DAY, STRICT, lpips=FakeLPIPS(), device="cpu")
    assert second.reused == []
    assert second.report_dir == plant.reports / "2026-03-02-2"
    assert (first.report_dir / "index.html").read_bytes() == before  # never overwritten
    s = second.summary
    assert s["pairs"] == 4 and s["previous_reports"] == 1
    assert list(s["methods"]) == ["bicubic", "teacher", "candidate", "promoted"]
    assert s["gate"]["action"] == "rejected" and s["served"] == "promoted"
    assert s["models"]["promoted"]["version"] == "s1"
    text = " ".join(s["headline"])
    assert "Last report (2026-03-02, 3 pairs)" in text and "calibration set changed" in text
    assert "was not promoted" in text and "keeps using the student s1" in text
    assert promotions(plant)[-1]["version"] == "s1"


# --- Dagster: the asset and the blocking checks -----------------------------------------------------

def _upstream(paths: dict[str, str]):
    """Stands in for the training assets (same keys and partitions), returning folders made by the test."""

    @dg.asset(name="teacher_checkpoint")
    def fake_teacher():
        return dg.Output(paths["teacher_checkpoint"])

    @dg.multi_asset(outs={k: dg.AssetOut() for k in ("co_trained_student", "learned_downsampler")},
                    name="fake_training", partitions_def=field_cameras)
    def fake_training():
        for k in ("co_trained_student", "learned_downsampler"):
            yield dg.Output(paths[k], output_name=k, metadata={"model_path": dg.MetadataValue.path(paths[k])})

    return [fake_teacher, fake_training]


@dg.asset(partitions_def=field_cameras)
def archive_probe(co_trained_student: str) -> str:
    """Downstream of the student, like the archive: must not run when the gate fails."""
    return co_trained_student


def test_asset_and_blocking_gate_in_a_dagster_instance(plant, cameras_file, monkeypatch):
    monkeypatch.setattr(lpips_weights, "load_lpips", lambda device="cpu": FakeLPIPS())
    teacher = save_sr(plant, "teacher", "t1")
    good = save_sr(plant, "student", "s-good")
    wild = save_sr(plant, "student", "s-wild", wild_weights)
    down = save_downsampler(plant, "s-good")
    resources = {"storage": PlantStorage(data_root=str(plant.root), cameras_file=str(cameras_file)),
                 "gate": GateSettings(device="cpu")}

    def run(student: Path, instance, selection=None):
        upstream = _upstream({"teacher_checkpoint": str(teacher), "co_trained_student": str(student),
                              "learned_downsampler": str(down)})
        return materialize([*upstream, promoted_student, evaluation_report, promotion_gate, archive_probe],
                           resources=resources, instance=instance, raise_on_error=False, selection=selection,
                           partition_key="field_cam")

    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("field_cameras", ["field_cam"])
        ok = run(good, instance)
        assert ok.success
        checks = {c.check_name: c for c in ok.get_asset_check_evaluations()}
        assert set(checks) == set(CRITERIA) and all(c.passed for c in checks.values())
        assert checks["not_worse_than_bicubic"].metadata["psnr_y"].value > checks["not_worse_than_bicubic"].metadata["bicubic_psnr_y"].value
        materialized = {e.asset_key.to_user_string() for e in ok.get_asset_materialization_events()}
        assert {"promoted_student", "evaluation_report", "archive_probe"} <= materialized
        [promo] = ok.asset_materializations_for_node("promoted_student")
        assert promo.tags["dagster/data_version"] == "s-good" and promo.metadata["action"].value == "promoted"
        report = plant.resolve(ok.output_for_node("evaluation_report"))  # stored relative to the data root
        assert report.name == "index.html" and report.parent.parent == plant.reports / "field_cam"
        assert checks["valid_outputs"].metadata["camera"].value == "field_cam"
        [mat] = ok.asset_materializations_for_node("evaluation_report")
        md = mat.metadata
        assert md["report"].value == report.relative_to(plant.root).as_posix() and md["calibration_pairs"].value == 3
        assert md["candidate"].value == "new student of field_cam s-good (models/student/s-good)"
        assert md["crops"].value.startswith("![") and "data:image/png;base64," in md["crops"].value
        assert md["metrics"].value.startswith("| method |") and "teacher (4 steps)" in md["metrics"].value
        assert "**Promotion.**" in md["summary"].value and md["promoted"].value is True
        assert md["gate_action"].value == "already_promoted"  # promoted_student recorded it just before
        assert md["reused_gate_scores"].value == "bicubic, candidate"  # the candidate was scored once
        assert md["psnr_gain_db"].value > 3
        assert promotions(plant)[-1]["version"] == "s-good" and promotions(plant)[-1]["camera"] == "field_cam"

        bad = run(wild, instance)
        checks = {c.check_name: c for c in bad.get_asset_check_evaluations()}
        assert not checks["not_worse_than_bicubic"].passed and checks["valid_outputs"].passed
        assert checks["not_worse_than_promoted"].metadata["compared_with"].value == "s-good"
        materialized = {e.asset_key.to_user_string() for e in bad.get_asset_materialization_events()}
        assert not {"archive_probe", "evaluation_report", "promoted_student"} & materialized
        assert promotions(plant)[-1]["version"] == "s-good"

        # The evaluation job selects the report alone: it reports the failed candidate.
        weekly = run(wild, instance, selection=[evaluation_report])
        assert weekly.success
        [mat] = weekly.asset_materializations_for_node("evaluation_report")
        assert mat.metadata["gate_action"].value == "rejected" and mat.metadata["promoted"].value is False
        assert "keeps using the student s-good" in mat.metadata["summary"].value


def test_promoted_student_refuses_a_candidate_the_gate_did_not_judge(plant, cameras_file):
    student = save_sr(plant, "student", "s1")
    upstream = _upstream({k: str(student) for k in ("teacher_checkpoint", "co_trained_student", "learned_downsampler")})
    with DagsterInstance.ephemeral() as instance:  # without the promotion_gate checks in the run
        instance.add_dynamic_partitions("field_cameras", ["field_cam"])
        result = materialize([*upstream, promoted_student], instance=instance, partition_key="field_cam",
                             selection=[upstream[1], promoted_student],
                             resources={"storage": PlantStorage(data_root=str(plant.root), cameras_file=str(cameras_file))},
                             raise_on_error=False)
    assert not result.success and promotions(plant) == []
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "no promotion gate result for student s1" in failure.event_specific_data.error.message


# --- the fixed-degradation challenger ---------------------------------------------------------------

def test_the_gate_promotes_the_fixed_degradation_challenger_when_it_beats_the_co_learned_student(plant):
    from sr_pipeline.evaluation.promotion import promote_after_gate

    teacher = save_sr(plant, "teacher", "t1")
    fixed = save_sr(plant, "student", "fixed-t1", challenger=True, teacher={"version": "t1"})
    co = save_sr(plant, "student", "s-co", offset, camera="field_cam", teacher={"version": "t1"})
    assert ev.fixed_degradation_challenger(plant, co) == fixed and ev.fixed_degradation_challenger(plant, fixed) is None
    decision = ev.evaluate_gate(plant, co, None, STRICT, lpips=FakeLPIPS(), device="cpu", camera="field_cam")
    duel = decision.challenge
    assert duel["winner"] == "challenger" and decision.served == "fixed-t1" and decision.passed
    assert duel["fixed"]["psnr_y"] - duel["co_learned"]["psnr_y"] == pytest.approx(duel["psnr_margin_db"])
    assert duel["psnr_margin_db"] > STRICT.psnr_tolerance_db
    assert re.search(r"the fixed-degradation student t1 (is better than|trades against) the co-learned student "
                     r"s-co", decision.plain())
    done = promote_after_gate(plant, co, "field_cam")  # the gate's winner is what gets promoted, for this camera
    assert done.version == "fixed-t1" and done.path == fixed.resolve()
    assert promotions(plant)[-1]["camera"] == "field_cam" and promotions(plant)[-1]["version"] == "fixed-t1"
    assert "the co-learned student s-co" in promotions(plant)[-1]["reason"]
    assert (fixed / "consistency.json").is_file()  # served now: its thresholds were fitted on the same pairs

    out = ev.run_evaluation(plant, teacher, co, None, None, DAY, STRICT, lpips=FakeLPIPS(), device="cpu",
                            camera="field_cam")
    s = out.summary
    assert out.report_dir == plant.reports / "field_cam" / "2026-03-02" and s["camera"] == "field_cam"
    assert "challenger" in s["methods"] and s["models"]["challenger"]["version"] == "fixed-t1"
    assert s["gate"]["challenge"]["winner"] == "challenger" and s["gate"]["action"] == "already_promoted"
    assert s["served"] == "challenger" and "| fixed-degradation student |" in out.table_md
    assert "fixed-degradation student t1 " in " ".join(s["headline"]) and " beat" not in " ".join(s["headline"])


def test_the_co_learned_student_is_kept_when_it_beats_or_ties_the_challenger(plant):
    save_sr(plant, "student", "fixed-t2", offset, challenger=True, teacher={"version": "t2"})
    co = save_sr(plant, "student", "s-co", camera="field_cam", teacher={"version": "t2"})
    decision = ev.evaluate_gate(plant, co, None, STRICT, lpips=FakeLPIPS(), device="cpu", camera="field_cam")
    assert decision.challenge["winner"] == "candidate" and decision.served == "s-co"
    assert re.search(r"the co-learned student s-co (is better than|trades against) the fixed-degradation student "
                     r"t2", decision.challenge["message"])
    save_sr(plant, "student", "fixed-t3", challenger=True, teacher={"version": "t3"})
    same = save_sr(plant, "student", "s-same", camera="field_cam", teacher={"version": "t3"})  # identical weights
    tie = ev.evaluate_gate(plant, same, None, STRICT, lpips=FakeLPIPS(), device="cpu", camera="field_cam")
    assert tie.challenge["winner"] == "candidate" and "are level within" in tie.challenge["message"]
    # without a challenger for its teacher there is no duel
    alone = save_sr(plant, "student", "s-alone", camera="field_cam", teacher={"version": "t9"})
    assert ev.evaluate_gate(plant, alone, None, STRICT, lpips=FakeLPIPS(), device="cpu").challenge is None


def test_the_challenger_can_be_served_again_after_the_camera_moved_on_from_it(plant):
    """The no-re-promotion rule protects students an operator rolled back from, not the shared baseline."""
    from sr_pipeline.evaluation.gate import choose_action
    from sr_pipeline.evaluation.promotion import promote_after_gate

    log = [{"version": "fixed-t1", "promoted_at": "t0"}, {"version": "s-co", "promoted_at": "t1"}]
    assert choose_action(log, "fixed-t1", True, promote=True) == ("not_repromoted", None)
    assert choose_action(log, "fixed-t1", True, promote=True, baseline=True) == ("promoted", None)
    fixed = save_sr(plant, "student", "fixed-t1", challenger=True, teacher={"version": "t1"})
    good = save_sr(plant, "student", "s-good", camera="field_cam", teacher={"version": "t0"})  # no challenger
    record_promotion(plant, "fixed-t1", str(fixed), "earlier", "field_cam")
    record_promotion(plant, "s-good", str(good), "then a co-learned student", "field_cam")
    worse = save_sr(plant, "student", "s-worse", offset, camera="field_cam", teacher={"version": "t1"})
    decision = ev.evaluate_gate(plant, worse, good, STRICT, lpips=FakeLPIPS(), device="cpu", camera="field_cam")
    assert decision.served == "fixed-t1" and decision.action == "would_promote"
    assert promote_after_gate(plant, worse, "field_cam").version == "fixed-t1"
