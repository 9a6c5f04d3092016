"""The GPU path, provable in one command: upscaling, training, resume and the consistency pass on one GPU.

    python benchmarks/gpu_check.py --device cuda               # on one GPU, within 8 minutes (make gpu-check)
    python benchmarks/gpu_check.py --tiny --device cpu         # the same code path with tiny networks (tests)

Everything it needs is made here: synthetic inspection-like images, untrained networks of
the ``gpu`` profile (``--profile``) for the speed rows, and the teacher and student it trains itself.
Nothing is downloaded and no dataset is read. In order, each step within its own time budget
(``STEP_BUDGETS_S``; a step with less than half its budget left is skipped and says so):

- the environment: torch, CUDA, the device, bf16 and ``torch.compile`` (triton on a GPU);
- student upscaling through the real :class:`Upscaler` (tiling, bf16 autocast, channels-last) and
  the consistency pass on the upscaler's device, one image of ``TILES_PER_ROW`` LR tiles
  (256 -> 1024 px each, 16 px overlap), batch 1 and 8: output MP/s and peak memory; the 15-step
  teacher at batch 8 beside it, and the ratio of their times;
- the consistency pass alone on the CPU and on the device, with the learned camera G and with
  bicubic-down, on the same output: time per image and whether the verdicts agree;
- a CPU fallback: the same student on the same image with ``--cpu-threads`` threads (when its
  budget runs out mid-image, the rate of the tiles done stands for the image);
- teacher training (200 steps) with the profile through the real trainer: samples/s and HR MP/s
  (the median log window after the first), peak memory, whether every loss was finite; the resume
  check: a second teacher run stopped after its step-100 save and resumed (no kill) must end with the
  uninterrupted run's EMA weights within bf16's precision (relative L2 distance <= 2^-8; fp32 on the
  CPU: <= 1e-6); co-learning (100 steps) from that teacher (from the untrained one when the teacher
  run did not finish), with the same figures;
- the student again with ``torch.compile`` (batch 1 and 8; ``--compile auto`` does it on a GPU only),
  last, because its compile time is the least predictable.

Prints one table and appends it to docs/benchmarks.md (``--report FILE`` elsewhere, ``--no-report``
to print only); a run off a GPU is titled as a CPU dry run, not GPU figures. Exit code 1 when a check
failed or could not run for want of the teacher run (resume), else 0.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # the budget counts the imports too

import argparse
import copy
import importlib.util
import json
import math
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sr_pipeline.sr.models.checkpoints import LoadedModel
from sr_pipeline.sr.train.profile import Profile
from sr_pipeline.sr.serve.consistency import BicubicCamera, Camera, ConsistencyPass, LearnedCamera, Thresholds
from sr_pipeline.sr.images.decode import SourceImage
from sr_pipeline.sr.models.devices import device_label, resolve_device
from sr_pipeline.sr.models.downsampler import LearnedDownsampler
from sr_pipeline.sr.serve.upscaler import TileSettings, Upscaler, iter_output_rows
from sr_pipeline.sr.models.upsampler import SRUNet
from sr_pipeline.sr.train.stages.colearn import train_colearn
from sr_pipeline.sr.train.stages.teacher import build_teacher, train_teacher
from sr_pipeline.sr.train.shared import TrainingDiverged, save_model_dir, seed_everything

from bench_speed import PeakMemory  # benchmarks/bench_speed.py (the script's folder)
from report_md import append_section, command, machine  # benchmarks/report_md.py

REPO = Path(__file__).resolve().parents[1]
TOTAL_BUDGET_S = 450.0  # the whole check, imports included: 30 s short of 8 minutes for the overruns
# Seconds per step. A step runs when at least half its budget is left, within what is left; once started
# it overruns by at most one image, one tile (the CPU row) or one log window of training.
STEP_BUDGETS_S = {"student": 30, "teacher": 20, "consistency": 10, "cpu": 20, "train": 60, "resume": 60,
                  "colearn": 75, "compile": 120}
TINY_BUDGETS_S = {"student": 1, "teacher": 1, "consistency": 1, "cpu": 1, "train": 5, "resume": 5,
                  "colearn": 6, "compile": 30}
COMPILE_MIN_S = 30  # a compile cannot be stopped half way: no batch is compiled with less left
TILES_PER_ROW = 8  # LR tiles in the test image's single tile row: batch 8 is one network call
BATCHES = (1, 8)
HR_IMAGES = 6  # synthetic training references
# The pass on the device agrees with the CPU's when the verdict is the same and the figures within these.
AGREE_PSNR_DB = 0.01
AGREE_PEAK_LEVELS = 0.05
BF16_TOLERANCE = 2.0**-8  # bf16 keeps 8 significant bits
FP32_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Sizes:
    """What the check runs at: the profile's full sizes, or ``--tiny`` networks and a few steps."""

    tile: int  # LR pixels per tile side
    overlap: int
    teacher_steps: int  # training steps (saved, and the resume check interrupted, half way)
    colearn_steps: int
    log_every: int
    budgets: dict
    total_budget_s: float


FULL = Sizes(tile=256, overlap=16, teacher_steps=200, colearn_steps=100, log_every=20, budgets=STEP_BUDGETS_S,
             total_budget_s=TOTAL_BUDGET_S)
TINY = Sizes(tile=16, overlap=4, teacher_steps=4, colearn_steps=2, log_every=1, budgets=TINY_BUDGETS_S,
             total_budget_s=120.0)


class OutOfTime(Exception):
    """A step's time budget ran out (raised from a progress callback to stop it)."""


@dataclass
class Row:
    step: str
    setting: str
    result: str
    seconds: float = float("nan")
    ok: bool | None = None  # None: a measurement; False: a check that failed


@dataclass
class Check:
    sizes: Sizes
    device: str
    started: float = _STARTED
    rows: list[Row] = field(default_factory=list)

    def left(self) -> float:
        return self.sizes.total_budget_s - (time.perf_counter() - self.started)

    def budget(self, step: str) -> float | None:
        """The step's budget within what is left, or None (and a row saying so) when less than half of it is left."""
        budget = self.sizes.budgets[step]
        if self.left() < budget / 2:
            self.rows.append(Row(step, "skipped", f"needs {budget / 2:g}-{budget} s, {max(self.left(), 0):.0f} s of "
                                 f"the budget left"))
            return None
        return min(budget, self.left())

    def add(self, *args, **kwargs) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        print(f"  {row.step}: {row.setting}: {row.result}" + ("" if math.isnan(row.seconds) else f" ({row.seconds:.1f} s)"),
              file=sys.stderr, flush=True)
        return row


# ---------------------------------------------------------------- inputs and models


def tiny_profile(base: Profile) -> Profile:
    """The profile with tiny networks, small crops and one loader worker (on the CPU the trainer then
    leaves the main process one thread: two threads on two busy cores ran 8x slower): the code path,
    not the speed."""
    d = base.to_dict()
    d["name"] = f"{base.name}-tiny"
    d["net"].update(block_out_channels=[8, 16, 16], layers_per_block=1, attention_levels=[False, False, True],
                    norm_num_groups=4)
    for opt in (d["teacher"], d["colearn"]["train"]):
        opt.update(batch_size=2, patch_size=32, num_workers=1, warmup_steps=2)
    d["colearn"].update(teacher_steps=4, noise_fit_crops=8)
    d["colearn"]["weights"]["lpips"] = 0.0
    d["colearn"]["downsampler"].update(channels=8, num_blocks=1, norm_num_groups=4)
    for disc in ("d_hr", "d_lr"):
        d["colearn"][disc].update(base_channels=8, max_channels=16)
    return Profile.model_validate(d)


def check_profile(profile: Profile, sizes: Sizes, device: str) -> Profile:
    """The profile with the check's step counts: saved half way (the resume check), logged often. Off
    a GPU it trains in fp32, as its rows say (bf16 autocast on a CPU is slow and lossy)."""
    d = profile.to_dict()
    half = sizes.teacher_steps // 2
    d["teacher"].update(steps=sizes.teacher_steps, save_every=half, log_every=sizes.log_every)
    d["colearn"]["train"].update(steps=sizes.colearn_steps, save_every=sizes.colearn_steps,
                                 log_every=max(1, min(sizes.log_every, sizes.colearn_steps // 2)))
    if not device.startswith("cuda"):
        d["teacher"]["mixed_precision"] = d["colearn"]["train"]["mixed_precision"] = "no"
    return Profile.model_validate(d)


def synthetic_image(height: int, width: int, seed: int) -> np.ndarray:
    """An inspection-like scene, HxWx3 uint8: a shaded plate with bolts, scratches, fine machining
    stripes and printed marks (edges, texture and flat ground, as on the plant's images)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    tint = rng.uniform(0.8, 1.2, 3).astype(np.float32)
    base = 110 + 40 * np.sin(xx / rng.uniform(60, 140)) * np.cos(yy / rng.uniform(60, 140))
    base += 6 * np.sin((xx * np.cos(0.3) + yy * np.sin(0.3)) / rng.uniform(1.5, 3.0))  # machining stripes
    for _ in range(max(2, height * width // 20000)):  # bolts: bright rings with a dark centre
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, 18)
        d = np.hypot(yy - cy, xx - cx)
        base += 70 * np.exp(-((d - r) ** 2) / 4.0) - 60 * (d < r * 0.5)
    for _ in range(max(2, height * width // 30000)):  # scratches: thin dark lines
        y0, x0, angle = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0, np.pi)
        dist = np.abs((yy - y0) * np.cos(angle) - (xx - x0) * np.sin(angle))
        base -= 50 * np.exp(-dist**2 / 0.8) * (np.hypot(yy - y0, xx - x0) < rng.uniform(20, 80))
    marks = (np.sin(xx / 2.5) > 0.3) & (np.abs(yy - height * 0.8) < 6) & (np.abs(xx - width * 0.3) < width * 0.15)
    base = np.where(marks, 30.0, base)  # printed marks
    image = base[..., None] * tint + rng.normal(0.0, 2.0, (height, width, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def hr_images(side: int, count: int = HR_IMAGES) -> list[np.ndarray]:
    """The training references: synthetic scenes twice the crop size a side."""
    return [synthetic_image(2 * side, 2 * side, seed) for seed in range(count)]


def field_images(hr: list[np.ndarray], scale: int, seed: int = 0) -> list[np.ndarray]:
    """A stand-in field camera: the references flipped, bicubic-down by the scale, with mild sensor noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for im in hr:
        small = Image.fromarray(np.ascontiguousarray(im[:, ::-1])).resize(
            (im.shape[1] // scale, im.shape[0] // scale), Image.BICUBIC)
        noisy = np.asarray(small, dtype=np.float32) + rng.normal(0.0, 2.0, (small.height, small.width, 3))
        out.append(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    return out


def test_image(sizes: Sizes) -> np.ndarray:
    """One LR image of exactly one row of ``TILES_PER_ROW`` tiles."""
    t, o = sizes.tile, sizes.overlap
    return synthetic_image(t, t + (TILES_PER_ROW - 1) * (t - o), seed=100)


def random_models(profile: Profile, device: str) -> tuple[LoadedModel, LoadedModel]:
    """An untrained student and teacher (one net: speed does not depend on the weights)."""
    torch.manual_seed(0)
    net, schedule = build_teacher(profile)
    net = net.to(device).eval().requires_grad_(False)
    info = {"version": f"untrained-{profile.name}"}
    path = REPO / "configs"
    return (LoadedModel(net, schedule, {**info, "kind": "student"}, path),
            LoadedModel(net, schedule, {**info, "kind": "teacher"}, path))


def random_camera(profile: Profile, device: str) -> LearnedCamera:
    """An untrained camera model G of the profile (what a student's outputs are judged with)."""
    torch.manual_seed(0)
    dc = profile.colearn.downsampler
    g = LearnedDownsampler(scale=profile.scale, channels=dc.channels, num_blocks=dc.num_blocks,
                           norm_num_groups=dc.norm_num_groups, kappa=dc.kappa, noise_model=dc.noise_model,
                           colour_transform=dc.colour_transform, blur_model=dc.blur_model)
    return LearnedCamera(g.to(device).eval().requires_grad_(False), "G untrained")


def params_m(net: torch.nn.Module) -> float:
    return sum(p.numel() for p in net.parameters()) / 1e6


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_label(device: str) -> str:
    return "peak GPU MiB allocated" if device.startswith("cuda") else "peak RSS MiB above the start"


def peak_mib(mem: PeakMemory, device: str) -> float:
    return (mem.absolute if device.startswith("cuda") else mem.peak) / 2**20


# ---------------------------------------------------------------- upscaling


def upscale_image(up: Upscaler, src: SourceImage, camera: Camera | None, device: str,
                  progress: Callable[[int], None] | None = None) -> tuple[list[np.ndarray], str | None]:
    """The upscale command's path without the PNG: output bands (as written) and the consistency verdict."""
    cp = None if camera is None else ConsistencyPass(camera, src.colour, Thresholds(), device=device)
    bands = []
    for rows in iter_output_rows(up, src, progress=progress):
        if cp is not None:
            cp.feed(rows)
        bands.append(rows)
    sync(device)
    return bands, (None if cp is None else cp.finish().verdict)


def time_upscaler(up: Upscaler, src: SourceImage, camera: Camera | None, device: str,
                  budget: float) -> dict:
    """A warm-up image on a GPU or when compiled (compilation, kernel selection), then images until the
    budget: out MP/s, peak memory."""
    t0 = time.perf_counter()
    if up.on_gpu or up.compiled:
        upscale_image(up, src, camera, device)
    first = time.perf_counter() - t0
    out_px = src.colour.shape[0] * src.colour.shape[1] * up.scale**2
    times, verdict = [], None
    with PeakMemory(device) as mem:
        while not times or (time.perf_counter() - t0 < budget):
            t1 = time.perf_counter()
            _, verdict = upscale_image(up, src, camera, device)
            times.append(time.perf_counter() - t1)
    best = min(times)
    return {"out_mps": out_px / best / 1e6, "s_per_image": best, "first_s": first, "images": len(times),
            "peak_mib": peak_mib(mem, device), "verdict": verdict, "seconds": time.perf_counter() - t0}


def upscale_rows(check: Check, student: LoadedModel, teacher: LoadedModel, src: SourceImage, camera: Camera,
                 compile: bool) -> dict[int, dict]:
    sizes, device = check.sizes, check.device
    t, s = sizes.tile, student.net.config.scale
    label = "bf16, " if device.startswith("cuda") else "fp32, "
    found: dict[int, dict] = {}
    step = "compile" if compile else "student"
    budget = check.budget(step)
    if budget is None:
        return found
    for batch in BATCHES:
        if compile and check.left() < COMPILE_MIN_S:
            check.add("student upscale (compiled)", f"batch {batch}", f"skipped: {check.left():.0f} s of the budget left")
            continue
        tiles = TileSettings(tile=t, overlap=sizes.overlap, batch=batch)
        up = Upscaler(student, steps=1, device=device, tiles=tiles, memory_budget=None, compile=compile)
        try:
            r = time_upscaler(up, src, camera, device, budget / len(BATCHES))
        except Exception as exc:  # a compile failure is a finding, not a crash of the check
            check.add(f"student upscale{' (compiled)' if compile else ''}", f"{label}batch {batch}",
                      f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}", ok=False)
            continue
        found[batch] = r
        extra = f", first image {r['first_s']:.1f} s (compiling)" if compile else ""
        check.add(f"student upscale{' (compiled)' if compile else ''}",
                  f"{label}{t} -> {t * s} px tiles, batch {batch}{', torch.compile' if compile else ''}",
                  f"{r['out_mps']:.3g} out MP/s ({r['s_per_image']:.3f} s per {src.colour.shape[1] * s}x"
                  f"{src.colour.shape[0] * s} image, best of {r['images']}), {r['peak_mib']:.0f} "
                  f"{peak_label(device)}, consistency {r['verdict']}{extra}", r["seconds"])
    if compile or not found:
        return found
    budget = check.budget("teacher")
    if budget is None:
        return found
    batch = BATCHES[-1]
    steps = teacher.schedule.num_steps
    up = Upscaler(teacher, steps=steps, device=device, tiles=TileSettings(tile=t, overlap=sizes.overlap, batch=batch),
                  memory_budget=None)
    r = time_upscaler(up, src, camera, device, budget)
    check.add("teacher upscale", f"{label}{steps} steps, batch {batch}",
              f"{r['out_mps']:.3g} out MP/s ({r['s_per_image']:.3f} s per image), {r['peak_mib']:.0f} "
              f"{peak_label(device)}", r["seconds"])
    if batch in found:
        ratio = r["s_per_image"] / found[batch]["s_per_image"]
        check.add("teacher / student", f"wall time per image, batch {batch}", f"{ratio:.1f}x")
    return found


def consistency_rows(check: Check, student: LoadedModel, src: SourceImage, profile: Profile) -> None:
    """The pass alone, on the CPU and on the device, over the same output bands."""
    budget = check.budget("consistency")
    if budget is None:
        return
    device = check.device
    up = Upscaler(student, steps=1, device=device, memory_budget=None,
                  tiles=TileSettings(tile=check.sizes.tile, overlap=check.sizes.overlap, batch=BATCHES[-1]))
    bands, _ = upscale_image(up, src, None, device)
    devices = ["cpu"] + ([device] if device != "cpu" else ["cpu"])
    for kind in ("G", "bicubic"):
        results = []
        for i, where in enumerate(devices):
            camera = random_camera(profile, where) if kind == "G" else BicubicCamera(profile.scale)
            times, result = [], None
            t1 = time.perf_counter()
            while not times or time.perf_counter() - t1 < budget / 4:
                sync(where)
                t2 = time.perf_counter()
                cp = ConsistencyPass(camera, src.colour, Thresholds(), device=where)
                for rows in bands:
                    cp.feed(rows)
                result = cp.finish()
                sync(where)
                times.append(time.perf_counter() - t2)
            results.append(result)
            ms = 1000 * (min(times[1:]) if len(times) > 1 else times[0])
            same = ""
            if i:
                a, b = results[0], result
                agree = (a.verdict == b.verdict and abs(a.psnr_y - b.psnr_y) < AGREE_PSNR_DB
                         and abs(a.peak - b.peak) < AGREE_PEAK_LEVELS)
                same = (f"; verdict {b.verdict} as on the CPU ({a.verdict}), PSNR-Y {b.psnr_y:.3f} vs {a.psnr_y:.3f} dB"
                        if agree else f"; DIFFERS from the CPU: {b.record()} vs {a.record()}")
            check.add("consistency pass", f"camera {kind}, on {where}" + (" (the device argument)" if i else ""),
                      f"{ms:.1f} ms per {src.colour.shape[1]}x{src.colour.shape[0]} LR image{same}",
                      time.perf_counter() - t1, ok=None if not i else not same.startswith("; DIFFERS"))


def cpu_row(check: Check, student: LoadedModel, src: SourceImage, threads: int) -> None:
    """The same student and image on the CPU with ``threads`` threads."""
    budget = check.budget("cpu")
    if budget is None:
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = LoadedModel(copy.deepcopy(student.net).cpu().float().to(memory_format=torch.contiguous_format),
                            student.schedule, student.info, student.path)
        batch = BATCHES[-1]
        up = Upscaler(model, steps=1, device="cpu", memory_budget=None,
                      tiles=TileSettings(tile=check.sizes.tile, overlap=check.sizes.overlap, batch=1))
        total = up.tile_count(*src.colour.shape[:2])
        done = [0]
        t0 = time.perf_counter()

        def progress(k: int) -> None:
            done[0] += k
            if time.perf_counter() - t0 > budget and done[0] < total:
                raise OutOfTime

        try:
            upscale_image(up, src, BicubicCamera(model.net.config.scale), "cpu", progress)
        except OutOfTime:
            pass
        seconds = time.perf_counter() - t0
        out_px = src.colour.shape[0] * src.colour.shape[1] * up.scale**2 * done[0] / total
        part = "" if done[0] == total else f", estimated from {done[0]} of {total} tiles (budget)"
        check.add("CPU fallback", f"same student and image, fp32, {threads} thread{'s' if threads != 1 else ''}, "
                  f"batch 1 (batch {batch} on the device; one tile per call lets the budget stop it mid-image)",
                  f"{out_px / seconds / 1e6:.3g} out MP/s{part}", seconds)
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- training


class Watch:
    """A trainer report callback: keeps the log rows, stops the run when its budget is spent."""

    def __init__(self, budget: float):
        self.budget, self.t0, self.rows = budget, time.perf_counter(), []

    def __call__(self, row: dict) -> None:
        self.rows.append(dict(row))
        if time.perf_counter() - self.t0 > self.budget and row["step"] < row["total_steps"]:
            raise OutOfTime

    def rates(self) -> tuple[float, float]:
        """Median samples/s and HR MP/s over the log windows after the first (start-up)."""
        rows = self.rows[1:] or self.rows
        return (statistics.median(r["samples_per_s"] for r in rows),
                statistics.median(r["hr_mp_per_s"] for r in rows))

    def finite(self) -> bool:
        return all(math.isfinite(v) for r in self.rows for k, v in r.items()
                   if isinstance(v, float) and k not in ("samples_per_s", "hr_mp_per_s"))


def train_row(check: Check, name: str, run: Callable[[Watch], object], opt, budget_key: str) -> Path | None:
    budget = check.budget(budget_key)
    if budget is None:
        return None
    device = check.device
    watch = Watch(budget)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result, note = None, ""
    with PeakMemory(device) as mem:
        try:
            result = run(watch)
        except OutOfTime:
            note = f"; stopped by its {budget} s budget"
        except TrainingDiverged as exc:
            note = f"; {exc}"
    seconds = time.perf_counter() - watch.t0
    done = watch.rows[-1]["step"] if watch.rows else 0
    precision = opt.mixed_precision if device.startswith("cuda") else "fp32"
    setting = f"{done}/{opt.steps} steps, batch {opt.batch_size} x {opt.patch_size} px, {precision}"
    if not watch.rows:
        check.add(name, setting, f"no log window finished{note}", seconds, ok=False)
        return None
    sps, mps = watch.rates()
    finite = watch.finite() and "non-finite" not in note
    lpips = result.info.get("lpips") if result is not None else None
    check.add(name, setting, f"{sps:.3g} samples/s, {mps:.3g} HR MP/s, {peak_mib(mem, device):.0f} "
              f"{peak_label(device)}, losses finite: {'yes' if finite else 'NO'}"
              + (f", LPIPS loss: {lpips}" if lpips else "") + note, seconds, ok=finite)
    return getattr(result, "model_dir", None)


def save_untrained_teacher(model: LoadedModel, out_dir: Path) -> Path:
    """The untrained teacher as a model folder: what co-learning starts from when the teacher run did not finish."""
    def save(tmp: Path) -> None:
        model.net.save_pretrained(tmp)
        model.schedule.save_config(tmp)

    return save_model_dir(out_dir, save, {"kind": "teacher", "version": out_dir.name})


def ema_weights(model_dir: Path) -> torch.Tensor:
    net = SRUNet.from_pretrained(model_dir)
    return torch.cat([p.detach().float().flatten() for p in net.state_dict().values()])


def resume_row(check: Check, profile: Profile, images: list[np.ndarray], work: Path, straight: Path) -> None:
    """Stop a second teacher run after its half-way save, resume it, compare with the uninterrupted run."""
    budget = check.budget("resume")
    if budget is None:
        return
    opt, device = profile.teacher, check.device
    half = opt.save_every
    run, out = work / "resume-run", work / "resume-teacher"
    t0 = time.perf_counter()
    watch = Watch(budget)
    try:
        train_teacher(profile, images, run, out, report=watch, stop_after=half)
        train_teacher(profile, images, run, out, resume=True, report=watch)
    except OutOfTime:
        check.add("resume check", f"save at step {half}, resume to {opt.steps}",
                  f"not finished within its {budget} s budget", time.perf_counter() - t0, ok=False)
        return
    bf16 = device.startswith("cuda") and opt.mixed_precision != "no"
    tolerance = BF16_TOLERANCE if bf16 else FP32_TOLERANCE
    a, b = ema_weights(straight), ema_weights(out)
    seed_everything(opt.seed)
    start = torch.cat([p.detach().float().flatten() for p in build_teacher(profile)[0].state_dict().values()])
    distance = float((a - b).norm() / a.norm())
    moved = float((a - b).norm() / max(float((a - start).norm()), 1e-12))
    same = distance <= tolerance
    check.add("resume check", f"teacher saved at step {half}, resumed to {opt.steps} (no kill), vs uninterrupted",
              f"{'same' if same else 'DIFFERENT'} weights: relative L2 distance {distance:.2e} (tolerance "
              f"{tolerance:.2e}, {'bf16' if bf16 else 'fp32'}); {moved:.2e} of the distance trained; max abs difference "
              f"{float((a - b).abs().max()):.2e}", time.perf_counter() - t0, ok=same)


# ---------------------------------------------------------------- the environment


def environment_row(check: Check) -> None:
    import accelerate
    import diffusers

    device = check.device
    cuda = torch.version.cuda or "none (CPU build)"
    if device.startswith("cuda"):
        bf16 = "yes" if torch.cuda.is_bf16_supported() else "NO"
        triton = importlib.util.find_spec("triton")
        comp = (f"yes (inductor, triton {__import__('triton').__version__})" if triton and hasattr(torch, "compile")
                else "NO (triton missing)")
    else:
        bf16 = "not used on the CPU (fp32)"
        comp = "yes (inductor, C++ on the CPU)" if hasattr(torch, "compile") else "NO"
    check.add("environment", f"torch {torch.__version__}, CUDA {cuda}, accelerate {accelerate.__version__}, "
              f"diffusers {diffusers.__version__}",
              f"device {device_label(device)}; bf16: {bf16}; torch.compile: {comp}")


# ---------------------------------------------------------------- main


def markdown(rows: list[Row]) -> str:
    lines = ["| step | setting | result | s |", "|---|---|---|---|"]
    for r in rows:
        mark = "" if r.ok is None else (" (pass)" if r.ok else " (**FAIL**)")
        seconds = "" if math.isnan(r.seconds) else f"{r.seconds:.1f}"
        lines.append(f"| {r.step} | {r.setting} | {r.result.replace('|', '/')}{mark} | {seconds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    parser.add_argument("--tiny", action="store_true", help="tiny networks and a few steps: the code path, not speed")
    parser.add_argument("--profile", type=Path, default=REPO / "configs" / "gpu.yaml",
                        help="the training profile (default configs/gpu.yaml; --tiny shrinks its networks)")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="the torch.compile rows: auto runs them on a GPU only (on the CPU a compile takes minutes)")
    parser.add_argument("--cpu-threads", type=int, default=2, help="threads of the CPU fallback row (default 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads of the other rows when --device cpu (default: torch's choice)")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds for the whole check (default {TOTAL_BUDGET_S:g}; --tiny {TINY.total_budget_s:g})")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the runs and models go (default: a temp folder)")
    parser.add_argument("--report", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="markdown file the table is appended to")
    parser.add_argument("--no-report", action="store_true", help="print only; append nothing")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    try:
        return run(args, argv)
    finally:
        torch.set_num_threads(threads)  # the trainer and --threads change it; a caller's process keeps its own


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    device = resolve_device(args.device)
    sizes = TINY if args.tiny else FULL
    if args.budget is not None:
        sizes = Sizes(**{**sizes.__dict__, "total_budget_s": args.budget})
    check = Check(sizes, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    base = Profile.from_yaml(args.profile)
    profile = check_profile(tiny_profile(base) if args.tiny else base, sizes, device)
    compile_rows = args.compile == "on" or (args.compile == "auto" and device.startswith("cuda"))

    environment_row(check)
    student, teacher = random_models(profile, device)
    lr = test_image(sizes)
    src = SourceImage(lr, None, "synthetic", "RGB", "0" * 64)
    camera = random_camera(profile, device)
    print(f"profile {profile.name}: UNet {params_m(student.net):.1f}M parameters; test image {lr.shape[1]}x{lr.shape[0]} "
          f"LR in {TILES_PER_ROW} tiles; budget {sizes.total_budget_s:g} s", file=sys.stderr, flush=True)

    upscale_rows(check, student, teacher, src, camera, compile=False)
    consistency_rows(check, student, src, profile)
    cpu_row(check, student, src, args.cpu_threads)

    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        hr = hr_images(profile.teacher.patch_size)
        field_lr = field_images(hr, profile.scale)
        teacher_dir = train_row(
            check, "teacher training",
            lambda w: train_teacher(profile, hr, work / "teacher-run", work / "teacher", report=w),
            profile.teacher, "train")
        if teacher_dir is not None:
            resume_row(check, profile, hr, work, teacher_dir)
        else:
            check.add("resume check", "skipped", "needs the finished teacher run", ok=False)
        start = teacher_dir or save_untrained_teacher(teacher, work / "untrained-teacher")
        train_row(check, "co-learning" + ("" if teacher_dir else " (from the untrained teacher)"),
                  lambda w: train_colearn(profile, start, hr, field_lr, work / "colearn-run",
                                          work / "student", work / "downsampler", report=w),
                  profile.colearn.train, "colearn")
    torch.set_num_threads(threads)  # the trainer sets its own on the CPU

    if compile_rows:
        upscale_rows(check, student, teacher, src, camera, compile=True)
    else:
        check.add("student upscale (compiled)", "skipped", f"--compile {args.compile} on {device}")

    total = time.perf_counter() - check.started
    failed = [r for r in check.rows if r.ok is False]
    table = markdown(check.rows)
    where = device_label(device)
    title = ("GPU check" + (", tiny networks" if args.tiny else "")
             + ("" if device.startswith("cuda") else ": a CPU dry run of the code path, not GPU figures"))
    print(f"\n{title}, on {where}, profile {profile.name}, {total:.0f} s of the {sizes.total_budget_s:g} s budget\n")
    print(table)
    print(f"\n{len(failed)} check(s) failed" if failed else "\nevery check that ran passed")
    if not args.no_report:
        append_section(args.report, title, [
            f"machine: {machine(device)}; {where}",
            f"profile: {profile.name} (UNet {params_m(student.net):.1f}M parameters, untrained for the speed rows); "
            f"test image {lr.shape[1]}x{lr.shape[0]} LR -> {lr.shape[1] * profile.scale}x{lr.shape[0] * profile.scale}"
            f" in {TILES_PER_ROW} tiles of {sizes.tile} px, {sizes.overlap} px overlap",
            f"peak memory: {peak_label(device)}; {total:.0f} s in all",
            f"command: `{command('gpu_check.py', argv)}`",
        ], table)
        print(f"\nappended to {args.report}")
    if args.json:
        args.json.write_text(json.dumps({"device": where, "profile": profile.name, "seconds": total,
                                         "rows": [r.__dict__ for r in check.rows]}, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
