"""When new field data warrants retraining: counts of images catalogued since the last training.

The student (with the downsampler) is retrained once enough new field LR or HR reference images
have been accepted since it was trained; the teacher too once the new HR references pass a larger
threshold. Never on every upload. Pure logic over the catalog and the model folders.
"""

from __future__ import annotations

from dataclasses import dataclass

from sr_pipeline.storage import store
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.storage.registry import newest_info
from sr_pipeline.intake.cameras import CameraRole


@dataclass(frozen=True)
class RetrainDecision:
    target: str | None  # None, "student" or "teacher" (the teacher's retraining retrains the student too)
    new_hr: int
    new_field: int
    reason: str

    @property
    def key(self) -> str:
        """Deduplicates requests: the same catalogue state never asks twice."""
        return f"{self.target}-hr{self.new_hr}-field{self.new_field}"


def retraining_decision(layout: DataLayout, student_threshold: int, teacher_threshold: int) -> RetrainDecision:
    if student_threshold < 1 or teacher_threshold < 1:
        raise ValueError("thresholds must be >= 1")
    hr_ids = set(store.list_images(layout, role=CameraRole.hr_reference)["image_id"])
    field_ids = set(store.list_images(layout, role=CameraRole.field_lr)["image_id"])
    teacher = newest_info(layout, "teacher")
    student = newest_info(layout, "student")
    if teacher is None:
        return RetrainDecision(None, len(hr_ids), len(field_ids),
                               "no teacher yet: the first training is started by hand or by the demo")
    new_hr_teacher = len(hr_ids - set(teacher.get("image_ids", [])))
    if new_hr_teacher >= teacher_threshold:
        return RetrainDecision("teacher", new_hr_teacher, len(field_ids - set((student or {}).get("field_image_ids", []))),
                               f"{new_hr_teacher} new HR references since the teacher (threshold {teacher_threshold})")
    used_hr = set((student or {}).get("image_ids", []))
    used_field = set((student or {}).get("field_image_ids", []))
    new_hr, new_field = len(hr_ids - used_hr), len(field_ids - used_field)
    if new_hr + new_field >= student_threshold:
        return RetrainDecision("student", new_hr, new_field,
                               f"{new_field} new field LR and {new_hr} new HR images since the student "
                               f"(threshold {student_threshold})")
    return RetrainDecision(None, new_hr, new_field,
                           f"{new_hr + new_field} new images since the student, below the threshold {student_threshold}")
