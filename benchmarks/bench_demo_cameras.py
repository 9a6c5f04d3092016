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
and of the camera's own field images, with the LR sets' statistics distances. A second table asks
whether the flat-region noise statistic that trains G's noise (``losses.flat_noise_sigma``, on 32-pixel
LR centre crops) can identify the sensor's noise: it scores the camera's field images (G's target),
the true camera applied to the HR references (optics alone, then with its noise and JPEG) and G on the
same references with its learned noise. A third asks whether the noise term points to the sensor's
level: the term (L1 between the two statistics, as co-learning computes it on batches of 8 training-size
crops) averaged over 48 batches, with G's learned noise scaled by 0.5-4. With ``--student``, a fourth
scores students (and bicubic) on the camera's calibration pairs. Prints the tables and appends them to
docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_demo_cameras.py data
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sr_pipeline.evaluation.calibration import calibration_pairs, downsampler_realism
from sr_pipeline.common.cameras import CameraRole
from sr_pipeline.intake.demo_data import CAMERA_MODELS, FieldCameraModel, field_camera_degrade, field_camera_response
from sr_pipeline.sr.models.checkpoints import read_info
from sr_pipeline.sr.models.downsampler import LearnedDownsampler
from sr_pipeline.sr.images.tensors import to_tensor, to_uint8
from sr_pipeline.sr.train.losses import flat_noise_sigma, noise_match
from sr_pipeline.sr.data.lr_sets import LRSets, build_lr_sets, modcrop, realism_distance, set_stats
from sr_pipeline.sr.data.pairs import load_rgb
from sr_pipeline.sr.judge.scoring import metric
from sr_pipeline.storage import store
from sr_pipeline.storage.layout import DataLayout

from bench_quality import centre_crop  # benchmarks/bench_quality.py
from report_md import append_section, command, machine  # benchmarks/report_md.py (the script's folder)


def camera_deterministic(hr: np.ndarray, cam: FieldCameraModel) -> np.ndarray:
    """The camera's blur, area downsampling and colour cast (grey: luma) of a uint8 HR image, as a
    rounded uint8 HxWx3 LR image."""
    x = field_camera_response(hr, cam)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=-1)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


FLAT_CROP = 32  # LR pixels, about the co-learning crops (64 HR -> 16 LR) and large enough for the statistic


def _batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.cat([to_tensor(im) for im in images])


def flat_noise(images: list[np.ndarray]) -> float:
    """noise_match's statistic (flat-region detail, mean over channels and bands) of equal-sized uint8 LR images,
    in levels (NaN for none)."""
    if not images:
        return math.nan
    return float(flat_noise_sigma(_batch(images)).mean()) * 127.5


def flat_noise_figures(cam: FieldCameraModel, g: LearnedDownsampler, hr: list[np.ndarray],
                       field: list[np.ndarray]) -> dict[str, float]:
    """The second table's row: the statistic on the field images, on the true camera's LR of the HR
    references (optics alone; optics, noise and JPEG) and on G's (its learned noise, eps' seed 0)."""
    side = FLAT_CROP * cam.scale
    crops = [centre_crop(im, side) for im in hr if min(im.shape[:2]) >= side]
    if not crops:
        return {"field": math.nan, "optics": math.nan, "camera": math.nan, "g": math.nan, "refs": 0}
    x = _batch(crops)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        y = g(x, torch.randn(g.lr_shape(x), generator=gen))
    return {"field": flat_noise([centre_crop(im, FLAT_CROP) for im in field if min(im.shape[:2]) >= FLAT_CROP]),
            "optics": flat_noise([camera_deterministic(c, cam) for c in crops]),
            "camera": flat_noise([field_camera_degrade(c, 0, f"flat-{i}", cam) for i, c in enumerate(crops)]),
            "g": flat_noise([to_uint8(im) for im in y]), "refs": len(crops)}


def true_camera_distances(cam: FieldCameraModel, hr: list[np.ndarray], sets: LRSets,
                          field: list[np.ndarray]) -> dict[str, float]:
    """LR-set statistics distances to the true camera applied to the same HR references (as many noise draws as
    ``sets`` has variants): G's and bicubic's, and the true camera's own distance to its field images. The
    field images show other scenes, so their distance mixes scene with camera; against the true camera on the
    same scenes only the camera differs."""
    k = len(sets.variants[0])
    true = set_stats([field_camera_degrade(modcrop(im, cam.scale), 0, f"ref{i}-{j}", cam)
                      for i, im in enumerate(hr) for j in range(k)])
    return {"g": realism_distance(set_stats([v for vs in sets.variants for v in vs]), true)["total"],
            "bicubic": realism_distance(set_stats(sets.bicubic), true)["total"],
            "true_to_field": realism_distance(true, set_stats(field))["total"]}


NOISE_SCALES = (0.5, 1.0, 2.0, 3.0, 4.0)


def noise_term_landscape(g: LearnedDownsampler, hr: list[np.ndarray], field: list[np.ndarray], batches: int = 48,
                         batch: int = 8, seed: int = 0) -> list[float]:
    """The noise term (8-bit levels) averaged over ``batches`` batches of ``batch`` random crops (HR 64, field 16
    pixels, co-learning's sizes), with G's learned noise level scaled by each of NOISE_SCALES."""
    rng = np.random.default_rng(seed)
    side = 16

    def crop(im: np.ndarray, p: int) -> np.ndarray:
        top, left = rng.integers(im.shape[0] - p + 1), rng.integers(im.shape[1] - p + 1)
        return im[top:top + p, left:left + p]

    pairs = [(_batch([crop(hr[rng.integers(len(hr))], side * g.config.scale) for _ in range(batch)]),
              _batch([crop(field[rng.integers(len(field))], side) for _ in range(batch)])) for _ in range(batches)]
    out = []
    for f in NOISE_SCALES:
        scaled = copy.deepcopy(g)
        scaled.scale_noise(f)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            terms = [float(noise_match(scaled(x, torch.randn(scaled.lr_shape(x), generator=gen)), y)) * 127.5
                     for x, y in pairs]
        out.append(float(np.mean(terms)))
    return out


def student_rows(camera: str, pairs: list, folders: dict[str, Path]) -> list[str]:
    """Table rows: bicubic and each student on the camera's calibration pairs (the demo report's scoring)."""
    from sr_pipeline.sr.models.checkpoints import load_sr_model
    from sr_pipeline.sr.serve.upscaler import Upscaler
    from sr_pipeline.sr.judge.lpips_weights import load_lpips
    from sr_pipeline.sr.judge.scoring import score_pairs

    methods = {label: Upscaler(load_sr_model(folder), steps=1) for label, folder in folders.items()}
    summary = score_pairs(pairs, methods, 4, lpips=load_lpips()).summary
    rows = []
    for name, m in summary["methods"].items():
        lp = "n/a" if m.get("lpips") is None else f"{m['lpips']:.4f}"
        hf = "n/a" if m.get("hf_ratio") is None else f"{m['hf_ratio']:.2f}x"
        rows.append(f"| {camera} | {len(pairs)} | {name} | {m['psnr_y']:.3f} | {lp} | {hf} |")
    return rows


def newest_downsampler(layout: DataLayout, camera: str) -> Path | None:
    found = [d for d in sorted((layout.models / "downsampler").glob("*"))
             if (d / "training.json").is_file() and read_info(d).get("camera") == camera]
    return found[-1] if found else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="the data root `sr-pipeline demo` filled")
    ap.add_argument("--report", type=Path, default=Path("docs/benchmarks.md"))
    ap.add_argument("--downsampler", action="append", default=[], metavar="CAMERA=FOLDER",
                    help="score this downsampler folder for CAMERA instead of the camera's newest under the data root "
                         "(e.g. one trained by `sr-pipeline train colearn --downsampler-out` with other settings)")
    ap.add_argument("--student", action="append", default=[], metavar="CAMERA=LABEL=FOLDER",
                    help="also score this student folder on CAMERA's calibration pairs (PSNR-Y, LPIPS, HF energy over "
                         "the HR, beside bicubic); repeatable, e.g. to compare students trained with other settings")
    args = ap.parse_args(argv)
    students: dict[str, dict[str, Path]] = {}
    for item in args.student:
        camera, _, rest = item.partition("=")
        label, sep, folder = rest.partition("=")
        if not sep or camera not in CAMERA_MODELS or not label or not (Path(folder) / "config.json").is_file():
            ap.error(f"--student {item!r}: give CAMERA=LABEL=FOLDER with CAMERA one of {', '.join(CAMERA_MODELS)} "
                     "and FOLDER a saved student")
        students.setdefault(camera, {})[label] = Path(folder)
    chosen = {}
    for item in args.downsampler:
        camera, sep, folder = item.partition("=")
        if not sep or camera not in CAMERA_MODELS or not (Path(folder) / "config.json").is_file():
            ap.error(f"--downsampler {item!r}: give CAMERA=FOLDER with CAMERA one of {', '.join(CAMERA_MODELS)} "
                     "and FOLDER a saved downsampler")
        chosen[camera] = Path(folder)
    layout = DataLayout(args.data)
    psnr_y = metric("psnr_y").fn
    started = time.perf_counter()
    lines = ["| camera | pairs | PSNR-Y vs real LR: bicubic-down / the camera's own blur and cast / G at eps'=0 | "
             "G - bicubic-down | sensor noise at mid-grey, camera (before JPEG) / G | LR-set noise statistic: "
             "G / bicubic / the camera's field images | LR-set statistics distance to the field images: G / bicubic / "
             "the true camera on the references | distance to the true camera on the same references: G / bicubic |",
             "|---|---|---|---|---|---|---|---|"]
    facts = []
    flat_lines = ["| camera | references | the camera's field images (the target) | the true camera on the references: "
                  "optics only / optics, noise and JPEG | G on the references, its learned noise |",
                  "|---|---|---|---|---|"]
    landscape_lines = ["| camera | " + " | ".join(f"noise x{f:g}" for f in NOISE_SCALES) + " |",
                       "|---|" + "---|" * len(NOISE_SCALES)]
    student_lines = ["| camera | pairs | upscaler | PSNR-Y | LPIPS | HF energy / HR |", "|---|---|---|---|---|---|"]
    hr = [store.load_image(p) for p in store.list_images(layout, role=CameraRole.hr_reference)["path"]]
    for camera, cam in CAMERA_MODELS.items():
        pairs = calibration_pairs(layout, camera)
        g_dir = chosen.get(camera) or newest_downsampler(layout, camera)
        if not pairs or g_dir is None:
            print(f"{camera}: no calibration pairs or no downsampler under {args.data}; skipped")
            continue
        if camera in students:
            student_lines += student_rows(camera, pairs, students[camera])
        real = downsampler_realism(pairs, g_dir)
        oracle = float(np.mean([psnr_y(camera_deterministic(load_rgb(p.hr_path), cam), load_rgb(p.lr_path), 0)
                                for p in pairs]))
        g = LearnedDownsampler.from_pretrained(g_dir).eval()
        with torch.no_grad():
            g_noise = float(g.noise_sigma(torch.zeros(1, 3, 1, 1))[0, 0, 0, 0]) * 127.5 if g.config.noise_model == "camera" else math.nan
        sensor = math.sqrt(cam.read_noise**2 + cam.shot_noise * 127.5)
        field = [store.load_image(p) for p in store.list_images(layout, role=CameraRole.field_lr, cameras=[camera])["path"]]
        lr_sets = build_lr_sets(g, hr, field, k=2, seed=0)
        sets, truth = lr_sets.summary(), true_camera_distances(cam, hr, lr_sets, field)
        noise = {k: sets["mean_stats"][k]["noise_sigma"] for k in ("learned", "bicubic", "field")}
        lines.append(
            f"| {camera} | {real['pairs']} | {real['bicubic_psnr']:.3f} / {oracle:.3f} / {real['learned_psnr']:.3f} | "
            f"{real['learned_psnr'] - real['bicubic_psnr']:+.3f} dB | {sensor:.2f} / {g_noise:.2f} | "
            f"{noise['learned']:.2f} / {noise['bicubic']:.2f} / {noise['field']:.2f} | "
            f"{sets['realism_distance_learned']['total']:.3f} / {sets['realism_distance_bicubic']['total']:.3f} / "
            f"{truth['true_to_field']:.3f} | {truth['g']:.3f} / {truth['bicubic']:.3f} |")
        facts.append(f"{camera}: downsampler {g_dir if camera in chosen else g_dir.name}, camera parts {json.dumps(g.camera_summary())}")
        flat = flat_noise_figures(cam, g, hr, field)
        flat_lines.append(f"| {camera} | {flat['refs']} | {flat['field']:.2f} | {flat['optics']:.2f} / "
                          f"{flat['camera']:.2f} | {flat['g']:.2f} |")
        if g.config.noise_model == "camera":
            landscape = noise_term_landscape(g, hr, field)
            landscape_lines.append(f"| {camera} | " + " | ".join(f"{v:.3f}" for v in landscape) + " |")
    if not facts:
        print(f"no demo camera with calibration pairs and a downsampler under {args.data}: run `sr-pipeline demo` first",
              file=sys.stderr)
        return 2
    table = "\n".join(lines) + "\n\nFlat-region noise statistic (noise_match's, 8-bit levels, 32-pixel LR centre crops):\n\n" + \
        "\n".join(flat_lines) + "\n\nThe noise term (levels; mean of 48 batches of 8 training-size crops) with G's " + \
        "learned noise level scaled:\n\n" + "\n".join(landscape_lines)
    if len(student_lines) > 2:
        table += "\n\nStudents on the camera's calibration pairs:\n\n" + "\n".join(student_lines)
    print(table)
    append_section(args.report, "the demo cameras' learned camera models against the known cameras", [
        f"machine: {machine('cpu')}", f"data: {args.data}", *facts,
        f"command: `{command('bench_demo_cameras.py', argv)}`",
        f"total time: {time.perf_counter() - started:.0f} s",
    ], table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
