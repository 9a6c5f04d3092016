"""Ingestion soak: camera uploads arriving while batches are claimed and ingested, with ``kill -9``s.

    .venv/bin/python benchmarks/soak_ingest.py [--n 2000] [--bad 0.05] [--dup 0.03] [--writers 4]
        [--kills 3] [--workers 2] [--rate 200] [--stable 0.3] [--tick 1] [--seed 0] [--keep]

``--writers`` threads drop N small PNG uploads (a share ``--bad`` of them broken, a share ``--dup``
re-uploads of an earlier picture under another name) into ``landing/<camera>/``, each written in
two chunks so a half-written file is there to be seen. The main loop is the sensor without
Dagster: ``poll_landing`` every ``--tick`` seconds claims the stable files into batches, and each batch is
ingested by ``ingest_batch`` in its own worker process (at most ``--workers`` at once, so two
ingestions often share images). ``--kills`` workers are killed with SIGKILL mid-batch and started
again on the same batch, as a run retry would. At the end every upload must be in the catalog
exactly once (by its original name), ``files in = accepted + duplicate + quarantined``, each
distinct good picture accepted once, and ``sr-pipeline doctor`` must find no unfinished batch.
Everything lives in a temporary data root. Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

REGISTRY = "cameras:\n  ref_cam:\n    role: hr_reference\n  field_cam:\n    role: field_lr\n    scale: 4\n"
CAMERAS = ("ref_cam", "field_cam")
READY_ENV = "SOAK_WORKER_READY_FILE"


def _png(rng: np.random.Generator, size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def plan_uploads(n: int, bad: float, dup: float, size: int, seed: int) -> tuple[list[tuple[str, bytes, str]], int]:
    """``[(landing relpath, bytes, kind)]`` with kind good/dup/bad, and the number of distinct good pictures."""
    rng, pick = np.random.default_rng(seed), random.Random(seed)
    uploads, goods = [], []
    for i in range(n):
        camera = CAMERAS[i % 2]
        roll = pick.random()
        if roll < bad:
            data = pick.choice([b"", b"not an image at all\n" * 8, _png(rng, size)[:200]])
            uploads.append((f"{camera}/bad {i:05d}.png", data, "bad"))
        elif roll < bad + dup and goods:
            uploads.append((f"{camera}/again {i:05d}.png", pick.choice(goods), "dup"))
        else:
            goods.append(_png(rng, size))
            uploads.append((f"{camera}/shot {i:05d}.png", goods[-1], "good"))
    return uploads, len(goods)


def writer(landing: Path, uploads: list[tuple[str, bytes, str]], delay_s: float) -> None:
    for rel, data, _ in uploads:
        path = landing / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:  # in place and in two chunks: the sensor must wait for it
            fh.write(data[: len(data) // 2])
            fh.flush()
            time.sleep(delay_s / 2)
            fh.write(data[len(data) // 2 :])
        time.sleep(delay_s / 2)


def worker_main(root: str, cameras_file: str, batch: str, durable: bool) -> None:
    from sr_pipeline.intake.cameras import load_registry
    from sr_pipeline.intake.ingest import ingest_batch
    from sr_pipeline.storage.layout import DataLayout

    Path(os.environ[READY_ENV]).touch()  # imports done: a kill from now on hits the ingestion itself
    ingest_batch(DataLayout(Path(root)), load_registry(cameras_file), batch, workers=1, durable=durable)


class Workers:
    """Ingestion worker processes, one per batch, at most ``limit`` at once; some get SIGKILL."""

    def __init__(self, root: Path, cameras_file: Path, limit: int, kills: int, durable: bool, seed: int):
        self.root, self.cameras_file, self.limit, self.durable = root, cameras_file, limit, durable
        self.queue: list[str] = []
        self.running: dict[str, tuple[subprocess.Popen, Path]] = {}
        self.kills_left, self.restarts, self.failures = kills, 0, []
        self.rng = random.Random(seed)
        self.kill_after = self.rng.uniform(0.0, 0.3)
        self.ready_dir = Path(tempfile.mkdtemp(prefix="soak_ready_"))

    def submit(self, batch: str) -> None:
        if batch not in self.queue and batch not in self.running:
            self.queue.append(batch)

    def _start(self, batch: str) -> None:
        cmd = [sys.executable, __file__, "--worker", str(self.root), str(self.cameras_file), batch]
        if not self.durable:
            cmd.append("--no-fsync")
        ready = self.ready_dir / f"{batch}.{time.monotonic_ns()}"
        self.running[batch] = (subprocess.Popen(cmd, env={**os.environ, READY_ENV: str(ready)}), ready)

    def step(self) -> None:
        now = time.time()
        for batch, (proc, ready) in list(self.running.items()):
            code = proc.poll()
            if code is None:
                # Kill a worker a random moment after its imports, while it ingests its batch.
                if self.kills_left and ready.exists() and now - ready.stat().st_mtime > self.kill_after:
                    proc.kill()
                    proc.wait()
                    self.kills_left -= 1
                    self.restarts += 1
                    self.kill_after = self.rng.uniform(0.0, 0.3)
                    del self.running[batch]
                    self.queue.insert(0, batch)  # the retry, on the same batch
                continue
            del self.running[batch]
            if code != 0:
                self.failures.append((batch, code))
        while self.queue and len(self.running) < self.limit:
            self._start(self.queue.pop(0))

    @property
    def idle(self) -> bool:
        return not self.queue and not self.running


def check(layout, uploads: list[tuple[str, bytes, str]], distinct_good: int) -> list[str]:
    from sr_pipeline.intake import doctor
    from sr_pipeline.storage import store

    df = store.read_catalog(layout)
    errors = []
    written = Counter(rel for rel, _, _ in uploads)
    seen = Counter(f"{c}/{o}" for c, o in zip(df["camera"], df["original_name"]))
    lost = sorted(set(written) - set(seen))
    twice = sorted(k for k, v in seen.items() if v > 1)
    stray = sorted(set(seen) - set(written))
    counts = df["outcome"].value_counts().to_dict()
    accepted, duplicate, quarantined = (counts.get(k, 0) for k in (store.ACCEPTED, store.DUPLICATE, store.QUARANTINED))
    bad = sum(1 for _, _, kind in uploads if kind == "bad")
    if lost:
        errors.append(f"{len(lost)} upload(s) lost, e.g. {lost[:3]}")
    if twice:
        errors.append(f"{len(twice)} upload(s) counted twice, e.g. {twice[:3]}")
    if stray:
        errors.append(f"{len(stray)} catalog row(s) of no upload, e.g. {stray[:3]}")
    if accepted + duplicate + quarantined != len(uploads):
        errors.append(f"files in {len(uploads)} != accepted {accepted} + duplicate {duplicate} + quarantined {quarantined}")
    if (accepted, quarantined) != (distinct_good, bad):
        errors.append(f"accepted {accepted} (want {distinct_good} distinct pictures), quarantined {quarantined} (want {bad})")
    if len(store.list_images(layout)) != accepted or df[df["outcome"] == store.ACCEPTED]["image_id"].nunique() != accepted:
        errors.append("an image is accepted by more than one row")
    stored = sum(1 for p in layout.image_store.rglob("*.png") if not p.name.startswith("."))
    if stored != accepted:
        errors.append(f"{stored} images in the store, {accepted} accepted")
    unfinished = doctor.examine(layout).unfinished
    if unfinished:
        errors.append(f"unfinished batches: {[b.batch for b in unfinished]}")
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="uploads (default 2000)")
    parser.add_argument("--bad", type=float, default=0.05, help="share of broken uploads (default 0.05)")
    parser.add_argument("--dup", type=float, default=0.03, help="share of re-uploads of an earlier picture (default 0.03)")
    parser.add_argument("--writers", type=int, default=4, help="writer threads (default 4)")
    parser.add_argument("--kills", type=int, default=3, help="ingestion workers killed with SIGKILL (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="ingestion processes at once (default 2)")
    parser.add_argument("--rate", type=float, default=200.0, help="uploads per second, all writers together (default 200)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--stable", type=float, default=0.3, help="seconds a file must stay unchanged (default 0.3)")
    parser.add_argument("--tick", type=float, default=1.0, help="seconds between sensor polls (default 1)")
    parser.add_argument("--max-batch", type=int, default=200, help="files per batch at most (default 200)")
    parser.add_argument("--no-fsync", action="store_true", help="skip fsync of stored images and catalogs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data root and print it")
    parser.add_argument("--worker", nargs=3, metavar=("ROOT", "CAMERAS", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(*args.worker, durable=not args.no_fsync)
        return 0

    from sr_pipeline.intake.cameras import load_registry
    from sr_pipeline.intake.uploads import poll_landing
    from sr_pipeline.storage.layout import DataLayout

    tmp = Path(tempfile.mkdtemp(prefix="soak_ingest_"))
    layout = DataLayout(tmp / "data")
    cameras_file = tmp / "cameras.yaml"
    cameras_file.write_text(REGISTRY)
    registry = load_registry(cameras_file)
    uploads, distinct_good = plan_uploads(args.n, args.bad, args.dup, args.size, args.seed)
    delay = args.writers / args.rate
    threads = [threading.Thread(target=writer, args=(layout.landing, uploads[k :: args.writers], delay)) for k in range(args.writers)]
    workers = Workers(layout.root, cameras_file, args.workers, args.kills, not args.no_fsync, args.seed)

    start = time.monotonic()
    for t in threads:
        t.start()
    state, batches, ticks, next_poll = {}, set(), 0, 0.0
    while True:
        writing = any(t.is_alive() for t in threads)
        if time.monotonic() >= next_poll:
            next_poll = time.monotonic() + args.tick
            result = poll_landing(layout, registry, state, now=time.time(), stable_seconds=args.stable,
                                  max_files_per_batch=args.max_batch, recover_after_s=5.0)  # fmt: skip
            state, ticks = result.state, ticks + 1
            for batch in result.batches:
                batches.add(batch.batch_key)
                workers.submit(batch.batch_key)
        workers.step()
        landing_left = any(p.is_file() for p in layout.landing.rglob("*")) if layout.landing.is_dir() else False
        if not writing and not landing_left and workers.idle:
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - start

    errors = check(layout, uploads, distinct_good)
    errors += [f"worker of {b} exited with {code}" for b, code in workers.failures]
    print(f"uploads {args.n} ({sum(k == 'bad' for *_, k in uploads)} bad, {sum(k == 'dup' for *_, k in uploads)} re-uploads), "
          f"{args.writers} writers, {len(batches)} batches, {ticks} sensor ticks, {args.workers} ingestion processes")  # fmt: skip
    print(f"time {elapsed:.1f} s, {args.n / elapsed:.1f} files/s end to end (writers at {args.rate:g}/s), "
          f"restarts after kill -9: {workers.restarts}")  # fmt: skip
    print("checks: " + ("all passed: zero lost, zero counted twice" if not errors else "FAILED"))
    for error in errors:
        print(f"  {error}")
    if args.keep:
        print(f"data root kept: {layout.root}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
