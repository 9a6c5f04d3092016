"""The catalog side of training: which images, which teacher, which folders and versions.

The ML core (:mod:`sr_pipeline.sr.train.stages`) trains on arrays it is given into folders it is given;
this module reads the accepted images from the catalog (co-learning: one field camera's, see
:func:`field_camera_images`), picks ``layout.model_dir(kind, version)`` with a new version and the
run folder ``layout.run_dir(kind, profile name[-camera])`` unless the caller chose them, finds the
newest teacher, and calls the core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from sr_pipeline.sr.train.profile import Profile
from sr_pipeline.sr.images.jpeg_settings import JpegSettings, common_settings
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.storage.registry import challenger_dir, newest_teacher
from sr_pipeline.storage.store import list_images, load_image
from sr_pipeline.storage.versions import new_version
from sr_pipeline.common.cameras import CameraRegistry, CameraRole, load_registry


def catalog_images(layout: DataLayout, role: str, camera: str | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Every accepted catalogued image of a role (``hr_reference``, ``field_lr``), of one camera when
    given, with its image id."""
    rows = list_images(layout, role=role, cameras=[camera] if camera is not None else None)
    return [load_image(p) for p in rows["path"]], list(rows["image_id"])


def field_camera_counts(layout: DataLayout) -> dict[str, int]:
    """Accepted unpaired field images per field camera in the catalog."""
    rows = list_images(layout, role=CameraRole.field_lr)
    return {str(k): int(v) for k, v in rows.groupby("camera").size().items()} if not rows.empty else {}


def too_few_field_images(registry: CameraRegistry, camera: str, count: int) -> str | None:
    """The message when ``camera`` has fewer field images than its ``min_field_images``, else None."""
    need = registry.get(camera).min_field_images
    if count >= need:
        return None
    text = (f"field camera {camera!r} has {count} unpaired field image(s); co-learning its camera model needs at "
            f"least {need} (min_field_images in the camera registry): upload more of its images")
    fallback = registry.get(camera).fallback_camera
    if fallback is not None:
        return text + f". Meanwhile its images are upscaled by the student of its fallback camera {fallback!r}"
    return text + ". No fallback_camera is set for it, so its images wait for its own student"


def field_camera_images(layout: DataLayout, camera: str | None = None, registry: CameraRegistry | None = None
                        ) -> tuple[str, list[np.ndarray], list[str]]:
    """(camera, images, image ids) of one field camera: ``camera``, or the only field camera with images.

    Raises ``ValueError`` with what to do when the camera is unknown, not a field camera, ambiguous
    or has fewer images than its ``min_field_images``."""
    registry = registry if registry is not None else load_registry()
    counts = field_camera_counts(layout)
    if camera is None:
        if len(counts) != 1:
            listed = ", ".join(f"{c} ({n})" for c, n in sorted(counts.items())) or "none"
            raise ValueError("say which field camera to co-learn (--camera): one student is trained per field "
                             f"camera, and the catalog holds field images of {listed}")
        camera = next(iter(counts))
    if registry.get(camera).role != CameraRole.field_lr:  # UnknownCameraError (a KeyError) names the known ones
        raise ValueError(f"camera {camera!r} is a {registry.get(camera).role} camera; co-learning needs a field_lr camera")
    message = too_few_field_images(registry, camera, counts.get(camera, 0))
    if message is not None:
        raise ValueError(message)
    images, ids = catalog_images(layout, CameraRole.field_lr, camera)
    return camera, images, ids


def field_camera_jpeg(layout: DataLayout, camera: str) -> tuple[JpegSettings | None, float]:
    """The JPEG settings most of a field camera's accepted uploads were encoded with (None when fewer
    than half are JPEG with one set of tables: then its uploads say nothing reliable about its encoder)
    and the share of its uploads that carry them."""
    rows = list_images(layout, role=CameraRole.field_lr, cameras=[camera])
    settings, share = common_settings(v if isinstance(v, str) else None for v in rows["jpeg"])
    return (settings if share >= 0.5 else None), share


def field_camera_fit_pairs(layout: DataLayout, camera: str, registry: CameraRegistry, warn: bool = True
                           ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """A field camera's fit pairs (HR, registered LR) and their names: the calibration pairs its registry
    entry's ``fit_pairs`` declares for fitting its camera model (never the ones that gate its student). ``warn``:
    name declared pairs that are missing and pairs whose images had transparency (off for a run that will not
    fit on them)."""
    from sr_pipeline.evaluation.calibration import split_calibration_pairs
    from sr_pipeline.sr.data.pairs import load_rgb

    fit, _ = split_calibration_pairs(layout, camera, registry)
    missing = missing_fit_pairs(registry, camera, [p.name for p in fit])
    if missing and warn:
        print(f"warning: {camera}: {missing}", flush=True)
    transparent = transparent_fit_pairs(layout, camera, [(p.name, p.hr_path, p.lr_path) for p in fit])
    if transparent and warn:
        print(f"warning: {camera}: fit pair(s) {', '.join(transparent)} had transparency, which ingestion "
              "composited on white: G is fitted as if the camera had photographed white where the shot was "
              "transparent. Upload those shots without transparency, or leave the pairs out of fit_pairs", flush=True)
    return [(load_rgb(p.hr_path), load_rgb(p.lr_path)) for p in fit], [p.name for p in fit]


def transparent_fit_pairs(layout: DataLayout, camera: str, pairs: list[tuple[str, Path, Path]]) -> list[str]:
    """The fit pairs ``(name, hr_path, lr_path)`` of ``camera`` one of whose images ingestion composited on white
    from transparency, as "name (HR)", "name (LR)" or "name (HR and LR)": the catalog row that uploaded that side
    of that pair, and stored that file, carries the note ``alpha_on_white``."""
    from sr_pipeline.storage.store import CALIB_HR, CALIB_LR, read_catalog, resolve_path

    df = read_catalog(layout)
    if "notes" not in df.columns or "pair_name" not in df.columns:
        return []
    composited = set()
    for row in df[(df["camera"] == camera) & df["role"].isin([CALIB_HR, CALIB_LR])].itertuples(index=False):
        if isinstance(row.notes, str) and "alpha_on_white" in row.notes.split(",") and isinstance(row.stored_path, str):
            composited.add((row.pair_name, row.role, resolve_path(layout, row.stored_path)))
    out = []
    for name, hr, lr in pairs:
        sides = [side for side, role, path in (("HR", CALIB_HR, hr), ("LR", CALIB_LR, lr))
                 if (name, role, Path(path)) in composited]
        if sides:
            out.append(f"{name} ({' and '.join(sides)})")
    return out


def missing_fit_pairs(registry: CameraRegistry, camera: str, found: list[str]) -> str | None:
    """What the camera's ``fit_pairs`` declares that is not among the complete pairs ``found`` (a name not
    uploaded, misspelt, or a pair missing its HR or LR), in one sentence; None when nothing is missing."""
    declared = registry.get(camera).fit_pairs if camera in registry else None
    if isinstance(declared, int):
        short = declared - len(found)
        return (f"fit_pairs declares {declared} fit pairs but only {len(found)} complete pair(s) are uploaded "
                "besides the gate's") if short > 0 else None
    absent = sorted(set(declared or []) - set(found))
    return (f"fit_pairs lists {', '.join(absent)}, which no complete calibration pair of the camera is called "
            f"(names are case-sensitive; a pair needs its HR and its LR); it trains on {len(found)} fit pair(s)"
            ) if absent else None


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
    from sr_pipeline.sr.train.stages.teacher import train_teacher

    images, ids = catalog_images(layout, CameraRole.hr_reference)
    if not images:
        raise ValueError(f"no HR reference images in the catalog under {layout.root}; ingest some first "
                         "(sr-pipeline demo-data, then materialise raw_plant_images)")
    out = Path(out) if out else layout.model_dir("teacher", new_version())
    run_dir = Path(run_dir) if run_dir else layout.run_dir("teacher", profile.name)
    return train_teacher(profile, images, run_dir, out, resume=resume, report=report, image_ids=ids)


def _teacher_and_references(layout: DataLayout, teacher: Path | None) -> tuple[Path, list[np.ndarray], list[str]]:
    """The teacher to distil (default: the newest) and every HR reference with its id; ValueError when either is missing."""
    teacher = Path(teacher) if teacher else newest_teacher(layout)
    if teacher is None:
        raise ValueError(f"no teacher under {layout.models / 'teacher'}: train one first (sr-pipeline train teacher)")
    hr, hr_ids = catalog_images(layout, CameraRole.hr_reference)
    if not hr:
        raise ValueError(f"no HR reference images in the catalog under {layout.root}")
    return teacher, hr, hr_ids


def train_colearn_from_catalog(layout: DataLayout, profile: Profile, *, teacher: Path | None = None,
                               out: Path | None = None, downsampler_out: Path | None = None,
                               run_dir: Path | None = None, resume: bool = False,
                               report: Callable[[dict], None] | None = None, camera: str | None = None,
                               registry: CameraRegistry | None = None, unpaired_twin_of: str | None = None):
    """Co-learn one field camera's student and G (``camera``, or the only field camera) from a teacher
    (default: the newest) on the catalog's HR references and that camera's field LR images, with the
    camera's own ``camera_model`` choices from the registry over the profile's and its fit pairs, if it
    declares any, pinning its camera model. ``unpaired_twin_of`` (a version): train the promotion gate's
    unpaired twin of that student instead, the same run without the camera's fit pairs."""
    from sr_pipeline.sr.train.stages.colearn import train_colearn

    registry = registry if registry is not None else load_registry()
    teacher, hr, hr_ids = _teacher_and_references(layout, teacher)
    camera, field_lr, field_ids = field_camera_images(layout, camera, registry)
    profile = profile.for_camera(camera, registry.camera_model_choice(camera))
    jpeg, share = field_camera_jpeg(layout, camera)
    if jpeg is not None and profile.colearn.compresses_like_the_camera:
        q = jpeg.describe()
        print(f"{camera}: {share:.0%} of its uploads are JPEG ({q['subsampling']}, quality about {q['quality_estimate']}):"
              " its camera model compresses the same way", flush=True)
    fit_pairs, fit_names = field_camera_fit_pairs(layout, camera, registry, warn=unpaired_twin_of is None)
    if unpaired_twin_of is not None and not (layout.model_dir("student", unpaired_twin_of) / "training.json").is_file():
        raise ValueError(f"--unpaired-twin-of {unpaired_twin_of}: no student of that version under "
                         f"{layout.models / 'student'}")
    if unpaired_twin_of is not None and not fit_pairs:
        raise ValueError(f"{camera} has no fit pairs, so its unpaired twin would be the same run as student "
                         f"{unpaired_twin_of}: nothing to train")
    if unpaired_twin_of is not None:
        print(f"{camera}: the unpaired twin of student {unpaired_twin_of}: its camera model learns without the "
              f"camera's {len(fit_pairs)} fit pair(s)", flush=True)
        fit_pairs, fit_names = [], []
    if fit_pairs and profile.colearn.use_downsampler:
        print(f"{camera}: {len(fit_pairs)} fit pair(s) pin its camera model: {', '.join(fit_names)}", flush=True)
    elif fit_pairs:
        print(f"{camera}: the profile trains no camera model, so its {len(fit_pairs)} fit pair(s) are not used",
              flush=True)
    student_dir, g_dir = colearn_outputs(layout, profile, out, downsampler_out)
    run_dir = Path(run_dir) if run_dir else layout.run_dir("colearn", f"{profile.name}-{camera}")
    return train_colearn(profile, teacher, hr, field_lr, run_dir, student_dir, g_dir, resume=resume, report=report,
                         image_ids=hr_ids, field_image_ids=field_ids, camera=camera, field_jpeg=jpeg,
                         fit_pairs=fit_pairs, fit_pair_names=fit_names, unpaired_twin_of=unpaired_twin_of,
                         check_pairs=_few_pairs_check_pairs(layout, camera, registry, profile, len(fit_pairs)))


def _few_pairs_check_pairs(layout: DataLayout, camera: str, registry: CameraRegistry, profile: Profile,
                           fit_count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The camera's gate pairs when a pre-fit on fewer than ``min_pairs`` fit pairs may be judged on them
    (``paired_fit.few_pairs_hold``): also with enough declared pairs, since the registration check may leave out a
    pair of another scene and bring the count below ``min_pairs``."""
    from sr_pipeline.evaluation.calibration import split_calibration_pairs
    from sr_pipeline.sr.data.pairs import load_rgb

    pf = profile.colearn.paired_fit
    if not (fit_count and pf.few_pairs_hold == "judged" and profile.colearn.use_downsampler):
        return []
    _, gate = split_calibration_pairs(layout, camera, registry)
    return [(load_rgb(p.hr_path), load_rgb(p.lr_path)) for p in gate]


def train_challenger_from_catalog(layout: DataLayout, profile: Profile, *, teacher: Path | None = None,
                                  out: Path | None = None, run_dir: Path | None = None, resume: bool = False,
                                  report: Callable[[dict], None] | None = None):
    """Distil the fixed-degradation challenger from a teacher (default: the newest) on the HR references:
    the profile's student with bicubic degradation and no camera model, one per teacher, which the
    promotion gate holds every camera's co-learned student against. Default folder:
    ``models/student/fixed-<teacher version>``."""
    from sr_pipeline.sr.models.checkpoints import model_version
    from sr_pipeline.sr.train.stages.colearn import train_colearn

    teacher, hr, hr_ids = _teacher_and_references(layout, teacher)
    fixed = profile.fixed_degradation_challenger()
    out = Path(out) if out else challenger_dir(layout, model_version(teacher))
    run_dir = Path(run_dir) if run_dir else layout.run_dir("colearn", f"{fixed.name}-{out.name}")
    return train_colearn(fixed, teacher, hr, [], run_dir, out, None, resume=resume, report=report,
                         image_ids=hr_ids, challenger=True)
