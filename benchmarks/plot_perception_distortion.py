"""The perception-distortion figure: PSNR-Y against LPIPS, one point per setting and baseline.

Reads the ``bench_summary.json`` that ``bench_quality.py`` writes into its work folder; every point names
the summary and the method row it comes from, so a figure mixes runs only on purpose (they must have
been scored on the same pairs).

    .venv/bin/python benchmarks/plot_perception_distortion.py --out docs/perception_distortion.png \\
        --point "bicubic=RUN/bench_summary.json::bicubic" --point "student=RUN/bench_summary.json::student co-learned"

A summary may also be the ``summary.json`` of ``sr-pipeline evaluate``. ``--published`` adds published methods'
scores on RealSR's 100 x4 crops (OSEDiff, Wu et al. 2024: its Table 1 and its comparison with GAN methods; PSNR-Y and LPIPS-alex
with pyiqa's conventions, no border crop), grey and square: place our points beside them only when they were
scored the same way (``sr-pipeline evaluate --no-border-crop`` on the same 100 pairs). ``--transductive LABEL``
draws that point hollow and says so in the legend: its model saw some of the scored LR images (as its field pool).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sr_pipeline.sr.images.figures import figure_png
from sr_pipeline.evaluation.files import write_bytes


def _point(spec: str) -> tuple[str, Path, str]:
    label, _, rest = spec.partition("=")
    path, _, method = rest.partition("::")
    if not (label and path and method):
        raise argparse.ArgumentTypeError(f"--point must be LABEL=SUMMARY.json::METHOD, not {spec!r}")
    return label, Path(path), method


# label -> (PSNR-Y, LPIPS-alex) on RealSR's 100 x4 crops, as published in OSEDiff's tables (pyiqa, no border crop).
PUBLISHED: dict[str, tuple[float, float]] = {
    "SinSR": (26.28, 0.319),
    "ResShift-15": (26.31, 0.346),
    "OSEDiff": (25.15, 0.292),
    "BSRGAN": (26.39, 0.267),
    "Real-ESRGAN": (25.69, 0.273),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--point", type=_point, action="append", required=True, help="LABEL=SUMMARY.json::METHOD")
    ap.add_argument("--published", action="store_true",
                    help="add the published RealSR points (100 crops, pyiqa conventions, no border crop)")
    ap.add_argument("--transductive", action="append", default=[], metavar="LABEL",
                    help="a --point whose model saw some scored LR images (drawn hollow; repeatable)")
    ap.add_argument("--title", default="perception-distortion")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = ap.parse_args(argv)
    unknown = set(args.transductive) - {label for label, _, _ in args.point}
    if unknown:
        ap.error(f"--transductive names no --point: {', '.join(sorted(unknown))}")
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
    published = [(label, psnr, lp) for label, (psnr, lp) in PUBLISHED.items()] if args.published else []
    for label, psnr, lp in published:
        print(f"{label} (published): PSNR-Y {psnr:.2f}, LPIPS {lp:.3f}")
    every = points + published
    span = max(lp for _, _, lp in every) - min(lp for _, _, lp in every) or 1.0
    for label, psnr, lp in published:
        ax.scatter(lp, psnr, s=30, marker="s", color="0.55")
        ax.annotate(label, (lp, psnr), fontsize=7, color="0.35", xytext=(4, 3), textcoords="offset points")
    for i, (label, psnr, lp) in enumerate(points):
        colour = f"C{i % 10}"
        if label in args.transductive:
            ax.scatter(lp, psnr, s=28, facecolors="none", edgecolors=colour, linewidths=1.3)
            label = f"{label} (transductive)"
        else:
            ax.scatter(lp, psnr, s=28, color=colour)
        # A label would run into a point just to its right at about the same PSNR-Y: put it below instead.
        crowded = any(0 < lp2 - lp < 0.2 * span and abs(p2 - psnr) < 0.02 for _, p2, lp2 in every)
        ax.annotate(label, (lp, psnr), fontsize=7, xytext=(4, -10 if crowded else 3), textcoords="offset points")
    ax.set_xlabel("LPIPS (lower is better)")
    ax.set_ylabel("PSNR-Y, dB (higher is better)")
    ax.set_title(args.title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
    if published:
        ax.scatter([], [], marker="s", color="0.55", label="published (OSEDiff's tables)")
        ax.legend(fontsize=7, loc="best")
    write_bytes(args.out, figure_png(fig))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
