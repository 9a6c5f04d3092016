"""Checkpoints as evaluation methods: ``sr-pipeline evaluate`` with ``--model`` and ``--teacher``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from sr_pipeline.sr.checkpoints import read_info
from sr_pipeline.sr.infer import Upscaler


def model_methods(models: list[Path], teacher: Path | None = None, steps: int | None = None,
                  device: str = "cpu") -> dict:
    """name -> LR->SR callable: each student with 1 step, the teacher with ``steps`` (default T)."""
    methods = {}
    for model_dir in models:
        info = read_info(model_dir)
        name = f"{info.get('kind', 'model')}:{info.get('version', Path(model_dir).name)}"
        methods[name] = Upscaler.from_dir(Path(model_dir), device=device, steps=1)
    if teacher is not None:
        if steps is None:
            steps = int(json.loads((Path(teacher) / "scheduler_config.json").read_text())["num_steps"])
        up = Upscaler.from_dir(Path(teacher), device=device, steps=steps)
        methods[f"teacher-{up.steps}step"] = up
    return methods


def run_cli(args: argparse.Namespace) -> int:
    from sr_pipeline.sr import evaluate

    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    try:
        args.methods = model_methods(list(args.model), args.teacher, args.steps, device)
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return evaluate.run_cli(args)
