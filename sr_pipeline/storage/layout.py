"""Where runtime state lives under the data root (``data/`` by default, ``SR_PIPELINE_DATA`` overrides).

Every component takes a :class:`DataLayout` rather than building paths itself, so tests can point
the whole pipeline at a temporary folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "data"


def default_data_root() -> Path:
    return Path(os.environ.get("SR_PIPELINE_DATA", DEFAULT_DATA_ROOT)).resolve()


@dataclass(frozen=True)
class DataLayout:
    root: Path

    @property
    def landing(self) -> Path:
        """Camera uploads arrive here: ``landing/<camera_id>/...``."""
        return self.root / "landing"

    @property
    def incoming(self) -> Path:
        """Files claimed by the sensor, one folder per upload batch: ``incoming/<batch>/<camera_id>/...``."""
        return self.root / "incoming"

    @property
    def image_store(self) -> Path:
        """Content-addressed images: ``store/images/<id[:2]>/<id>.png``."""
        return self.root / "store" / "images"

    @property
    def catalog(self) -> Path:
        """Parquet catalogs, one file per batch: ``catalog/images/<batch>.parquet``."""
        return self.root / "catalog"

    @property
    def quarantine(self) -> Path:
        """Rejected uploads with a JSON reason beside each: ``quarantine/<batch>/...``."""
        return self.root / "quarantine"

    @property
    def models(self) -> Path:
        """Checkpoints as ``save_pretrained`` folders: ``models/<kind>/<version>/``."""
        return self.root / "models"

    def model_dir(self, kind: str, version: str) -> Path:
        """One checkpoint folder: ``models/<kind>/<version>/`` (kind: teacher, student, downsampler)."""
        return self.models / kind / version

    @property
    def runs(self) -> Path:
        """Resumable training state: ``runs/<kind>/<run_id>/``."""
        return self.root / "runs"

    def run_dir(self, kind: str, key: str) -> Path:
        """One training run's resumable state: ``runs/<kind>/<key>/``."""
        return self.runs / kind / key

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"
