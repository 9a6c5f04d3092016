"""Model versions and input fingerprints (no heavy imports: the Dagster layer uses them)."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from typing import Iterable


def new_version(tag: str = "") -> str:
    """A sortable, unique model version: UTC time plus a short random suffix."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{os.urandom(3).hex()}" + (f"-{tag}" if tag else "")


def fingerprint(parts: Iterable[str], length: int = 12) -> str:
    """A short stable hash of strings (profile text, image ids, ...)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:length]
