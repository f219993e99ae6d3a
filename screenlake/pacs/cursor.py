"""The new-studies sensor's cursor: which days changed since the sensor last looked.

The cursor maps each day seen to the source's summary of it (`StudySource.day_summaries`: counts
and digests, never identifiers). A day is due for a closer look when it is new or its summary
changed; the sensor then asks the Dagster instance which of its partitions have not listed that
summary, so the cursor only saves look-ups and a missing cursor launches nothing twice. A cursor
written by the first sensor (a JSON list of days) is read as those days seen with their current
summaries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date


def _seen(cursor: str | None, summaries: Mapping[date, str]) -> dict[str, str]:
    if not cursor:
        return {}
    try:
        loaded = json.loads(cursor)
    except ValueError:
        return {}  # an unreadable cursor: every day is due once more, which is harmless
    if isinstance(loaded, list):
        current = {d.isoformat(): s for d, s in summaries.items()}
        return {str(day): current.get(str(day), "") for day in loaded}
    if isinstance(loaded, dict):
        return {str(k): str(v) for k, v in loaded.items()}
    return {}


def due_days(
    summaries: Mapping[date, str], cursor: str | None, first: date | None = None
) -> tuple[list[date], str]:
    """Days new or changed since `cursor` (none before `first`), and the cursor to store."""
    seen = _seen(cursor, summaries)
    due = [
        day
        for day, summary in sorted(summaries.items())
        if (first is None or day >= first) and seen.get(day.isoformat()) != summary
    ]
    seen.update({day.isoformat(): summaries[day] for day in due})
    return due, json.dumps(dict(sorted(seen.items())))
