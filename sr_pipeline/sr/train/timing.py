"""Wall time per named section of a training step, kept across resumes (a checkpointed object)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator

import torch


class StepTimer:
    """Wall time per named section of a step (device synchronised), kept across resumes."""

    def __init__(self, device: torch.device):
        self.sync = device.type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)
        self.steps = 0

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.totals[name] += time.perf_counter() - t0

    def breakdown(self) -> dict[str, dict[str, float]]:
        """Seconds per step and share of the measured time, per section."""
        total = sum(self.totals.values()) or 1.0
        n = max(self.steps, 1)
        return {k: {"s_per_step": v / n, "share": v / total} for k, v in sorted(self.totals.items(), key=lambda kv: -kv[1])}

    def state_dict(self) -> dict:
        return {"totals": dict(self.totals), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.totals = defaultdict(float, state["totals"])
        self.steps = int(state["steps"])


def format_breakdown(breakdown: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{k} {v['s_per_step'] * 1000:.0f} ms ({100 * v['share']:.0f}%)" for k, v in breakdown.items())
