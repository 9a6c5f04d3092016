"""The perception-distortion figure (issue 16): PSNR-Y against LPIPS, one point per setting and baseline.

Reads the ``bench_summary.json`` that ``bench_quality.py`` writes into its work folder; every point names
the summary and the method row it comes from, so a figure mixes runs only on purpose (they must have
been scored on the same pairs).

    .venv/bin/python benchmarks/plot_perception_distortion.py --out docs/perception_distortion.png \\
        --point "bicubic=RUN/bench_summary.json::bicubic" --point "student=RUN/bench_summary.json::student co-learned"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sr_pipeline.sr.figures import figure_png
from sr_pipeline.evaluation.files import write_bytes


def _point(spec: str) -> tuple[str, Path, str]:
    label, _, rest = spec.partition("=")
    path, _, method = rest.partition("::")
    if not (label and path and method):
        raise argparse.ArgumentTypeError(f"--point must be LABEL=SUMMARY.json::METHOD, not {spec!r}")
    return label, Path(path), method


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--point", type=_point, action="append", required=True, help="LABEL=SUMMARY.json::METHOD")
    ap.add_argument("--title", default="perception-distortion")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = ap.parse_args(argv)
    points = []
    for label, path, method in args.point:
        try:
            m = json.loads(path.read_text())["methods"][method]
        except (OSError, KeyError, ValueError) as exc:
            ap.error(f"{path} has no method {method!r}: {exc}")
        points.append((label, m["psnr_y"], m["lpips"]))
        print(f"{label}: PSNR-Y {m['psnr_y']:.3f}, LPIPS {m['lpips']:.4f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    span = max(lp for _, _, lp in points) - min(lp for _, _, lp in points) or 1.0
    for label, psnr, lp in points:
        ax.scatter(lp, psnr, s=28)
        # A label would run into a point just to its right at about the same PSNR-Y: put it below instead.
        crowded = any(0 < lp2 - lp < 0.2 * span and abs(p2 - psnr) < 0.02 for _, p2, lp2 in points)
        ax.annotate(label, (lp, psnr), fontsize=7, xytext=(4, -10 if crowded else 3), textcoords="offset points")
    ax.set_xlabel("LPIPS (lower is better)")
    ax.set_ylabel("PSNR-Y, dB (higher is better)")
    ax.set_title(args.title, fontsize=9)
    ax.grid(alpha=0.3)
    write_bytes(args.out, figure_png(fig))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
