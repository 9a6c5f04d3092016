"""Resources: where the plant's data lives and which cameras upload to it."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from sr_pipeline.cameras import CameraRegistry, default_cameras_file, load_registry
from sr_pipeline.layout import DataLayout, default_data_root


class PlantStorage(ConfigurableResource):
    """The data root (``$SR_PIPELINE_DATA`` or ./data) and the camera registry file."""

    data_root: str = Field(
        default_factory=lambda: str(default_data_root()),
        description="data root holding landing/, incoming/, store/, catalog/, quarantine/, ...",
    )
    cameras_file: str = Field(
        default_factory=lambda: str(default_cameras_file()),
        description="camera registry YAML (configs/cameras.yaml)",
    )

    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_root).resolve())

    def registry(self) -> CameraRegistry:
        return load_registry(self.cameras_file)
