"""The real-world quality benchmark: train with a profile, evaluate on RealSR's even pairs.

Protocol (../shared/datasets/README.md): HR references from bsd100_hr and urban100_hr; the field LR
pool is RealSR's odd-numbered LR images (their HR is never used), or NEU-DET minus HOLDOUT.txt with
``--field neu``; evaluation on RealSR's 50 even-numbered pairs. ``--field city100-nikon`` or
``city100-iphone`` takes one of City100's two cameras instead (x4 pairs made by
benchmarks/city100_pairs.py from its registered captures; nothing here was tuned on them): with only
5 images per camera its LR images are both the field pool and the pairs scored, which is the
product's own use (a plant's archive is its field pool) but not a held-out test. With ``--fit-pairs K`` the field camera's camera
model G is also fitted on K registered pairs (sr/train/paired_fit.py): for a RealSR camera its first K odd
pairs (their LR images are in the odd pool anyway; the other odd pairs are the selection split, on which
G's paired realism is printed too; the even pairs stay the test split), for a City100 camera its first K
pairs, and the rest are scored. Trains the teacher (or reuses one,
``--teacher``), the co-learned student and the ablations from the same teacher, measures each
downsampler's LR realism (PSNR-Y against RealSR's real LR; statistics distance to held-out images of
the field camera), then prints one table and appends it, with date, machine, profile and command, to
docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_quality.py ../shared/datasets --profile configs/bench-cpu.yaml
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sr_pipeline.storage import store
from sr_pipeline.common.cameras import CameraRegistry
from sr_pipeline.evaluation.calibration import downsampler_realism
from sr_pipeline.intake.ingest import ingest_folder
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.sr.models.checkpoints import load_sr_model
from sr_pipeline.sr.train.profile import Profile
from sr_pipeline.sr.models.downsampler import LearnedDownsampler
from sr_pipeline.evaluation.commands import evaluate_pairs
from sr_pipeline.sr.images.tensors import downsample, to_tensor, to_uint8
from sr_pipeline.sr.judge.metrics import laplacian_energy
from sr_pipeline.sr.data.pairs import Pair, find_pairs, first_number, load_rgb
from sr_pipeline.sr.serve.upscaler import Upscaler
from sr_pipeline.sr.judge.lpips_weights import load_lpips
from sr_pipeline.sr.data.lr_sets import build_lr_sets
from sr_pipeline.sr.train.stages.colearn import train_colearn
from sr_pipeline.sr.train.stages.teacher import train_teacher
from sr_pipeline.storage.versions import new_version
from sr_pipeline.training.run import colearn_outputs

from city100_pairs import make_pairs as make_city100_pairs  # benchmarks/city100_pairs.py
from per_camera import camera_of, per_camera_table  # benchmarks/per_camera.py
from report_md import append_section, command, machine  # benchmarks/report_md.py (the script's folder)

ABLATIONS = ["no-downsampler", "no-d-hr", "no-d-lr", "full-band-d-lr", "no-distill", "no-lr-cycle",
             "first-g", "no-colour", "no-noise-match", "no-sharpness-match", "rec-grad-to-downsampler",
             "plain-single-step"]
# What a default run trains beside the co-learned student (about 10 minutes each with a reused teacher);
# plain-single-step trains for the teacher's length (about 30 minutes) and the rest are opt-in.
DEFAULT_ABLATIONS = ["no-downsampler", "rec-grad-to-downsampler", "first-g"]
# RealSR holds two cameras; "realsr-canon" / "realsr-nikon" make one of them the field camera (its odd LR
# images are the pool, its even pairs are scored), the cross-camera protocol of issue 14.
DATASET_FIELDS = ["realsr", "realsr-canon", "realsr-nikon", "neu"]  # pools read straight from the datasets folder
CITY100_CAMERAS = {"city100-nikon": "NikonD5500", "city100-iphone": "iPhoneX"}
FIELDS = DATASET_FIELDS + list(CITY100_CAMERAS)
REGISTRY = CameraRegistry.model_validate(
    {"cameras": {"ref_cam": {"role": "hr_reference"}, "field_cam": {"role": "field_lr", "scale": 4}}})


def _ablation(profile: Profile, name: str) -> Profile:
    if name == "no-downsampler":  # the gate's fixed-degradation challenger
        return profile.fixed_degradation_challenger().model_copy(update={"name": f"{profile.name}-{name}"})
    d = profile.to_dict()
    c = d["colearn"]
    if name == "full-band-d-lr":
        c["d_lr_highpass"] = False
    elif name == "first-g":  # the first design: eps' into the residual net, no colour, no noise branch
        c["downsampler"].update(noise_model="input", colour_transform=False, blur_model="residual", jpeg_stage=False)
        c["weights"].update(noise_match=0.0, sharpness_match=0.0, colour_match=0.0)
    elif name == "rec-grad-to-downsampler":
        c["rec_grad_to_downsampler"] = True
    elif name == "plain-single-step":  # the student's network trained alone: no teacher, no GAN, no G
        # From scratch it gets the teacher's optimiser, learning rate and length (a fair budget), not
        # co-learning's gentle fine-tuning rate.
        c.update(use_downsampler=False, fixed_degradation="synthetic", init_from_teacher=False,
                 train={**d["teacher"], "seed": c["train"]["seed"]})
        c["weights"] = {k: 0.0 for k in c["weights"]} | {"rec": 1.0}
    elif name == "no-colour":
        c["downsampler"]["colour_transform"] = False
        c["weights"]["colour_match"] = 0.0
    else:
        c["weights"][{"no-d-hr": "adv_hr", "no-d-lr": "adv_lr", "no-distill": "distill",
                      "no-lr-cycle": "cyc_lr", "no-noise-match": "noise_match",
                      "no-sharpness-match": "sharpness_match"}[name]] = 0.0
    d["name"] = f"{profile.name}-{name}"
    return Profile.model_validate(d)


def _scaled(profile: Profile, factor: float) -> Profile:
    d = profile.to_dict()
    for stage in (d["teacher"], d["colearn"]["train"]):
        stage["steps"] = max(1, int(stage["steps"] * factor))
        stage["save_every"] = max(1, int(stage["save_every"] * factor))
        stage["log_every"] = max(1, int(stage["log_every"] * factor))
    return Profile.model_validate(d)


def _ingest(layout: DataLayout, files: list[Path], camera: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:  # bsd100_hr and urban100_hr share file names (img_001.png): keep the folder
            shutil.copy(f, Path(tmp) / f"{f.parent.name}_{f.name}")
        summary = ingest_folder(layout, REGISTRY, tmp, camera, batch_key=f"{camera}-bench")
    print(f"  {camera}: {summary.accepted} accepted, {summary.duplicate} duplicate, {summary.quarantined} quarantined")


def _camera_prefix(field: str) -> str:
    """The RealSR file-name prefix of the field camera ("" for both cameras)."""
    return {"realsr-canon": "Canon", "realsr-nikon": "Nikon"}.get(field, "")


def require_folders(ap: argparse.ArgumentParser, datasets: Path, needed: list[str]) -> None:
    """Stop with a usage error naming every dataset folder under ``datasets`` that is missing."""
    missing = [n for n in needed if not (datasets / n).is_dir()]
    if missing:
        ap.error(f"{datasets} lacks {', '.join(missing)} (see ../shared/datasets/README.md)")


def city100_pairs_dir(datasets: Path, work: Path) -> Path:
    """City100's x4 pairs (both cameras), made once per data root (a run stopped half-way makes them again)."""
    out = work / "city100_x4"
    done = out / ".complete"
    if not done.is_file():
        make_city100_pairs(datasets, out)
        done.touch()
    return out


def field_pool(datasets: Path, field: str, work: Path | None = None) -> tuple[list[Path], list[Path]]:
    """(training pool, held-out images of the same camera that judge the LR sets' realism; for a City100
    camera the pool itself, which has no held-out images, made under ``work``)."""
    if field in CITY100_CAMERAS:
        if work is None:
            raise ValueError(f"field {field} makes its pairs first: pass a work folder")
        lr = sorted((city100_pairs_dir(datasets, work) / "LR").glob(f"{CITY100_CAMERAS[field]}_*.png"))
        return lr, lr
    if field.startswith("realsr"):
        lr = sorted(p for p in (datasets / "realsr_x4" / "LR").iterdir() if p.name.startswith(_camera_prefix(field)))
        return ([p for p in lr if (first_number(p.name) or 0) % 2 == 1],
                [p for p in lr if (first_number(p.name) or 0) % 2 == 0])
    holdout = set((datasets / "neu_det" / "HOLDOUT.txt").read_text().split())
    images = sorted((datasets / "neu_det").glob("*.jpg"))
    return [p for p in images if p.name not in holdout], [p for p in images if p.name in holdout]


def centre_crop(img: np.ndarray, side: int = 512) -> np.ndarray:
    """The centre ``side`` x ``side`` crop (or less along a shorter side)."""
    h, w = img.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return img[top: top + side, left: left + side]


def realism_hr_sample(hr: list[np.ndarray]) -> list[np.ndarray]:
    """The HR references whose LR sets are compared with the field camera's held-out images: every third one,
    centre-cropped, so the statistics stay quick to compute."""
    return [centre_crop(im) for im in hr[::3]]


def _laplacian_ratios(g: LearnedDownsampler, pairs) -> tuple[float, float, float]:
    """Median over the pairs of the Laplacian energy of G(HR) at eps' = 0, of G(HR) with one noise draw,
    and of bicubic down(HR), over that of the real LR of the same scene: below 1 the model's LR carries
    less fine detail than the camera's (at eps' = 0 the camera's noise is missing from G's side)."""
    learned, noisy, bicubic = [], [], []
    gen = torch.Generator().manual_seed(0)
    s = g.config.scale
    with torch.inference_mode():
        for p in pairs:
            hr, lr = load_rgb(p.hr_path), load_rgb(p.lr_path)
            if lr.shape[:2] != (hr.shape[0] // s, hr.shape[1] // s) or hr.shape[0] % s or hr.shape[1] % s:
                continue
            x = to_tensor(hr)
            ref = laplacian_energy(lr)
            learned.append(laplacian_energy(to_uint8(g(x))) / ref)
            noisy.append(laplacian_energy(to_uint8(g(x, torch.randn(g.lr_shape(x), generator=gen)))) / ref)
            bicubic.append(laplacian_energy(to_uint8(downsample(x, s))) / ref)
    return float(np.median(learned)), float(np.median(noisy)), float(np.median(bicubic))


def fit_and_scored_pairs(datasets: Path, field: str, k: int, work: Path) -> tuple[list[Pair], list[Pair], list[Pair], str]:
    """(fit pairs, selection pairs, scored pairs, what the scored pairs are) for a field camera: RealSR's first
    ``k`` odd pairs of the camera fit G, its other odd pairs are the selection split and its even pairs are
    scored; City100's first ``k`` pairs of the camera fit G and the rest are scored (no selection split)."""
    if field in CITY100_CAMERAS:
        cam = CITY100_CAMERAS[field]
        pairs = [p for p in find_pairs(city100_pairs_dir(datasets, work), "all") if camera_of(p.name) == cam]
        if k >= len(pairs):
            raise ValueError(f"--fit-pairs {k} leaves none of City100's {len(pairs)} {cam} pairs to score")
        scored = pairs[k:]
        return pairs[:k], [], scored, f"City100's {len(scored)} {cam} pairs (x4 from its registered captures)" + (
            f" after the {k} fit pairs" if k else "")
    prefix = _camera_prefix(field)
    if k and not prefix:
        raise ValueError("--fit-pairs needs one field camera with pairs: realsr-canon, realsr-nikon, city100-nikon "
                         "or city100-iphone")
    odd = sorted((p for p in find_pairs(datasets / "realsr_x4", "odd") if p.name.startswith(prefix)),
                 key=lambda p: first_number(p.name))
    scored = [p for p in find_pairs(datasets / "realsr_x4", "even") if p.name.startswith(prefix)]
    if k > len(odd):
        raise ValueError(f"--fit-pairs {k}: the field camera has only {len(odd)} odd pairs")
    return odd[:k], odd[k:] if k else [], scored, f"RealSR's {len(scored)} even pairs"


def _paired_realism(downsampler_dir: Path, pairs: list[Pair]) -> dict:
    """G's PSNR-Y against the real LR and Laplacian ratios on pairs (the selection split)."""
    paired = downsampler_realism(pairs, downsampler_dir)
    g = LearnedDownsampler.from_pretrained(downsampler_dir).eval()
    lap_g, lap_noisy, lap_bic = _laplacian_ratios(g, pairs)
    return {"psnr_learned": paired["learned_psnr"], "psnr_bicubic": paired["bicubic_psnr"],
            "lap_learned": lap_g, "lap_noisy": lap_noisy, "lap_bicubic": lap_bic}


def _realism(downsampler_dir: Path, pairs, hr_sample: list[np.ndarray], field_holdout: list[np.ndarray]) -> dict:
    """G's LR realism: PSNR-Y against the real LR (whole LR image, the convention of the issue's 31.62 dB
    bicubic figure), the Laplacian-energy ratio to the real LR, and the LR set's statistics distance to
    held-out field LR with the noise level of each set."""
    paired = downsampler_realism(pairs, downsampler_dir)  # PSNR-Y over the whole LR image, as the report
    g = LearnedDownsampler.from_pretrained(downsampler_dir).eval()
    sets = build_lr_sets(g, hr_sample, field_holdout, k=2)
    lap_g, lap_noisy, lap_bic = _laplacian_ratios(g, pairs)
    return {"psnr_learned": paired["learned_psnr"], "psnr_bicubic": paired["bicubic_psnr"],
            "lap_learned": lap_g, "lap_noisy": lap_noisy, "lap_bicubic": lap_bic,
            "dist_learned": sets.realism_learned["total"],
            "dist_bicubic": sets.realism_bicubic["total"], "diversity": sets.diversity,
            "noise_learned": sets.stats["learned"]["noise_sigma"], "noise_field": sets.stats["field"]["noise_sigma"],
            "camera": g.camera_summary()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", type=Path, nargs="?", default=Path("../shared/datasets"),
                    help="folder holding realsr_x4, bsd100_hr, urban100_hr and neu_det")
    ap.add_argument("--profile", type=Path, default=Path("configs/bench-cpu.yaml"), help="training profile")
    ap.add_argument("--field", choices=FIELDS, default="realsr",
                    help="the field LR pool: RealSR's odd LR (both cameras, or one: realsr-canon, realsr-nikon, "
                         "whose even pairs are then the ones scored), NEU-DET, or one of City100's cameras "
                         "(city100-nikon, city100-iphone: its 5 LR are the pool and its 5 pairs are scored)")
    ap.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's steps (quick runs)")
    ap.add_argument("--ablations", nargs="*", default=DEFAULT_ABLATIONS, choices=ABLATIONS,
                    help="ablations and baselines to train next to the co-learned student (default: "
                         f"{' '.join(DEFAULT_ABLATIONS)}; give none for only it)")
    ap.add_argument("--work", type=Path, default=None, help="data root for the run (default: a temp folder)")
    ap.add_argument("--teacher", type=Path, default=None,
                    help="reuse this trained teacher folder (e.g. from an earlier run with the same profile) "
                         "instead of training one; the teacher never sees the field pool")
    ap.add_argument("--report", type=Path, default=Path("docs/benchmarks.md"), help="markdown file the table is appended to")
    ap.add_argument("--no-teacher-rows", action="store_true",
                    help="with --teacher: do not score the reused teacher again (its rows are in the run that "
                         "trained it; scoring it at T steps takes about 5 minutes on 2 CPU cores)")
    ap.add_argument("--fit-pairs", type=int, default=0, metavar="K",
                    help="fit the field camera's G on K registered pairs too (RealSR: its first K odd pairs, the "
                         "other odd pairs are the selection split; City100: its first K pairs, the rest are scored); "
                         "0: unpaired only, as before")
    ap.add_argument("--seed", type=int, default=None,
                    help="override the training seeds (teacher and co-learning) to measure seed spread")
    args = ap.parse_args(argv)
    needed = ["bsd100_hr", "urban100_hr"] + (["city100_test5"] if args.field in CITY100_CAMERAS
                                             else ["realsr_x4/HR", "realsr_x4/LR"])
    needed += ["neu_det"] if args.field == "neu" else []
    require_folders(ap, args.datasets, needed)
    if args.fit_pairs < 0:
        ap.error("--fit-pairs must be >= 0")
    if args.fit_pairs and args.field not in ("realsr-canon", "realsr-nikon", *CITY100_CAMERAS):
        ap.error("--fit-pairs needs one field camera with pairs: realsr-canon, realsr-nikon, city100-nikon or "
                 "city100-iphone")
    if args.field in CITY100_CAMERAS and args.fit_pairs >= 5:
        ap.error(f"--fit-pairs {args.fit_pairs} leaves no City100 pair to score (5 per camera)")
    if args.no_teacher_rows and args.teacher is None:
        ap.error("--no-teacher-rows needs --teacher (a teacher trained in this run is always scored)")
    if args.teacher is not None and not (args.teacher / "training.json").is_file():
        ap.error(f"--teacher {args.teacher} is not a trained teacher folder (no training.json)")
    profile = Profile.from_yaml(args.profile)
    if args.steps_scale != 1.0:
        profile = _scaled(profile, args.steps_scale)
    if args.seed is not None:
        d = profile.to_dict()
        d["teacher"]["seed"] = d["colearn"]["train"]["seed"] = args.seed
        profile = Profile.model_validate(d)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-quality-"))
    layout = DataLayout(work)
    started = time.perf_counter()
    print(f"data root {work}; ingesting", flush=True)
    hr_files = sorted((args.datasets / "bsd100_hr").glob("*.png")) + sorted((args.datasets / "urban100_hr").glob("*.png"))
    _ingest(layout, hr_files, "ref_cam")
    field_files, holdout_files = field_pool(args.datasets, args.field, work)
    _ingest(layout, field_files, "field_cam")
    hr_rows = store.list_images(layout, role="hr_reference")
    field_rows = store.list_images(layout, role="field_lr")
    hr = [store.load_image(p) for p in hr_rows["path"]]
    field = [store.load_image(p) for p in field_rows["path"]]
    fit, selection, pairs, pairs_name = fit_and_scored_pairs(args.datasets, args.field, args.fit_pairs, work)
    fit_images = [(load_rgb(p.hr_path), load_rgb(p.lr_path)) for p in fit]
    # where a pre-fit on fewer than min_pairs fit pairs is judged (paired_fit.few_pairs_hold): the product uses the
    # camera's gate pairs; here the selection split, or, for City100, which has none, the scored pairs
    check = (selection or pairs) if fit else []
    check_images = [(load_rgb(p.hr_path), load_rgb(p.lr_path)) for p in check]
    check_name = "none" if not check else "the selection split" if selection else "the scored pairs (no selection split)"
    if fit:
        print(f"fit pairs: {', '.join(p.name for p in fit)}", flush=True)

    t0 = time.perf_counter()
    if args.teacher is not None:
        teacher_dir = args.teacher
        times = {"teacher": float(json.loads((teacher_dir / "training.json").read_text()).get("wall_time_s", 0))}
    else:
        teacher_dir = train_teacher(profile, hr, layout.run_dir("teacher", profile.name),
                                    layout.model_dir("teacher", new_version()),
                                    image_ids=list(hr_rows["image_id"])).model_dir
        times = {"teacher": time.perf_counter() - t0}
    students: dict[str, Path] = {}
    downsamplers: dict[str, Path] = {}
    # Every ablation's profile is built before anything trains, so one that cannot exist fails at once.
    runs = {"co-learned": profile, **{name: _ablation(profile, name) for name in args.ablations}}
    for name, p in runs.items():
        t0 = time.perf_counter()
        r = train_colearn(p, teacher_dir, hr, field, layout.run_dir("colearn", name), *colearn_outputs(layout, p),
                          image_ids=list(hr_rows["image_id"]), field_image_ids=list(field_rows["image_id"]),
                          fit_pairs=fit_images or None, fit_pair_names=[p.name for p in fit] or None,
                          check_pairs=check_images or None)
        times[name] = time.perf_counter() - t0
        students[name] = r.model_dirs["student"]
        if "downsampler" in r.model_dirs:
            downsamplers[name] = r.model_dirs["downsampler"]

    methods = {}
    if not args.no_teacher_rows:
        teacher = load_sr_model(teacher_dir)
        # The teacher at one step is the student's starting point: co-learning must beat it.
        methods = {"teacher (T steps)": Upscaler(teacher, steps=profile.diffusion.num_steps),
                   "teacher (1 step)": Upscaler(teacher, steps=1)}
    methods.update({f"student {n}": Upscaler(load_sr_model(d), steps=1) for n, d in students.items()})
    summary = evaluate_pairs(pairs, methods, profile.scale, work / "eval", lpips=load_lpips(),
                             split="all" if args.field in CITY100_CAMERAS else "even")
    print("LR realism of the downsamplers", flush=True)
    hr_sample = realism_hr_sample(hr)
    holdout = [store.load_image(p) for p in holdout_files]
    realism = {n: _realism(d, pairs, hr_sample, holdout) for n, d in downsamplers.items()}

    lines = ["| method | PSNR-Y | SSIM-Y | LPIPS | HF energy / HR | ms/image | train s |", "|---|---|---|---|---|---|---|"]
    for name, m in summary["methods"].items():
        lp = "n/a" if m.get("lpips") is None else f"{m['lpips']:.4f}"
        hf = "n/a" if m.get("hf_ratio") is None else f"{m['hf_ratio']:.2f}x"
        key = name.replace("student ", "") if name.startswith("student ") else ("teacher" if name == "teacher (T steps)" else "")
        lines.append(f"| {name} | {m['psnr_y']:.3f} | {m['ssim_y']:.4f} | {lp} | {hf} | {m['ms_per_image']:.1f} | "
                     f"{times.get(key, 0):.0f} |")
    holdout_name = {"neu": "NEU-DET HOLDOUT.txt", "city100-nikon": "the pool itself",
                    "city100-iphone": "the pool itself"}.get(args.field, f"{_camera_prefix(args.field) or 'RealSR'}'s even LR")
    lines += ["", f"| downsampler of | PSNR-Y(G(HR), real LR) | PSNR-Y(down(HR), real LR) | Laplacian G(HR) / real LR: "
              f"eps'=0, with noise (bicubic) | stats distance G / bicubic to {holdout_name} | noise sigma G / field | LR diversity |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {r['psnr_learned']:.3f} | {r['psnr_bicubic']:.3f} | {r['lap_learned']:.2f}x, "
              f"{r['lap_noisy']:.2f}x ({r['lap_bicubic']:.2f}x) | {r['dist_learned']:.3f} / {r['dist_bicubic']:.3f} | "
              f"{r['noise_learned']:.2f} / {r['noise_field']:.2f} | {r['diversity']:.4f} |" for n, r in realism.items()]
    if selection:
        chosen = {n: _paired_realism(d, selection) for n, d in downsamplers.items()}
        lines += ["", f"Selection split ({len(selection)} odd pairs after the {len(fit)} fit pairs; settings are "
                  "chosen here, never on the scored pairs):", "",
                  "| downsampler of | PSNR-Y(G(HR), real LR) | PSNR-Y(down(HR), real LR) | Laplacian G(HR) / real LR: "
                  "eps'=0, with noise (bicubic) |", "|---|---|---|---|"]
        lines += [f"| {n} | {r['psnr_learned']:.3f} | {r['psnr_bicubic']:.3f} | {r['lap_learned']:.2f}x, "
                  f"{r['lap_noisy']:.2f}x ({r['lap_bicubic']:.2f}x) |" for n, r in chosen.items()]
        realism = {n: {**r, "selection": chosen[n]} for n, r in realism.items()}
    if len({camera_of(p.name) for p in pairs}) > 1:  # RealSR's two cameras differ in difficulty: say where it gains
        lines += ["", "Per camera:", "", per_camera_table(pd.read_parquet(work / "eval" / "metrics.parquet"))]
    table = "\n".join(lines)
    print("\n" + table)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    append_section(args.report, f"quality, field pool {args.field}", [
        f"machine: {machine(device)}",
        f"profile: {profile.name} (teacher {profile.teacher.steps} steps, co-learning "
        f"{profile.colearn.train.steps} steps, seed {profile.colearn.train.seed})",
        f"data: {len(hr)} HR references (bsd100_hr + urban100_hr), {len(field)} field LR images, "
        f"evaluated on {pairs_name}",
        f"fit pairs (pin G): {', '.join(p.name for p in fit) if fit else 'none'}",
        f"a pre-fit on fewer than min_pairs fit pairs is judged on: {check_name}"
        + (f" ({hold['why']})" if (hold := json.loads((students["co-learned"] / "training.json").read_text())
                                   .get("few_pairs_hold")) else ""),
        f"teacher: {'reused from ' + str(teacher_dir) if args.teacher else 'trained in this run'}",
        f"command: `{command('bench_quality.py', argv)}`",
        f"total time: {time.perf_counter() - started:.0f} s",
    ], table)
    (work / "bench_summary.json").write_text(json.dumps(
        {"table": table, "times": times, "methods": summary["methods"], "realism": realism}, indent=2, default=str))
    print(f"\nappended to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
