"""Dates under the modified dates option: one keyed offset per patient, every DA and DT moved.

Every date of one patient moves back by the same number of days (`keys.date_shift_days`), so
intervals between the patient's studies survive exactly while the calendar dates do not.
Values that are not dates become empty: a date that cannot be shifted cannot be kept either.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta

from pydicom.dataset import Dataset

_DATE_RE = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_DATETIME_RE = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?"
)
_AGE_DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")


def shift_date(value: str, days: int) -> str:
    """A DA value moved `days` days back; raises ValueError when it is not a date."""
    match = _DATE_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError("not a DA value")
    year, month, day = (int(g) for g in match.groups())
    return (date(year, month, day) - timedelta(days=days)).strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str:
    """A DT value whose date part is moved `days` days back, at the same precision, with its time
    and timezone suffix kept; raises ValueError when it is not a DT."""
    match = _DATETIME_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError("not a DT value")
    year, month, day, time, zone = match.groups()
    shifted = date(int(year), int(month or 1), int(day or 1)) - timedelta(days=days)
    precision = 8 if day else 6 if month else 4
    return shifted.strftime("%Y%m%d")[:precision] + (time or "") + (zone or "")


def shift_values(values: list[str], vr: str, days: int) -> list[str]:
    """Each DA or DT value of a (multi-valued) element shifted; unshiftable ones emptied."""
    shift = shift_date if vr == "DA" else shift_datetime
    return [_shifted(shift, v, days) for v in values]


def _shifted(shift: Callable[[str, int], str], value: str, days: int) -> str:
    if not value.strip():
        return ""
    try:
        return shift(value, days)
    except (ValueError, OverflowError):
        return ""


def patient_age(birth_date: str, on: str) -> str | None:
    """The AS value for a patient born on `birth_date` at date `on` (both DA), or None."""
    try:
        born, then = (date.fromisoformat(_iso(v)) for v in (birth_date, on))
    except ValueError:
        return None
    if then < born:
        return None
    years = then.year - born.year - ((then.month, then.day) < (born.month, born.day))
    months = (then.year - born.year) * 12 + then.month - born.month - (then.day < born.day)
    days = (then - born).days
    if years >= 1:
        return f"{min(years, 999):03d}Y"
    if months >= 1:
        return f"{months:03d}M"
    return f"{days // 7:03d}W" if days >= 7 else f"{days:03d}D"


def missing_age(ds: Dataset) -> str | None:
    """PatientAge computed from the birth date and the first study-level date, when the
    instance lacks one and both dates are there; None otherwise."""
    if str(ds.get("PatientAge") or "").strip():
        return None
    birth = str(ds.get("PatientBirthDate") or "")
    if not birth:
        return None
    for keyword in _AGE_DATES:
        on = str(ds.get(keyword) or "")
        if on:
            return patient_age(birth, on)
    return None


def _iso(value: str) -> str:
    match = _DATE_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError("not a DA value")
    return "-".join(match.groups())
