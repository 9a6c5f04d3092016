"""benchmarks/gpu_check.py on the CPU with tiny networks (so its code path cannot rot without a GPU),
and the consistency pass on a given device judging as on the CPU."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sr_pipeline.sr.serve.consistency import BicubicCamera, ConsistencyPass, LearnedCamera, Thresholds
from sr_pipeline.sr.models.downsampler import LearnedDownsampler

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An LR image and an output that mostly agrees with it, with a planted bright spot."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:24, 0:40].astype(np.float32)
    lr = np.stack([np.sin(xx / (3 + c)) * 50 + np.cos(yy / 4) * 40 + 128 for c in range(3)], -1)
    lr = np.clip(lr + rng.normal(0, 2, lr.shape), 0, 255).astype(np.uint8)
    out = np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1).astype(np.int16)
    out[40:52, 80:92] += 90
    return lr, np.clip(out, 0, 255).astype(np.uint8)


def _g() -> LearnedDownsampler:
    torch.manual_seed(0)
    g = LearnedDownsampler(scale=4, channels=8, num_blocks=1, norm_num_groups=4)
    for p in g.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return g.eval()


def _run(camera, lr, out, thresholds, band, **kwargs):
    cp = ConsistencyPass(camera, lr, thresholds, keep_map=True, **kwargs)
    for r in range(0, out.shape[0], band):
        cp.feed(out[r:r + band])
    return cp.finish()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["bicubic", "G"])
def test_the_pass_on_a_device_judges_as_on_the_cpu(device, kind):
    lr, out = _pair()
    strict = Thresholds(peak=8.0, pixel=4.0, local_floor=2.0, local_slope=0.5, local_peak=3.0)
    g = _g()
    for thresholds in (Thresholds(), strict):
        on_cpu = _run(BicubicCamera(4) if kind == "bicubic" else LearnedCamera(g, "G"), lr, out, thresholds, 7)
        camera = BicubicCamera(4) if kind == "bicubic" else LearnedCamera(_g().to(device), "G")
        there = _run(camera, lr, out, thresholds, 7, device=device)
        assert there.verdict == on_cpu.verdict and there.reasons == on_cpu.reasons
        if device == "cpu":  # the device argument leaves the CPU's figures exactly as they were
            assert there.record() == on_cpu.record()
            np.testing.assert_array_equal(there.map, on_cpu.map)
        else:
            assert there.psnr_y == pytest.approx(on_cpu.psnr_y, abs=1e-3)
            np.testing.assert_allclose(there.map, on_cpu.map, atol=1e-4)
        assert isinstance(there.map, np.ndarray)
    assert on_cpu.verdict == "check"  # the strict limits see the planted spot: the comparison is not trivial


@pytest.fixture
def gpu_check(monkeypatch):
    """The script as a module (registered while the test runs: its dataclasses look their module up)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("gpu_check", BENCHMARKS / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)
    spec.loader.exec_module(module)
    return module


def test_the_tiny_cpu_check_runs_every_step_and_appends_its_table(gpu_check, tmp_path):
    report = tmp_path / "benchmarks.md"
    threads = torch.get_num_threads()
    # One thread each: two OpenMP threads on two shared, busy cores ran the tiny networks 8x slower.
    code = gpu_check.main(["--tiny", "--device", "cpu", "--threads", "1", "--cpu-threads", "1",
                           "--report", str(report), "--work-dir", str(tmp_path), "--json", str(tmp_path / "rows.json")])
    assert torch.get_num_threads() == threads  # the caller's threads are given back
    text = report.read_text()
    assert "GPU check, tiny networks: a CPU dry run of the code path, not GPU figures" in text
    for step in ("| environment |", "| student upscale | fp32, 16 -> 64 px tiles, batch 1 |",
                 "| student upscale | fp32, 16 -> 64 px tiles, batch 8 |", "| teacher upscale | fp32, 15 steps, batch 8 |",
                 "| teacher / student |", "| consistency pass | camera G, on cpu (the device argument) |",
                 "| CPU fallback |", "| teacher training | 4/4 steps", "| co-learning | 2/2 steps",
                 "| student upscale (compiled) | skipped |"):
        assert step in text, step
    assert "resume check | teacher saved at step 2, resumed to 4" in text
    assert "same weights: relative L2 distance 0.00e+00" in text  # fp32 on the CPU: bit-identical
    assert text.count("losses finite: yes") == 2
    assert "FAIL" not in text and "skipped: needs" not in text
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmarks.md", "rows.json"]  # its temp folder is gone


def test_the_wheelhouse_pins_the_core_without_what_the_gpu_machine_holds(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("wheelhouse", BENCHMARKS / "wheelhouse.py")
    wheelhouse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wheelhouse)
    names = {pin.split("==")[0] for pin in wheelhouse.pins()}
    assert {"diffusers", "accelerate", "safetensors", "scipy", "pydantic", "pyyaml", "huggingface-hub"} <= names
    held = {"torch", "torchvision", "numpy", "pillow", "triton", "sympy"}
    assert not names & held and not any(n.startswith(("nvidia-", "cuda-")) for n in names)
    assert not names & {"dagster", "pandas", "pyarrow", "scikit-image", "matplotlib", "lpips"}  # the check needs none


def test_a_training_run_past_its_budget_is_stopped_at_a_log_window(gpu_check):
    watch = gpu_check.Watch(budget=0.0)
    with pytest.raises(gpu_check.OutOfTime):
        watch({"step": 20, "total_steps": 200, "loss": 0.5, "samples_per_s": 10.0, "hr_mp_per_s": 0.6})
    watch({"step": 200, "total_steps": 200, "loss": float("nan"), "samples_per_s": 12.0, "hr_mp_per_s": 0.8})  # the last: kept
    assert watch.rates() == (12.0, 0.8)  # the first window (start-up) is left out
    assert not watch.finite()


def test_steps_without_their_budget_are_skipped_and_the_check_fails(gpu_check, tmp_path):
    report = tmp_path / "benchmarks.md"
    code = gpu_check.main(["--tiny", "--device", "cpu", "--threads", "1", "--budget", "0", "--report", str(report),
                           "--work-dir", str(tmp_path)])
    text = report.read_text()
    assert code == 1
    for step in ("student", "consistency", "cpu", "train", "colearn"):
        assert f"| {step} | skipped | needs" in text, step
    assert "| resume check | skipped | needs the finished teacher run (**FAIL**) |" in text
    assert "teacher training |" not in text and "upscale | fp32" not in text
