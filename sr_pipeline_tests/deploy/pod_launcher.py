"""A run launcher that gives every run what a Kubernetes pod gets, on one machine (test_multi_pod.py).

``K8sRunLauncher`` starts ``dagster api execute_run`` in a fresh pod: a new process tree whose
``DAGSTER_HOME`` holds only the instance's ``dagster.yaml`` (the chart's config map) and nothing any
other run wrote. This launcher does the same with a process instead of a pod: a new session (its own
process group, killed as a whole like a pod) and a new, empty ``DAGSTER_HOME`` per run, holding a copy
of ``instance_yaml``. The worker gets no instance reference from the launcher: it opens its instance
from its own home, as a pod does. What such runs share is what pods share: the database named in
``instance_yaml`` and the data root in the environment.

Like the Kubernetes launcher it reports the worker's health to run monitoring, so a worker killed
with ``kill -9`` makes its run fail (and frees its pool slots) without an operator.

Used by the daemon through the instance's ``run_launcher`` setting (``module: pod_launcher``, with
``sr_pipeline_tests`` on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from dagster import Field, StringSource
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData

WORKER_PID_TAG = "sr_pipeline/worker_pid"
WORKER_HOME_TAG = "sr_pipeline/worker_home"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class PodLikeRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, homes_dir: str, instance_yaml: str, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        self.homes_dir = Path(homes_dir)
        self.instance_yaml = Path(instance_yaml)
        self._workers: dict[str, subprocess.Popen] = {}
        super().__init__()

    @property
    def inst_data(self):
        return self._inst_data

    @classmethod
    def config_type(cls):
        return {"homes_dir": Field(StringSource), "instance_yaml": Field(StringSource)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        home = self.homes_dir / run.run_id
        home.mkdir(parents=True)
        shutil.copyfile(self.instance_yaml, home / "dagster.yaml")
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=None,
                              set_exit_code_on_failure=True).get_command_args()
        env = dict(os.environ, DAGSTER_HOME=str(home))
        with open(self.homes_dir / f"{run.run_id}.log", "ab") as log:  # beside the home: the home stays as made
            worker = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._workers[run.run_id] = worker
        (self.homes_dir / f"{run.run_id}.pid").write_text(str(worker.pid))
        self._instance.add_run_tags(run.run_id, {WORKER_PID_TAG: str(worker.pid), WORKER_HOME_TAG: str(home)})
        self._instance.report_engine_event(f"Started run worker process {worker.pid} with DAGSTER_HOME={home}",
                                           run, cls=self.__class__)

    def _pid(self, run) -> int | None:
        pid = run.tags.get(WORKER_PID_TAG)
        return int(pid) if pid else None

    def _running(self, run) -> bool:
        worker = self._workers.get(run.run_id)
        if worker is not None:
            return worker.poll() is None  # also reaps a dead child
        pid = self._pid(run)
        return pid is not None and _alive(pid)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        if self._pid(run) is None:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, "no run worker was started")
        if self._running(run):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        worker = self._workers.get(run.run_id)
        code = f" with exit code {worker.returncode}" if worker is not None else ""
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {self._pid(run)} is gone{code}")

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished or not self._running(run):
            return False
        self._instance.report_run_canceling(run)
        try:
            os.killpg(self._pid(run), signal.SIGTERM)  # the worker's session: it and its step processes
        except ProcessLookupError:
            return False
        return True
