"""How close is each demo camera's learned camera model G to the camera it imitates (issue 14's demo target)?

The demo's field cameras are simulated (sr_pipeline.intake.demo_data), so the truth is known here
although the models never see it. For each demo field camera with calibration pairs in a data root
that `sr-pipeline demo` filled, on those pairs (PSNR-Y against the real LR, whole image):
- bicubic-down(HR), the fixed degradation;
- the camera's own deterministic part (its blur, area downsampling, colour cast; no noise, no JPEG):
  the best any deterministic G could hope for;
- G(HR) at eps' = 0, the camera's newest (or promoted) downsampler.
Then the noise: the camera's sensor noise at mid-grey before its JPEG, G's learned level there, and the
LR-set noise statistic (measured on images, after the camera's JPEG) of G's LR set, of bicubic-down's
and of the camera's own field images, with the LR sets' statistics distances. Prints one table and
appends it to docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_demo_cameras.py data
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sr_pipeline.evaluation.calibration import calibration_pairs, downsampler_realism
from sr_pipeline.intake.cameras import CameraRole
from sr_pipeline.intake.demo_data import CAMERA_MODELS, FieldCameraModel, field_camera_response
from sr_pipeline.sr.checkpoints import read_info
from sr_pipeline.sr.downsampler import LearnedDownsampler
from sr_pipeline.sr.lr_sets import build_lr_sets
from sr_pipeline.sr.pairs import load_rgb
from sr_pipeline.sr.scoring import metric
from sr_pipeline.storage import store
from sr_pipeline.storage.layout import DataLayout

from report_md import append_section, command, machine  # benchmarks/report_md.py (the script's folder)


def camera_deterministic(hr: np.ndarray, cam: FieldCameraModel) -> np.ndarray:
    """The camera's blur, area downsampling and colour cast (grey: luma) of a uint8 HR image, as a
    rounded uint8 HxWx3 LR image."""
    x = field_camera_response(hr, cam)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=-1)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def newest_downsampler(layout: DataLayout, camera: str) -> Path | None:
    found = [d for d in sorted((layout.models / "downsampler").glob("*"))
             if (d / "training.json").is_file() and read_info(d).get("camera") == camera]
    return found[-1] if found else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="the data root `sr-pipeline demo` filled")
    ap.add_argument("--report", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args(argv)
    layout = DataLayout(args.data)
    psnr_y = metric("psnr_y").fn
    started = time.perf_counter()
    lines = ["| camera | pairs | PSNR-Y vs real LR: bicubic-down / the camera's own blur and cast / G at eps'=0 | "
             "G - bicubic-down | sensor noise at mid-grey, camera (before JPEG) / G | LR-set noise statistic: "
             "G / bicubic / the camera's field images | LR-set statistics distance G / bicubic |",
             "|---|---|---|---|---|---|---|"]
    facts = []
    hr = [store.load_image(p) for p in store.list_images(layout, role=CameraRole.hr_reference)["path"]]
    for camera, cam in CAMERA_MODELS.items():
        pairs = calibration_pairs(layout, camera)
        g_dir = newest_downsampler(layout, camera)
        if not pairs or g_dir is None:
            print(f"{camera}: no calibration pairs or no downsampler under {args.data}; skipped")
            continue
        real = downsampler_realism(pairs, g_dir)
        oracle = float(np.mean([psnr_y(camera_deterministic(load_rgb(p.hr_path), cam), load_rgb(p.lr_path), 0)
                                for p in pairs]))
        g = LearnedDownsampler.from_pretrained(g_dir).eval()
        with torch.no_grad():
            g_noise = float(g.noise_sigma(torch.zeros(1, 3, 1, 1))[0, 0, 0, 0]) * 127.5 if g.config.noise_model == "camera" else math.nan
        sensor = math.sqrt(cam.read_noise**2 + cam.shot_noise * 127.5)
        field = [store.load_image(p) for p in store.list_images(layout, role=CameraRole.field_lr, cameras=[camera])["path"]]
        sets = build_lr_sets(g, hr, field, k=2, seed=0).summary()
        noise = {k: sets["mean_stats"][k]["noise_sigma"] for k in ("learned", "bicubic", "field")}
        lines.append(
            f"| {camera} | {real['pairs']} | {real['bicubic_psnr']:.3f} / {oracle:.3f} / {real['learned_psnr']:.3f} | "
            f"{real['learned_psnr'] - real['bicubic_psnr']:+.3f} dB | {sensor:.2f} / {g_noise:.2f} | "
            f"{noise['learned']:.2f} / {noise['bicubic']:.2f} / {noise['field']:.2f} | "
            f"{sets['realism_distance_learned']['total']:.3f} / {sets['realism_distance_bicubic']['total']:.3f} |")
        facts.append(f"{camera}: downsampler {g_dir.name}, camera parts {json.dumps(g.camera_summary())}")
    if not facts:
        print(f"no demo camera with calibration pairs and a downsampler under {args.data}: run `sr-pipeline demo` first",
              file=sys.stderr)
        return 2
    table = "\n".join(lines)
    print(table)
    append_section(args.report, "the demo cameras' learned camera models against the known cameras", [
        f"machine: {machine('cpu')}", f"data: {args.data}", *facts,
        f"command: `{command('bench_demo_cameras.py', argv)}`",
        f"total time: {time.perf_counter() - started:.0f} s",
    ], table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
