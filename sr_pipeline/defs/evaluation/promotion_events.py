"""``sr-pipeline promote`` on the Dagster side: the promotion is recorded by the evaluation layer
(:mod:`sr_pipeline.evaluation.promotion`), then reported here as a runless materialisation of
``promoted_student`` to the instance of ``$DAGSTER_HOME``, so the UI's lineage and staleness follow
a hand promotion (a rollback) as they follow the gate's.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from sr_pipeline.storage.layout import DataLayout

PROMOTED_ASSET = "promoted_student"
# assets whose data version is a student version of the data root they were made in
STUDENT_ASSETS = ("co_trained_student", PROMOTED_ASSET)
_RECENT = 200  # materialisations of each read to tell whose instance it is


class ForeignInstance(ValueError):
    """``$DAGSTER_HOME`` records the students of another data root; the message says which and what to do."""


def recorded_students(instance: Any) -> set[str]:
    """The student versions the instance's recent student materialisations name (their data versions)."""
    import dagster as dg
    from dagster._core.definitions.data_version import DATA_VERSION_TAG

    seen = set()
    for key in STUDENT_ASSETS:
        for record in instance.fetch_materializations(dg.AssetKey(key), limit=_RECENT).records:
            version = (record.asset_materialization.tags or {}).get(DATA_VERSION_TAG)
            if version:
                seen.add(version)
    return seen


def check_instance_is_this_roots(instance: Any, home: Path, layout: DataLayout) -> None:
    """ForeignInstance when the instance has recorded students and none of them is a model of this data root:
    it is another plant's (or another data root's) instance, whose UI must not show this root's promotion."""
    seen = recorded_students(instance)
    if not seen:
        return
    folder = layout.models / "student"
    ours = {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()
    if not seen & ours:
        raise ForeignInstance(
            f"DAGSTER_HOME={home} records {len(seen)} student version(s), none of them under {folder}: it is another "
            "data root's Dagster instance, so the promotion was not reported there. It is recorded in this data "
            "root's promotion log and the archive uses it; set DAGSTER_HOME to this data root's instance for the UI")


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


def report_to_dagster_home(entry: dict, layout: DataLayout) -> Path | None:
    """:func:`report_promotion` of a promotion-log entry of ``layout`` to the instance in ``$DAGSTER_HOME`` when
    there is one and it is this data root's (:func:`check_instance_is_this_roots`); its folder, or None."""
    home = os.environ.get("DAGSTER_HOME")
    if not home or not Path(home).is_dir():
        return None
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        check_instance_is_this_roots(instance, Path(home), layout)
        report_promotion(instance, entry["version"], entry["path"], entry["reason"], entry.get("camera"))
    return Path(home)


def promote_cli(args: argparse.Namespace) -> int:
    """``sr-pipeline promote``: the evaluation layer's command, reporting to Dagster as well."""
    from sr_pipeline.evaluation.commands import promote_cli as record_and_print

    return record_and_print(args, report=report_to_dagster_home)
