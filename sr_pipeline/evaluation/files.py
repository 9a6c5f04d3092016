"""Writing evaluation outputs: strict JSON, the metrics parquet, and publishing a finished folder.

Files go through :func:`sr_pipeline.common.atomic.atomic_write`, readable by all (reports are
served as files). A report folder is built under a temp name and renamed into place whole.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

from sr_pipeline.sr.judge.scoring import row_columns
from sr_pipeline.common.atomic import atomic_write


def write_bytes(path: Path, data: bytes) -> None:
    def write(fh) -> None:
        fh.write(data)
        os.fchmod(fh.fileno(), 0o644)

    atomic_write(Path(path), write, durable=False)


def finite_json(obj: Any) -> Any:
    """``obj`` with NaN and infinity turned into None (strict JSON has neither)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON (no NaN or infinity: the summaries hold null instead), written atomically."""
    write_bytes(path, json.dumps(obj, indent=2, allow_nan=False).encode())


def write_metrics_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    """One row per (method, image): method, image, every registered metric, ms."""
    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame(rows, columns=row_columns()).to_parquet(buf, index=False)
    write_bytes(path, buf.getvalue())


def publish_dir(tmp: Path, parent: Path, name: str) -> Path:
    """Rename the finished temp folder to ``name`` (or ``name-2``, ...): never over an existing one."""
    os.chmod(tmp, 0o755)
    for i in range(1, 1000):
        target = parent / (name if i == 1 else f"{name}-{i}")
        if target.exists():
            continue
        try:
            os.rename(tmp, target)  # atomic; fails if another report took the name meanwhile
            return target
        except OSError:
            continue
    raise FileExistsError(f"too many folders named {name}* in {parent}")
