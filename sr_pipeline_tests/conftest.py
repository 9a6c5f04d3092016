"""Shared fixtures: a data layout in tmp_path, a two-camera registry, small image and model factories.

Every test runs with its own ``DAGSTER_HOME`` and ``SR_PIPELINE_DATA`` in a temporary folder
(:func:`own_dagster_home_and_data_root`), so nothing a test does reaches the demo's instance or data
root, whatever the shell or the Makefile exported.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from dagster import DagsterInstance
from PIL import Image

from sr_pipeline.common.cameras import CameraRegistry
from sr_pipeline.defs.plant.resources import PlantStorage
from sr_pipeline.storage.layout import DataLayout

REGISTRY_YAML = """\
cameras:
  ref_cam:
    role: hr_reference
    description: test reference camera
  field_cam:
    role: field_lr
    scale: 4
    min_field_images: 2  # the tests' tiny pools
"""


@pytest.fixture(autouse=True)
def own_dagster_home_and_data_root(tmp_path_factory, monkeypatch) -> Path:
    """This test's own, empty ``DAGSTER_HOME`` and data root (``SR_PIPELINE_DATA``); the folder holding both."""
    base = tmp_path_factory.mktemp("state")
    (base / "dagster_home").mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(base / "dagster_home"))
    monkeypatch.setenv("SR_PIPELINE_DATA", str(base / "data"))
    return base


@pytest.fixture
def layout(tmp_path: Path) -> DataLayout:
    return DataLayout(tmp_path / "data")


@pytest.fixture
def cameras_file(tmp_path: Path) -> Path:
    path = tmp_path / "cameras.yaml"
    path.write_text(REGISTRY_YAML)
    return path


@pytest.fixture
def registry() -> CameraRegistry:
    return CameraRegistry.model_validate(
        {"cameras": {"ref_cam": {"role": "hr_reference"}, "field_cam": {"role": "field_lr", "scale": 4,
                                                                             "min_field_images": 2}}}
    )


def pixels(width: int = 48, height: int = 40, seed: int = 0) -> np.ndarray:
    """A smooth, seeded RGB image with some noise (compresses like a photo, differs per seed)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = rng.uniform(0, 6, size=3)
    base = np.stack([np.sin(x / (5 + c) + phase[c]) * 60 + np.cos(y / (7 + c)) * 50 + 128 for c in range(3)], -1)
    base += rng.normal(0, 6, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture
def make_image():
    """``make_image(width, height, seed, fmt, **save_kwargs) -> bytes`` of an RGB image."""

    def factory(width: int = 48, height: int = 40, seed: int = 0, fmt: str = "PNG", **kwargs) -> bytes:
        return encode(pixels(width, height, seed), fmt, **kwargs)

    return factory


@pytest.fixture
def put_incoming(layout: DataLayout):
    """``put_incoming(batch, "camera/rel/path.png", data) -> Path``: a file claimed into a batch."""

    def put(batch: str, rel: str, data: bytes) -> Path:
        path = layout.incoming / batch / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    return put


@pytest.fixture
def put_landing(layout: DataLayout):
    """``put_landing("camera/rel/path.png", data) -> Path``: a camera upload waiting in landing."""

    def put(rel: str, data: bytes) -> Path:
        path = layout.landing / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    return put


@pytest.fixture
def instance():
    """An ephemeral Dagster instance."""
    with DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def storage(layout, cameras_file) -> PlantStorage:
    """The ``storage`` resource pointed at the test's data root and camera registry."""
    return PlantStorage(data_root=str(layout.root), cameras_file=str(cameras_file))


def photos(n: int = 3, size: int = 48, seed: int = 0) -> list[np.ndarray]:
    """Smooth, distinct uint8 RGB test pictures (sums of sines) for training on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        f = rng.uniform(2, 6, 3)
        img = np.stack([np.sin(f[c] * np.pi * (xx + yy * c)) for c in range(3)], -1)
        out.append(((img * 0.5 + 0.5) * 255).astype(np.uint8))
    return out


def tiny_sr_model(out_dir: Path, info: dict, *, seed: int = 0, perturb: Callable | None = None) -> Path:
    """A tiny random x4 SR model folder (4-step schedule) as training writes one.

    ``perturb(net)`` sets its weights after construction; by default every weight ~ N(0, 0.05), so that
    the output depends on all of them.
    """
    import torch

    from sr_pipeline.sr.models.diffusion import ResShiftSchedule
    from sr_pipeline.sr.models.upsampler import SRUNet
    from sr_pipeline.sr.train.shared import save_model_dir

    torch.manual_seed(seed)
    net = SRUNet(scale=4, block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4,
                 num_train_timesteps=4)
    if perturb is None:
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
    else:
        perturb(net)
    schedule = ResShiftSchedule(num_steps=4, kappa=1.0)

    def save(tmp):
        net.save_pretrained(tmp)
        schedule.save_config(tmp)

    return save_model_dir(out_dir, save, info)


@pytest.fixture
def load_benchmark(monkeypatch) -> Callable:
    """Import a script of benchmarks/ by name, with that folder on sys.path as when it runs."""
    import importlib.util

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
