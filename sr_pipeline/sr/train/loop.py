"""The one training loop: accelerate, resumable state, EMA, NaN guard, progress and the final save.

``run_stage(stage, run_dir, ...)`` drives any :class:`~sr_pipeline.sr.train.stages.base.Stage`. Resumable
state is accelerate's own (``save_state``/``load_state``: prepared models and optimisers, RNG states,
and the objects registered with ``register_for_checkpointing``: the stage's EMA, LR schedule and
timers, and the loop's :class:`RunRecord`). Each save is written to a temp sibling and renamed to
``checkpoint-<step>`` only when complete, so a kill mid-save never corrupts the last good state;
resuming picks the newest complete one. Data resumes by sample index (``start = step * batch *
processes``).

Under ``accelerate launch`` with N processes (docs/multi-gpu.md) every process runs this loop on its
own shard of each step's samples (accelerate deals batch k of the index-ordered stream to process
k mod N, so one step consumes N batches) with its own noise stream; DDP averages the gradients.
Every process takes part in ``save_state`` (each writes its RNG state, the main process the rest);
only the main process renames the temp folder, writes the model folders and reports progress, whose
losses are the means over all processes. A single process runs exactly as without accelerate launch.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sr_pipeline.sr.models.devices import device_label
from sr_pipeline.sr.train.stages.base import Stage
from sr_pipeline.common.atomic import fsync_dir
from sr_pipeline.sr.train.shared import Progress, mixed_precision_for, save_model_dir, seed_everything, share_cpu_with_workers

CHECKPOINT_PREFIX = "checkpoint-"
_PARTIAL = ".checkpoint.partial"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


class UnfinishedRun(FileExistsError):
    """A run folder holds saved state and resuming was not asked for."""


@dataclass
class RunRecord:
    """The loop's own resumable record: steps done, the logged history and the training time so far."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    elapsed_s: float = 0.0
    processes: int = 1  # the data position and the per-process RNG states depend on it

    def state_dict(self) -> dict:
        return {"step": self.step, "history": list(self.history), "elapsed_s": self.elapsed_s,
                "processes": self.processes}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.elapsed_s = float(state["elapsed_s"])
        self.processes = int(state.get("processes", 1))  # states saved before it was recorded: one process


@dataclass
class TrainResult:
    model_dirs: dict[str, Path]  # role (teacher, student, downsampler) -> folder written
    version: str
    steps: int
    wall_time_s: float
    device: str
    history: list[dict]
    info: dict  # what training.json records (without the per-folder fields)

    @property
    def model_dir(self) -> Path:
        """The first folder written (the one that names the version)."""
        return next(iter(self.model_dirs.values()))

    @property
    def final_loss(self) -> float:
        return self.info.get("final_loss", float("nan"))


def saved_states(run_dir: Path) -> list[Path]:
    """The complete saved states of a run folder, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_state(run_dir: Path) -> Path | None:
    """The newest complete saved state, or None when the run folder holds no unfinished run."""
    states = saved_states(run_dir)
    return states[-1] if states else None


def saved_record(state_dir: Path) -> RunRecord:
    """The loop record inside a saved state (it is the first registered object)."""
    record = RunRecord()
    record.load_state_dict(torch.load(Path(state_dir) / "custom_checkpoint_0.pkl", weights_only=True))
    return record


def save_state_atomically(accelerator, run_dir: Path, step: int) -> Path:
    """``accelerator.save_state`` into a temp sibling, renamed into place once complete; older states go."""
    run_dir = Path(run_dir)
    partial, final = run_dir / _PARTIAL, run_dir / f"{CHECKPOINT_PREFIX}{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)  # left by a run killed mid-save
        run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))  # every process writes its own RNG state
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        fsync_dir(run_dir)
        for old in saved_states(run_dir):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _clear_states(run_dir: Path) -> None:
    for state in saved_states(run_dir):
        shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(Path(run_dir) / _PARTIAL, ignore_errors=True)


def run_stage(stage: Stage, run_dir: Path, *, resume: bool = False, report: Callable[[dict], None] | None = None,
              stop_after: int | None = None) -> TrainResult | None:
    """Train (or resume) a stage; None on non-main processes and when ``stop_after`` interrupts it on purpose.

    Refuses to start over an unfinished run unless ``resume``; a non-finite loss stops the run with the
    step in the message and leaves the last saved state as it was."""
    from accelerate import Accelerator

    run_dir, opt = Path(run_dir), stage.opt
    previous = latest_state(run_dir)
    if previous is not None and not resume:
        raise UnfinishedRun(f"{run_dir} holds an unfinished run (saved state {previous.name}): pass --resume to "
                            f"continue it, or delete {run_dir} to start over")
    for out in stage.outputs():
        if out.out_dir.exists():
            raise FileExistsError(f"{out.out_dir} exists; model folders are never overwritten")

    # Every process decides the above on its own: nothing is written to run_dir before all of them
    # have joined the first collective (DDP's weight broadcast in stage.build), so they agree.
    use_cpu = not torch.cuda.is_available()
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=mixed_precision_for(opt.mixed_precision, use_cpu))
    processes = accelerator.num_processes
    if use_cpu:
        share_cpu_with_workers(opt.num_workers)
        if processes > 1:
            _share_cpu_between_processes(opt.num_workers)
    if resume and previous is not None and (saved := saved_record(previous).processes) != processes:
        raise UnfinishedRun(f"{previous} was saved by {saved} training process(es), this run has {processes}: "
                            f"resume it with {saved}, or delete {run_dir} to start over")
    seed_everything(opt.seed)
    stage.build(accelerator)  # the same seed everywhere: the same initial weights and EMA copies
    if processes > 1:
        seed_everything(opt.seed + accelerator.process_index)  # but each process its own noise
    record = RunRecord(processes=processes)
    accelerator.register_for_checkpointing(record, *stage.checkpointed())
    if resume and previous is not None:
        accelerator.load_state(str(previous))
        accelerator.print(f"resuming {run_dir} at step {record.step}/{opt.steps}")

    batches = stage.batches(record.step * opt.batch_size * processes)
    progress = Progress(opt.steps, opt.batch_size * processes, opt.patch_size**2,
                        report if accelerator.is_main_process else (lambda row: None))
    window: dict[str, list[float]] = defaultdict(list)
    t_start = time.perf_counter() - record.elapsed_s
    while record.step < opt.steps:
        row = stage.step(next(batches), record.step + 1)
        record.step += 1
        for k, v in row.items():
            window[k].append(v)
        progress.tick()
        if record.step % opt.log_every == 0 or record.step == opt.steps:
            emitted = progress.emit(record.step, _mean_over_processes(accelerator, window))
            record.history.append({k: v for k, v in emitted.items() if k not in ("total_steps", "hr_mp_per_s")})
            window = defaultdict(list)
        if record.step % opt.save_every == 0 and record.step < opt.steps:
            record.elapsed_s = time.perf_counter() - t_start
            save_state_atomically(accelerator, run_dir, record.step)
        if stop_after is not None and stop_after <= record.step < opt.steps:
            return None

    wall = time.perf_counter() - t_start
    result = _finish(stage, accelerator, run_dir, record, wall) if accelerator.is_main_process else None
    if processes > 1:
        accelerator.wait_for_everyone()  # no process reports done before the model folders exist
    return result


def _mean_over_processes(accelerator, window: dict[str, list[float]]) -> dict[str, float]:
    """Each logged value's mean over the window, then over the processes (each saw its own shard)."""
    means = {k: float(np.mean(v)) for k, v in window.items()}
    if accelerator.num_processes == 1:
        return means
    # Every process logs the same keys in the same order (they run the same code on the same step).
    values = torch.tensor(list(means.values()), dtype=torch.float64, device=accelerator.device)
    return dict(zip(means, accelerator.reduce(values, reduction="mean").tolist()))


def _share_cpu_between_processes(num_workers: int) -> None:
    """Split the node's cores between its training processes (and their loader workers)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local - num_workers))


def _finish(stage: Stage, accelerator, run_dir: Path, record: RunRecord, wall: float) -> TrainResult:
    """Write the stage's model folders (atomically, never over an existing one), then drop the run's state."""
    outputs = stage.outputs()
    version = outputs[0].out_dir.name  # the caller's folder names the version
    info = {
        "version": version,
        "profile": stage.profile.to_dict(),
        "steps": record.step,
        "wall_time_s": wall,
        "device": device_label(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "processes": accelerator.num_processes,  # batch_size in the profile is per process
        "history": record.history,
        **stage.info(record.history),
    }
    dirs = {out.role: save_model_dir(out.out_dir, out.save, {**info, **out.info}) for out in outputs}
    _clear_states(run_dir)  # finished: a later run starts fresh
    return TrainResult(dirs, version, record.step, wall, info["device"], record.history, info)
