"""The public Python API (sr_pipeline/__init__.py, api.py) and the README's example of it."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_sr_model

import sr_pipeline
from sr_pipeline.sr.images.decode import read_image
from sr_pipeline.sr.images.png_stream import png_text

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def model(tmp_path) -> Path:
    return tiny_sr_model(tmp_path / "models" / "student" / "s1", {"kind": "student"})


def _readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_on_a_model_folder(model):
    code = _readme_example().replace('"data/models/student/VERSION"', repr(str(model)))
    assert repr(str(model)) in code, "the README example no longer loads a model folder by path"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    shape, verdict = out.getvalue().strip().rsplit(" ", 1)
    assert shape == "(128, 128, 3)" and verdict in ("ok", "check")


def test_importing_the_package_loads_no_torch():
    code = "import sys, sr_pipeline; sr_pipeline.TileSettings; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_the_array_and_the_file_give_the_same_pixels_and_verdict(model, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    restorer = sr_pipeline.load_restorer(model, device="cpu", tiles=sr_pipeline.TileSettings(tile=16, overlap=4))
    assert restorer.scale == 4
    in_memory = restorer.upscale(lr)
    Image.fromarray(lr).save(tmp_path / "lr.png")
    on_disk = restorer.upscale_file(tmp_path / "lr.png", tmp_path / "out.png")
    assert on_disk.image is None and on_disk.path == tmp_path / "out.png"
    np.testing.assert_array_equal(read_image(on_disk.path).colour, in_memory.image)
    assert in_memory.verdict == on_disk.verdict and in_memory.verdict in ("ok", "check")
    assert in_memory.consistency["consistency_psnr_y"] == pytest.approx(on_disk.consistency["consistency_psnr_y"])
    assert png_text(on_disk.path)["sr_pipeline:consistency"] == on_disk.verdict
    with pytest.raises(FileExistsError):  # never replaced unless asked
        restorer.upscale_file(tmp_path / "lr.png", tmp_path / "out.png")


def test_grey_and_16_bit_arrays_keep_their_mode(model):
    restorer = sr_pipeline.load_restorer(model, device="cpu")
    grey = restorer.upscale(np.full((16, 16), 30000, np.uint16))
    assert grey.image.shape == (64, 64, 1) and grey.image.dtype == np.uint16


def test_bad_input_is_refused_in_one_sentence(model, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        sr_pipeline.load_restorer(tmp_path / "nowhere")
    restorer = sr_pipeline.load_restorer(model, device="cpu")
    with pytest.raises(ValueError, match="uint8 or uint16"):
        restorer.upscale(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        restorer.upscale(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="overlap"):
        sr_pipeline.TileSettings(tile=16, overlap=16)


def test_load_profile_reads_a_shipped_profile():
    profile = sr_pipeline.load_profile(README.parent / "configs" / "cpu-demo.yaml")
    assert profile.name == "cpu-demo" and profile.scale == 4


def test_unknown_names_are_an_attribute_error():
    with pytest.raises(AttributeError):
        sr_pipeline.no_such_name  # noqa: B018


def test_the_source_is_never_the_target(model, tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "lr.png")
    before = (tmp_path / "lr.png").read_bytes()
    restorer = sr_pipeline.load_restorer(model, device="cpu")
    with pytest.raises(ValueError, match="source image itself"):
        restorer.upscale_file(tmp_path / "lr.png", tmp_path / "lr.png", overwrite=True)
    assert (tmp_path / "lr.png").read_bytes() == before
    with pytest.raises(ValueError, match="not a file name"):
        restorer.upscale_file(tmp_path / "lr.png", tmp_path)


def test_empty_and_foreign_arrays_and_settings_are_one_sentence(model, tmp_path):
    restorer = sr_pipeline.load_restorer(model, device="cpu")
    for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 5, 3), np.uint8)):
        with pytest.raises(ValueError, match="empty"):
            restorer.upscale(empty)
    big_endian = np.full((4, 4, 3), 1000, dtype=">u2")
    assert restorer.upscale(big_endian).image.dtype == np.uint16
    for bad in (1.5, float("nan"), "16", True):
        with pytest.raises(ValueError, match="whole number"):
            sr_pipeline.TileSettings(tile=bad)
    for budget in (float("nan"), float("inf"), -1):
        with pytest.raises(ValueError, match="memory_budget_gib"):
            sr_pipeline.load_restorer(model, memory_budget_gib=budget)
    broken = tiny_sr_model(tmp_path / "models" / "student" / "broken", {"kind": "student"})
    (broken / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ValueError, match="cannot load the model"):
        sr_pipeline.load_restorer(broken, device="cpu")
    with pytest.raises(ValueError, match="cannot read the profile|does not exist"):
        sr_pipeline.load_profile(tmp_path)
