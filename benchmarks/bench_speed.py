"""Upscaling speed on one device: the student (1 step), the teacher (T steps), bicubic and peer networks.

    python benchmarks/bench_speed.py                       # CPU, 64x64 -> 256x256 tiles, cpu-demo models
    python benchmarks/bench_speed.py --threads 2 --memory-check          # + the 4000x3000 memory check
    python benchmarks/bench_speed.py --device cuda --profile configs/gpu.yaml --lr-size 256 --batch 8
    python benchmarks/bench_speed.py --student data/models/student/<v> --teacher data/models/teacher/<v>

Every method maps the same batch of LR tiles to HR tiles on the same device. The student and the
teacher run through ``Upscaler.run_tiles`` (up(y), the sampler, bf16 autocast and channels-last on
a GPU); without ``--student``/``--teacher`` both are random networks built from ``--profile`` (the
student has the teacher's architecture, so speed does not depend on the weights). The peers are
Real-ESRGAN's RRDBNet x4plus (23 RRDB blocks) and its compact SRVGG net (realesr-general-x4v3:
64 features, 32 convolutions; ``--compact-convs 16`` for the animevideo variant), built by the
``spandrel`` library with random weights: speed only.

Methods are timed in interleaved rounds after a warm-up call each, and each method's best round
counts. Prints ms per image (one tile), output megapixels per second, the peak memory of one call
(CPU: peak RSS above the call's start, from /proc/self/status, measured after the timing with glibc
handing freed blocks back to the OS; GPU: torch's peak allocation) and each method's time relative
to the student, then the issue's targets. ``--memory-check`` then upscales a synthetic 4000x3000 LR
image (16000x12000 output) with the student through the tiled, streaming path into a PNG, and prints its peak memory against the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sr_pipeline.sr.models.checkpoints import LoadedModel, load_sr_model
from sr_pipeline.sr.train.profile import Profile
from sr_pipeline.sr.serve.upscaler import DEFAULT_MEMORY_BUDGET, TileSettings, Upscaler
from sr_pipeline.sr.train.stages.teacher import build_teacher

from report_md import append_section, command, machine  # benchmarks/report_md.py (the script's folder)

REPO = Path(__file__).resolve().parents[1]
CPU_STUDENT_MPS = 1.0  # issue 6: the demo student on 2 CPU cores, 64x64 -> 256x256
GPU_STUDENT_MPS = 300.0  # issue 6: the gpu-profile student on one H200, bf16, 256 -> 1024, batch 8
TEACHER_RATIO = 13.0  # teacher (15 steps) / student (1 step) wall time


@dataclass
class Row:
    method: str
    steps: int
    params_m: float
    ms_per_image: float
    out_mps: float
    peak_mib: float
    vs_student: float = float("nan")


# ---------------------------------------------------------------- memory


def _proc_status() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, value = line.split(":", 1)
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def track_freed_memory() -> None:
    """Make glibc hand every large block back to the OS on free, so RSS follows live memory.

    Without it freed tensors stay in the heap and the next ones reuse them unseen. Called after
    the timing rounds: mmap-backed allocations would slow the timed calls down.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: blocks above 64 KiB are mmap-backed
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of a block: GPU peak allocation, or CPU peak RSS above the block's start."""

    def __init__(self, device: str):
        self.device = device
        self.peak = float("nan")
        self.absolute = float("nan")

    def __enter__(self) -> "PeakMemory":
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # VmHWM := VmRSS
            except OSError:
                pass
            self.base = _proc_status().get("VmRSS", 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.absolute = torch.cuda.max_memory_allocated()
        else:
            self.absolute = _proc_status().get("VmHWM", float("nan"))
        self.peak = self.absolute - self.base


# ---------------------------------------------------------------- methods


def _random_models(profile_path: Path, device: str) -> tuple[LoadedModel, LoadedModel]:
    profile = Profile.from_yaml(profile_path)
    net, schedule = build_teacher(profile)
    net = net.to(device).eval().requires_grad_(False)
    info = {"version": f"random-{profile.name}"}
    teacher = LoadedModel(net=net, schedule=schedule, info={**info, "kind": "teacher"}, path=profile_path)
    student = LoadedModel(net=net, schedule=schedule, info={**info, "kind": "student"}, path=profile_path)
    return student, teacher


def _peer(name: str, device: str, compact_convs: int) -> tuple[torch.nn.Module, str]:
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    if name == "rrdb":
        net, label = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4), "RRDBNet x4plus (spandrel)"
    else:
        net = Compact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=compact_convs, upscale=4, act_type="prelu")
        label = f"SRVGG compact {compact_convs} conv (spandrel)"
    net = net.to(device).eval().requires_grad_(False)
    if device.startswith("cuda"):
        net = net.to(memory_format=torch.channels_last)
    return net, label


def _peer_call(net: torch.nn.Module, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    gpu = device.startswith("cuda")

    @torch.inference_mode()
    def run(lr: torch.Tensor) -> torch.Tensor:
        x = lr.add(1).mul(0.5)  # Real-ESRGAN works in [0, 1]
        if gpu:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=gpu):
            return net(x).float()

    return run


@torch.inference_mode()
def _bicubic(lr: torch.Tensor) -> torch.Tensor:
    return F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)


def _params(module: torch.nn.Module | None) -> float:
    return 0.0 if module is None else sum(p.numel() for p in module.parameters()) / 1e6


def time_call(fn: Callable[[torch.Tensor], torch.Tensor], lr: torch.Tensor, device: str, seconds: float,
              min_iters: int) -> float:
    """Seconds per call of calls repeated for >= ``seconds``."""
    gpu = device.startswith("cuda")
    iters, start = 0, time.perf_counter()
    while iters < min_iters or time.perf_counter() - start < seconds:
        fn(lr)
        if gpu:
            torch.cuda.synchronize()
        iters += 1
    return (time.perf_counter() - start) / iters


def time_methods(methods: list, lr: torch.Tensor, device: str, seconds: float, min_iters: int,
                 rounds: int) -> list[float]:
    """Per method the best seconds per call over the rounds.

    One warm-up call each (oneDNN primitives, cuDNN algorithms, compilation), then ``rounds``
    interleaved rounds; the best round is kept, so a busy machine disturbs the figures less.
    """
    for _, _, _, fn in methods:
        fn(lr)
    best = [float("inf")] * len(methods)
    for _ in range(rounds):
        for i, (label, _, _, fn) in enumerate(methods):
            per_call = time_call(fn, lr, device, seconds / rounds, min_iters)
            best[i] = min(best[i], per_call)
            print(f"  {label}: {per_call * 1000:.1f} ms per call", file=sys.stderr)
    return best


def peak_memory(fn: Callable[[torch.Tensor], torch.Tensor], lr: torch.Tensor, device: str) -> tuple[float, tuple]:
    """(peak bytes above the start, output shape) of one call."""
    with PeakMemory(device) as mem:
        out = fn(lr)
    return mem.peak, tuple(out.shape)


# ---------------------------------------------------------------- the 4000x3000 check


def memory_check(model: LoadedModel, device: str, size: tuple[int, int], budget: int, tile: int, batch: int) -> dict:
    """Upscale a synthetic LR image of ``size`` (w, h) into a PNG through the streaming path."""
    from sr_pipeline.serving.upscale import write_upscaled_png
    from sr_pipeline.sr.images.decode import SourceImage
    from sr_pipeline.sr.serve.upscaler import provenance_text

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    colour = np.stack([np.sin(xx / (9 + c)) * 60 + np.cos(yy / 13) * 50 + 128 for c in range(3)], -1)
    colour = colour.astype(np.uint8)
    del yy, xx
    src = SourceImage(colour, None, "synthetic", "RGB", "0" * 64)
    up = Upscaler(model, steps=1, device=device, tiles=TileSettings(tile=tile, overlap=16, batch=batch),
                  memory_budget=budget)
    plan = up.plan(h, w, 3, 1)
    with tempfile.TemporaryDirectory(dir=REPO / "benchmarks") as tmp:
        target = Path(tmp) / "check_x4.png"
        t0 = time.perf_counter()
        with PeakMemory(device if device.startswith("cuda") else "cpu") as mem:
            write_upscaled_png(up, src, target, provenance_text(up, src, "synthetic"), compress_level=1)
        seconds = time.perf_counter() - t0
        png_mib = target.stat().st_size / 2**20
    return {"lr": f"{w}x{h}", "hr": f"{w * up.scale}x{h * up.scale}", "seconds": round(seconds, 1),
            "out_mps": round(w * h * up.scale**2 / seconds / 1e6, 3),
            "peak_mib": round(mem.peak / 2**20), "process_peak_mib": round(mem.absolute / 2**20),
            "estimate_mib": round(plan.total / 2**20), "budget_mib": round(budget / 2**20), "batch": plan.batch,
            "within_budget": bool(mem.peak <= budget), "png_mib": round(png_mib, 1),
            "hr_uint8_mib": round(w * h * up.scale**2 * 3 / 2**20)}


# ---------------------------------------------------------------- main


def _markdown(rows: list[Row], ratio: float, steps: int, student: Row, target: float, check: dict | None) -> str:
    lines = ["| method | steps | params M | ms/image | out MP/s | peak MiB | x student |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.method} | {r.steps} | {r.params_m:.2f} | {r.ms_per_image:.2f} | {r.out_mps:.3f} | "
              f"{r.peak_mib:.1f} | {r.vs_student:.2f} |" for r in rows]
    lines += ["", f"Student {student.out_mps:.3f} output MP/s (target >= {target:g}); teacher ({steps} steps) / "
              f"student wall time {ratio:.1f}x."]
    if check:
        lines.append(f"Memory check: {check['lr']} LR -> {check['hr']} PNG in {check['seconds']} s, peak "
                     f"{check['peak_mib']} MiB above the start (estimate {check['estimate_mib']} MiB, budget "
                     f"{check['budget_mib']} MiB).")
    return "\n".join(lines)



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--profile", type=Path, default=REPO / "configs" / "cpu-demo.yaml",
                        help="profile of the random student/teacher when no folders are given")
    parser.add_argument("--student", type=Path, default=None, help="student folder (default: random from --profile)")
    parser.add_argument("--teacher", type=Path, default=None, help="teacher folder (default: random from --profile)")
    parser.add_argument("--steps", type=int, default=None, help="teacher sampler steps (default: its T)")
    parser.add_argument("--lr-size", type=int, default=64, help="LR tile side (output is 4x)")
    parser.add_argument("--batch", type=int, default=1, help="tiles per call")
    parser.add_argument("--seconds", type=float, default=8.0, help="timing per method, split over the rounds")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds; the best one counts")
    parser.add_argument("--min-iters", type=int, default=2, help="calls per method and round at least")
    parser.add_argument("--peers", default="compact,rrdb", help="spandrel peers: compact, rrdb (comma list, or none)")
    parser.add_argument("--compact-convs", type=int, default=32,
                        help="SRVGG body convolutions (32: realesr-general-x4v3, 16: animevideov3)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the student and teacher")
    parser.add_argument("--memory-check", action="store_true", help="also upscale a 4000x3000 LR image, streaming")
    parser.add_argument("--memory-size", default="4000x3000", help="LR WxH of the memory check")
    parser.add_argument("--memory-budget", type=float, default=DEFAULT_MEMORY_BUDGET / 2**30, help="GiB")
    parser.add_argument("--memory-tile", type=int, default=128)
    parser.add_argument("--memory-batch", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--report", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="markdown file the table is appended to")
    parser.add_argument("--no-report", action="store_true", help="print only; append nothing")
    args = parser.parse_args(argv)

    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.student is None or args.teacher is None:
        student_model, teacher_model = _random_models(args.profile, device)
    if args.student is not None:
        student_model = load_sr_model(args.student, device)
    if args.teacher is not None:
        teacher_model = load_sr_model(args.teacher, device)
    steps = args.steps or teacher_model.schedule.num_steps
    tiles = TileSettings(tile=args.lr_size, overlap=0, batch=args.batch)
    student = Upscaler(student_model, steps=1, device=device, tiles=tiles, compile=args.compile, memory_budget=None)
    teacher = Upscaler(teacher_model, steps=steps, device=device, tiles=tiles, compile=args.compile, memory_budget=None)

    gen = torch.Generator().manual_seed(0)
    lr = (torch.rand(args.batch, 3, args.lr_size, args.lr_size, generator=gen) * 2 - 1).to(device)
    methods: list[tuple[str, int, torch.nn.Module | None, Callable]] = [
        ("bicubic", 0, None, _bicubic),
        (f"student ({student_model.info.get('version')})", 1, student_model.net, student.run_tiles),
        (f"teacher ({teacher_model.info.get('version')})", steps, teacher_model.net, teacher.run_tiles),
    ]
    peers = [p.strip() for p in args.peers.split(",") if p.strip() and p.strip() != "none"]
    peer_note = None
    try:
        for name in peers:
            net, label = _peer(name, device, args.compact_convs)
            methods.append((label, 1, net, _peer_call(net, device)))
    except ImportError as exc:
        peer_note = f"peers skipped: spandrel is not installed ({exc}); pip install spandrel"

    rows: list[Row] = []
    timings = time_methods(methods, lr, device, args.seconds, args.min_iters, args.rounds)
    if device == "cpu":
        track_freed_memory()
        for _, _, _, fn in methods:  # allocations the new malloc setting makes once
            fn(lr)
    for (label, n_steps, net, fn), per_call in zip(methods, timings):
        peak, shape = peak_memory(fn, lr, device)
        out_px = shape[0] * shape[-1] * shape[-2]
        rows.append(Row(label, n_steps, round(_params(net), 2), round(per_call / args.batch * 1000, 2),
                        round(out_px / per_call / 1e6, 3), round(peak / 2**20, 1)))
    student_row, teacher_row = rows[1], rows[2]
    for r in rows:
        r.vs_student = round(r.ms_per_image / student_row.ms_per_image, 2)

    threads = torch.get_num_threads() if device == "cpu" else None
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {threads} threads ({os.cpu_count()} cores)"
    print(f"\n{args.lr_size}x{args.lr_size} -> {4 * args.lr_size}x{4 * args.lr_size}, batch {args.batch}, on {where}"
          + (", bf16 autocast + channels-last" if device == "cuda" else "") + (", compiled" if args.compile else ""))
    print(f"{'method':<44} {'steps':>5} {'params M':>9} {'ms/image':>10} {'out MP/s':>9} {'peak MiB':>9} "
          f"{'x student':>9}")
    for r in rows:
        print(f"{r.method:<44} {r.steps:>5} {r.params_m:>9.2f} {r.ms_per_image:>10.2f} {r.out_mps:>9.3f} "
              f"{r.peak_mib:>9.1f} {r.vs_student:>9.2f}")
    if peer_note:
        print(peer_note)
    ratio = teacher_row.ms_per_image / student_row.ms_per_image
    target = GPU_STUDENT_MPS if device == "cuda" else CPU_STUDENT_MPS
    print(f"\nstudent: {student_row.out_mps:.3f} output MP/s (target >= {target:g}: "
          f"{'met' if student_row.out_mps >= target else 'NOT met'})")
    verdict = ("met" if ratio >= TEACHER_RATIO else "NOT met") if steps == 15 else "it is set for 15 steps"
    print(f"teacher ({steps} steps) / student (1 step) wall time: {ratio:.1f}x (target >= {TEACHER_RATIO:g} at "
          f"15 steps: {verdict})")

    check = None
    if args.memory_check:
        w, h = (int(v) for v in args.memory_size.lower().split("x"))
        check = memory_check(student_model, device, (w, h), int(args.memory_budget * 2**30), args.memory_tile,
                             args.memory_batch)
        print(f"\nmemory check: {check['lr']} LR -> {check['hr']} PNG ({check['hr_uint8_mib']} MiB as uint8, "
              f"{check['png_mib']} MiB PNG) in {check['seconds']} s ({check['out_mps']} MP/s): peak "
              f"{check['peak_mib']} MiB above the start (process {check['process_peak_mib']} MiB), estimate "
              f"{check['estimate_mib']} MiB, budget {check['budget_mib']} MiB (batch {check['batch']}): "
              f"{'within' if check['within_budget'] else 'OVER'} budget")
    if not args.no_report:
        append_section(args.report, "speed", [
            f"machine: {machine(device)}; {where}",
            f"input: {args.lr_size}x{args.lr_size} LR -> {4 * args.lr_size}x{4 * args.lr_size}, batch {args.batch}"
            + (", compiled" if args.compile else ""),
            f"command: `{command('bench_speed.py', argv)}`",
        ], _markdown(rows, ratio, steps, student_row, target, check))
        print(f"\nappended to {args.report}")
    if args.json:
        args.json.write_text(json.dumps({"device": where, "lr_size": args.lr_size, "batch": args.batch,
                                         "rows": [asdict(r) for r in rows], "teacher_over_student": ratio,
                                         "memory_check": check}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
