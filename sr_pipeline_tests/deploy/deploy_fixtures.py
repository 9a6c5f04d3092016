"""Fixtures of the deployment tests: a real PostgreSQL server, Dagster instances on it, process control.

A deployment test needs something outside Python (a PostgreSQL server, Chromium, dagster-k8s).
:func:`require` skips the test with the reason when it is missing, except with ``CI=true``, where
``.ci/run`` provides all of them and a missing one is a failure.

The PostgreSQL instance is configured exactly as ``dagster.yaml`` documents it: its commented
``storage:`` block is uncommented and used, with the ``DAGSTER_PG_*`` variables. Each test gets
its own scratch database (the role needs CREATEDB, as ``.ci/start-postgres`` creates it), dropped
afterwards, so a test never sees another's runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_VARS = ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require(ok: bool, reason: str) -> None:
    """Skip with ``reason`` when ``ok`` is false; in CI (``CI=true``) fail instead."""
    if ok:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: .ci/run provides it, so this is a failure, not a skip)")
    pytest.skip(reason)


def instance_config(with_postgres: bool) -> dict:
    """The project's dagster.yaml; with ``with_postgres``, its documented storage block uncommented."""
    text = (REPO_ROOT / "dagster.yaml").read_text()
    config = yaml.safe_load(text)
    if with_postgres:
        config.update(yaml.safe_load(documented_storage_block(text)))
    return config


def documented_storage_block(text: str) -> str:
    """The commented ``# storage:`` block of dagster.yaml, uncommented (every ``#`` line after it)."""
    lines = text.splitlines()
    try:
        start = lines.index("# storage:")
    except ValueError:
        raise AssertionError("dagster.yaml no longer documents the Postgres `# storage:` block") from None
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    return "\n".join(block)


def write_home(home: Path, with_postgres: bool, **overrides) -> Path:
    """A DAGSTER_HOME folder with the project's instance settings (top-level keys ``overrides`` replaced)."""
    home.mkdir(parents=True, exist_ok=True)
    config = instance_config(with_postgres) | overrides
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home


def _connect(dbname: str | None = None):
    import psycopg2

    return psycopg2.connect(
        host=os.environ["DAGSTER_PG_HOST"], port=int(os.environ.get("DAGSTER_PG_PORT", "5432")),
        user=os.environ["DAGSTER_PG_USER"], password=os.environ["DAGSTER_PG_PASSWORD"],
        dbname=dbname or os.environ["DAGSTER_PG_DB"], connect_timeout=5,
    )


def _server_problem() -> str | None:
    missing = [v for v in PG_VARS if not os.environ.get(v)]
    if missing:
        return f"no PostgreSQL server configured ({', '.join(missing)} unset; `eval \"$(.ci/start-postgres)\"`)"
    try:
        import dagster_postgres  # noqa: F401
        import psycopg2  # noqa: F401
    except ImportError:
        return "dagster-postgres is not installed (pip install '.[postgres]')"
    try:
        _connect().close()
    except Exception as exc:  # psycopg2.OperationalError, but any failure means the same here
        return f"PostgreSQL at {os.environ['DAGSTER_PG_HOST']} is not reachable: {str(exc).strip()}"
    return None


@pytest.fixture
def pg_database(monkeypatch):
    """A fresh, empty database on the configured server; DAGSTER_PG_DB names it during the test."""
    problem = _server_problem()
    require(problem is None, problem or "")
    name = f"sr_test_{uuid.uuid4().hex[:12]}"
    admin = _connect()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv("DAGSTER_PG_DB", name)
    monkeypatch.setenv("DAGSTER_PG_PORT", os.environ.get("DAGSTER_PG_PORT", "5432"))
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_home(pg_database, tmp_path, monkeypatch) -> Path:
    """A DAGSTER_HOME whose instance keeps runs, events and schedules in the scratch database, and
    the steps' captured logs in ``dagster_logs/`` of the test's data root (``tmp_path/data``)."""
    monkeypatch.setenv("SR_PIPELINE_COMPUTE_LOGS", str(tmp_path / "data" / "dagster_logs"))
    return write_home(tmp_path / "dagster_home", with_postgres=True)


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Wall time of each step of the run that succeeded, from its STEP_START and STEP_SUCCESS events
    (the figures of docs/benchmarks.md: printed by the deployment tests, seen with ``pytest -s``)."""
    from dagster import DagsterEventType

    start, done = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event and event.event_type == DagsterEventType.STEP_START:
            start[event.step_key] = record.timestamp
        elif event and event.event_type == DagsterEventType.STEP_SUCCESS:
            done[event.step_key] = record.timestamp
    return {step: round(done[step] - start[step], 1) for step in done}


def start_group(cmd: list[str], log: Path, env: dict, cwd: Path = REPO_ROOT) -> subprocess.Popen:
    """Start ``cmd`` as the leader of its own process group (stopped with :func:`stop_group`)."""
    out = open(log, "ab")
    try:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        out.close()


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Signal the process group that ``proc`` leads (by its id), then SIGKILL it if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass
    try:  # children that outlived their leader (the group id stays the leader's pid)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def child_env(**extra: str) -> dict:
    """This process's environment with the worktree first on PYTHONPATH, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env
