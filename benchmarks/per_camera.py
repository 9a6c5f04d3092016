"""Per-camera means of one evaluation's per-pair metrics.

RealSR's even pairs come from two cameras (Canon 5D3 and Nikon D810) whose difficulty differs (bicubic
27.965 against 27.474 dB PSNR-Y), so a mean over both hides which camera a recipe gains or loses on.
bench_quality prints this table under its own when its pairs span several cameras; on its own it reads
the ``metrics.parquet`` of earlier runs:

    .venv/bin/python benchmarks/per_camera.py <data root>/eval [<data root>/eval ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def camera_of(image_name: str) -> str:
    """The camera a RealSR pair belongs to: the file name's prefix before the first underscore."""
    return image_name.split("_", 1)[0]


def per_camera_table(metrics: pd.DataFrame) -> str:
    """Markdown: one row per method, PSNR-Y / LPIPS / HF energy per camera (mean over that camera's pairs)."""
    df = metrics.assign(camera=metrics["image"].map(camera_of))
    cameras = sorted(df["camera"].unique())
    counts = df.groupby("camera")["image"].nunique()
    lines = ["| method | " + " | ".join(f"{c} ({counts[c]} pairs): PSNR-Y / LPIPS / HF" for c in cameras) + " |",
             "|---|" + "---|" * len(cameras)]
    for method, rows in df.groupby("method", sort=False):
        cells = []
        for c in cameras:
            r = rows[rows["camera"] == c]
            lp = "n/a" if r["lpips"].isna().all() else f"{r['lpips'].mean():.4f}"
            hf = "n/a" if "hf_ratio" not in r or r["hf_ratio"].isna().all() else f"{r['hf_ratio'].mean():.2f}x"
            cells.append(f"{r['psnr_y'].mean():.3f} / {lp} / {hf}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("evals", type=Path, nargs="+", help="evaluation folders holding metrics.parquet")
    args = ap.parse_args(argv)
    for folder in args.evals:
        path = folder / "metrics.parquet"
        if not path.is_file():
            ap.error(f"{folder} holds no metrics.parquet")
        print(f"{folder}\n\n{per_camera_table(pd.read_parquet(path))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
