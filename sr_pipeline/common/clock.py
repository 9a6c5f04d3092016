"""The plant's clock: its time zone (``$SR_PIPELINE_PLANT_TZ``, else UTC) and today's date there.

Reports are dated and the archive's outputs are counted per day in the plant's own zone, not the
server's, so a night shift's uploads land on the day the plant calls them.
"""

from __future__ import annotations

import os
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PLANT_TZ_ENV = "SR_PIPELINE_PLANT_TZ"


def plant_timezone(name: str | None = None) -> ZoneInfo:
    """The plant's time zone: ``name``, else ``$SR_PIPELINE_PLANT_TZ``, else UTC."""
    name = name or os.environ.get(PLANT_TZ_ENV) or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (set {PLANT_TZ_ENV} to an IANA name such as "
                         "Europe/Berlin)") from exc


def plant_today(tz: str | None = None) -> date:
    """Today's date in the plant's time zone."""
    return datetime.now(plant_timezone(tz)).date()
