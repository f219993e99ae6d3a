"""What to ask a PACS: the study, series and instance queries of a day, for QIDO-RS and C-FIND
alike, and the parsing of their answers into plain records.

Both protocols answer with DICOM attributes (QIDO-RS as DICOM JSON, C-FIND as identifiers); QIDO
answers are turned into pydicom Datasets first, so one parser serves both and the two sources
cannot disagree about what a study is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from screenlake.errors import ConfigurationError
from screenlake.programmes import PROGRAMMES

STUDY_LEVEL, SERIES_LEVEL, INSTANCE_LEVEL = "STUDY", "SERIES", "IMAGE"

# Return keys. PatientID and AccessionNumber route nothing but name the study in the PHI zone's
# study index, as the drop's headers do; PatientID and IssuerOfPatientID also match objections
# before anything is retrieved.
STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "PatientID",
    "IssuerOfPatientID",
    "AccessionNumber",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
)
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "BodyPartExamined", "SeriesNumber")
INSTANCE_KEYS = ("SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber")


def routed_modalities() -> tuple[str, ...]:
    """Every modality some programme takes, sorted: a day's studies are asked for per modality,
    since ModalitiesInStudy matches one value at a time on most PACS."""
    return tuple(sorted({m for p in PROGRAMMES.values() for m in p.modalities}))


def dicom_date(day: date) -> str:
    """A date as DICOM DA (YYYYMMDD)."""
    return day.strftime("%Y%m%d")


def date_range(last: date, days: int) -> str:
    """The DA range matching the `days` days up to and including `last`."""
    if days < 1:
        raise ConfigurationError(
            f"the PACS look-back must be at least one day; got {days} (SCREENLAKE_PACS_LOOKBACK_DAYS)"
        )
    return f"{dicom_date(last - timedelta(days=days - 1))}-{dicom_date(last)}"


def lookback_range(until: str | None, days: int, today: date) -> str:
    """The DA range a sensor searches: `days` days up to `until` (an ISO date), or to `today`."""
    if not until:
        return date_range(today, days)
    try:
        last = date.fromisoformat(until)
    except ValueError:
        raise ConfigurationError(
            f"SCREENLAKE_PACS_LOOKBACK_UNTIL must be an ISO date (YYYY-MM-DD); got {until!r}"
        ) from None
    return date_range(last, days)


def study_identifier(study_date: str, modality: str) -> Dataset:
    """C-FIND identifier for the studies of a date (or DA range) holding `modality`."""
    ds = _identifier(STUDY_LEVEL, STUDY_KEYS)
    ds.StudyDate = study_date
    ds.ModalitiesInStudy = modality
    return ds


def series_identifier(study_uid: str) -> Dataset:
    """C-FIND identifier for a study's series, with what routing needs."""
    ds = _identifier(SERIES_LEVEL, SERIES_KEYS)
    ds.StudyInstanceUID = study_uid
    return ds


def instance_identifier(study_uid: str, series_uid: str) -> Dataset:
    """C-FIND identifier for a series' instances."""
    ds = _identifier(INSTANCE_LEVEL, INSTANCE_KEYS)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    return ds


def _identifier(level: str, keys: Iterable[str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in keys:
        setattr(ds, keyword, "")
    return ds


def qido_study_filters(study_date: str, modality: str) -> dict[str, str]:
    """QIDO-RS search filters for the studies of a date (or DA range) holding `modality`."""
    return {"StudyDate": study_date, "ModalitiesInStudy": modality}


def from_qido(result: Mapping[str, Any]) -> Dataset:
    """A QIDO-RS result (DICOM JSON) as a Dataset. Bulk data is never asked for in a search."""
    return Dataset.from_json(dict(result))


@dataclass(frozen=True)
class StudyHit:
    """A study as a PACS listed it (PHI: patient ID and accession number)."""

    study_uid: str
    study_date: date | None
    patient_id: str | None
    accession_number: str | None
    instances: int | None
    issuer_of_patient_id: str | None = None


@dataclass(frozen=True)
class SeriesHit:
    """A series as a PACS listed it, with the attributes that route its study."""

    study_uid: str
    series_uid: str
    modality: str | None
    body_part: str | None
    number: int | None


@dataclass(frozen=True)
class InstanceHit:
    """An instance as a PACS listed it. A PACS may list one without its SOPInstanceUID."""

    study_uid: str
    series_uid: str
    sop_uid: str | None
    number: int | None


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    if isinstance(value, MultiValue):
        # Two values for a single-valued key: some PACS send them; the first one counts.
        value = value[0] if len(value) else None
    text = str(value).strip() if value is not None else ""
    return text or None


def _number(ds: Dataset, keyword: str) -> int | None:
    text = _text(ds, keyword)
    if text is None:
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


def _date(text: str | None) -> date | None:
    if text is None or len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def study_hit(ds: Dataset) -> StudyHit | None:
    """A study-level answer as a record; None when it lacks a StudyInstanceUID."""
    uid = _text(ds, "StudyInstanceUID")
    if uid is None:
        return None
    return StudyHit(
        study_uid=uid,
        study_date=_date(_text(ds, "StudyDate")),
        patient_id=_text(ds, "PatientID"),
        accession_number=_text(ds, "AccessionNumber"),
        instances=_number(ds, "NumberOfStudyRelatedInstances"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
    )


def series_hit(ds: Dataset, study_uid: str) -> SeriesHit | None:
    """A series-level answer as a record; None when it lacks a SeriesInstanceUID."""
    uid = _text(ds, "SeriesInstanceUID")
    if uid is None:
        return None
    return SeriesHit(
        study_uid=study_uid,
        series_uid=uid,
        modality=_text(ds, "Modality"),
        body_part=_text(ds, "BodyPartExamined"),
        number=_number(ds, "SeriesNumber"),
    )


def instance_hit(ds: Dataset, study_uid: str, series_uid: str | None = None) -> InstanceHit | None:
    """An instance-level answer as a record; None when its series is unknown."""
    series = _text(ds, "SeriesInstanceUID") or series_uid
    if series is None:
        return None
    return InstanceHit(
        study_uid=study_uid,
        series_uid=series,
        sop_uid=_text(ds, "SOPInstanceUID"),
        number=_number(ds, "InstanceNumber"),
    )
