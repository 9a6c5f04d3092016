"""Model folders: ``save_pretrained`` network + ``scheduler_config.json`` + ``training.json``.

One layout for every kind (teacher, student, downsampler), so any checkpoint can be listed,
loaded and traced back to the profile and data it was trained with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sr_pipeline.sr.diffusion import ResShiftSchedule


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


def read_info(model_dir: Path) -> dict:
    path = Path(model_dir) / "training.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a model folder (no training.json)")
    return json.loads(path.read_text())


def load_sr_model(model_dir: Path, device: str = "cpu") -> LoadedModel:
    """Load a teacher or student folder (an ``SRUNet`` with its schedule)."""
    from sr_pipeline.sr.nets import SRUNet

    model_dir = Path(model_dir)
    info = read_info(model_dir)
    net = SRUNet.from_pretrained(model_dir).to(device).eval().requires_grad_(False)
    schedule = ResShiftSchedule.from_config(ResShiftSchedule.load_config(model_dir))
    return LoadedModel(net=net, schedule=schedule, info=info, path=model_dir)
