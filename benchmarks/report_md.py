"""Append one benchmark's figures to docs/benchmarks.md: a dated section, the facts of the run, a table."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

PREAMBLE = "# Benchmark results\n\nAppended by the benchmarks; newest last. Figures are from the run named.\n"


def machine(device: str) -> str:
    where = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {where}"


def command(script: str, argv: list[str] | None) -> str:
    return f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])


def append_section(report: Path, title: str, facts: list[str], body: str) -> None:
    """Add ``## <UTC time>: title``, the facts as a list, then ``body``; the file is made if missing."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"\n## {stamp}: {title}\n\n" + "".join(f"- {f}\n" for f in facts) + "\n" + body.rstrip("\n") + "\n"
    report.parent.mkdir(parents=True, exist_ok=True)
    with report.open("a") as f:
        if f.tell() == 0:
            f.write(PREAMBLE)
        f.write(text)
