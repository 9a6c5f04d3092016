"""How training runs: the profile and processes (``TrainingSettings``), the learned LR sets
(``LRSetSettings``) and when the retraining sensor retrains (``RetrainSettings``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from sr_pipeline.common.env_settings import ENV_SETTINGS

REPO_ROOT = Path(__file__).resolve().parents[3]


class TrainingSettings(ConfigurableResource):
    """How training processes are launched: the profile, and how many processes (one per GPU)."""

    profile: str = Field(
        default_factory=lambda: os.environ.get("SR_PIPELINE_PROFILE", str(REPO_ROOT / "configs" / "cpu-demo.yaml")),
        description="training profile YAML (configs/cpu-demo.yaml, configs/gpu.yaml); env SR_PIPELINE_PROFILE",
    )
    num_processes: int = Field(
        default_factory=lambda: ENV_SETTINGS["SR_PIPELINE_TRAIN_PROCESSES"](),
        description="processes for `accelerate launch` (one per GPU); env SR_PIPELINE_TRAIN_PROCESSES",
    )
    use_accelerate: bool = Field(True, description="launch through `accelerate launch` (else plain python)")

    def profile_path(self) -> Path:
        path = Path(self.profile)
        if not path.is_absolute():
            path = REPO_ROOT / path
        if not path.is_file():
            raise FileNotFoundError(f"training profile {path} does not exist")
        return path

    def command(self, kind: str, data_root: Path, args: list[str]) -> list[str]:
        """The training process's command line: ``sr-pipeline --data ROOT train KIND ...`` as a module."""
        entry = ["-m", "sr_pipeline.cli", "--data", str(data_root), "train", kind, *args]
        if not self.use_accelerate:
            return [sys.executable, *entry]
        # The training code sets its own precision per device (Accelerator(mixed_precision=...) wins).
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1",
                  "--num_processes", str(self.num_processes), "--mixed_precision", "no", "--dynamo_backend", "no"]
        if self.num_processes > 1:
            launch.append("--multi_gpu")
        return [*launch, *entry]

    def env(self) -> dict[str, str]:
        return {"PYTHONUNBUFFERED": "1"}


class LRSetSettings(ConfigurableResource):
    """How many learned LR variants each HR reference gets, and their base noise seed."""

    variants_per_image: int = Field(4, ge=1, description="K: LR variants per HR reference")
    seed: int = Field(0, ge=0, description="noise seed of the first variant")


class RetrainSettings(ConfigurableResource):
    """Thresholds of new catalogued images that trigger automatic retraining."""

    student_threshold: int = Field(
        default_factory=lambda: ENV_SETTINGS["SR_PIPELINE_RETRAIN_STUDENT"](), ge=1,
        description="new field LR + HR images since the student that retrain it; env SR_PIPELINE_RETRAIN_STUDENT")
    teacher_threshold: int = Field(
        default_factory=lambda: ENV_SETTINGS["SR_PIPELINE_RETRAIN_TEACHER"](), ge=1,
        description="new HR references since the teacher that retrain it (and the student); "
        "env SR_PIPELINE_RETRAIN_TEACHER")
