"""``sr-pipeline promote`` on the Dagster side: the promotion is recorded by the evaluation layer
(:mod:`sr_pipeline.evaluation.promotion`), then reported here as a runless materialisation of
``promoted_student`` to the instance of ``$DAGSTER_HOME`` (else the data root's own ``dagster_home``), so the
UI's lineage and staleness follow a hand promotion (a rollback) as they follow the gate's; never to an instance
that records only another data root's students.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, NamedTuple

from sr_pipeline.evaluation.promotion import ForeignInstance
from sr_pipeline.storage.layout import DataLayout

PROMOTED_ASSET = "promoted_student"
# assets whose data version is a student version of the data root they were made in
STUDENT_ASSETS = ("co_trained_student", PROMOTED_ASSET)
_RECENT = 200  # materialisations of each read to tell whose instance it is


class Reported(NamedTuple):
    """Where a promotion was reported (``home``), or why it was not (``why_not``)."""

    home: Path | None
    why_not: str | None = None


def recorded_students(instance: Any) -> set[str]:
    """The student versions the instance's recent student materialisations by runs name (their data versions): what
    this instance trained or promoted itself. Runless events (a hand promotion's report) are left out: one stray
    promote must not make the instance look like another root's."""
    import dagster as dg
    from dagster._core.definitions.data_version import DATA_VERSION_TAG

    seen = set()
    for key in STUDENT_ASSETS:
        for record in instance.fetch_materializations(dg.AssetKey(key), limit=_RECENT).records:
            version = (record.asset_materialization.tags or {}).get(DATA_VERSION_TAG)
            if version and record.run_id:
                seen.add(version)
    return seen


def roots_students(layout: DataLayout) -> set[str]:
    """Every student version this data root knows: its model folders (by name and by recorded version) and every
    version its promotion log names, including ones whose folder is gone."""
    from sr_pipeline.sr.models.checkpoints import is_model_dir, read_info
    from sr_pipeline.storage.registry import promotions

    ours = {e["version"] for e in promotions(layout)}
    folder = layout.models / "student"
    for path in (p for p in folder.iterdir() if is_model_dir(p)) if folder.is_dir() else ():
        ours.add(path.name)
        try:
            ours.add(str(read_info(path).get("version", path.name)))
        except ValueError:  # a damaged training.json: its folder name still counts
            pass
    return ours


def check_instance_is_this_roots(instance: Any, home: Path, layout: DataLayout) -> None:
    """ForeignInstance when the instance's runs recorded students (:func:`recorded_students`) and this data root knows
    none of them (:func:`roots_students`): another plant's instance, whose UI must not show this root's promotion. A
    copy of a data root knows its original's students, so the original's instance is taken for its own."""
    seen = recorded_students(instance)
    if seen and not seen & roots_students(layout):
        own = layout.dagster_home
        raise ForeignInstance(
            f"the runs of DAGSTER_HOME={home} trained or promoted {len(seen)} student version(s) and this data root "
            f"({layout.root}) knows none of them: it is another data root's Dagster instance, so the promotion was "
            "not reported there. It is recorded in this root's promotion log and the archive uses it. Run `sr-pipeline promote` with "
            "the same version again with DAGSTER_HOME set to this root's instance"
            + (f" ({own})" if own.is_dir() else "") + " to show it in the UI")


def _holds_an_instance(home: Path) -> bool:
    """A folder Dagster has used: its configuration, or the run history and storage a first run leaves."""
    return (home / "dagster.yaml").is_file() or (home / "history").is_dir() or (home / "storage").is_dir()


def _instance_home(layout: DataLayout) -> tuple[Reported, bool]:
    """``$DAGSTER_HOME``, else the data root's own ``dagster_home`` (where `sr-pipeline demo` records its runs),
    when it holds a Dagster instance, and whether it is the root's own; else why there is none to report to."""
    env = os.environ.get("DAGSTER_HOME")
    home = Path(env) if env else layout.dagster_home
    own = not env or (home.is_absolute() and home.resolve() == layout.dagster_home.resolve())
    where = f"DAGSTER_HOME={env}" if env else f"DAGSTER_HOME is unset and {home}"
    if env and not home.is_absolute():
        return Reported(None, f"DAGSTER_HOME={env} is not an absolute path, which Dagster needs"), own
    if not home.exists():
        return Reported(None, f"{where} does not exist"), own
    if not home.is_dir():
        return Reported(None, f"{where} is not a folder"), own
    if not _holds_an_instance(home):
        return Reported(None, f"{where} holds no Dagster instance (no dagster.yaml, no run history)"), own
    return Reported(home), own


def _latest_promoted(instance: Any, camera: str | None) -> str | None:
    """The version of the camera's newest ``promoted_student`` event in the instance (None: none)."""
    import dagster as dg
    from dagster._core.definitions.data_version import DATA_VERSION_TAG

    where = dg.AssetRecordsFilter(asset_key=dg.AssetKey(PROMOTED_ASSET),
                                  asset_partitions=[camera] if camera is not None else None)
    for record in instance.fetch_materializations(where, limit=_RECENT).records:
        if record.asset_materialization.partition == camera:
            return (record.asset_materialization.tags or {}).get(DATA_VERSION_TAG)
    return None


def report_promotion(instance: Any, version: str, path: str, reason: str, camera: str | None = None) -> None:
    """A runless materialisation of ``promoted_student`` (the camera's partition) with the promoted version
    as data version."""
    import dagster as dg
    from dagster._core.definitions.data_version import DATA_VERSION_IS_USER_PROVIDED_TAG, DATA_VERSION_TAG

    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=PROMOTED_ASSET, partition=camera, description=f"promoted with sr-pipeline promote: {reason}",
        metadata={"model_version": version, "model_path": dg.MetadataValue.path(path), "reason": reason,
                  "camera": camera or ""},
        tags={DATA_VERSION_TAG: version, DATA_VERSION_IS_USER_PROVIDED_TAG: "true"}))


def report_to_dagster_home(entry: dict, layout: DataLayout, only_if_behind: bool = False) -> Reported:
    """:func:`report_promotion` of a promotion-log entry of ``layout`` to the Dagster instance of
    :func:`_instance_home` when it is this data root's (:func:`check_instance_is_this_roots`). ``only_if_behind``:
    only when the instance's newest promotion of the camera is another version (a promotion made while the UI's
    instance was not reachable)."""
    import dagster as dg

    found, own = _instance_home(layout)
    if found.home is None:
        return found
    with dg.DagsterInstance.from_config(str(found.home)) as instance:
        if not own:  # the data root's own dagster_home is this root's by where it lives
            check_instance_is_this_roots(instance, found.home, layout)
        if only_if_behind and _latest_promoted(instance, entry.get("camera")) == entry["version"]:
            return Reported(None, f"the Dagster instance in {found.home} already shows it")
        report_promotion(instance, entry["version"], layout.relative(entry["path"]), entry["reason"],
                         entry.get("camera"))
    return found


def promote_cli(args: argparse.Namespace) -> int:
    """``sr-pipeline promote``: the evaluation layer's command, reporting to Dagster as well."""
    from sr_pipeline.evaluation.commands import promote_cli as record_and_print

    return record_and_print(args, report=report_to_dagster_home)
