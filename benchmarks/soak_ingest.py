"""Ingestion soak: camera uploads arriving while batches are claimed and ingested, with ``kill -9``s.

    .venv/bin/python benchmarks/soak_ingest.py [--n 2000] [--bad 0.05] [--dup 0.03] [--writers 4]
        [--kills 3] [--workers 2] [--rate 200] [--stable 0.3] [--tick 1] [--seed 0] [--keep]
        [--faults 4] [--fault-s 2]

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

``--faults K`` (root only: it mounts a tmpfs) puts the data root on a tmpfs and, while the writers
run, injects K episodes of ``--fault-s`` seconds, alternately a full disk (a ballast file takes every
free byte) and a read-only root (the bind mount the sensor, workers and ``doctor`` use is remounted
read-only; the cameras write through the tmpfs itself, so uploads keep arriving). A sensor tick that
fails is retried at the next tick; a worker that fails prints one sentence and the command that
finishes its batch, and that printed command (only) is run once the episode is over, again until it
succeeds. The same checks apply: nothing lost, nothing counted twice. (The tmpfs goes with the
run: ``--keep`` keeps nothing then.)
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
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


def writer(landing: Path, uploads: list[tuple[str, bytes, str]], delay_s: float, faults=None) -> None:
    for rel, data, _ in uploads:
        path = landing / rel
        while True:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as fh:  # in place and in two chunks: the sensor must wait for it
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                    time.sleep(delay_s / 2)
                    fh.write(data[len(data) // 2 :])
                break
            except OSError:  # the disk is full: the camera drops its partial upload and sends it again later
                path.unlink(missing_ok=True)
                time.sleep(0.2)
        time.sleep(delay_s / 2)


def worker_main(root: str, cameras_file: str, batch: str, durable: bool) -> int:
    from sr_pipeline.common.cameras import load_registry
    from sr_pipeline.intake.completeness import IncompleteBatch
    from sr_pipeline.intake.ingest import ingest_batch, left_to_do
    from sr_pipeline.storage import store
    from sr_pipeline.storage.faults import DiskFault
    from sr_pipeline.storage.layout import DataLayout

    Path(os.environ[READY_ENV]).touch()  # imports done: a kill from now on hits the ingestion itself
    layout = DataLayout(Path(root))
    try:
        ingest_batch(layout, load_registry(cameras_file), batch, workers=1, durable=durable)
    except (DiskFault, IncompleteBatch, store.CatalogDamaged) as exc:  # what a run of the sensor's asset reports
        print(f"error: {exc}\nleft to do: {left_to_do(layout, exc, batch)}", file=sys.stderr)
        return 1
    return 0


class Faults:
    """Disk-full and read-only episodes on a tmpfs data root (mounted here; needs root)."""

    made: list[Faults] = []

    def __init__(self, tmp: Path, count: int, seconds: float, span_s: float, size_mb: int):
        Faults.made.append(self)
        self.mnt, self.view = tmp / "tmpfs", tmp / "view"
        self.mnt.mkdir()
        self.view.mkdir()
        _run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(self.mnt)])
        (self.mnt / "data").mkdir()
        _run(["mount", "--bind", str(self.mnt / "data"), str(self.view)])
        self.seconds = seconds
        self.plan = [(span_s * (i + 1) / (count + 1), "disk full" if i % 2 == 0 else "read-only") for i in range(count)]
        self.active: str | None = None
        self.ends = 0.0
        self.episodes: list[str] = []

    def step(self, elapsed: float) -> None:
        if self.active and elapsed >= self.ends:
            self._end()
        if not self.active and self.plan and elapsed >= self.plan[0][0]:
            _, kind = self.plan.pop(0)
            self._begin(kind)
            self.ends = elapsed + self.seconds

    def _begin(self, kind: str) -> None:
        self.active = kind
        if kind == "disk full":
            ballast = self.mnt / "ballast"
            with open(ballast, "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                except OSError:
                    pass
        else:  # a busy mount (a file open for writing) refuses; try until it takes
            deadline = time.monotonic() + 5
            while subprocess.run(["mount", "-o", "remount,bind,ro", str(self.view)], capture_output=True).returncode:
                if time.monotonic() > deadline:
                    self.active = None
                    return
                time.sleep(0.01)
        self.episodes.append(kind)

    def _end(self) -> None:
        if self.active == "disk full":
            (self.mnt / "ballast").unlink()
        elif self.active == "read-only":
            _run(["mount", "-o", "remount,bind,rw", str(self.view)])
        self.active = None

    @property
    def done(self) -> bool:
        return not self.plan and not self.active

    def close(self) -> None:
        if self.active:
            self._end()
        if self in Faults.made:
            Faults.made.remove(self)
        subprocess.run(["umount", "-l", str(self.view)], capture_output=True)
        subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Recovery:
    """The commands failed workers printed, run (only) when no fault is active, until each succeeds."""

    def __init__(self):
        self.pending: dict[str, list[str]] = {}
        self.runs = self.succeeded = 0
        self.sentences: list[str] = []
        self.binary = str(Path(sys.executable).with_name("sr-pipeline"))

    def note(self, batch: str, stderr: str) -> bool:
        """Take the printed command from a failed worker's stderr; False if it printed none."""
        import shlex

        lines = stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        todo = [line for line in lines if line.startswith("left to do: ") and "run: " in line]
        if "Traceback" in stderr or len(errors) != 1 or not todo:
            return False
        self.sentences.append(errors[0])
        self.pending[batch] = shlex.split(todo[0].split("run: ", 1)[1])
        return True

    def step(self) -> None:
        for batch, argv in list(self.pending.items()):
            self.runs += 1
            if subprocess.run([self.binary, *argv[1:]], capture_output=True).returncode == 0:
                self.succeeded += 1
                del self.pending[batch]


class Workers:
    """Ingestion worker processes, one per batch, at most ``limit`` at once; some get SIGKILL."""

    def __init__(self, root: Path, cameras_file: Path, limit: int, kills: int, durable: bool, seed: int):
        self.root, self.cameras_file, self.limit, self.durable = root, cameras_file, limit, durable
        self.queue: list[str] = []
        self.running: dict[str, tuple[subprocess.Popen, Path]] = {}
        self.kills_left, self.restarts, self.failures = kills, 0, []
        self.recovery: Recovery | None = None  # with faults: a failure that printed its command is recovered
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
        err = subprocess.PIPE if self.recovery is not None else None
        self.running[batch] = (subprocess.Popen(cmd, env={**os.environ, READY_ENV: str(ready)}, stderr=err, text=True), ready)

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
            stderr = proc.stderr.read() if proc.stderr else ""
            if code != 0 and not (self.recovery is not None and self.recovery.note(batch, stderr)):
                self.failures.append((batch, code, stderr.strip().splitlines()[-1:] if stderr else ""))
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
    try:
        return _main()
    finally:
        for faults in Faults.made:  # a run stopped half-way (Ctrl-C) leaves no mount behind
            faults.close()


def _main() -> int:
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
    parser.add_argument("--faults", type=int, default=0, help="disk-full / read-only episodes on a tmpfs (root only)")
    parser.add_argument("--fault-s", type=float, default=2.0, help="seconds each fault episode lasts (default 2)")
    parser.add_argument("--tmpfs-mb", type=int, default=64, help="tmpfs size for --faults (default 64)")
    parser.add_argument("--worker", nargs=3, metavar=("ROOT", "CAMERAS", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(*args.worker, durable=not args.no_fsync)

    from sr_pipeline.common.cameras import load_registry
    from sr_pipeline.intake.uploads import poll_landing
    from sr_pipeline.storage.layout import DataLayout

    tmp = Path(tempfile.mkdtemp(prefix="soak_ingest_"))
    layout = DataLayout(tmp / "data")
    cameras_file = tmp / "cameras.yaml"
    cameras_file.write_text(REGISTRY)
    os.environ["SR_PIPELINE_CAMERAS"] = str(cameras_file)  # so the printed commands run as printed
    registry = load_registry(cameras_file)
    uploads, distinct_good = plan_uploads(args.n, args.bad, args.dup, args.size, args.seed)
    delay = args.writers / args.rate
    faults = recovery = None
    landing = layout.landing
    if args.faults:
        faults = Faults(tmp, args.faults, args.fault_s, args.n / args.rate, args.tmpfs_mb)
        layout, landing = DataLayout(faults.view), faults.mnt / "data" / "landing"  # cameras write beside the view
    threads = [threading.Thread(target=writer, args=(landing, uploads[k :: args.writers], delay, faults)) for k in range(args.writers)]
    workers = Workers(layout.root, cameras_file, args.workers, args.kills, not args.no_fsync, args.seed)
    if faults:
        workers.recovery = recovery = Recovery()
    failed_ticks = 0

    start = time.monotonic()
    for t in threads:
        t.start()
    state, batches, ticks, next_poll = {}, set(), 0, 0.0
    while True:
        writing = any(t.is_alive() for t in threads)
        if faults:
            faults.step(time.monotonic() - start)
        if time.monotonic() >= next_poll:
            next_poll = time.monotonic() + args.tick
            try:
                result = poll_landing(layout, registry, state, now=time.time(), stable_seconds=args.stable,
                                      max_files_per_batch=args.max_batch, recover_after_s=5.0)  # fmt: skip
            except OSError:  # a full or read-only disk fails the tick; the next tick tries again
                failed_ticks += 1
                result = None
            if result is not None:
                state, ticks = result.state, ticks + 1
                for batch in result.batches:
                    batches.add(batch.batch_key)
                    workers.submit(batch.batch_key)
            if recovery and not faults.active:  # once per tick, and never during an episode
                recovery.step()
        workers.step()
        landing_left = any(p.is_file() for p in landing.rglob("*")) if landing.is_dir() else False
        if not writing and not landing_left and workers.idle and (not faults or (faults.done and not recovery.pending)):
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - start

    errors = check(layout, uploads, distinct_good)
    errors += [f"worker of {b} exited with {code} {last}" for b, code, last in workers.failures]
    print(f"uploads {args.n} ({sum(k == 'bad' for *_, k in uploads)} bad, {sum(k == 'dup' for *_, k in uploads)} re-uploads), "
          f"{args.writers} writers, {len(batches)} batches, {ticks} sensor ticks, {args.workers} ingestion processes")  # fmt: skip
    print(f"time {elapsed:.1f} s, {args.n / elapsed:.1f} files/s end to end (writers at {args.rate:g}/s), "
          f"restarts after kill -9: {workers.restarts}")  # fmt: skip
    if faults:
        print(f"fault episodes: {', '.join(faults.episodes) or 'none'}; sensor ticks failed: {failed_ticks}; "
              f"workers stopped by a fault: {len(recovery.sentences)}; printed commands run {recovery.runs} time(s), "
              f"{recovery.succeeded} succeeded; tracebacks: 0 (a worker with one counts as a failure below)")
        for sentence in sorted(set(s.split(" (")[0] for s in recovery.sentences)):
            print(f"  {sentence}")
        faults.close()
    print("checks: " + ("all passed: zero lost, zero counted twice" if not errors else "FAILED"))
    for error in errors:
        print(f"  {error}")
    if args.keep:
        print(f"data root kept: {layout.root}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(workers.ready_dir, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
