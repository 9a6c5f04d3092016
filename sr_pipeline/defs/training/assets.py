"""Training assets: launched as separate processes through Dagster Pipes, in the ``gpu`` pool.

One teacher for the plant (unpartitioned); one co-learned student, learned downsampler and set of
learned LR images per field camera (partitioned by ``field_cameras``: each camera's model learns
from that camera's field images only). No torch import here: the Dagster process never initialises
CUDA. Each asset picks the output folder and a resumable run folder keyed by its inputs, so a
retried run resumes a crashed one.
"""


import json
from pathlib import Path

import dagster as dg

from sr_pipeline.defs.intake.assets import raw_plant_images
from sr_pipeline.defs.plant.partitions import field_cameras
from sr_pipeline.common.cameras import CameraRole
from sr_pipeline.defs.training.resources import LRSetSettings, TrainingSettings
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.storage.versions import fingerprint, new_version

# Every upload batch can hold images of the camera (and HR references): all of them feed each camera's training.
ALL_UPLOADS = dg.AssetDep(raw_plant_images, partition_mapping=dg.AllPartitionMapping())


def gpu_k8s_tags(gpus: int = 1) -> dict:
    """Asks Kubernetes (k8s_job_executor / dagster-k8s run launcher) for ``gpus`` GPUs for the step's pod."""
    n = str(gpus)
    return {"dagster-k8s/config": {"container_config": {
        "resources": {"limits": {"nvidia.com/gpu": n}, "requests": {"nvidia.com/gpu": n}}}}}


# One GPU for the gate and the report; a training step takes one per accelerate process (docs/multi-gpu.md).
GPU_K8S_TAGS = gpu_k8s_tags(1)
TRAINING_K8S_TAGS = gpu_k8s_tags(TrainingSettings().num_processes)


def training_metadata(model_dir: Path, layout) -> dict:
    """The asset's metadata, from the model folder's training.json (the authoritative record); folders are
    named under the data root (``layout``), never by the machine's absolute path."""
    import json

    from sr_pipeline.sr.images.figures import png_markdown
    from sr_pipeline.sr.train.curves import curves_png

    info = json.loads((model_dir / "training.json").read_text())
    history = info.get("history") or []
    md: dict = {
        # not "path": Dagster's filesystem IO manager writes its own "path" (the pickled value's) over it
        "model_path": dg.MetadataValue.path(layout.relative(model_dir)),
        "version": info.get("version", model_dir.name),
        "steps": int(info.get("steps", 0)),
        "wall_time_s": round(float(info.get("wall_time_s", 0.0)), 1),
        "device": str(info.get("device", "")),
        "num_images": len(info.get("image_ids") or []),
        "profile": dg.MetadataValue.json(info.get("profile") or {}),
    }
    if history and "samples_per_s" in history[-1]:
        md["samples_per_s"] = round(float(history[-1]["samples_per_s"]), 2)
    if isinstance(info.get("final_loss"), float):
        md["final_loss"] = info["final_loss"]
    if info.get("final"):
        md["final"] = dg.MetadataValue.json(info["final"])
    if info.get("time_breakdown"):
        md["time_breakdown"] = dg.MetadataValue.json(info["time_breakdown"])
    if info.get("field_image_ids") is not None:
        md["num_field_images"] = len(info["field_image_ids"])
    loss_keys = sorted({k for r in history for k in r if k == "loss" or k.startswith("loss_")})
    acc_keys = sorted({k for r in history for k in r if k.startswith("acc_")})
    if loss_keys:
        md["loss_curve"] = dg.MetadataValue.md(png_markdown(curves_png(history, loss_keys, "training losses"),
                                                            "loss curve"))
    if acc_keys:
        md["discriminator_accuracy"] = dg.MetadataValue.md(png_markdown(
            curves_png(history, acc_keys, "discriminator accuracy", logy=False), "discriminator accuracy"))
    return md


def _run_dir(layout, kind: str, profile_path: Path, image_ids: list[str], extra: list[str]) -> Path:
    key = fingerprint([profile_path.read_text(), *sorted(image_ids), *extra])
    return layout.run_dir(kind, f"{profile_path.stem}-{key}")


def _launch(context, training: TrainingSettings, client: dg.PipesSubprocessClient, kind: str, layout,
            args: list[str], asset_keys: dict[str, str]) -> None:
    """Run ``sr-pipeline train KIND`` through Pipes; it reports each folder under ``asset_keys[role]``."""
    command = training.command(kind, layout.root, args)
    client.run(command=command, context=context, env=training.env(), extras={"asset_keys": asset_keys})


@dg.asset(
    group_name="training",
    deps=[ALL_UPLOADS],
    pool="gpu",
    op_tags=TRAINING_K8S_TAGS,
    kinds={"pytorch"},
    description="The multi-step ResShift teacher trained on every HR reference image (EMA weights, "
    "save_pretrained folder). Its value is the checkpoint folder's path.",
)
def teacher_checkpoint(
    context: dg.AssetExecutionContext,
    storage: PlantStorage,
    training: TrainingSettings,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.Output[str]:
    from sr_pipeline.storage.store import list_images

    layout = storage.layout()
    hr = list_images(layout, role=CameraRole.hr_reference)
    if hr.empty:
        raise dg.Failure("no HR reference images have been ingested; upload to an hr_reference camera first")
    profile = training.profile_path()
    version = new_version()
    out_dir = layout.model_dir("teacher", version)
    run_dir = _run_dir(layout, "teacher", profile, list(hr["image_id"]), [])
    context.log.info(f"training teacher {version} on {len(hr)} HR references with {profile} (state: {run_dir})")
    _launch(context, training, pipes_subprocess_client, "teacher", layout,
            ["--config", str(profile), "--out", str(out_dir), "--run-dir", str(run_dir), "--resume"],
            {"teacher": "teacher_checkpoint"})
    if not (out_dir / "training.json").is_file():
        raise dg.Failure(f"training finished without writing {out_dir}")
    # Values passed between steps are pickled under the data root (dagster_io/): relative to it, like every path there.
    return dg.Output(layout.relative(out_dir), metadata=training_metadata(out_dir, layout),
                     data_version=dg.DataVersion(version))


def _ensure_challenger(context, training: TrainingSettings, client: dg.PipesSubprocessClient, layout, profile: Path,
                       teacher: str, hr_ids: list[str]) -> Path:
    """The fixed-degradation challenger of this teacher (trained once per teacher, reused by every camera's gate)."""
    from sr_pipeline.sr.models.checkpoints import model_version
    from sr_pipeline.storage.registry import challenger_dir

    out = challenger_dir(layout, model_version(Path(teacher)))
    if (out / "training.json").is_file():
        context.log.info(f"reusing the fixed-degradation challenger {out.name} of teacher {Path(teacher).name}")
        return out
    run_dir = _run_dir(layout, "challenger", profile, hr_ids, [teacher])
    context.log.info(f"training the fixed-degradation challenger {out.name} (bicubic degradation, no camera model; "
                     "once per teacher, every camera's promotion gate compares its student with it)")
    _launch(context, training, client, "colearn", layout,
            ["--config", str(profile), "--teacher", teacher, "--fixed-degradation", "--out", str(out),
             "--run-dir", str(run_dir), "--resume"], {})
    if not (out / "training.json").is_file():
        raise dg.Failure(f"the challenger's training finished without writing {out}")
    return out


def _ensure_unpaired_twin(context, training: TrainingSettings, client: dg.PipesSubprocessClient, layout,
                          args: list[str], run_dir: Path, student_dir: Path) -> Path | None:
    """For a camera with fit pairs (the student's training.json lists them), the promotion gate's unpaired
    twin of the student: the same co-learning (profile, seed, images, teacher) without the fit pairs, so the
    gate can say what the pairs were worth. None for a camera without fit pairs (nothing more is trained)."""
    from sr_pipeline.sr.models.checkpoints import model_version, read_info
    from sr_pipeline.storage.registry import unpaired_twin_dir

    fit = read_info(student_dir).get("fit_pairs") or []
    if not fit:
        return None
    version = model_version(student_dir)
    out = unpaired_twin_dir(layout, version)
    if (out / "training.json").is_file():
        return out
    context.log.info(f"co-learning the unpaired twin of {version} (the same run without its {len(fit)} fit pairs; "
                     "the promotion gate judges both and the fixed-degradation challenger)")
    _launch(context, training, client, "colearn", layout,
            [*args, "--unpaired-twin-of", version, "--out", str(out),
             "--downsampler-out", str(unpaired_twin_dir(layout, version, "downsampler")),
             "--run-dir", str(run_dir.with_name(run_dir.name + "-unpaired")), "--resume"], {})
    if not (out / "training.json").is_file():
        raise dg.Failure(f"the unpaired twin's co-learning finished without writing {out}")
    return out


@dg.multi_asset(
    outs={
        "co_trained_student": dg.AssetOut(
            group_name="training", kinds={"pytorch"},
            description="The field camera's single-step student (EMA weights) distilled from the teacher and "
            "co-trained with its learned downsampler against two discriminators. Its value is the checkpoint "
            "folder's path."),
        "learned_downsampler": dg.AssetOut(
            group_name="training", kinds={"pytorch"},
            description="The learnable downsampler G of one field camera: how that camera degrades a scene "
            "(blur, sensor noise; docs/camera_model.md). Its value is the checkpoint folder's path."),
    },
    ins={"teacher_checkpoint": dg.AssetIn()},
    deps=[ALL_UPLOADS],
    partitions_def=field_cameras,
    pool="gpu",
    op_tags=TRAINING_K8S_TAGS,
)
def co_trained_student_and_downsampler(
    context: dg.AssetExecutionContext,
    teacher_checkpoint: str,
    storage: PlantStorage,
    training: TrainingSettings,
    pipes_subprocess_client: dg.PipesSubprocessClient,
):
    from sr_pipeline.sr.models.checkpoints import read_info
    from sr_pipeline.storage.store import list_images
    from sr_pipeline.training.run import too_few_field_images

    layout = storage.layout()
    camera = context.partition_key
    teacher = str(layout.resolve(teacher_checkpoint))  # stored relative to the data root (or absolute, from before)
    registry = storage.registry()
    if camera not in registry or registry.get(camera).role != CameraRole.field_lr:
        raise dg.Failure(f"partition {camera!r} is not a field_lr camera of the camera registry "
                         f"(field cameras: {', '.join(registry.ids(CameraRole.field_lr)) or 'none'})")
    hr = list_images(layout, role=CameraRole.hr_reference)
    field = list_images(layout, role=CameraRole.field_lr, cameras=[camera])
    if hr.empty:
        raise dg.Failure("co-learning needs HR references in the catalog; upload to an hr_reference camera first")
    too_few = too_few_field_images(registry, camera, len(field))
    if too_few is not None:
        raise dg.Failure(too_few)
    profile = training.profile_path()
    version = new_version()
    student_dir = layout.model_dir("student", version)
    downsampler_dir = layout.model_dir("downsampler", version)
    # The camera's own camera-model choices are part of what is trained: an edit starts a new run.
    choice = registry.camera_model_choice(camera)
    run_dir = _run_dir(layout, "colearn", profile, [*hr["image_id"], *field["image_id"]],
                       [layout.relative(teacher), camera, *([json.dumps(choice, sort_keys=True)] if choice else [])])
    context.log.info(f"co-learning {version} for field camera {camera} from teacher {layout.relative(teacher)}: "
                     f"{len(hr)} HR references, {len(field)} of the camera's field LR images, profile {profile}"
                     + (f", the camera's camera_model {choice}" if choice else ""))
    common = ["--config", str(profile), "--teacher", teacher, "--camera", camera,
              "--cameras", str(Path(storage.cameras_file).resolve())]
    _launch(context, training, pipes_subprocess_client, "colearn", layout,
            [*common, "--out", str(student_dir), "--downsampler-out", str(downsampler_dir), "--run-dir", str(run_dir),
             "--resume"],
            {"student": "co_trained_student", "downsampler": "learned_downsampler"})
    if not (student_dir / "training.json").is_file():
        raise dg.Failure(f"co-learning finished without writing {student_dir}")
    challenger = _ensure_challenger(context, training, pipes_subprocess_client, layout, profile, teacher,
                                    list(hr["image_id"]))
    twin = _ensure_unpaired_twin(context, training, pipes_subprocess_client, layout, common, run_dir, student_dir)
    few_pairs = read_info(student_dir).get("fit_pairs_warning")
    if few_pairs:
        context.log.warning(f"{camera}: {few_pairs}")
    if not (downsampler_dir / "training.json").is_file():
        raise dg.Failure("the profile trained no downsampler (use_downsampler: false is for ablations, run "
                         "them with `sr-pipeline train colearn`); the asset graph needs one")
    for name, path in (("co_trained_student", student_dir), ("learned_downsampler", downsampler_dir)):
        metadata = training_metadata(path, layout)
        metadata["teacher"] = dg.MetadataValue.path(layout.relative(teacher))
        metadata["camera"] = camera
        metadata["fixed_degradation_challenger"] = dg.MetadataValue.path(layout.relative(challenger))
        if twin is not None:  # a camera with fit pairs: the gate also judges the same run without them
            metadata["unpaired_twin"] = dg.MetadataValue.path(layout.relative(twin))
        if few_pairs:
            metadata["fit_pairs_warning"] = few_pairs
        yield dg.Output(layout.relative(path), output_name=name, metadata=metadata, data_version=dg.DataVersion(version))


@dg.asset(
    group_name="degradation",
    deps=[ALL_UPLOADS],
    partitions_def=field_cameras,
    kinds={"pytorch"},
    description="For each HR reference, K LR variants from the field camera's learned downsampler (different "
    "noise): stored and catalogued like uploads, with their diversity and realism against that camera's field "
    "LR images next to bicubic LR.",
)
def learned_degradation_lr_sets(context: dg.AssetExecutionContext, learned_downsampler: str,
                                storage: PlantStorage, lr_sets: LRSetSettings) -> dg.MaterializeResult:
    from sr_pipeline.sr.images.figures import png_markdown
    from sr_pipeline.sr.models.checkpoints import read_info
    from sr_pipeline.training.learned_lr import make_lr_sets

    layout = storage.layout()
    result = make_lr_sets(layout, layout.resolve(learned_downsampler), k=lr_sets.variants_per_image,
                          seed=lr_sets.seed)
    s = result.summary
    fit_pairs = len(read_info(layout.resolve(learned_downsampler)).get("fit_pairs") or [])
    # the candidate's G: with fit pairs the gate may serve the student of its unpaired twin, whose G is not this one
    made_by = (f"the camera model fitted with {fit_pairs} fit pair(s) (the gate may serve the student of its unpaired "
               "twin, whose camera model is not used here)" if fit_pairs else "the camera model learned from unpaired "
               "field images")
    learned, bicubic = s["realism_distance_learned"], s["realism_distance_bicubic"]
    table = ["| statistic | learned LR distance | bicubic LR distance |", "|---|---|---|"]
    table += [f"| {k} | {learned[k]:.4f} | {bicubic[k]:.4f} |" for k in learned]
    context.log.info(f"{result.rows} learned LR images made by {made_by}; realism distance learned "
                     f"{learned['total']:.4f} vs bicubic {bicubic['total']:.4f}")
    return dg.MaterializeResult(
        metadata={
            "catalog": dg.MetadataValue.path(layout.relative(result.catalog_path)),
            "images": result.rows,
            "downsampler": dg.MetadataValue.path(layout.relative(learned_downsampler)),
            "made_by": made_by,
            "fit_pairs": fit_pairs,
            "camera": str(s.get("camera") or context.partition_key),
            "diversity_l1": float(s["diversity_l1"]),
            "realism_distance_learned": float(learned["total"]),
            "realism_distance_bicubic": float(bicubic["total"]),
            "learned_closer_than_bicubic": bool(s["learned_closer_than_bicubic"]),
            "realism": dg.MetadataValue.md("\n".join(table)),
            "statistics": dg.MetadataValue.json(s["mean_stats"]),
            "preview": dg.MetadataValue.md(png_markdown(result.preview_png, "HR | bicubic LR | learned LR variants")),
        },
        data_version=dg.DataVersion(s["downsampler_version"]),
    )


_TRAINING_EXECUTOR = dg.multiprocess_executor.configured({"max_concurrent": 1})

teacher_job = dg.define_asset_job(
    "teacher_job",
    selection=dg.AssetSelection.assets("teacher_checkpoint"),
    description="Trains the teacher on every HR reference (one teacher for the plant). Then run "
    "camera_training_job for each field camera.",
    executor_def=_TRAINING_EXECUTOR,
)

camera_training_job = dg.define_asset_job(
    "camera_training_job",
    selection=dg.AssetSelection.assets("co_trained_student", "promoted_student", "learned_downsampler",
                                       "learned_degradation_lr_sets"),
    description="One field camera (the run's partition): co-trains its student and downsampler from the current "
    "teacher on its field images, gates the student on its calibration pairs, promotes it and makes its learned "
    "LR sets. Steps run one at a time (the gpu pool also limits them across runs); on Kubernetes swap the "
    "executor for dagster_k8s.k8s_job_executor (docs/kubernetes.md).",
    executor_def=_TRAINING_EXECUTOR,
)
