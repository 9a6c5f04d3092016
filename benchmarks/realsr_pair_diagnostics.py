"""What makes one RealSR camera's pairs harder than the other's: intensity, alignment and sharpness.

Per camera (RealSR's even pairs by default) it prints, for plain bicubic enlargement:
- PSNR-Y as scored, after a per-image least-squares gain and offset on Y (how much an intensity
  mismatch between LR and HR costs), and after the best sub-pixel shift of the enlargement on a
  quarter-pixel grid within +-0.5 HR px (how much a misregistration costs);
- the median Laplacian energy of the real LR over that of the HR's bicubic downsampling: below 1
  the camera blurs more than bicubic does; the closer to 1, the sharper the LR relative to its HR.

With ``--run <data root>`` (a bench_quality run's folder, its ``eval/metrics.parquet``) it adds the
Spearman correlation, per camera, between that sharpness ratio and each method's PSNR-Y gain over
bicubic, and the mean gain on the pairs whose ratio is at least ``--sharp`` against the rest:

    .venv/bin/python benchmarks/realsr_pair_diagnostics.py ../shared/datasets [--run DIR ...]

Figures only, no training; it reads the pairs and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sr_pipeline.sr.judge.metrics import laplacian_energy, psnr, rgb_to_y  # noqa: E402
from sr_pipeline.sr.data.pairs import bicubic_upscale, find_pairs, load_rgb  # noqa: E402

from per_camera import camera_of  # noqa: E402  benchmarks/per_camera.py

BORDER = 4
SHIFTS = np.arange(-0.5, 0.51, 0.25)


def pair_figures(hr: np.ndarray, lr: np.ndarray, scale: int) -> dict[str, float]:
    """Bicubic PSNR-Y as scored, after a gain and offset, after the best shift; and the sharpness ratio."""
    y_hr = rgb_to_y(hr)[BORDER:-BORDER, BORDER:-BORDER]
    y_up = rgb_to_y(bicubic_upscale(lr, scale))
    crop = y_up[BORDER:-BORDER, BORDER:-BORDER]
    design = np.stack([crop.ravel(), np.ones(crop.size)], 1)
    coef, *_ = np.linalg.lstsq(design, y_hr.ravel(), rcond=None)
    shifted = max(psnr(ndimage.shift(y_up, (dy, dx), order=3, mode="nearest")[BORDER:-BORDER, BORDER:-BORDER], y_hr)
                  for dy in SHIFTS for dx in SHIFTS)
    down = np.asarray(Image.fromarray(hr).resize(lr.shape[1::-1], Image.Resampling.BICUBIC))
    return {"psnr_y": psnr(crop, y_hr), "gain_offset": psnr((design @ coef).reshape(crop.shape), y_hr),
            "best_shift": shifted, "sharpness": laplacian_energy(lr) / laplacian_energy(down)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", type=Path, help="the shared datasets folder (holds realsr_x4/)")
    ap.add_argument("--split", choices=["even", "odd", "all"], default="even", help="RealSR pairs to read")
    ap.add_argument("--run", type=Path, action="append", default=[],
                    help="a bench_quality data root whose eval/metrics.parquet scored these pairs (repeatable)")
    ap.add_argument("--sharp", type=float, default=0.6, help="sharpness ratio from which a pair counts as sharp")
    args = ap.parse_args(argv)
    root = args.datasets / "realsr_x4"
    if not root.is_dir():
        ap.error(f"{root} does not exist: pass the shared datasets folder")
    missing = [str(r) for r in args.run if not (r / "eval" / "metrics.parquet").is_file()]
    if missing:
        ap.error(f"no eval/metrics.parquet in {', '.join(missing)}")

    rows = []
    for pair in find_pairs(root, args.split):
        hr, lr = load_rgb(pair.hr_path), load_rgb(pair.lr_path)
        rows.append({"image": pair.lr_path.name, "camera": camera_of(pair.name), **pair_figures(hr, lr, 4)})
    df = pd.DataFrame(rows)
    print("| camera | pairs | bicubic PSNR-Y | after gain and offset | after the best shift | LR / down(HR) Laplacian, median (range) |")
    print("|---|---|---|---|---|---|")
    for cam, g in df.groupby("camera"):
        print(f"| {cam} | {len(g)} | {g.psnr_y.mean():.3f} | {g.gain_offset.mean():.3f} | {g.best_shift.mean():.3f} | "
              f"{g.sharpness.median():.2f}x ({g.sharpness.min():.2f}-{g.sharpness.max():.2f}) |")

    sharpness = df.set_index("image")["sharpness"]
    for run in args.run:
        metrics = pd.read_parquet(run / "eval" / "metrics.parquet")
        psnr_by_method = metrics.pivot(index="image", columns="method", values="psnr_y")
        print(f"\n{run}: each method's PSNR-Y gain over bicubic against the sharpness ratio "
              f"(Spearman rho per camera; mean gain on pairs with ratio >= {args.sharp:g} / the rest)")
        print("| method | " + " | ".join(f"{c}: rho" for c in sorted(df.camera.unique())) + " | sharp / rest |")
        print("|---|" + "---|" * (df.camera.nunique() + 1))
        for method in [m for m in psnr_by_method.columns if m != "bicubic"]:
            gain = (psnr_by_method[method] - psnr_by_method["bicubic"]).dropna()
            ratio = sharpness.reindex(gain.index)
            cells = []
            for cam in sorted(df.camera.unique()):
                idx = [i for i in gain.index if camera_of(i) == cam]
                cells.append(f"{spearmanr(gain[idx], ratio[idx])[0]:+.2f}" if len(idx) > 2 else "n/a")
            sharp = ratio >= args.sharp
            cells.append(f"{gain[sharp].mean():+.3f} ({int(sharp.sum())}) / {gain[~sharp].mean():+.3f}")
            print(f"| {method} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
