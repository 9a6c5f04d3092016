"""When new data warrants retraining: counts of images catalogued since the last training.

Each field camera has its own student (and downsampler). A camera's student is retrained once enough
new images of that camera (or new HR references) have been accepted since it was trained, or when a
newer teacher exists than the one it was distilled from; a field camera's first student follows the
same threshold once the camera has its ``min_field_images``. The teacher is retrained once the new
HR references pass a larger threshold; the students follow it on the next evaluation. Never on every
upload. Pure logic over the catalog, the camera registry and the model folders.
"""

from __future__ import annotations

from dataclasses import dataclass

from sr_pipeline.common.cameras import CameraRegistry, CameraRole
from sr_pipeline.storage import store
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.storage.registry import newest_info


@dataclass(frozen=True)
class RetrainDecision:
    target: str | None  # None, "student" (of ``camera``) or "teacher"
    new_hr: int
    new_field: int
    reason: str
    camera: str | None = None  # the field camera whose student is retrained
    teacher_version: str | None = None  # set when a newer teacher is the reason

    @property
    def key(self) -> str:
        """Deduplicates requests: the same catalogue state never asks twice."""
        if self.target == "teacher":
            return f"teacher-hr{self.new_hr}"
        base = f"{self.camera}-{self.target}-hr{self.new_hr}-field{self.new_field}"
        return base + (f"-teacher-{self.teacher_version}" if self.teacher_version else "")


def retraining_decisions(layout: DataLayout, registry: CameraRegistry, student_threshold: int,
                         teacher_threshold: int) -> list[RetrainDecision]:
    """What to retrain now: the teacher alone, or one decision per field camera with images (its
    ``target`` None when it waits, with the reason)."""
    if student_threshold < 1 or teacher_threshold < 1:
        raise ValueError("thresholds must be >= 1")
    hr_ids = set(store.list_images(layout, role=CameraRole.hr_reference)["image_id"])
    field = store.list_images(layout, role=CameraRole.field_lr)
    teacher = newest_info(layout, "teacher")
    if teacher is None:
        return [RetrainDecision(None, len(hr_ids), len(field), "no teacher yet: the first training is started by "
                                "hand (materialise teacher_checkpoint) or by the demo")]
    new_hr_teacher = len(hr_ids - set(teacher.get("image_ids", [])))
    if new_hr_teacher >= teacher_threshold:
        return [RetrainDecision("teacher", new_hr_teacher, 0,
                                f"{new_hr_teacher} new HR references since the teacher (threshold {teacher_threshold})")]
    teacher_version = teacher.get("version")
    decisions = []
    for camera in sorted(set(field["camera"])):
        if camera not in registry:
            continue
        field_ids = set(field.loc[field["camera"] == camera, "image_id"])
        student = newest_info(layout, "student", camera)
        used_hr, used_field = set((student or {}).get("image_ids", [])), set((student or {}).get("field_image_ids", []))
        new_hr, new_field = len(hr_ids - used_hr), len(field_ids - used_field)
        need = registry.get(camera).min_field_images
        if len(field_ids) < need:
            decisions.append(RetrainDecision(None, new_hr, new_field, f"field camera {camera}: {len(field_ids)} field "
                                             f"images, below its min_field_images {need}", camera))
        elif student is not None and (student.get("teacher") or {}).get("version") not in (None, teacher_version):
            decisions.append(RetrainDecision("student", new_hr, new_field, f"field camera {camera}: a newer teacher "
                                             f"({teacher_version}) than its student's", camera, teacher_version))
        elif new_hr + new_field >= student_threshold:
            what = "first student" if student is None else "student"
            decisions.append(RetrainDecision("student", new_hr, new_field, f"field camera {camera} ({what}): "
                                             f"{new_field} new field LR and {new_hr} new HR images since its student "
                                             f"(threshold {student_threshold})", camera))
        else:
            decisions.append(RetrainDecision(None, new_hr, new_field, f"field camera {camera}: {new_hr + new_field} "
                                             f"new images since its student, below the threshold {student_threshold}",
                                             camera))
    if not decisions:
        decisions.append(RetrainDecision(None, 0, 0, "no field camera has images yet"))
    return decisions
