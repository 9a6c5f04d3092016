"""``PlantStorage``: where the plant's data lives (the data root) and which cameras upload to it (the registry)."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field, field_validator

from sr_pipeline.common.env_settings import ENV_SETTINGS
from sr_pipeline.common.cameras import CameraRegistry, default_cameras_file, load_registry
from sr_pipeline.storage.layout import DataLayout, default_data_root


def _checked_data_root() -> Path:
    """``default_data_root`` once ``$SR_PIPELINE_DATA`` passed the shared validator (empty is refused)."""
    ENV_SETTINGS["SR_PIPELINE_DATA"]()
    return default_data_root()


class PlantStorage(ConfigurableResource):
    """The data root (``$SR_PIPELINE_DATA``, else the checkout's data/ folder) and the camera registry file."""

    data_root: str = Field(
        default_factory=lambda: str(_checked_data_root()),
        description="data root holding landing/, incoming/, store/, catalog/, quarantine/, ...",
    )
    cameras_file: str = Field(
        default_factory=lambda: str(default_cameras_file()),
        description="camera registry YAML (configs/cameras.yaml)",
    )

    @field_validator("data_root", "cameras_file")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():  # "" would silently mean the process's working directory
            raise ValueError("must name a path, not an empty string")
        return value

    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_root).resolve())

    def registry(self) -> CameraRegistry:
        return load_registry(self.cameras_file)


