"""Where runtime state lives under the data root (``data/`` by default, ``SR_PIPELINE_DATA`` overrides).

Every component takes a :class:`DataLayout` rather than building paths itself, so tests can point
the whole pipeline at a temporary folder. Paths written into files under the data root are relative
to it (:meth:`DataLayout.relative`, read back with :meth:`DataLayout.resolve`), so a data root
copied, moved or restored elsewhere keeps working from its new place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sr_pipeline.sr.models.checkpoints import resolve_under, root_relative

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "data"


def default_data_root() -> Path:
    return Path(os.environ.get("SR_PIPELINE_DATA", DEFAULT_DATA_ROOT)).resolve()


@dataclass(frozen=True)
class DataLayout:
    root: Path

    def relative(self, path: Path | str) -> str:
        """``path`` as it is stored in a file under the data root: relative to the root (POSIX
        separators) when it is inside it, else absolute."""
        return root_relative(path, self.root)

    def resolve(self, stored: Path | str) -> Path:
        """A path stored with :meth:`relative` as a path to open: a relative one under this root. An
        absolute one (written before paths were relative) that names a model folder
        (``.../models/<kind>/<version>``) which this root holds too is this root's, so a copied data
        root serves its own models, never the original's; any other absolute path is kept."""
        return resolve_under(self.root, stored)

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
