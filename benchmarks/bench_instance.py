"""The Dagster instance on SQLite vs PostgreSQL: wall time per phase of the deployment test's main path.

    eval "$(.ci/start-postgres)"        # or any server: DAGSTER_PG_HOST/PORT/USER/PASSWORD/DB
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_instance.py [--repeat 1] [--only sqlite|postgres]

Runs the flow of ``test_postgres.py::test_main_path_on_postgres_is_seen_by_a_second_instance``
once per instance, each on a fresh data root and DAGSTER_HOME (``dagster.yaml`` as shipped, or with
its documented ``storage:`` block for PostgreSQL, in a scratch database this script creates and
drops; the role needs CREATEDB, as ``.ci/start-postgres`` gives it):

- sensor tick: the camera-upload sensor's evaluations (two: the one that claims the uploads, and the
  one after the report that requests the field batch's archive run), their dynamic partitions added,
  and each cursor stored the way an operator does it (``dagster sensor cursor --set``, a subprocess
  that loads the workspace, so most of this phase is Python start-up, the same for both instances;
  figures measured before the archive had its own run count one tick);
- ingestion: one ``ingest_job`` run per upload batch (two);
- training+gate: the teacher, co-learning and the promotion gate's checks (tiny profile, CPU);
- report: the ``evaluation_job``; archive: the field camera's ``archive_field_cam_job`` run the second
  tick requested (``upscaled_archive/field_cam`` for the field batch).

The images, the profile and the helpers are the test's own (imported from sr_pipeline_tests), so
the benchmark measures exactly what the test runs. The second-instance checks are not timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "sr_pipeline_tests"
sys.path.insert(0, str(TESTS))

import torch  # noqa: E402
from dagster import DagsterInstance, build_sensor_context  # noqa: E402

from conftest import REGISTRY_YAML  # noqa: E402
from deploy_fixtures import _connect, _server_problem, write_home  # noqa: E402
from sr_pipeline.definitions import build_definitions  # noqa: E402
from sr_pipeline.defs.plant.resources import PlantStorage, TrainingSettings  # noqa: E402
from test_postgres import (  # noqa: E402
    CAMERA, CAMERA_JOB, EVALUATION_JOB, INGEST_JOB, SENSOR, TEACHER_JOB, store_cursor, upload_plant_images,
)
from test_training_assets import TINY_PROFILE  # noqa: E402

PHASES = ("sensor tick", "ingestion", "training+gate", "report", "archive")
TEST_ENV = {"SR_PIPELINE_STABLE_SECONDS": "0", "SR_PIPELINE_GATE_REQUIRE_LPIPS": "0", "SR_PIPELINE_EVAL_DEVICE": "cpu"}


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh database on the configured server, named by DAGSTER_PG_DB while in use, then dropped."""
    name = f"sr_bench_{uuid.uuid4().hex[:12]}"
    admin = _connect()
    admin.autocommit = True
    saved = {k: os.environ.get(k) for k in ("DAGSTER_PG_DB", "DAGSTER_PG_PORT")}
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        os.environ["DAGSTER_PG_DB"] = name  # read by the instance and by the cursor subprocess
        os.environ.setdefault("DAGSTER_PG_PORT", "5432")
        yield name
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def plant(root: Path):
    """The test's ``plant`` fixture: Definitions on a fresh data root with the tiny training profile."""
    profile, cameras = root / "tiny.yaml", root / "cameras.yaml"
    profile.write_text(TINY_PROFILE)
    cameras.write_text(REGISTRY_YAML)
    storage = PlantStorage(data_root=str(root / "data"), cameras_file=str(cameras))
    defs = build_definitions(storage=storage, training=TrainingSettings(profile=str(profile), use_accelerate=False))
    return defs, storage


def main_path(root: Path, home: Path) -> dict[str, float]:
    """The test's main path on the instance in ``home``; seconds per phase."""
    defs, storage = plant(root)
    upload_plant_images(storage.layout().landing)
    times: dict[str, float] = {}

    def timed(phase: str, step):
        start = time.perf_counter()
        result = step()
        times[phase] = times.get(phase, 0.0) + time.perf_counter() - start
        return result

    def check(result, what: str):
        if not result.success:
            raise SystemExit(f"{what} failed on {home}")
        return result

    with DagsterInstance.from_config(str(home)) as instance:
        def tick(cursor=None):
            result = defs.resolve_sensor_def(SENSOR)(build_sensor_context(instance=instance, cursor=cursor,
                                                                          resources={"storage": storage}))
            for add in result.dynamic_partitions_requests:  # as the daemon applies them
                instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
            store_cursor(home, result.cursor)
            return result

        claimed = timed("sensor tick", tick)
        ingest = defs.resolve_job_def(INGEST_JOB)
        for request in claimed.run_requests:
            timed("ingestion", lambda: check(ingest.execute_in_process(
                instance=instance, partition_key=request.partition_key, tags=request.tags), "ingestion"))
        timed("training+gate", lambda: check(defs.resolve_job_def(TEACHER_JOB).execute_in_process(instance=instance),
                                             "teacher"))
        training = timed("training+gate", lambda: check(defs.resolve_job_def(CAMERA_JOB).execute_in_process(
            instance=instance, partition_key=CAMERA), "training"))
        if not all(c.passed for c in training.get_asset_check_evaluations()):
            raise SystemExit("the promotion gate did not pass: the flow is not the test's")
        timed("report", lambda: check(defs.resolve_job_def(EVALUATION_JOB).execute_in_process(
            instance=instance, partition_key=CAMERA), "report"))
        [archive] = timed("sensor tick", lambda: tick(claimed.cursor)).run_requests  # ingested, and now served
        timed("archive", lambda: check(defs.resolve_job_def(archive.job_name).execute_in_process(
            instance=instance, partition_key=archive.partition_key, tags=archive.tags), "archive"))
    times["total"] = sum(times.values())
    return times


def run_once(kind: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"bench_instance_{kind}_") as tmp:
        root = Path(tmp)
        if kind == "sqlite":
            return main_path(root, write_home(root / "dagster_home", with_postgres=False))
        with scratch_database():
            return main_path(root, write_home(root / "dagster_home", with_postgres=True))


def table(results: dict[str, list[dict[str, float]]]) -> str:
    kinds = list(results)
    rows = [f"| phase | {' | '.join(f'{k} (s)' for k in kinds)} |", "|---|" + "---:|" * len(kinds)]
    for phase in (*PHASES, "total"):
        cells = [" / ".join(f"{r[phase]:.2f}" for r in results[k]) for k in kinds]
        rows.append(f"| {phase} | {' | '.join(cells)} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per instance (each on fresh storage)")
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="time one instance only")
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["sqlite", "postgres"]
    if "postgres" in kinds and (problem := _server_problem()):
        raise SystemExit(f"{problem}\n(run with --only sqlite to time SQLite alone)")
    os.environ.update(TEST_ENV)
    torch.set_num_threads(1)  # as the tests (test_evaluation.one_thread): tiny networks, busy cores
    results = {kind: [] for kind in kinds}
    for _ in range(args.repeat):
        for kind in kinds:  # interleaved, so a change of machine load hits both instances alike
            results[kind].append(run_once(kind))
            print(f"{kind}: {results[kind][-1]['total']:.2f} s", file=sys.stderr, flush=True)
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
    print(table(results))


if __name__ == "__main__":
    main()
