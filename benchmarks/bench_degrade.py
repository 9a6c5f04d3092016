"""How fast the synthetic degradation makes teacher training pairs: single process and through a DataLoader.

    python benchmarks/bench_degrade.py [--seconds 5] [--threads 1]

Prints pairs/s of ``degrade`` for HR crops of 64, 128 and 256 px (default Real-ESRGAN-like
ranges), then the samples/s of ``make_loader`` with 0 and 2 workers. A DataLoader worker runs
torch on one thread, so the single-process figures default to one thread too.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from sr_pipeline.sr.data.datasets import make_loader
from sr_pipeline.sr.data.degrade import DegradationConfig, degrade


def synthetic_photos(n: int = 6, size: int = 512, seed: int = 0) -> list[np.ndarray]:
    """Photo-like uint8 images: gradients, edges and fine texture (speed does not depend on content)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        f = rng.uniform(2, 30, 3)
        img = 0.5 + 0.3 * np.sin(2 * np.pi * (f[0] * xx + f[1] * yy))[..., None] * rng.uniform(0.3, 1, 3)
        img += 0.2 * ((xx * f[2]).astype(int) % 2)[..., None] + 0.05 * rng.standard_normal((size, size, 3))
        out.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return out


def pairs_per_second(patch: int, seconds: float, cfg: DegradationConfig) -> float:
    photo = synthetic_photos(1, max(patch, 64))[0].astype(np.float32) / 255
    hr = np.ascontiguousarray(photo[:patch, :patch])
    degrade(hr, cfg, np.random.default_rng(0))  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        degrade(hr, cfg, np.random.default_rng(n))
        n += 1
    return n / (time.perf_counter() - start)


def loader_samples_per_second(patch: int, batch: int, workers: int, seconds: float,
                              cfg: DegradationConfig) -> float:
    it = iter(make_loader(synthetic_photos(), patch, batch, cfg, seed=0, workers=workers))
    next(it)  # worker start-up is not throughput
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += next(it)["hr"].shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per figure")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the single-process runs")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    cfg = DegradationConfig()
    torch.set_num_threads(args.threads)
    print(f"CPU cores: {os.cpu_count()}, torch threads (single process): {args.threads}, default degradation")
    print(f"{'HR crop':>8} {'pairs/s':>9} {'ms/pair':>8}")
    for patch in (64, 128, 256):
        rate = pairs_per_second(patch, args.seconds, cfg)
        print(f"{patch:>6}px {rate:>9.1f} {1000 / rate:>8.2f}")
    print(f"\nDataLoader (batch {args.batch}), samples/s")
    print(f"{'HR crop':>8} {'0 workers':>10} {'2 workers':>10}")
    for patch in (64, 256):
        rates = [loader_samples_per_second(patch, args.batch, w, args.seconds, cfg) for w in (0, 2)]
        print(f"{patch:>6}px {rates[0]:>10.1f} {rates[1]:>10.1f}")


if __name__ == "__main__":
    main()
