"""Model folders: ``save_pretrained`` network + ``scheduler_config.json`` + ``training.json``.

One layout for every kind (teacher, student, downsampler), so any checkpoint can be listed,
loaded and traced back to the profile and data it was trained with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sr_pipeline.common.errors import UsageError, one_sentence

if TYPE_CHECKING:  # torch stays out of import time: the Dagster layer reads training.json through here
    from sr_pipeline.sr.models.diffusion import ResShiftSchedule


@dataclass
class LoadedModel:
    net: "object"
    schedule: ResShiftSchedule | None
    info: dict
    path: Path

    @property
    def kind(self) -> str:
        return self.info.get("kind", "unknown")

    @property
    def version(self) -> str:
        return self.info.get("version", self.path.name)

    @property
    def served_noise_scale(self) -> float:
        """The start-noise scale this model is served at by default: a student's is the one it was
        distilled at (``colearn.start_noise_scale``; 0 for older students), a teacher's is 0."""
        if self.kind != "student":
            return 0.0
        colearn = (self.info.get("profile") or {}).get("colearn") or {}
        return float(colearn.get("start_noise_scale", 0.0) or 0.0)


INFO_FILE = "training.json"


def is_model_dir(path: Path) -> bool:
    """A finished model folder: it has its training.json (temp folders start with ``.``)."""
    path = Path(path)
    return not path.name.startswith(".") and (path / INFO_FILE).is_file()


class CorruptModelInfo(ValueError):
    """A training.json that is not a readable JSON object; the message names the file."""


def read_info(model_dir: Path) -> dict:
    path = Path(model_dir) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a model folder (no {INFO_FILE})")
    try:
        info = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptModelInfo(f"{path} is corrupt ({type(exc).__name__}: {exc}); restore it from a backup or "
                               "remove its model folder") from None
    if not isinstance(info, dict):
        raise CorruptModelInfo(f"{path} is corrupt (not a JSON object); restore it from a backup or remove its "
                               "model folder")
    return info


def model_version(model_dir: Path) -> str:
    """The version recorded in a model folder's training.json (else the folder's name)."""
    return str(read_info(Path(model_dir)).get("version", Path(model_dir).name))


def load_sr_model(model_dir: Path, device: str = "cpu") -> LoadedModel:
    """Load a teacher or student folder (an ``SRUNet`` with its schedule)."""
    from sr_pipeline.sr.models.diffusion import ResShiftSchedule
    from sr_pipeline.sr.models.upsampler import SRUNet

    model_dir = Path(model_dir)
    info = read_info(model_dir)
    net = SRUNet.from_pretrained(model_dir).to(device).eval().requires_grad_(False)
    schedule = ResShiftSchedule.from_config(ResShiftSchedule.load_config(model_dir))
    return LoadedModel(net=net, schedule=schedule, info=info, path=model_dir)


def check_model_folder(option: str, path: Path) -> None:
    """``path`` is a finished model folder (it has its training.json)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{option} {path} does not exist; pass a model folder (see `sr-pipeline models`)")
    if not path.is_dir():
        raise UsageError(f"{option} {path} is a file; pass a model folder (see `sr-pipeline models`)")
    if not is_model_dir(path):
        raise UsageError(f"{option} {path} is not a model folder (no {INFO_FILE}); "
                         "pass one that `sr-pipeline models` lists")
    check_info_file(path / INFO_FILE)


def check_info_file(info_file: Path) -> dict:
    """A model's training.json, read: one that is not a readable JSON object is a ``UsageError``
    naming the file (never skipped, never replaced by a default)."""
    try:
        return read_info(Path(info_file).parent)
    except (OSError, ValueError) as exc:
        raise UsageError(one_sentence(exc)) from None
