"""The one validator of values from outside: command-line paths and numbers, environment settings.

Every command's options are parsed through :func:`path_type` and :func:`number_type`, and the
``SR_PIPELINE_*`` settings through :func:`env_number` / :func:`env_path` (checked up front by
``cli.main`` from :data:`ENV_SETTINGS`), so an empty string, a line break, NaN, an infinity or an
absurd magnitude is refused the same way everywhere: one sentence naming the value and the fix.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from sr_pipeline.common.errors import UsageError

# Numbers above these are typing mistakes, not settings (each option states its own where it has one).
MAX_SEED = 2**63 - 1
MAX_COUNT = 1_000_000


def check_text(text: str, what: str = "a value") -> str:
    """``text`` unless it is empty, only spaces, or holds a line break or NUL (``ValueError``)."""
    if text.strip() == "":
        folder = " (write . for the current folder)" if "path" in what or "folder" in what else ""
        raise ValueError(f"{text!r} is empty; pass {what}{folder}")
    if any(c in text for c in "\n\r\0"):
        raise ValueError(f"{text!r} holds a line break or NUL; pass {what} on one line")
    return text


def path_type(what: str = "a path"):
    """An argparse type: a :class:`Path` from a non-empty, one-line string."""

    def parse(text: str) -> Path:
        try:
            return Path(check_text(text, what))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "path"
    return parse


def text_type(what: str = "a name"):
    """An argparse type: a non-empty, one-line string (ids, versions, batch keys)."""

    def parse(text: str) -> str:
        try:
            return check_text(text, what).strip()
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "text"
    return parse


def check_number(text: str, kind: type, minimum: float, maximum: float, describe: str = ""):
    """``text`` as an ``int`` or finite ``float`` in [minimum, maximum] (``ValueError`` naming both)."""
    rule = (f"{'an integer' if kind is int else 'a number'} >= {minimum:g} (at most {maximum:g})"
            + (f": {describe}" if describe else ""))
    try:
        value = kind(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number; it must be {rule}") from None
    if not (math.isfinite(value) and minimum <= value <= maximum):
        raise ValueError(f"{text.strip()} is out of range; it must be {rule}")
    return value


def number_type(kind: type, minimum: float, describe: str = "", maximum: float | None = None):
    """An argparse type: :func:`check_number` (the default maximum is the kind's sane bound)."""
    top = maximum if maximum is not None else (MAX_COUNT if kind is int else 1e9)

    def parse(text: str):
        try:
            return check_number(text, kind, minimum, top, describe)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.number_kind = kind.__name__  # read by the bad-input tests to find every numeric option
    return parse


def env_number(name: str, default: float, minimum: float, maximum: float, describe: str = "",
               kind: type = float):
    """The environment setting ``name`` as a number (``default`` when unset); a bad one is a
    :class:`UsageError` naming the setting and its value."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return check_number(raw, kind, minimum, maximum, describe)
    except ValueError as exc:
        raise UsageError(f"${name}={raw!r}: {exc}; set it right or unset it") from None


def env_path(name: str, default: Path | None = None) -> Path | None:
    """The environment setting ``name`` as a path (``default`` when unset); an empty or multi-line
    one is a :class:`UsageError` (an empty string would silently mean the current folder)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return Path(check_text(raw, "a path"))
    except ValueError as exc:
        raise UsageError(f"${name}={raw!r}: {exc}; set it right or unset it") from None


def env_time_zone(name: str) -> str | None:
    """The environment setting ``name`` as an IANA time zone name (None when unset); anything the
    time zone database does not know is a :class:`UsageError`."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        ZoneInfo(check_text(raw, "a time zone").strip())
    except (ValueError, ZoneInfoNotFoundError):
        why = "empty" if raw.strip() == "" else "not a known time zone"
        raise UsageError(f"${name}={raw!r}: {why}; set an IANA time zone such as Europe/Berlin, "
                         "or unset it for UTC") from None
    return raw.strip()


# The settings the commands read, checked before any command runs: name -> check (raises UsageError).
ENV_SETTINGS = {
    "SR_PIPELINE_DATA": lambda: env_path("SR_PIPELINE_DATA"),
    "SR_PIPELINE_CAMERAS": lambda: env_path("SR_PIPELINE_CAMERAS"),
    "SR_PIPELINE_STABLE_SECONDS": lambda: env_number("SR_PIPELINE_STABLE_SECONDS", 10.0, 0, 86400,
                                                     "seconds a landing file must be unchanged"),
    "SR_PIPELINE_SENSOR_INTERVAL": lambda: env_number("SR_PIPELINE_SENSOR_INTERVAL", 30, 1, 86400,
                                                      "seconds between sensor ticks", kind=int),
    "SR_PIPELINE_PLANT_TZ": lambda: env_time_zone("SR_PIPELINE_PLANT_TZ"),
    "SR_PIPELINE_PROFILE": lambda: env_path("SR_PIPELINE_PROFILE"),
    "SR_PIPELINE_TRAIN_PROCESSES": lambda: env_number("SR_PIPELINE_TRAIN_PROCESSES", 1, 1, 1024,
                                                      "accelerate processes", kind=int),
    "SR_PIPELINE_RETRAIN_STUDENT": lambda: env_number("SR_PIPELINE_RETRAIN_STUDENT", 20, 1, MAX_COUNT,
                                                      "new images that retrain a student", kind=int),
    "SR_PIPELINE_RETRAIN_TEACHER": lambda: env_number("SR_PIPELINE_RETRAIN_TEACHER", 100, 1, MAX_COUNT,
                                                      "new HR references that retrain the teacher", kind=int),
    "SR_PIPELINE_GATE_PSNR_TOLERANCE_DB": lambda: env_number("SR_PIPELINE_GATE_PSNR_TOLERANCE_DB", 0.05, 0, 100,
                                                             "dB of PSNR-Y a candidate may lose"),
    "SR_PIPELINE_GATE_LPIPS_TOLERANCE": lambda: env_number("SR_PIPELINE_GATE_LPIPS_TOLERANCE", 0.005, 0, 1,
                                                           "LPIPS a candidate may lose"),
    "SR_PIPELINE_GATE_MAX_HF_RATIO": lambda: env_number("SR_PIPELINE_GATE_MAX_HF_RATIO", 1.25, 1e-3, 1000,
                                                        "high-frequency energy over the HR's"),
    "SR_PIPELINE_ARCHIVE_MAX_FLAGGED_SHARE": lambda: env_number("SR_PIPELINE_ARCHIVE_MAX_FLAGGED_SHARE", 0.05, 0, 1,
                                                                "share of a batch flagged check"),
}
NUMERIC_SETTINGS = frozenset(name for name in ENV_SETTINGS if name not in (
    "SR_PIPELINE_DATA", "SR_PIPELINE_CAMERAS", "SR_PIPELINE_PLANT_TZ", "SR_PIPELINE_PROFILE"))


def check_environment() -> None:
    """Refuse a bad value of any setting in :data:`ENV_SETTINGS` (``UsageError``)."""
    for check in ENV_SETTINGS.values():
        check()
