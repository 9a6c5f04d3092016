"""The wheels a GPU machine that holds only torch needs to run the GPU check (``make wheelhouse``).

    python benchmarks/wheelhouse.py wheelhouse              # build, then check the folder's size
    python benchmarks/wheelhouse.py wheelhouse --list       # only print the pinned requirements

The project's whole dependency tree (Dagster and its web server, pandas, pyarrow, scikit-image,
matplotlib, ...) comes to about 220 MB of wheels without torch, far over the 60 MB a GPU machine's
short lease can take. The GPU check needs only the ML core: ``sr_pipeline`` (its wheel) and
``CHECK_REQUIREMENTS``, the project's pins of what ``sr_pipeline.sr`` and ``benchmarks/gpu_check.py``
import, with their own dependencies, recursively, at the versions installed here (what the tests
ran with). What the GPU machine already holds is never followed: torch, torchvision and their own
dependencies (numpy, pillow, filelock, ...), triton, ``nvidia-*`` and ``cuda-*``. ``pip wheel
--no-deps`` writes one wheel per requirement into the folder, which must stay within ``--max-mb``.

Wheels are built for this interpreter: make the wheelhouse with the Python minor version and
platform of the GPU machine. There, with torch and torchvision present, in a checkout:
``pip install --no-index --no-deps wheelhouse/*.whl`` (``--no-deps``: the project's wheel names
Dagster and the rest, which the check does not import), then ``make gpu-check``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PROJECT = "sr_pipeline"
MAX_MB = 60.0
PROJECT_FILES = ("pyproject.toml", "README.md", "sr_pipeline")  # what its wheel is built from
# What sr_pipeline.sr and benchmarks/gpu_check.py import, by their names in pyproject.toml.
CHECK_REQUIREMENTS = ("diffusers", "accelerate", "safetensors", "scipy", "pyyaml", "pydantic")
# The GPU machine's own: torch, torchvision and the CUDA build's parts (their dependencies are added
# from this environment's metadata by held_by_gpu_machine).
GPU_MACHINE = ("torch", "torchvision")
CUDA_PARTS = re.compile(r"^(torch|torchvision|torchaudio|triton|pytorch-triton.*|nvidia-.*|cuda-.*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[str], skip: set[str] = frozenset()) -> dict[str, str]:
    """Installed name -> version of every requirement reached from ``requirements`` (markers evaluated
    here), without following CUDA parts or the names in ``skip``."""
    found: dict[str, str] = {}
    todo = [(req, "") for req in requirements]
    while todo:
        text, extra = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonical(req.name)
        if name in found or name in skip or (CUDA_PARTS.match(name) and name not in GPU_MACHINE):
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this environment does not have
        found[name] = dist.version
        todo += [(r, e) for r in dist.requires or [] for e in ["", *sorted(req.extras)]]
    return found


def held_by_gpu_machine() -> set[str]:
    """torch, torchvision and everything they bring (as installed here), CUDA parts included."""
    return set(closure(list(GPU_MACHINE))) | set(GPU_MACHINE)


def check_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The project's own requirement lines for ``CHECK_REQUIREMENTS``."""
    lines = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    wanted = {canonical(n) for n in CHECK_REQUIREMENTS}
    chosen = [line for line in lines if canonical(Requirement(line).name) in wanted]
    missing = wanted - {canonical(Requirement(line).name) for line in chosen}
    if missing:
        raise SystemExit(f"pyproject.toml does not list {', '.join(sorted(missing))}")
    return chosen


def pins() -> list[str]:
    held = held_by_gpu_machine()
    return [f"{name}=={version}" for name, version in sorted(closure(check_requirements(), held).items())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the wheels go (made if missing)")
    parser.add_argument("--max-mb", type=float, default=MAX_MB, help=f"size limit of the folder (default {MAX_MB:g} MB)")
    parser.add_argument("--list", action="store_true", help="print the pinned requirements and stop")
    args = parser.parse_args(argv)

    pinned = pins()
    if args.list:
        print("\n".join(pinned))
        return 0
    args.folder.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(args.folder)]
    with tempfile.TemporaryDirectory() as tmp:  # setuptools builds in the source tree: not in the checkout
        source = Path(tmp) / PROJECT
        source.mkdir()
        for name in PROJECT_FILES:
            copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
            copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                               if (REPO / name).is_dir() else {}))
        subprocess.run([*pip, str(source)], check=True)
    subprocess.run([*pip, *pinned], check=True)
    wheels = sorted(p.name for p in args.folder.glob("*.whl"))
    held = held_by_gpu_machine()
    leaked = [w for w in wheels if canonical(w.split("-")[0]) in held or CUDA_PARTS.match(canonical(w.split("-")[0]))]
    size = sum(p.stat().st_size for p in args.folder.iterdir() if p.is_file()) / 1e6
    print(f"{args.folder}: {len(wheels)} wheels ({PROJECT} and {len(pinned)} dependencies), {size:.1f} MB "
          f"(limit {args.max_mb:g} MB); left to the GPU machine: torch, torchvision and their dependencies")
    if leaked:
        print(f"what the GPU machine holds must not be in it: {', '.join(leaked)}", file=sys.stderr)
        return 1
    if size > args.max_mb:
        print(f"the wheelhouse is over its {args.max_mb:g} MB limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
