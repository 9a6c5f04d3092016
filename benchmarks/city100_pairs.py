"""x4 pairs from City100's registered real captures: a second real-pair check on cameras nothing was tuned on.

City100 (Chen et al., CVPR 2019, "Camera lens super-resolution"; ``city100_test5`` in the datasets
folder) holds real HR/LR captures of the same scenes from a Nikon D5500 and an iPhone X. Its LR images
are registered to the HR field of view and stored at HR size (real scale about x3). This script makes
x4 pairs from them: each HR is cropped to a multiple of 4 and its registered LR is box-averaged by 4
over the same crop, so the LR carries the camera's own optics, noise and processing plus a box
filter, at the x4 grid the students serve. Pairs are named ``<camera>_<number>.png`` so that
``benchmarks/per_camera.py`` (and bench_quality's per-camera table) split the scores by camera:

    .venv/bin/python benchmarks/city100_pairs.py /work/shared/datasets /tmp/city100_x4
    .venv/bin/sr-pipeline evaluate --pairs /tmp/city100_x4 --model <student> ... --out /tmp/city100_eval
    .venv/bin/python benchmarks/per_camera.py /tmp/city100_eval

The LR is not an x4 capture (the camera recorded about x3 and the box filter adds the rest), so these
figures say how a student behaves on real cameras it never saw, not how it would score on a true x4
camera; with 5 pairs per camera they are a check, not a ranking.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCALE = 4
SOURCE = "city100_test5"


def make_pair(hr: np.ndarray, lr_aligned: np.ndarray, scale: int = SCALE) -> tuple[np.ndarray, np.ndarray]:
    """(HR cropped to a multiple of ``scale``, the registered LR box-averaged by ``scale`` over that crop)."""
    if hr.shape != lr_aligned.shape:
        raise ValueError(f"HR {hr.shape} and registered LR {lr_aligned.shape} differ in size")
    h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
    if h == 0 or w == 0:
        raise ValueError(f"an image of {hr.shape[1]}x{hr.shape[0]} is smaller than one {scale}x{scale} block")
    blocks = lr_aligned[:h, :w].astype(np.float64).reshape(h // scale, scale, w // scale, scale, -1)
    lr = np.rint(blocks.mean(axis=(1, 3))).clip(0, 255).astype(np.uint8)
    return hr[:h, :w], lr.reshape(h // scale, w // scale, *hr.shape[2:])


def _save(img: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(img).save(tmp, format="PNG")
    tmp.replace(path)


def make_pairs(datasets: Path, out: Path) -> list[str]:
    """Write ``out/{HR,LR}/<camera>_<name>.png`` for every camera folder; return the pair names."""
    root = datasets / SOURCE
    cameras = sorted(d for d in root.iterdir() if (d / "HR").is_dir() and (d / "LR_aligned").is_dir()) \
        if root.is_dir() else []
    if not cameras:
        raise FileNotFoundError(f"{root} holds no <camera>/HR and <camera>/LR_aligned folders")
    for sub in ("HR", "LR"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for cam in cameras:
        for hr_path in sorted((cam / "HR").glob("*.png")):
            lr_path = cam / "LR_aligned" / hr_path.name
            if not lr_path.is_file():
                raise FileNotFoundError(f"{hr_path} has no registered LR at {lr_path}")
            hr = np.asarray(Image.open(hr_path).convert("RGB"))
            hr, lr = make_pair(hr, np.asarray(Image.open(lr_path).convert("RGB")))
            name = f"{cam.name}_{hr_path.name}"
            _save(hr, out / "HR" / name)
            _save(lr, out / "LR" / name)
            names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", type=Path, help=f"the datasets folder holding {SOURCE}/")
    ap.add_argument("out", type=Path, help="where HR/ and LR/ go (sr-pipeline evaluate --pairs OUT)")
    args = ap.parse_args(argv)
    try:
        names = make_pairs(args.datasets, args.out)
    except (FileNotFoundError, ValueError) as exc:
        ap.error(str(exc))
    cameras = sorted({n.split("_", 1)[0] for n in names})
    print(f"{len(names)} x{SCALE} pairs from {', '.join(cameras)} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
