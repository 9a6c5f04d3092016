"""Training assets: launched as separate processes through Dagster Pipes, in the ``gpu`` pool.

No torch import here: the Dagster process never initialises CUDA. Each asset picks the output
folder and a resumable run folder keyed by its inputs, so a retried run resumes a crashed one.
"""


from pathlib import Path

import dagster as dg

from sr_pipeline.defs.ingest import raw_plant_images
from sr_pipeline.defs.resources import PlantStorage, TrainingSettings
from sr_pipeline.versions import fingerprint, new_version

# Asks Kubernetes (k8s_job_executor / dagster-k8s run launcher) for one GPU for the step's pod.
GPU_K8S_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}}
    }
}


def _run_dir(storage: PlantStorage, kind: str, profile_path: Path, image_ids: list[str], extra: list[str]) -> Path:
    key = fingerprint([profile_path.read_text(), *sorted(image_ids), *extra])
    return storage.layout().runs / kind / f"{profile_path.stem}-{key}"


@dg.asset(
    group_name="training",
    deps=[raw_plant_images],
    pool="gpu",
    op_tags=GPU_K8S_TAGS,
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
    from sr_pipeline.store import list_images

    layout = storage.layout()
    hr = list_images(layout, role="hr_reference")
    if hr.empty:
        raise dg.Failure("no HR reference images have been ingested; upload to an hr_reference camera first")
    profile = training.profile_path()
    version = new_version()
    out_dir = layout.models / "teacher" / version
    run_dir = _run_dir(storage, "teacher", profile, list(hr["image_id"]), [])
    context.log.info(f"training teacher {version} on {len(hr)} HR references with {profile} (state: {run_dir})")
    command = training.command(
        "teacher", ["--config", str(profile), "--data", str(layout.root), "--out", str(out_dir),
                    "--run-dir", str(run_dir), "--resume"])
    invocation = pipes_subprocess_client.run(command=command, context=context, env=training.env(layout.root))
    reported = invocation.get_materialize_result()
    if not (out_dir / "training.json").is_file():
        raise dg.Failure(f"training finished without writing {out_dir}")
    return dg.Output(str(out_dir), metadata=dict(reported.metadata or {}), data_version=dg.DataVersion(version))


training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("training"),
    description="Trains the models. Steps run one at a time (the gpu pool also limits them across runs); "
    "on Kubernetes swap the executor for dagster_k8s.k8s_job_executor (docs/kubernetes.md).",
    executor_def=dg.multiprocess_executor.configured({"max_concurrent": 1}),
)
