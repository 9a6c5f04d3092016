"""The multi-pod shape on one machine: nothing passes between steps but PostgreSQL and the data root.

A plant that outgrows one machine runs Dagster as on Kubernetes: a code server (``dagster api grpc``,
the chart's user deployment), a webserver and a daemon reaching it through a ``grpc_server`` entry of
their workspace, and every run in its own pod with its own ``DAGSTER_HOME``. Here the pods are
processes: ``pod_launcher.PodLikeRunLauncher`` starts each run worker in a new session with a new,
empty ``DAGSTER_HOME`` (a copy of the project's ``dagster.yaml`` with its shared-deployment block
uncommented) and no instance reference; the jobs' multiprocess executors run each step in a process
of its own under it. Every run worker's home stays as made: values between steps live in the data root
(the code location's io manager, ``dagster_io/``) and captured logs too (``compute_logs`` of the
instance, ``dagster_logs/``).

The flow, driven as an operator drives it (the webserver's GraphQL API, the daemon's sensor): camera
uploads claimed by ``camera_upload_sensor`` and ingested, the teacher trained (its run worker killed
with ``kill -9`` mid-step, failed by run monitoring, its ``gpu`` slot freed, re-executed from failure),
the field camera's student co-trained and gated and promoted, the report written and the field batch
archived by the run the sensor requests once a student serves the camera (the camera's own
``archive_field_cam_job``). Each asset is materialised exactly once, each step's captured log is served by the
webserver, and no run worker's home holds anything but its ``dagster.yaml``.

Skipped without a reachable PostgreSQL server (see :mod:`deploy_fixtures`); with ``CI=true`` it fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._grpc.client import DagsterGrpcClient

from deploy_fixtures import child_env, instance_config, pg_database, start_group, step_seconds, stop_group  # noqa: F401
from pod_launcher import WORKER_HOME_TAG, WORKER_PID_TAG
from test_postgres import upload_plant_images
from test_training_assets import TINY_PROFILE

pytestmark = pytest.mark.postgres

TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
LOCATION, REPOSITORY = "sr_pipeline", "__repository__"
CAMERA = "field_cam"
# Every asset of the flow, materialised once each (partitions: one per upload batch, one per camera).
ASSETS = {"raw_plant_images": 2, "teacher_checkpoint": 1, "co_trained_student": 1, "learned_downsampler": 1,
          "learned_degradation_lr_sets": 1, "promoted_student": 1, "evaluation_report": 1, "upscaled_archive/field_cam": 1}
OTHER_SENSORS = ("calibration_pairs_sensor", "retraining_sensor")
TIMEOUT = 600  # per wait; on a busy 2-core machine the co-learning step alone took ~3 min
FAILURES = (DagsterEventType.RUN_FAILURE, DagsterEventType.STEP_FAILURE, DagsterEventType.ENGINE_EVENT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webserver:
    """The webserver's GraphQL API, as the UI calls it."""

    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/graphql"

    def query(self, text: str, **variables) -> dict:
        body = json.dumps({"query": text, "variables": variables}).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert not answer.get("errors"), answer["errors"]
        return answer["data"]

    def launch(self, job: str, partition: str | None = None, assets: list[str] | None = None) -> str:
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job}
        if assets:
            selector["assetSelection"] = [{"path": [a]} for a in assets]
        tags = [{"key": "dagster/partition", "value": partition}] if partition else []
        data = self.query(LAUNCH, params={"selector": selector, "runConfigData": {}, "mode": "default",
                                          "executionMetadata": {"tags": tags}})
        result = data["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def reexecute_from_failure(self, run_id: str) -> str:
        result = self.query(REEXECUTE, params={"parentRunId": run_id, "strategy": "FROM_FAILURE"})
        result = result["launchRunReexecution"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def stop_sensor(self, name: str) -> None:
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}
        sensor = self.query(SENSOR, selector=selector)["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        stopped = self.query(STOP_SENSOR, id=sensor["id"])["stopSensor"]
        assert stopped["instigationState"]["status"] == "STOPPED", stopped

    def step_logs(self, run_id: str) -> dict[str, str]:
        """Each captured log of the run (keyed by its steps), stdout and stderr, as the run page shows it."""
        events = self.query(EVENTS, runId=run_id)["logsForRun"]["events"]
        logs = {}
        for event in events:
            if event.get("__typename") == "LogsCapturedEvent":
                captured = self.query(CAPTURED, logKey=[run_id, "compute_logs", event["fileKey"]])["capturedLogs"]
                logs[",".join(event["stepKeys"] or [event["fileKey"]])] = (captured["stdout"] or "") + (
                    captured["stderr"] or "")
        return logs


LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message stack }
  ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
REEXECUTE = """mutation($params: ReexecutionParams!) { launchRunReexecution(reexecutionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message stack } } }"""
EVENTS = """query($runId: ID!) { logsForRun(runId: $runId) { __typename
  ... on EventConnection { events { __typename ... on LogsCapturedEvent { fileKey stepKeys } } } } }"""
SENSOR = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  __typename ... on Sensor { id } ... on PythonError { message } } }"""
STOP_SENSOR = """mutation($id: String!) { stopSensor(id: $id) {
  __typename ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }"""
CAPTURED = """query($logKey: [String!]!) { capturedLogs(logKey: $logKey) { stdout stderr } }"""


def wait_for(what: str, check, timeout: float = TIMEOUT, procs: dict | None = None, logs: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for name, proc in (procs or {}).items():
            assert proc.poll() is None, f"{name} exited: " + (logs / f"{name}.log").read_text()[-3000:]
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((logs or Path()).glob("*.log")))
            raise AssertionError(f"timed out waiting for {what}{tails}")
        time.sleep(0.5)


def serving(client: DagsterGrpcClient) -> bool:
    try:
        client.ping("")
    except DagsterUserCodeUnreachableError:
        return False
    return True


def finished(instance: DagsterInstance, run_id: str) -> DagsterRunStatus | None:
    run = instance.get_run_by_id(run_id)
    return run.status if run and run.is_finished else None


def test_the_multi_pod_shape_shares_only_postgres_and_the_data_root(pg_database, cameras_file, tmp_path):
    data, logs, pods = tmp_path / "data", tmp_path / "logs", tmp_path / "pods"
    for folder in (logs, pods):
        folder.mkdir()
    profile = tmp_path / "tiny.yaml"
    profile.write_text(TINY_PROFILE)
    env = child_env(
        SR_PIPELINE_DATA=str(data), SR_PIPELINE_CAMERAS=str(cameras_file), SR_PIPELINE_PROFILE=str(profile),
        SR_PIPELINE_COMPUTE_LOGS=str(data / "dagster_logs"), SR_PIPELINE_STABLE_SECONDS="0",
        SR_PIPELINE_SENSOR_INTERVAL="1", SR_PIPELINE_GATE_REQUIRE_LPIPS="0", SR_PIPELINE_EVAL_DEVICE="cpu",
        SR_PIPELINE_RETRAIN_STUDENT="100000", SR_PIPELINE_RETRAIN_TEACHER="100000", OMP_NUM_THREADS="1",
    )
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(TESTS)])  # the daemon imports pod_launcher
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])  # `dagster api execute_run`, as in the image

    # The pods' instance: dagster.yaml with its shared-deployment block, nothing else.
    pod_yaml = tmp_path / "pod-dagster.yaml"
    pod_yaml.write_text(yaml.safe_dump(instance_config(with_postgres=True), sort_keys=False))
    # The control plane's: the same, plus the launcher and run monitoring polled often enough for a test.
    control = instance_config(with_postgres=True) | {
        "run_launcher": {"module": "pod_launcher", "class": "PodLikeRunLauncher",
                         "config": {"homes_dir": str(pods), "instance_yaml": str(pod_yaml)}},
        "run_monitoring": {"enabled": True, "poll_interval_seconds": 2, "free_slots_after_run_end_seconds": 1},
    }
    homes = {}
    for name in ("code_server", "daemon", "webserver", "operator"):
        homes[name] = tmp_path / "homes" / name
        homes[name].mkdir(parents=True)
        (homes[name] / "dagster.yaml").write_text(yaml.safe_dump(control, sort_keys=False))
    grpc_port, web_port = free_port(), free_port()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
        "host": "127.0.0.1", "port": grpc_port, "location_name": LOCATION}}]}))

    upload_plant_images(data / "landing")
    procs = {}
    try:
        procs["code_server"] = start_group(
            [sys.executable, "-m", "dagster", "api", "grpc", "--module-name", "sr_pipeline.definitions",
             "--host", "127.0.0.1", "--port", str(grpc_port)],
            logs / "code_server.log", env | {"DAGSTER_HOME": str(homes["code_server"])})
        code_server = DagsterGrpcClient(port=grpc_port, host="127.0.0.1")
        wait_for("the code server", lambda: serving(code_server), procs=procs, logs=logs)
        procs["webserver"] = start_group(
            [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port), "-w", str(workspace)],
            logs / "webserver.log", env | {"DAGSTER_HOME": str(homes["webserver"])})
        procs["daemon"] = start_group([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
                                      logs / "daemon.log", env | {"DAGSTER_HOME": str(homes["daemon"])})
        web = Webserver(web_port)

        def web_up():
            try:
                return web.query("{ version }")
            except OSError:
                return None

        wait_for("the webserver", web_up, procs=procs, logs=logs)
        # The operator turns off the sensors that would launch runs of their own (an evaluation once a
        # student is promoted, retraining): every run of this test is one it asked for.
        for sensor in OTHER_SENSORS:
            web.stop_sensor(sensor)
        # The operator's own reads of the database, from a home of its own.
        with DagsterInstance.from_config(str(homes["operator"])) as instance:
            def run(run_id: str, status: DagsterRunStatus = DagsterRunStatus.SUCCESS) -> None:
                ended = wait_for(f"run {run_id}", lambda: finished(instance, run_id), procs=procs, logs=logs)
                if ended != status:
                    worker_log = pods / f"{run_id}.log"
                    events = [r.message or str(r.dagster_event and r.dagster_event.message) for r in instance.all_logs(
                        run_id) if r.dagster_event and r.dagster_event.event_type in FAILURES or r.level >= 40]
                    pytest.fail(f"run {run_id} ended {ended}, not {status}: {events}\n"
                                + (worker_log.read_text()[-4000:] if worker_log.exists() else ""))

            # 1. The daemon ticks the camera-upload sensor on the code server: one batch per camera.
            ingests = wait_for("the sensor's ingestion runs", lambda: len(
                instance.get_runs()) >= 2 and instance.get_runs(), procs=procs, logs=logs)
            batches = {r.tags["sr_pipeline/camera"]: r.tags["dagster/partition"] for r in ingests}
            assert set(batches) == {"ref_cam", CAMERA}
            for r in ingests:
                run(r.run_id)

            # 2. The teacher; its worker is killed mid-step while it holds the `gpu` pool's slot.
            teacher = web.launch("teacher_job")
            wait_for("the teacher step", lambda: instance.all_logs(teacher, of_type=DagsterEventType.STEP_START),
                     procs=procs, logs=logs)
            assert instance.event_log_storage.get_concurrency_info("gpu").active_run_ids == {teacher}
            assert not any(p for p in (data / "models").glob("teacher/*")), "the teacher finished before the kill"
            worker = int(instance.get_run_by_id(teacher).tags[WORKER_PID_TAG])
            os.killpg(worker, signal.SIGKILL)
            run(teacher, DagsterRunStatus.FAILURE)  # run monitoring saw the dead worker
            failure = [r.dagster_event.message for r in instance.all_logs(
                teacher, of_type=DagsterEventType.RUN_FAILURE)]
            assert failure and "worker" in failure[0].lower(), failure
            wait_for("the killed run's gpu slot", lambda: not instance.event_log_storage.get_concurrency_info(
                "gpu").active_run_ids, procs=procs, logs=logs)
            retry = web.reexecute_from_failure(teacher)
            run(retry)

            # 3. The field camera: co-learning, the gate, the promotion, the LR sets; then the report, the archive.
            training = web.launch("camera_training_job", partition=CAMERA)
            run(training)
            checks = instance.all_logs(training, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
            assert checks and all(e.dagster_event.event_specific_data.passed for e in checks)
            report = web.launch("evaluation_job", partition=CAMERA)
            run(report)
            # The sensor saw the batch ingested and a student serving its camera: it requested the archive run.
            [archive] = wait_for("the sensor's archive run", lambda: [
                r.run_id for r in instance.get_runs() if r.job_name == f"archive_{CAMERA}_job"], procs=procs, logs=logs)
            assert instance.get_run_by_id(archive).tags["dagster/partition"] == batches[CAMERA]
            run(archive)

            # Nothing recomputed, nothing lost: each asset (partition) materialised once, by the runs above.
            runs = [r.run_id for r in ingests] + [teacher, retry, training, report, archive]
            made = Counter(e.dagster_event.asset_key.to_user_string() for r in runs for e in instance.all_logs(
                r, of_type=DagsterEventType.ASSET_MATERIALIZATION))
            assert made == ASSETS
            assert {r.run_id for r in instance.get_runs()} == set(runs)  # no run but those asked for
            # Values written by one pod, read by another (from dagster_io/, through the io manager).
            loaded = lambda r: {e.dagster_event.event_specific_data.input_name  # noqa: E731
                                for e in instance.all_logs(r, of_type=DagsterEventType.LOADED_INPUT)}
            assert "teacher_checkpoint" in loaded(training)
            assert {"teacher_checkpoint", "co_trained_student", "learned_downsampler"} <= loaded(report)
            assert instance.get_run_by_id(retry).parent_run_id == teacher
            assert (data / instance.get_latest_materialization_event(dg.AssetKey(  # a path under the data root
                "evaluation_report")).asset_materialization.metadata["report"].value).is_file()
            archived = instance.get_latest_materialization_event(dg.AssetKey(["upscaled_archive", CAMERA]))
            assert archived.asset_materialization.metadata["upscaled"].value == 3

            # Every step's captured log is served by the webserver (from the data root's dagster_logs/).
            for run_id in runs[:2] + runs[3:]:
                step_logs = web.step_logs(run_id)
                assert step_logs and all(text.strip() for text in step_logs.values()), (run_id, step_logs)
                logged = {step for keys in step_logs for step in keys.split(",")}
                assert set(step_seconds(instance, run_id)) <= logged, (run_id, logged)
            times = {}
            for r in runs:
                record = instance.get_run_record_by_id(r)
                times[f"{record.dagster_run.job_name}/{r[:8]}"] = step_seconds(instance, r) | {
                    "run (queued to finished)": round(record.end_time - record.create_timestamp.timestamp(), 1)}
            pod_homes = {Path(instance.get_run_by_id(r).tags[WORKER_HOME_TAG]) for r in runs}

        # Each run worker's home (one per run) holds its dagster.yaml and nothing else; no service's home
        # holds values or captured logs either (the daemon keeps only its own logs in its home).
        assert len(pod_homes) == len(runs)
        for home in pod_homes:
            assert sorted(p.name for p in home.iterdir()) == ["dagster.yaml"], (home, list(home.iterdir()))
        for home in homes.values():
            assert not (home / "storage").exists(), list((home / "storage").rglob("*"))
        assert any((data / "dagster_io").rglob("*")) and any((data / "dagster_logs").rglob("*"))
    finally:
        for proc in procs.values():
            stop_group(proc)
        for pid_file in pods.glob("*.pid"):  # a run worker left running (a failed test) dies with its session
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
    print("\nseconds per step (multi-pod):", json.dumps(times, indent=1))
