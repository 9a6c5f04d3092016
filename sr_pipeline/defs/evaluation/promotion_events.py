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

PROMOTED_ASSET = "promoted_student"


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


def report_to_dagster_home(entry: dict) -> Path | None:
    """:func:`report_promotion` of a promotion-log entry to the instance in ``$DAGSTER_HOME`` when there
    is one; its folder, or None."""
    home = os.environ.get("DAGSTER_HOME")
    if not home or not Path(home).is_dir():
        return None
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        report_promotion(instance, entry["version"], entry["path"], entry["reason"], entry.get("camera"))
    return Path(home)


def promote_cli(args: argparse.Namespace) -> int:
    """``sr-pipeline promote``: the evaluation layer's command, reporting to Dagster as well."""
    from sr_pipeline.evaluation.commands import promote_cli as record_and_print

    return record_and_print(args, report=report_to_dagster_home)
