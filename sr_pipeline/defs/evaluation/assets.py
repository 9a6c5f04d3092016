"""The promotion gate (blocking checks on ``co_trained_student``), ``promoted_student`` and the
``evaluation_report`` asset, all per field camera (the ``field_cameras`` partition): a camera's
student is judged on that camera's calibration pairs against that camera's promoted student.

The gate is a ``multi_asset_check`` with four blocking specs (valid outputs, not worse than
bicubic, not worse than the promoted student, not over-sharpened). It runs right after the student is trained, before
any asset downstream of ``co_trained_student`` in the same run; when one check fails, those assets
(``promoted_student``, the report) are skipped in that run. The gate keeps its scores and decision
for the candidate (:mod:`sr_pipeline.evaluation.calibration`); ``promoted_student`` then records the
promotion (:mod:`sr_pipeline.evaluation.promotion`) and its data version is the promoted model's
version, so the camera's ``upscaled_archive/<camera>`` partitions made by another student turn stale
(and those of the cameras it is the fallback of; no other camera's). A failed gate's
reasons are in the checks' metadata, and the next ``evaluation_job`` run (weekly schedule, new
calibration pairs, or by hand) reports them to management: that job selects the report alone, so
it always runs; it reads the promotion log and reuses the gate's scores of the candidate. Torch is
imported only inside the functions.
"""


import math
from pathlib import Path

import dagster as dg

from sr_pipeline.defs.plant.partitions import field_cameras, latest_materialization
from sr_pipeline.defs.evaluation.resources import GateSettings
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.defs.training.assets import GPU_K8S_TAGS

STUDENT = dg.AssetKey("co_trained_student")


def materialized_path(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> str:
    """The folder the newest materialisation of ``key``'s ``partition`` recorded (its ``model_path`` metadata).

    The gate is not partitioned itself (partitioned checks are a Dagster preview), so an input would load
    every camera's student; it reads its own camera's from the instance instead."""
    event = latest_materialization(instance, key, partition)
    if event is None:
        raise dg.Failure(f"{key.to_user_string()} has no materialisation for field camera {partition!r}")
    value = event.metadata.get("model_path")
    if value is None:
        raise dg.Failure(f"the newest {key.to_user_string()} of field camera {partition!r} recorded no path")
    return str(value.value)


GATE_CHECKS = [
    dg.AssetCheckSpec("valid_outputs", asset=STUDENT, blocking=True,
                      description="No NaN or infinity from the network and no blank image on the calibration pairs."),
    dg.AssetCheckSpec("not_worse_than_bicubic", asset=STUDENT, blocking=True,
                      description="Mean PSNR-Y not below and mean LPIPS not above plain (bicubic) enlargement "
                      "on the calibration pairs."),
    dg.AssetCheckSpec("not_worse_than_promoted", asset=STUDENT, blocking=True,
                      description="Not worse than the promoted student beyond the GateSettings tolerances."),
    dg.AssetCheckSpec("not_over_sharpened", asset=STUDENT, blocking=True,
                      description="The outputs' high-frequency energy over their HR's (median over the "
                      "calibration pairs) is at most GateSettings.max_hf_ratio: no invented texture."),
]


def _check_metadata(values: dict) -> dict:
    return {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v))
            for k, v in values.items() if v is not None}


def duel_metadata(duel: dict | None) -> dict:
    """The students the gate judged against each other (the co-learned candidate, its unpaired twin for a camera
    with fit pairs, the fixed-degradation challenger): a table of their figures, the winner and the gate's
    sentence (worded by sr/judge/wording.py)."""
    if not duel:
        return {}
    names, scores = duel.get("names") or {}, duel.get("scores") or {}
    rows = ["| student | PSNR-Y (dB) | LPIPS | judged |", "|---|---|---|---|"]
    for role in duel.get("roles") or []:
        s = scores.get(role) or {}
        psnr = "n/a" if s.get("psnr_y") is None else f"{s['psnr_y']:.3f}"
        lp = "n/a" if s.get("lpips") is None else f"{s['lpips']:.4f}"
        rows.append(f"| {names.get(role, role)} | {psnr} | {lp} | {'yes' if role == duel['winner'] else ''} |")
    md = {"judged_students": dg.MetadataValue.md("\n".join(rows)), "duel_winner": str(duel["winner"]),
          "duel": dg.MetadataValue.text(str(duel.get("message", "")))}
    for role in duel.get("roles") or []:
        for k, v in (scores.get(role) or {}).items():
            if v is not None:
                md[f"{role}_{k}"] = float(v)
    return md


def realism_metadata(realism: dict | None) -> dict:
    """The camera models' paired realism on the gate pairs, by role (``candidate``: with fit pairs when the
    camera has them, ``unpaired``: its twin's): PSNR-Y of G(HR) and bicubic-down against the real LR, the
    Laplacian-energy ratio of each to the real LR (median) and whether G's lies in the 0.8-1.25x band."""
    md: dict = {}
    for role, r in (realism or {}).items():
        if not (r or {}).get("available"):
            continue
        g = "g_with_pairs" if role == "candidate" else "g_without_pairs"
        values = {f"{g}_psnr_y": r.get("learned_psnr"), f"{g}_lap_ratio": r.get("learned_lap_ratio"),
                  f"{g}_lap_ratio_noise_free": r.get("learned_lap_ratio_noise_free"),
                  "bicubic_down_psnr_y": r.get("bicubic_psnr"), "bicubic_down_lap_ratio": r.get("bicubic_lap_ratio")}
        md |= {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
        md[f"{g}_sharpness"] = str(r.get("sharpness", "not measured"))
    return md


@dg.multi_asset_check(
    specs=GATE_CHECKS,
    pool="gpu",
    op_tags=GPU_K8S_TAGS,  # every gpu-pool step asks Kubernetes for a GPU (test_k8s_jobs.py)
    description="The promotion gate of one field camera (the run's partition): scores its candidate, its promoted "
    "student and bicubic on its calibration pairs; promoted_student records a candidate that passes all four checks.",
)
def promotion_gate(context: dg.AssetCheckExecutionContext, storage: PlantStorage, gate: GateSettings):
    from sr_pipeline.evaluation.calibration import evaluate_gate
    from sr_pipeline.evaluation.promotion import reference_student
    from sr_pipeline.sr.data.pairs import EvaluationError
    from sr_pipeline.sr.models.checkpoints import model_version

    if not context.has_partition_key:
        raise dg.Failure("promotion_gate judges one field camera's student: run it with co_trained_student's "
                         "partition (the camera id)")
    camera = context.partition_key
    layout = storage.layout()
    candidate = layout.resolve(materialized_path(context.instance, STUDENT, camera))  # this root's, if moved
    ref = reference_student(layout, model_version(candidate), camera)
    try:
        decision = evaluate_gate(layout, candidate, Path(ref["path"]) if ref else None, gate.thresholds(),
                                 device=gate.device, camera=camera)
    except EvaluationError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info(decision.plain())
    extra = duel_metadata(decision.challenge) | realism_metadata(decision.realism)
    for c in decision.criteria:
        yield dg.AssetCheckResult(
            asset_key=STUDENT, check_name=c.name, passed=c.passed, severity=dg.AssetCheckSeverity.ERROR,
            description=c.message,
            metadata={**_check_metadata(c.values), "gate_action": decision.action, "candidate": decision.candidate,
                      "compared_with": decision.reference or "none", "camera": camera, **extra},
        )


@dg.asset(
    group_name="promotion",
    ins={"co_trained_student": dg.AssetIn(key=STUDENT)},
    partitions_def=field_cameras,
    description="The student the archive uses for the field camera (its value is the checkpoint folder, its data "
    "version the model version). Materialises only after the blocking promotion_gate checks on co_trained_student "
    "passed in the same run, and records the promotion; a student an operator rolled back from is not re-promoted "
    "(the promoted one stays). `sr-pipeline promote VERSION` reports a runless materialisation of it.",
)
def promoted_student(context: dg.AssetExecutionContext, co_trained_student: str,
                     storage: PlantStorage) -> dg.Output[str]:
    from sr_pipeline.evaluation.promotion import PromotionError, promote_after_gate

    try:
        done = promote_after_gate(storage.layout(), storage.layout().resolve(co_trained_student), context.partition_key)
    except PromotionError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info(f"{done.action}: the promoted student of field camera {context.partition_key} is {done.version}")
    layout = storage.layout()  # the metadata a person reads names folders under the data root, not the machine's
    return dg.Output(storage.layout().relative(done.path), data_version=dg.DataVersion(done.version),
                     metadata={"model_version": done.version,
                               "model_path": dg.MetadataValue.path(layout.relative(done.path)),
                               "camera": context.partition_key, "action": done.action,
                               "candidate": dg.MetadataValue.path(layout.relative(co_trained_student))})


def _report_metadata(outcome, data_root: Path) -> dict:
    """The report's metadata: a manager's page, so models by readable name and paths under the data root."""
    from sr_pipeline.evaluation.calibration import data_relative
    from sr_pipeline.sr.images.figures import png_markdown
    from sr_pipeline.evaluation.report_page import gains, realism_sentence
    from sr_pipeline.sr.judge.scoring import metrics

    s = outcome.summary
    g = gains(s)
    md = {
        "report": data_relative(outcome.report_path, data_root),
        "summary": dg.MetadataValue.md("\n".join(f"- {line}" for line in outcome.headline)),
        "metrics": dg.MetadataValue.md(outcome.table_md),
        "crops": dg.MetadataValue.md(png_markdown(outcome.crops_png, "LR | bicubic | teacher | student | HR (median image)")),
        "trend": dg.MetadataValue.md(png_markdown(outcome.trend_png, "trend across reports")),
        "gate": dg.MetadataValue.md("\n".join(
            ["| check | result | detail |", "|---|---|---|"]
            + [f"| {c['name']} | {'pass' if c['passed'] else 'FAIL'} | {c['message']} |" for c in s["gate"]["criteria"]])),
        "gate_action": s["gate"]["action"],
        "promoted": s["gate"]["action"] == "already_promoted",
        "reused_gate_scores": ", ".join(outcome.reused) or "none",
        "calibration_pairs": int(s["pairs"]),
        "camera": str(s.get("camera") or ""),
        "device": s["device"],
        "candidate": _name_and_folder(s, "candidate", data_root),
        "teacher": _name_and_folder(s, "teacher", data_root),
    }
    numbers = {"psnr_gain_db": g["psnr_gain_db"], "lpips": g["lpips"], "lpips_bicubic": g["lpips_bicubic"],
               "student_ms_per_image": s["methods"]["candidate"]["ms_per_image"],
               "student_mp_per_s": s["methods"]["candidate"]["mp_per_s"],
               "teacher_ms_per_image": s["methods"]["teacher"]["ms_per_image"]}
    if (s.get("realism") or {}).get("available"):
        numbers |= {"lr_realism_learned_psnr_y": s["realism"]["learned_psnr"],
                    "lr_realism_bicubic_psnr_y": s["realism"]["bicubic_psnr"]}
    md |= {k: float(v) for k, v in numbers.items() if v is not None}
    md |= duel_metadata(s["gate"].get("challenge"))
    md |= realism_metadata({"candidate": s.get("realism"), "unpaired": s.get("realism_unpaired")})
    sentence = realism_sentence(s)
    if sentence:
        md["camera_model_realism"] = dg.MetadataValue.md(sentence)
    for m in metrics():  # every registered metric of the served model (or the candidate when none is)
        value = s["methods"].get(s.get("served") or "candidate", {}).get(m.name)
        if value is not None:
            md[f"served_{m.name}"] = float(value)
    return md


def _name_and_folder(summary: dict, role: str, data_root: Path) -> str:
    from sr_pipeline.evaluation.calibration import data_relative
    from sr_pipeline.evaluation.report_page import model_name

    info = summary["models"][role]
    return f"{model_name(summary, role)} ({info.get('folder') or data_relative(info['path'], data_root)})"


@dg.asset(
    group_name="evaluation",
    pool="gpu",
    op_tags=GPU_K8S_TAGS,
    kinds={"pytorch", "html"},
    deps=[promoted_student],
    partitions_def=field_cameras,
    description="The weekly evaluation report of one field camera (data/reports/CAMERA/DATE/index.html): "
    "bicubic, the teacher, the camera's new and promoted student on its calibration pairs, its downsampler's LR "
    "realism, the gate decision, trends and crops. Reads the promotion log (after promoted_student) and reuses "
    "the gate's scores of the candidate. Its value is the report's path.",
)
def evaluation_report(context: dg.AssetExecutionContext, teacher_checkpoint: str, co_trained_student: str,
                      learned_downsampler: str, storage: PlantStorage, gate: GateSettings) -> dg.Output[str]:
    from sr_pipeline.common.clock import plant_today
    from sr_pipeline.evaluation.calibration import run_evaluation
    from sr_pipeline.evaluation.promotion import reference_student
    from sr_pipeline.sr.models.checkpoints import model_version
    from sr_pipeline.sr.data.pairs import EvaluationError

    layout = storage.layout()
    camera = context.partition_key
    candidate = layout.resolve(co_trained_student)  # step values are stored relative to the data root
    ref = reference_student(layout, model_version(candidate), camera)
    try:
        outcome = run_evaluation(layout, layout.resolve(teacher_checkpoint), candidate, Path(ref["path"]) if ref else None,
                                 layout.resolve(learned_downsampler), plant_today(), gate.thresholds(), device=gate.device,
                                 camera=camera)
    except EvaluationError as exc:
        raise dg.Failure(str(exc)) from exc
    for line in outcome.headline:
        context.log.info(line.replace("**", ""))
    return dg.Output(layout.relative(outcome.report_path), metadata=_report_metadata(outcome, layout.root))


evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.assets(evaluation_report),
    description="Re-evaluates one field camera's current models on its calibration pairs and writes its dated "
    "report (weekly schedule, one run per camera; new calibration pairs of the camera).",
)
