"""The contract between the shared loop (:func:`sr_pipeline.sr.train.loop.run_stage`) and a stage.

A stage says what one step does, which of its objects carry state that accelerate does not already
save (the models and optimisers it passed to ``accelerator.prepare`` are saved by accelerate), where
its batches come from, and which model folders it writes at the end with what recorded info. It
never picks folders or versions: its caller hands them in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from sr_pipeline.sr.train.profile import OptimConfig, Profile


@dataclass
class ModelOutput:
    """One model folder a stage writes at the end: ``save(tmp)`` fills it; ``info`` is added to the record."""

    role: str
    out_dir: Path
    save: Callable[[Path], None]
    info: dict


class Stage(ABC):
    """One kind of training (teacher, co-learning) as the shared loop drives it."""

    profile: Profile
    opt: OptimConfig  # steps, batch size, seed, precision, save/log cadence of the loop

    @abstractmethod
    def build(self, accelerator) -> None:
        """Make (after seeding) and ``accelerator.prepare`` the nets and optimisers."""

    @abstractmethod
    def checkpointed(self) -> list[Any]:
        """Stateful objects accelerate does not save by itself (EMA, LR schedule, timers)."""

    @abstractmethod
    def batches(self, start: int) -> Iterator[Any]:
        """Endless batches from sample index ``start`` (a resumed run continues where it was)."""

    @abstractmethod
    def step(self, batch: Any, step: int) -> dict[str, float]:
        """One training step (numbered from 1, including the EMA update); its losses for the log."""

    @abstractmethod
    def info(self, history: list[dict]) -> dict:
        """What training.json records beyond the loop's own fields, for every folder the stage writes."""

    @abstractmethod
    def outputs(self) -> list[ModelOutput]:
        """The model folders to write once the last step is done, first one naming the version."""
