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
        profile = self.info.get("profile") or {}
        colearn = (profile.get("colearn") if isinstance(profile, dict) else None) or {}
        value = colearn.get("start_noise_scale", 0.0) if isinstance(colearn, dict) else None
        try:
            scale = float(value or 0.0)
        except (TypeError, ValueError):
            scale = float("nan")
        if not (0.0 <= scale < float("inf")):
            raise CorruptModelInfo(f"{self.path / INFO_FILE} records start_noise_scale {value!r}, not a number >= 0; "
                                   "the folder's training.json is damaged: restore it or train the model again")
        return scale


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


def root_relative(path: Path | str, root: Path) -> str:
    """``path`` as a file under the data root ``root`` stores it: relative to the root (POSIX separators)
    when it is inside it, else absolute (a relative ``path`` is taken as already stored)."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    for inside, base in ((path, Path(root)), (path.resolve(), Path(root).resolve())):
        try:
            return inside.relative_to(base).as_posix()
        except ValueError:
            continue
    return str(path)


def resolve_under(root: Path, stored: Path | str) -> Path:
    """A path stored with :func:`root_relative` as a path to open: a relative one under ``root``. An
    absolute one (written before paths were relative) that names a model folder
    (``.../models/<kind>/<version>``) which ``root`` holds too, or which another data root holds, is
    ``root``'s, so a copied data root serves its own models (or finds one missing), never the original's;
    any other absolute path (a model folder kept outside every data root) is kept."""
    path = Path(stored)
    if not path.is_absolute():
        return Path(root) / path
    parts = path.parts
    if len(parts) >= 3 and parts[-3] == "models":
        own = Path(root) / "models" / parts[-2] / parts[-1]
        # Another data root's model (it has a catalog beside its models): this root's copy, present or missing.
        if own.is_dir() or (path.parents[2] / "catalog").is_dir():
            return own
    return path


def data_root_of(model_dir: Path) -> Path | None:
    """The data root a model folder sits in (``<root>/models/<kind>/<version>``), or None elsewhere."""
    path = Path(model_dir).absolute()
    return path.parents[2] if len(path.parents) > 2 and path.parents[1].name == "models" else None


def link_path(target: Path | str, model_dir: Path) -> str:
    """How ``model_dir``'s training.json names another folder (its teacher, its co-trained downsampler):
    relative to the data root both sit in, so the data root can be moved; absolute outside one."""
    target = Path(target).absolute()
    root = data_root_of(model_dir)
    return root_relative(target, root) if root is not None else str(target)


def linked_path(model_dir: Path, stored: Path | str) -> Path:
    """A folder named in ``model_dir``'s training.json (written by :func:`link_path`, or an absolute path
    in folders from before) as a path to open from where ``model_dir`` is now."""
    root = data_root_of(model_dir)
    if root is None:
        return Path(stored)
    return resolve_under(root, stored)


def recorded_teacher(model_dir: Path) -> Path | None:
    """The teacher folder a student was distilled from (``teacher.path`` in its training.json), as this data
    root holds it; None when none is recorded."""
    stored = (read_info(Path(model_dir)).get("teacher") or {}).get("path")
    return linked_path(Path(model_dir), stored) if isinstance(stored, str) and stored else None


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
