"""The Kubernetes job that dagster-k8s would create for a training step, built by dagster-k8s itself.

The inputs are the Helm values example of docs/deploy.md (read from the page, so the page and this
test cannot drift apart) and the op tags of the Definitions' training steps. The job is assembled
the way ``k8s_job_executor`` assembles a step job: the run launcher's settings, merged with the
step's ``dagster-k8s/config`` tag (``get_user_defined_k8s_config``), through
``construct_dagster_k8s_job``. Skipped without dagster-k8s locally; with ``CI=true`` it must run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from deploy_fixtures import REPO_ROOT, instance_config, require
from sr_pipeline.definitions import build_definitions
from sr_pipeline.defs.plant.resources import PlantStorage

pytestmark = pytest.mark.k8s

VALUES_MARKER = "<!-- helm-values: read by sr_pipeline_tests/test_k8s_jobs.py -->"


@pytest.fixture
def dagster_k8s():
    try:
        import dagster_k8s
    except ImportError:
        require(False, "dagster-k8s is not installed (pip install '.[k8s]')")
    return dagster_k8s


def helm_values() -> dict:
    text = (REPO_ROOT / "docs" / "deploy.md").read_text()
    found = re.search(re.escape(VALUES_MARKER) + r"\s*```yaml\n(.*?)```", text, re.S)
    assert found, f"docs/deploy.md has no yaml block after {VALUES_MARKER}"
    return yaml.safe_load(found.group(1))


def gpu_steps() -> dict[str, dict]:
    """Tags of every step, in any job of the Definitions, that runs in the ``gpu`` pool."""
    steps = {node.name: dict(node.tags) for job in build_definitions().resolve_all_job_defs()
             for node in job.nodes if node.definition.pool == "gpu"}
    assert {"teacher_checkpoint", "co_trained_student_and_downsampler"} <= set(steps)
    return steps


def step_job(values: dict, step: str, tags: dict):
    """The V1Job of one step, as k8s_job_executor.launch_step builds it (dagster-k8s's functions)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    [deployment] = values["dagster-user-deployments"]["deployments"]
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    # What the chart's K8sRunLauncher passes on to step jobs (K8sContainerContext.create_for_run) ...
    context = K8sContainerContext(
        env_config_maps=launcher.get("envConfigMaps"), env_secrets=launcher.get("envSecrets"),
        env_vars=launcher.get("envVars"), volumes=launcher.get("volumes"),
        volume_mounts=launcher.get("volumeMounts"), namespace="sr-pipeline",
    )
    # ... merged with the step's dagster-k8s/config tag, as _get_container_context does.
    context = context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
    job_config = DagsterK8sJobConfig(
        job_image=image, dagster_home="/opt/dagster/dagster_home", instance_config_map="dagster-instance",
        postgres_password_secret=values["global"]["postgresqlSecretName"],
    )
    return construct_dagster_k8s_job(
        job_config, args=["dagster", "api", "execute_step"], job_name=f"dagster-step-{step.replace('_', '-')}",
        user_defined_k8s_config=context.run_k8s_config, component="step_worker",
        labels={"dagster/op": step}, env_vars=[{"name": "DAGSTER_RUN_STEP_KEY", "value": step}],
    ), image


def test_training_steps_become_gpu_jobs_with_the_data_volume_and_postgres(dagster_k8s):
    values = helm_values()
    pg = values["postgresql"]
    for step, tags in gpu_steps().items():
        job, image = step_job(values, step, tags)
        pod = job.spec.template.spec
        [container] = pod.containers
        assert container.image == image
        assert container.resources.limits == {"nvidia.com/gpu": "1"}, step
        assert container.resources.requests == {"nvidia.com/gpu": "1"}, step

        env = {e.name: e for e in container.env}
        values_of = {name: e.value for name, e in env.items() if e.value is not None}
        assert values_of["DAGSTER_RUN_STEP_KEY"] == step and values_of["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
        # The instance's PostgreSQL: password from the chart's secret, the rest as the storage block reads it.
        password = env["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref
        assert password.name == values["global"]["postgresqlSecretName"] and password.key == "postgresql-password"
        assert values_of["DAGSTER_PG_HOST"] == pg["postgresqlHost"]
        assert values_of["DAGSTER_PG_USER"] == pg["postgresqlUsername"]
        assert values_of["DAGSTER_PG_DB"] == pg["postgresqlDatabase"]
        assert values_of["DAGSTER_PG_PORT"] == str(pg["service"]["port"])

        # The data root is a mounted shared volume, at the path SR_PIPELINE_DATA names.
        data_root = values_of["SR_PIPELINE_DATA"]
        [mount] = [m for m in container.volume_mounts if m.mount_path == data_root]
        [volume] = [v for v in pod.volumes if v.name == mount.name]
        assert volume.persistent_volume_claim.claim_name and not mount.read_only
        assert container.args == ["dagster", "api", "execute_step"]
        assert job.metadata.labels["app.kubernetes.io/component"] == "step_worker"


def test_the_user_deployment_serves_this_code_location(dagster_k8s):
    """The chart's code-location server loads the same module as workspace.yaml, with the same data root."""
    [deployment] = helm_values()["dagster-user-deployments"]["deployments"]
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]["module_name"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", module]
    launcher = helm_values()["runLauncher"]["config"]["k8sRunLauncher"]
    assert {e["name"]: e["value"] for e in deployment["env"]}["SR_PIPELINE_DATA"] in {
        v.split("=", 1)[1] for v in launcher["envVars"] if v.startswith("SR_PIPELINE_DATA=")}
    assert {m["mountPath"] for m in deployment["volumeMounts"]} >= {m["mountPath"] for m in launcher["volumeMounts"]}


def under(path: str, mount_path: str) -> bool:
    return Path(path).is_relative_to(mount_path)


def test_values_and_logs_between_pods_live_on_the_shared_data_volume(dagster_k8s):
    """Each pod has its own DAGSTER_HOME: what one step hands to another (the io manager's values) and
    what the webserver shows (captured logs) must be on the volume that every step pod and the
    webserver mount, not in $DAGSTER_HOME/storage."""
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

    values = helm_values()
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    data_root = dict(v.split("=", 1) for v in launcher["envVars"])["SR_PIPELINE_DATA"]
    claim = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in launcher["volumes"]}

    # The chart writes computeLogManager into the instance's dagster.yaml; it is dagster.yaml's own block.
    manager = values["computeLogManager"]
    assert manager["type"] == "CustomComputeLogManager"
    custom = manager["config"]["customComputeLogManager"]
    documented = instance_config(with_postgres=True)["compute_logs"]
    assert (custom["module"], custom["class"]) == (documented["module"], documented["class"])
    module = __import__(custom["module"], fromlist=[custom["class"]])
    assert issubclass(getattr(module, custom["class"]), LocalComputeLogManager)
    logs_dir = custom["config"]["base_dir"]

    # The io manager of the code location, as the pods load it (SR_PIPELINE_DATA = the volume's path).
    defs = build_definitions(storage=PlantStorage(data_root=data_root, cameras_file="configs/cameras.yaml"))
    values_dir = defs.resources["io_manager"].base_dir
    assert under(values_dir, data_root) and under(logs_dir, data_root)

    for step, tags in gpu_steps().items():  # every step pod writes both, on the shared claim
        job, _ = step_job(values, step, tags)
        [container] = job.spec.template.spec.containers
        [mount] = [m for m in container.volume_mounts if m.mount_path == data_root]
        assert not mount.read_only and claim[mount.name] == "sr-pipeline-data", step

    # The webserver reads the captured logs to show them: it mounts the same claim (read-only is enough).
    web = values["dagsterWebserver"]
    web_claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in web["volumes"]}
    assert any(under(logs_dir, m["mountPath"]) for m in web["volumeMounts"]
               if web_claims.get(m["name"]) == "sr-pipeline-data")
