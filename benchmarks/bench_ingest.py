"""Ingestion throughput: N 512x512 PNG uploads through ``ingest_batch`` (target >= 40 images/s on 2 cores).

    .venv/bin/python benchmarks/bench_ingest.py [--n 200] [--size 512] [--format png|jpeg] [--workers W] [--no-fsync]

Plain 8-bit RGB PNG uploads are stored without re-encoding (their pixel stream is kept); other
uploads (``--format jpeg``) are encoded to PNG, which costs about 30 ms per 512x512 image.

The uploads are photo-like (smooth gradients, edges and sensor noise, different per image), so
PNG decoding and encoding cost what they cost on camera images; pure noise would be slower and
flat images faster than anything real. Everything lives in a temporary data root.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from sr_pipeline.common.cameras import CameraRegistry
from sr_pipeline.intake.ingest import ingest_batch
from sr_pipeline.storage.layout import DataLayout


def photo_like(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 8), rng.uniform(1, 8), rng.uniform(0, 6)
        channels.append(90 * np.sin(2 * np.pi * (fx * x + fy * y) + phase) + 60 * (x > rng.uniform(0.2, 0.8)))
    image = np.stack(channels, axis=-1) + 100 + rng.normal(0, 4, (size, size, 3)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_uploads(layout: DataLayout, batch: str, n: int, size: int, fmt: str = "png", seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    folder = layout.incoming / batch / "bench_cam"
    folder.mkdir(parents=True)
    total = 0
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(photo_like(size, rng)).save(buf, format=fmt.upper(), **({"quality": 90} if fmt == "jpeg" else {}))
        (folder / f"upload_{i:04d}.{fmt}").write_bytes(buf.getvalue())
        total += buf.tell()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--format", choices=["png", "jpeg"], default="png", help="upload format (default png)")
    parser.add_argument("--workers", type=int, default=None, help="threads (default: ingest_batch's default)")
    parser.add_argument("--no-fsync", action="store_true", help="skip fsync of stored images and catalogs")
    args = parser.parse_args()

    registry = CameraRegistry.model_validate({"cameras": {"bench_cam": {"role": "hr_reference"}}})
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        layout = DataLayout(Path(tmp))
        nbytes = make_uploads(layout, "bench", args.n, args.size, args.format)
        start = time.perf_counter()
        summary = ingest_batch(layout, registry, "bench", workers=args.workers, durable=not args.no_fsync)
        elapsed = time.perf_counter() - start
        assert summary.accepted == args.n, summary.to_dict()
        stored = sum(p.stat().st_size for p in layout.image_store.rglob("*.png"))
    print(f"cpus: {os.cpu_count()}  uploads: {args.n} x {args.size}x{args.size} {args.format.upper()} ({nbytes / 2**20:.1f} MiB)  "
          f"stored: {stored / 2**20:.1f} MiB  fsync: {not args.no_fsync}")
    print(f"ingest_batch: {elapsed:.2f} s  ->  {args.n / elapsed:.1f} images/s  (target >= 40)")


if __name__ == "__main__":
    main()
