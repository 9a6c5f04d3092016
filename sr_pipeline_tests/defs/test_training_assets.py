"""The training assets: Pipes-launched teacher training in the gpu pool, and a light code location."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterInstance, materialize

from sr_pipeline.defs.intake.assets import raw_plant_images
from sr_pipeline.defs.training.resources import LRSetSettings, TrainingSettings
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.defs.training.assets import GPU_K8S_TAGS, co_trained_student_and_downsampler, learned_degradation_lr_sets, camera_training_job, teacher_checkpoint
from sr_pipeline.intake.ingest import ingest_folder
from sr_pipeline.storage import store
from conftest import encode, pixels

TINY_PROFILE = """
name: tiny
scale: 4
net: {block_out_channels: [8, 16], attention_levels: [false, false], norm_num_groups: 4}
diffusion: {num_steps: 4, kappa: 1.0}
teacher: {steps: 4, batch_size: 2, patch_size: 32, save_every: 2, log_every: 2, num_workers: 0}
colearn:
  train: {steps: 3, batch_size: 2, patch_size: 32, save_every: 2, log_every: 1, num_workers: 0, warmup_steps: 1}
  teacher_steps: 2
  weights: {lpips: 0.0}
  downsampler: {channels: 8, num_blocks: 1, norm_num_groups: 4}
  d_hr: {base_channels: 8, num_downsamples: 2}
  d_lr: {base_channels: 8, num_downsamples: 1}
"""


@pytest.fixture
def tiny_profile(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_PROFILE)
    return path


TWO_FIELD_CAMERAS = """\
cameras:
  ref_cam: {role: hr_reference}
  field_cam: {role: field_lr, min_field_images: 3}
  line2_cam: {role: field_lr, min_field_images: 3}
"""


@pytest.fixture
def cameras_file(tmp_path: Path) -> Path:
    """Two field cameras (each gets its own student); tiny pools are enough for the tiny profile."""
    path = tmp_path / "two_field_cameras.yaml"
    path.write_text(TWO_FIELD_CAMERAS)
    return path


@pytest.fixture
def ingested(layout, cameras_file, tmp_path):
    from sr_pipeline.common.cameras import load_registry

    registry = load_registry(cameras_file)
    src = tmp_path / "uploads"
    src.mkdir()
    for i in range(3):
        (src / f"ref{i}.png").write_bytes(encode(pixels(64, 56, seed=i)))
    ingest_folder(layout, registry, src, "ref_cam", batch_key="ref_cam-20260101T000000-abc")
    for camera, n, seed in (("field_cam", 3, 10), ("line2_cam", 2, 50)):
        field = tmp_path / camera
        field.mkdir()
        for i in range(n):
            (field / f"f{i}.png").write_bytes(encode(pixels(24, 20, seed=seed + i)))
        ingest_folder(layout, registry, field, camera, batch_key=f"{camera}-20260101T000000-def")
    return layout


def test_teacher_asset_trains_through_pipes(ingested, cameras_file, tiny_profile):
    storage = PlantStorage(data_root=str(ingested.root), cameras_file=str(cameras_file))
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [raw_plant_images, teacher_checkpoint],
            selection=[teacher_checkpoint],
            resources={"storage": storage, "training": TrainingSettings(profile=str(tiny_profile)),
                       "pipes_subprocess_client": dg.PipesSubprocessClient()},
            instance=instance,
        )
        assert result.success
        value = result.output_for_node("teacher_checkpoint")
        assert not Path(value).is_absolute()  # step values are pickled under the data root: relative to it
        path = ingested.resolve(value)
        [mat] = result.asset_materializations_for_node("teacher_checkpoint")
        logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert path.parent == ingested.models / "teacher" and (path / "training.json").is_file()
    md = mat.metadata
    assert md["steps"].value == 4 and md["num_images"].value == 3
    assert md["version"].value == path.name and md["model_path"].value == f"models/teacher/{path.name}"
    assert md["device"].value.startswith("cpu")
    assert md["loss_curve"].value.startswith("![loss curve](data:image/png;base64,")
    assert md["profile"].value["name"] == "tiny"
    assert mat.tags["dagster/data_version"] == path.name
    assert any("step 4/4" in m and "samples/s" in m for m in logs)  # progress streamed to the run log


def test_colearning_materialises_student_downsampler_and_lr_sets(ingested, cameras_file, tiny_profile):
    storage = PlantStorage(data_root=str(ingested.root), cameras_file=str(cameras_file))
    resources = {"storage": storage, "training": TrainingSettings(profile=str(tiny_profile), use_accelerate=False),
                 "pipes_subprocess_client": dg.PipesSubprocessClient(),
                 "lr_sets": LRSetSettings(variants_per_image=2)}
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("field_cameras", ["field_cam", "line2_cam"])
        teacher_run = materialize([raw_plant_images, teacher_checkpoint], selection=[teacher_checkpoint],
                                  resources=resources, instance=instance)
        assert teacher_run.success
        assets = [raw_plant_images, teacher_checkpoint, co_trained_student_and_downsampler, learned_degradation_lr_sets]
        result = materialize(assets, selection=[co_trained_student_and_downsampler, learned_degradation_lr_sets],
                             resources=resources, instance=instance, partition_key="field_cam")
        assert result.success
        # line2_cam has 2 field images, below its min_field_images: a clear failure, nothing trained
        short = materialize(assets, selection=[co_trained_student_and_downsampler], resources=resources,
                            instance=instance, partition_key="line2_cam", raise_on_error=False)
        assert not short.success
        failure = " ".join(str(e.event_specific_data) for e in short.all_events if e.is_failure)
        assert "'line2_cam' has 2 unpaired field image(s)" in failure and "min_field_images" in failure
        teacher = ingested.resolve(teacher_run.output_for_node("teacher_checkpoint"))
        student = ingested.resolve(result.output_for_node("co_trained_student_and_downsampler", "co_trained_student"))
        g = ingested.resolve(result.output_for_node("co_trained_student_and_downsampler", "learned_downsampler"))
        mats = {e.asset_key.to_user_string(): e.event_specific_data.materialization
                for e in result.get_asset_materialization_events()}
    assert student.parent == ingested.models / "student" and g.parent == ingested.models / "downsampler"
    assert student.name == g.name  # one version for the pair
    md = mats["co_trained_student"].metadata
    assert md["steps"].value == 3 and md["teacher"].value == f"models/teacher/{Path(teacher).name}" and md["num_field_images"].value == 3
    assert md["camera"].value == "field_cam" and mats["co_trained_student"].partition == "field_cam"
    info = json.loads((student / "training.json").read_text())
    field_cam_ids = set(store.list_images(ingested, role="field_lr", cameras=["field_cam"])["image_id"])
    assert info["camera"] == "field_cam" and set(info["field_image_ids"]) == field_cam_ids  # its own images only
    assert json.loads((g / "training.json").read_text())["camera"] == "field_cam"
    # the fixed-degradation challenger of this teacher, trained once beside the first camera's student
    assert md["model_path"].value == f"models/student/{student.name}"  # under the data root, never absolute
    challenger = ingested.root / md["fixed_degradation_challenger"].value
    assert challenger == ingested.models / "student" / f"fixed-{Path(teacher).name}"
    fixed_info = json.loads((challenger / "training.json").read_text())
    assert fixed_info["challenger"] is True and fixed_info["camera"] is None and fixed_info["num_field_images"] == 0
    assert fixed_info["profile"]["colearn"]["use_downsampler"] is False
    students = sorted(p.parent.name for p in (ingested.models / "student").glob("*/training.json"))
    assert students == sorted([student.name, challenger.name])  # line2_cam trained nothing
    assert md["loss_curve"].value.startswith("![loss curve](data:image/png;base64,")
    assert md["discriminator_accuracy"].value.startswith("![discriminator accuracy](")
    lr_md = mats["learned_degradation_lr_sets"].metadata
    assert lr_md["fit_pairs"].value == 0 and lr_md["made_by"].value.startswith("the camera model learned from unpaired")
    assert lr_md["images"].value == 6  # 3 HR references x 2 variants
    assert lr_md["camera"].value == "field_cam"
    assert (ingested.root / lr_md["catalog"].value).is_file() and not lr_md["catalog"].value.startswith("/")
    assert lr_md["downsampler"].value == f"models/downsampler/{g.name}"
    assert lr_md["diversity_l1"].value > 0
    assert {"realism_distance_learned", "realism_distance_bicubic", "preview"} <= set(lr_md)


def test_teacher_asset_fails_clearly_without_references(layout, cameras_file, tiny_profile):
    storage = PlantStorage(data_root=str(layout.root), cameras_file=str(cameras_file))
    with DagsterInstance.ephemeral() as instance:
        result = materialize([raw_plant_images, teacher_checkpoint], selection=[teacher_checkpoint],
                             resources={"storage": storage, "training": TrainingSettings(profile=str(tiny_profile)),
                                        "pipes_subprocess_client": dg.PipesSubprocessClient()},
                             instance=instance, raise_on_error=False)
    assert not result.success
    assert any("no HR reference images" in str(e.event_specific_data) for e in result.all_events if e.is_failure)


def test_training_assets_are_in_the_gpu_pool_with_the_k8s_gpu_request():
    spec = teacher_checkpoint.specs_by_key[dg.AssetKey("teacher_checkpoint")]
    assert teacher_checkpoint.op.pool == "gpu"
    limits = GPU_K8S_TAGS["dagster-k8s/config"]["container_config"]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "1"}
    assert json.loads(teacher_checkpoint.op.tags["dagster-k8s/config"]) == GPU_K8S_TAGS["dagster-k8s/config"]
    assert spec.group_name == "training"
    assert camera_training_job.executor_def.name == "multiprocess"


def test_training_command_is_the_cli_under_accelerate_launch(tiny_profile):
    one = TrainingSettings(profile=str(tiny_profile)).command("teacher", Path("/data"), ["--x"])
    assert one[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" not in one
    assert one[-9:] == ["--dynamo_backend", "no", "-m", "sr_pipeline.cli", "--data", "/data", "train", "teacher", "--x"]
    four = TrainingSettings(profile=str(tiny_profile), num_processes=4).command("colearn", Path("/data"), [])
    assert "--multi_gpu" in four and four[four.index("--num_processes") + 1] == "4"
    assert four[-2:] == ["train", "colearn"]
    plain = TrainingSettings(profile=str(tiny_profile), use_accelerate=False).command("teacher", Path("/d"), [])
    assert plain == [sys.executable, "-m", "sr_pipeline.cli", "--data", "/d", "train", "teacher"]
    with pytest.raises(FileNotFoundError):
        TrainingSettings(profile="/nonexistent.yaml").profile_path()


def test_code_location_loads_without_torch():
    code = ("import sys, dagster as dg; import sr_pipeline.definitions as d; "
            "dg.Definitions.validate_loadable(d.defs); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_trainer_reports_each_folder_under_the_asset_key_dagster_passed():
    from types import SimpleNamespace

    from sr_pipeline.training.launch import report_materializations

    class FakePipes:
        def __init__(self, extras):
            self.extras, self.reports = extras, []

        def get_extra(self, key):
            return self.extras[key]

        def report_asset_materialization(self, **kw):
            self.reports.append(kw)

    result = SimpleNamespace(version="v7", steps=3, model_dirs={"student": Path("s"), "downsampler": Path("g")})
    pipes = FakePipes({"asset_keys": {"student": "my_student", "downsampler": "my_g"}})
    report_materializations(pipes, result)
    assert [(r["asset_key"], r["data_version"]) for r in pipes.reports] == [("my_student", "v7"), ("my_g", "v7")]
    ablation = SimpleNamespace(version="v8", steps=3, model_dirs={"student": Path("s")})
    pipes = FakePipes({"asset_keys": {"student": "my_student", "downsampler": "my_g"}})
    report_materializations(pipes, ablation)
    assert [r["asset_key"] for r in pipes.reports] == ["my_student"]
