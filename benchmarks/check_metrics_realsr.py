"""Check the metric implementation: PIL bicubic on RealSR x4 against independently measured figures.

Usage (from the project root; seed the LPIPS weights first with ``sr-pipeline lpips-weights``):

    .venv/bin/python benchmarks/check_metrics_realsr.py [DATASET] [--split all|even|odd] [--out DIR] [--no-border-crop]

DATASET defaults to ../shared/datasets/realsr_x4 (HR/ and LR/ folders). On ``--split all`` the means
must match PSNR-Y 27.11 dB, SSIM-Y 0.756 and LPIPS-alex 0.456 within 0.05 dB, 0.005 and 0.005 (exit
status 1 otherwise). The even split is RealSR's paired test set of the real-world protocol; its
reference (issue 7: PSNR-Y 27.72, LPIPS 0.460) is printed for comparison only. ``--no-border-crop``
scores PSNR-Y and SSIM-Y on the whole image, as pyiqa does by default (the convention of OSEDiff's table on
these crops); bicubic's means move by about 0.001 dB on these pairs, so the same references apply.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sr_pipeline.evaluation.commands import evaluate_folder  # noqa: E402
from sr_pipeline.sr.judge.lpips_weights import load_lpips  # noqa: E402

# split -> metric -> (reference, tolerance or None when informative only)
REFERENCE: dict[str, dict[str, tuple[float, float | None]]] = {
    "all": {"psnr_y": (27.11, 0.05), "ssim_y": (0.756, 0.005), "lpips": (0.456, 0.005)},
    "even": {"psnr_y": (27.72, None), "lpips": (0.460, None)},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, nargs="?", default=ROOT.parent / "shared" / "datasets" / "realsr_x4")
    parser.add_argument("--split", choices=["all", "even", "odd"], default="all")
    parser.add_argument("--out", type=Path, default=None, help="keep the report here (default: a temp dir)")
    parser.add_argument("--no-border-crop", action="store_true", help="PSNR-Y and SSIM-Y on the whole image (pyiqa)")
    args = parser.parse_args(argv)

    lpips = load_lpips()
    if not lpips.available:
        print(f"LPIPS unavailable: {lpips.reason}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="realsr-check-") as tmp:
        out = args.out or Path(tmp)
        summary = evaluate_folder(args.dataset, out, split=args.split, scale=4, lpips=lpips,
                                  crop_border=0 if args.no_border_crop else None)
    bic = summary["methods"]["bicubic"]
    print(f"RealSR x4 ({args.dataset}), split {args.split}, {summary['pairs']} pairs, PIL bicubic, "
          f"Y channel, {summary['crop_border']} px border cropped")
    ok = True
    refs = REFERENCE.get(args.split, {})
    for key, label in (("psnr_y", "PSNR-Y"), ("ssim_y", "SSIM-Y"), ("lpips", "LPIPS-alex")):
        value = bic[key]
        ref, tol = refs.get(key, (None, None))
        line = f"  {label:<11} measured {'n/a' if value is None else f'{value:.4f}':>8}"
        if ref is not None:
            line += f"   reference {ref:.3f}"
            if tol is not None:
                good = value is not None and abs(value - ref) <= tol
                ok &= good
                line += f"   {'OK' if good else 'MISMATCH'} (tolerance {tol})"
        print(line)
    print(f"  median PSNR-Y {bic['median']['psnr_y']:.4f}, bicubic {bic['ms_per_image']:.1f} ms/image")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
