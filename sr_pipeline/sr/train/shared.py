"""Pieces every training stage shares: precision, seeding, EMA, the NaN guard, progress reports and
the atomic ``save_pretrained`` of a finished model folder. The loop itself is :mod:`sr_pipeline.sr.train.loop`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sr_pipeline.common.atomic import temp_dir, umask_mode


class TrainingDiverged(RuntimeError):
    """A loss turned NaN or infinite; the message names the step. Saved state is left untouched."""


def check_finite(losses: dict[str, torch.Tensor], step: int) -> None:
    bad = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
    if bad:
        raise TrainingDiverged(
            f"non-finite loss ({', '.join(bad)}) at step {step}; the last saved state was kept, "
            "lower the learning rate or resume from it"
        )


def mixed_precision_for(setting: str, use_cpu: bool) -> str:
    """'auto' means bf16 autocast on a GPU and fp32 on the CPU (bf16 on CPU is slow and lossy)."""
    if setting == "auto":
        return "no" if use_cpu else "bf16"
    return setting


def share_cpu_with_workers(num_workers: int) -> None:
    """On the CPU, leave one core per DataLoader worker: an OpenMP team that shares its cores with
    the workers waits on descheduled threads (measured here: 5x slower steps on 2 cores)."""
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores - num_workers))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EMA:
    """Exponential moving average of a model's weights; the copy that is saved and served."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: int = 10):
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        # Warm-up of the decay (as in diffusers' EMAModel) so early averages are not dominated by init.
        decay = min(self.decay, (1 + step) / (self.warmup + step))
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


def warmup_lambda(warmup_steps: int) -> Callable[[int], float]:
    return lambda step: min(1.0, (step + 1) / max(1, warmup_steps))


class Progress:
    """Step timing and periodic reports (stdout line, or a callback such as Dagster Pipes logging)."""

    def __init__(self, total_steps: int, samples_per_step: int, hr_pixels_per_sample: int,
                 report: Callable[[dict], None] | None = None):
        self.total = total_steps
        self.samples_per_step = samples_per_step
        self.hr_pixels = hr_pixels_per_sample
        self.report = report or (lambda row: print(format_progress(row), flush=True))
        self._t0 = time.perf_counter()
        self._steps = 0

    def tick(self) -> None:
        self._steps += 1

    def emit(self, step: int, losses: dict[str, float]) -> dict:
        dt = max(time.perf_counter() - self._t0, 1e-9)
        sps = self._steps * self.samples_per_step / dt
        row = {"step": step, "total_steps": self.total, **losses,
               "samples_per_s": sps, "hr_mp_per_s": sps * self.hr_pixels / 1e6}
        self.report(row)
        self._t0 = time.perf_counter()
        self._steps = 0
        return row


def format_progress(row: dict) -> str:
    losses = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                      if k not in ("step", "total_steps", "samples_per_s", "hr_mp_per_s"))
    return (f"step {row['step']}/{row['total_steps']} {losses} "
            f"{row['samples_per_s']:.1f} samples/s {row['hr_mp_per_s']:.3f} HR MP/s")


def save_model_dir(out_dir: Path, save: Callable[[Path], None], info: dict) -> Path:
    """Write a model folder atomically: ``save(tmp)`` fills a temp folder, ``training.json`` is added,
    then the folder is renamed into place. An existing folder is never overwritten."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; model folders are never overwritten")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(out_dir.parent, f".{out_dir.name}.")
    try:
        save(tmp)
        info = {**info, "host": socket.gethostname(),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (tmp / "training.json").write_text(json.dumps(info, indent=2, default=_json_default))
        for f in tmp.rglob("*"):  # safetensors writes its files 0600: published files follow the umask
            if f.is_file() and not f.is_symlink():
                os.chmod(f, umask_mode())
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
