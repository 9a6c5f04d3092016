"""The catalog side of training: which images, which teacher, which folders and versions.

The ML core (:mod:`sr_pipeline.sr.stages`) trains on arrays it is given into folders it is given;
this module reads the accepted images from the catalog, picks ``layout.model_dir(kind, version)``
with a new version and the run folder ``layout.run_dir(kind, profile name)`` unless the caller chose
them, finds the newest teacher, and calls the core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from sr_pipeline.sr.config import Profile
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.storage.registry import newest_teacher
from sr_pipeline.storage.store import list_images, load_image
from sr_pipeline.storage.versions import new_version
from sr_pipeline.intake.cameras import CameraRole


def catalog_images(layout: DataLayout, role: str) -> tuple[list[np.ndarray], list[str]]:
    """Every accepted catalogued image of a role (``hr_reference``, ``field_lr``) with its image id."""
    rows = list_images(layout, role=role)
    return [load_image(p) for p in rows["path"]], list(rows["image_id"])


def colearn_outputs(layout: DataLayout, profile: Profile, student_out: Path | None = None,
                    downsampler_out: Path | None = None) -> tuple[Path, Path | None]:
    """The student's folder and, when the profile trains G, the downsampler's: one version for the pair."""
    version = Path(student_out).name if student_out else new_version()
    student = Path(student_out) if student_out else layout.model_dir("student", version)
    if not profile.colearn.use_downsampler:
        return student, None
    return student, Path(downsampler_out) if downsampler_out else layout.model_dir("downsampler", version)


def train_teacher_from_catalog(layout: DataLayout, profile: Profile, *, out: Path | None = None,
                               run_dir: Path | None = None, resume: bool = False,
                               report: Callable[[dict], None] | None = None):
    """Train the teacher on every HR reference in the catalog (``TrainResult``, None on other processes)."""
    from sr_pipeline.sr.stages.teacher import train_teacher

    images, ids = catalog_images(layout, CameraRole.hr_reference)
    if not images:
        raise ValueError(f"no HR reference images in the catalog under {layout.root}; ingest some first "
                         "(sr-pipeline demo-data, then materialise raw_plant_images)")
    out = Path(out) if out else layout.model_dir("teacher", new_version())
    run_dir = Path(run_dir) if run_dir else layout.run_dir("teacher", profile.name)
    return train_teacher(profile, images, run_dir, out, resume=resume, report=report, image_ids=ids)


def train_colearn_from_catalog(layout: DataLayout, profile: Profile, *, teacher: Path | None = None,
                               out: Path | None = None, downsampler_out: Path | None = None,
                               run_dir: Path | None = None, resume: bool = False,
                               report: Callable[[dict], None] | None = None):
    """Co-learn the student and G from a teacher (default: the newest) on the catalog's HR and field LR."""
    from sr_pipeline.sr.stages.colearn import train_colearn

    teacher = Path(teacher) if teacher else newest_teacher(layout)
    if teacher is None:
        raise ValueError(f"no teacher under {layout.models / 'teacher'}: train one first (sr-pipeline train teacher)")
    hr, hr_ids = catalog_images(layout, CameraRole.hr_reference)
    if not hr:
        raise ValueError(f"no HR reference images in the catalog under {layout.root}")
    field_lr, field_ids = catalog_images(layout, CameraRole.field_lr)
    student_dir, g_dir = colearn_outputs(layout, profile, out, downsampler_out)
    run_dir = Path(run_dir) if run_dir else layout.run_dir("colearn", profile.name)
    return train_colearn(profile, teacher, hr, field_lr, run_dir, student_dir, g_dir, resume=resume, report=report,
                         image_ids=hr_ids, field_image_ids=field_ids)
