"""The Dagster UI in a real browser: the webserver and the daemon on the project's workspace, driven
from headless Debian Chromium through the DevTools protocol (:mod:`cdp`).

The data root holds calibration pairs and tiny teacher, student and downsampler folders, recorded
in the instance as those assets' values, and the student is the promoted one (recorded and reported
as ``sr-pipeline promote`` does), so every upstream asset of the report has a materialisation. With
one missing (``promoted_student`` before it was recorded here) the UI answers the click with an "Are
you sure?" dialog naming it and starts no run until someone confirms; the test fails at once on
such a dialog. The test opens the global asset lineage and checks that every asset of the
Definitions is drawn, opens ``evaluation_report``, clicks "Materialize" as an operator does, waits
for the run (queued, dequeued by the daemon, run in its own worker) to succeed, and reads the new
report's metadata on the asset's page. On a failure the page is saved (.png, .html) in tmp_path.

Skipped where Chromium is missing and ``CI`` is not ``true``; in CI a missing Chromium fails.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterInstance, DagsterRunStatus

from cdp import Page
from deploy_fixtures import REPO_ROOT, child_env, require, start_group, stop_group, write_home
from sr_pipeline.definitions import build_definitions, step_values_io_manager
from sr_pipeline.defs.plant.partitions import field_cameras
from sr_pipeline.defs.evaluation.promotion_events import report_promotion
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.evaluation.promotion import find_student, promote_version
from sr_pipeline.sr.models.checkpoints import model_version
from sr_pipeline.storage.layout import DataLayout
from test_evaluation import add_pairs, save_downsampler, save_sr

pytestmark = pytest.mark.browser

REPORT = "evaluation_report"
CAMERA = "field_cam"
BIN = Path(sys.executable).parent


@pytest.fixture
def chromium() -> str:
    path = Path("/usr/bin/chromium")
    require(path.is_file(), "Chromium is not installed at /usr/bin/chromium (Debian: apt-get install chromium)")
    return str(path)


def record_model_assets(instance: DagsterInstance, layout: DataLayout, teacher: Path, student: Path,
                        downsampler: Path) -> None:
    """Store the three models as the values of the report's upstream assets (what training would do)
    and promote the student (what the gate would do), so the report has no unmaterialised upstream."""

    @dg.asset(name="teacher_checkpoint")
    def teacher_value() -> str:
        return str(teacher)

    @dg.multi_asset(outs={"co_trained_student": dg.AssetOut(), "learned_downsampler": dg.AssetOut()},
                    partitions_def=field_cameras)
    def student_values():
        return str(student), str(downsampler)

    instance.add_dynamic_partitions(field_cameras.name, [CAMERA])
    # Kept where the code location's io manager reads them: the data root's dagster_io/.
    resources = {"io_manager": step_values_io_manager(PlantStorage(data_root=str(layout.root)))}
    assert dg.materialize([teacher_value], instance=instance, resources=resources).success
    assert dg.materialize([student_values], instance=instance, partition_key=CAMERA, resources=resources).success
    # As `sr-pipeline promote` records it: the promotion log, then the runless promoted_student event.
    row = find_student(layout, model_version(student)) | {"camera": CAMERA}
    entry = promote_version(layout, row, "the plant's first student")
    report_promotion(instance, entry["version"], entry["path"], entry["reason"], entry["camera"])
    # calibration_pairs_sensor would otherwise request its own evaluation run for the 3 pairs.
    instance.report_runless_asset_event(dg.AssetMaterialization(REPORT, partition=CAMERA,
                                                                metadata={"calibration_pairs": 3}))


@pytest.fixture
def plant(tmp_path, registry, cameras_file):
    """DAGSTER_HOME (SQLite, the project's dagster.yaml) and a data root ready for an evaluation."""
    # nux off: no "Join the Dagster community" dialog over the page of a first visit on 127.0.0.1.
    home = write_home(tmp_path / "dagster_home", with_postgres=False, nux={"enabled": False})
    layout = DataLayout(tmp_path / "data")
    add_pairs(layout, registry, tmp_path, [1, 2, 3], "calib-1")
    models = save_sr(layout, "teacher", "t1"), save_sr(layout, "student", "s1"), save_downsampler(layout, "s1")
    with DagsterInstance.from_config(str(home)) as instance:
        record_model_assets(instance, layout, *models)
    env = child_env(DAGSTER_HOME=str(home), SR_PIPELINE_DATA=str(layout.root), SR_PIPELINE_CAMERAS=str(cameras_file),
                    SR_PIPELINE_GATE_REQUIRE_LPIPS="0", SR_PIPELINE_EVAL_DEVICE="cpu", OMP_NUM_THREADS="1",
                    SR_PIPELINE_RETRAIN_STUDENT="100000", SR_PIPELINE_RETRAIN_TEACHER="100000")
    return home, layout, env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dagster_ui(plant, tmp_path):
    """``dagster-webserver`` (on 127.0.0.1) and ``dagster-daemon``, each in its own process group."""
    home, layout, env = plant
    port = free_port()
    web = start_group([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
                      tmp_path / "webserver.log", env)
    daemon = start_group([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], tmp_path / "daemon.log", env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert web.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=5) as reply:
                    json.load(reply)
                break
            except OSError:
                assert time.monotonic() < deadline, "the webserver did not answer within 240 s"
                time.sleep(1)
        yield base, home
    finally:
        stop_group(daemon)
        stop_group(web)


# The text of an open dialog (Blueprint's role=dialog), or null.
DIALOG = "(() => { const d = document.querySelector('[role=dialog]'); return d ? d.innerText : null; })()"


def wait_for_run(home: Path, page: Page, launch_timeout: float = 120, timeout: float = 420):
    """The run launched from the UI (tag ``dagster/from_ui``), once it has finished successfully.

    Fails at once when the page shows a dialog instead (the click asks for a confirmation or a
    config), and when no run exists ``launch_timeout`` s after the click: the webserver creates the
    run (queued) as it answers the click, so there is nothing to wait for after that."""
    start = time.monotonic()
    with DagsterInstance.from_config(str(home)) as instance:
        while True:
            runs = instance.get_runs(dg.RunsFilter(tags={"dagster/from_ui": "true"}))
            assert len(runs) <= 1, f"one click launched {len(runs)} runs"
            if not runs:
                dialog = page.evaluate(DIALOG)
                assert dialog is None, f"the click opened a dialog instead of launching a run:\n{dialog}"
                assert time.monotonic() - start < launch_timeout, f"no run {launch_timeout} s after the click"
            elif runs[0].is_finished:
                run = runs[0]
                if run.status != DagsterRunStatus.SUCCESS:
                    errors = [e.dagster_event.event_specific_data for e in instance.all_logs(run.run_id)
                              if e.is_dagster_event and e.dagster_event.is_failure]
                    raise AssertionError(f"run {run.run_id} {run.status}: {errors}")
                return run, instance.get_latest_materialization_event(dg.AssetKey(REPORT))
            assert time.monotonic() - start < timeout, f"the run from the UI did not finish in {timeout} s: {runs}"
            time.sleep(2)


# True when every asset name is the label of one node of the graph, whole or shortened in the middle
# ("learned_d…_lr_sets") as the zoomed-out lineage draws long names.
ALL_DRAWN = """((names) => {
  const labels = [...document.querySelectorAll('foreignObject div')]
    .filter(d => d.children.length === 0).map(d => d.innerText.trim());
  const drawn = (name, label) => {
    const [head, tail] = label.split('\u2026');
    return tail === undefined ? label === name : name.startsWith(head) && name.endsWith(tail);
  };
  return names.every(n => labels.some(l => drawn(n, l)));
})(%s)"""


def test_operator_materialises_the_report_from_the_ui(chromium, dagster_ui, tmp_path, cameras_file):
    base, home = dagster_ui
    # The code location the webserver loads (its registry makes one archive asset per field camera); the
    # graph labels a node with its key's last part (upscaled_archive/field_cam: field_cam).
    defs = build_definitions(PlantStorage(data_root=str(tmp_path / "unused"), cameras_file=str(cameras_file)))
    names = [k.path[-1] for k in defs.resolve_all_asset_keys()]
    page = Page(chromium, tmp_path)
    try:
        page.goto(f"{base}/asset-groups")
        page.wait_for("document.querySelectorAll('foreignObject').length > 0", "the lineage graph", timeout=180)
        page.shortcut("KeyE", "e", alt=True)  # "Expand all groups" (the graph starts with groups collapsed)
        page.wait_for(ALL_DRAWN % json.dumps(names), f"the lineage to draw every asset: {names}", timeout=60)

        page.goto(f"{base}/assets/{REPORT}")
        page.wait_for("document.body && document.body.innerText.includes('Latest materialization')",
                      "the report asset's page", timeout=120)
        # A partitioned asset: Materialize opens the partition dialog (one field camera here), then launch.
        page.click("button", "the Materialize button", text="Materialize…")
        # The dialog opens on "failed and missing" (none here: the report exists); choose All, which the
        # dialog may only take once its partitions have loaded, so it is chosen again until 1 is selected.
        launch = page.wait_for(
            """(() => { const seen = [...document.querySelectorAll('[role=dialog] button')]
                   .filter(e => e.getBoundingClientRect().width > 0);
                const go = seen.find(e => /^Launch 1 run/.test(e.innerText.trim()) && !e.disabled);
                if (go) return go.innerText.trim();
                const all = seen.find(e => e.innerText.trim() === 'All');
                if (all) all.click();
                return null; })()""",
            "the partition dialog's launch button for 1 run", timeout=120)
        page.click("button", "the launch button", text=launch)
        page.wait_for("!document.querySelector('[role=dialog]')", "the dialog to close once launched", timeout=120)
        run, event = wait_for_run(home, page)
        shown = event.asset_materialization.metadata["report"].value  # a path under the data root, as the UI shows it
        report = tmp_path / "data" / shown
        assert event.run_id == run.run_id and report.is_file()
        assert Path(report).parent.parent.name == CAMERA and event.asset_materialization.partition == CAMERA
        assert run.asset_selection == {dg.AssetKey(REPORT)} and run.tags.get("dagster/partition") == CAMERA

        page.goto(f"{base}/assets/{REPORT}")  # the Overview tab's Metadata table: the latest materialisation
        page.wait_for(
            f"""(() => {{ const t = document.body ? document.body.innerText : '';
                return ['gate_action', 'calibration_pairs', 'psnr_gain_db', {json.dumps(shown)}]
                  .every(s => t.includes(s)); }})()""",
            "the new report's metadata", timeout=120)
    except BaseException:
        with contextlib.suppress(Exception):  # what the operator would have seen; never hides the failure
            page.snapshot(tmp_path / "page-at-failure")
        raise
    finally:
        page.close()
