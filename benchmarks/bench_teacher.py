"""Is the teacher worth distilling? Its sampler at several step counts, deterministic and
stochastic, against its own single step, on real pairs.

For each step count N the teacher samples from x_T = up(y) + kappa sqrt(eta_T) eps:
- ``deterministic, eps = 0``: the path the student is distilled on and what is served;
- ``deterministic, eps ~ N(0, I)``: SinSR's map F(x_T, y) from random start noise;
- ``stochastic``: ResShift's ancestral sampler (fresh noise at every step).
Random draws are seeded per image, so a rerun gives the same figures. Prints one table and appends it
to docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_teacher.py ../shared/datasets --teacher MODELS/teacher/<version>
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sr_pipeline.sr.models.checkpoints import load_sr_model
from sr_pipeline.sr.images.tensors import to_tensor, to_uint8, upsample
from sr_pipeline.sr.judge.lpips_weights import load_lpips
from sr_pipeline.sr.data.pairs import find_pairs
from sr_pipeline.sr.judge.scoring import score_pairs

from report_md import append_section, command, machine  # benchmarks/report_md.py (the script's folder)

MODES = ("deterministic, eps = 0", "deterministic, eps ~ N(0, I)", "stochastic")


def sampler(model, steps: int, mode: str):
    """An upscaler (uint8 LR -> uint8 HR) running the teacher's sampler in one of ``MODES``."""
    schedule, net, scale = model.schedule, model.net, model.net.config.scale

    def run(lr: np.ndarray) -> np.ndarray:
        gen = torch.Generator().manual_seed(int(lr.sum()) % 2**31)  # per image, reproducible
        up_y = upsample(to_tensor(lr), scale)
        eps = torch.zeros_like(up_y) if mode == MODES[0] else torch.randn(up_y.shape, generator=gen)
        with torch.inference_mode():
            x0 = schedule.sample(net, up_y, eps, num_inference_steps=steps,
                                 deterministic=mode != "stochastic", generator=gen)
        return to_uint8(x0)

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", type=Path, help="folder holding realsr_x4")
    ap.add_argument("--teacher", type=Path, required=True, help="trained teacher folder")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 4, 15], help="sampler step counts")
    ap.add_argument("--split", choices=["even", "odd"], default="even", help="RealSR pairs to score")
    ap.add_argument("--limit", type=int, default=None,
                    help="score only every k-th pair so that at most this many remain (the 15-step samplers "
                         "take seconds per image on a CPU)")
    ap.add_argument("--report", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args(argv)
    model = load_sr_model(args.teacher)
    if max(args.steps) > model.schedule.num_steps:
        ap.error(f"the teacher has T = {model.schedule.num_steps} steps")
    pairs = find_pairs(args.datasets / "realsr_x4", args.split)
    if args.limit and len(pairs) > args.limit:
        pairs = pairs[:: -(-len(pairs) // args.limit)]  # evenly spread, both cameras
    methods = {f"{n} step{'s' * (n > 1)}, {mode}": sampler(model, n, mode)
               for n in args.steps for mode in MODES if not (n == 1 and mode == "stochastic")}
    started = time.perf_counter()
    scores = score_pairs(pairs, methods, model.net.config.scale, lpips=load_lpips(), split=args.split)
    lines = ["| teacher sampler | PSNR-Y | SSIM-Y | LPIPS | HF energy / HR | ms/image |", "|---|---|---|---|---|---|"]
    for name, m in scores.summary["methods"].items():
        lines.append(f"| {name} | {m['psnr_y']:.3f} | {m['ssim_y']:.4f} | {m['lpips']:.4f} | {m['hf_ratio']:.2f}x | "
                     f"{m['ms_per_image']:.0f} |")
    table = "\n".join(lines)
    print(table)
    append_section(args.report, "the teacher's sampler against its own single step", [
        f"machine: {machine('cpu')}",
        f"teacher: {args.teacher} (T = {model.schedule.num_steps}, kappa {model.schedule.kappa})",
        f"pairs: {len(pairs)} of RealSR's {args.split} pairs ({', '.join(p.name for p in pairs)})",
        f"command: `{command('bench_teacher.py', argv)}`",
        f"total time: {time.perf_counter() - started:.0f} s",
    ], table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
