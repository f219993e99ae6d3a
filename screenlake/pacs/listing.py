"""From a PACS's answers to a `DayListing`: route each study by its series, name each instance by
a reference the source can retrieve it by, and leave out what no programme takes.

Unlike an export drop, a PACS is asked only for the modalities the programmes take, and a study
that no programme takes is not retrieved at all: pulling identifying data just to quarantine it
would collect more than screening needs. Such studies are counted, not listed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from screenlake.ingest import DayListing, FoundStudy, SourceFile
from screenlake.pacs.query import InstanceHit, SeriesHit, StudyHit
from screenlake.programmes import route_study

_UNNAMED = "?"


@dataclass(frozen=True)
class InstanceRef:
    """Where a PACS holds an instance: study, series and SOP instance UIDs (PHI).

    An instance the PACS listed without a SOPInstanceUID cannot be asked for by UID; it is named
    by its position among the series' unnamed instances (`unnamed`, from 1) instead, and is
    retrieved with its series.
    """

    study_uid: str
    series_uid: str
    sop_uid: str | None
    unnamed: int = 0

    @property
    def ref(self) -> str:
        """The reference as `SourceFile.ref` holds it."""
        last = self.sop_uid if self.sop_uid is not None else f"{_UNNAMED}{self.unnamed}"
        return f"{self.study_uid}/{self.series_uid}/{last}"

    @classmethod
    def parse(cls, ref: str) -> InstanceRef:
        """The reference back from `ref`; ValueError when it is not one a PACS source made."""
        parts = ref.split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(
                "a PACS file reference must read study/series/instance; this one has "
                f"{len(parts)} part(s). Was the partition listed by another kind of source? "
                "Re-materialise pacs_studies with the configured source."
            )
        study, series, last = parts
        if last.startswith(_UNNAMED):
            try:
                return cls(study, series, None, int(last[len(_UNNAMED) :]))
            except ValueError:
                raise ValueError("a PACS file reference has an unreadable position") from None
        return cls(study, series, last)


@dataclass(frozen=True)
class PacsListing:
    """A day's listing and what was left out of it, as counts."""

    listing: DayListing
    unrouted_studies: int
    empty_studies: int
    other_day_studies: int


def _series_order(series: SeriesHit) -> tuple[bool, int, str]:
    return (series.number is None, series.number or 0, series.series_uid)


def route_by_series(series: Sequence[SeriesHit]) -> tuple[str | None, SeriesHit | None]:
    """The programme of a study and the series that decided it: the first series, in series
    number order, that a programme takes. (None, first series) when none is taken."""
    ordered = sorted(series, key=_series_order)
    for candidate in ordered:
        programme = route_study(candidate.modality or "", candidate.body_part or "")
        if programme is not None:
            return programme, candidate
    return None, (ordered[0] if ordered else None)


def instance_refs(instances: Iterable[InstanceHit]) -> list[InstanceRef]:
    """References of a study's instances, each once, in series then instance order."""
    seen: set[tuple[str, str]] = set()
    unnamed: dict[str, int] = defaultdict(int)
    refs = []
    ordered = sorted(
        instances,
        key=lambda i: (i.series_uid, i.number is None, i.number or 0, i.sop_uid or ""),
    )
    for hit in ordered:
        if hit.sop_uid is None:
            unnamed[hit.series_uid] += 1
            refs.append(InstanceRef(hit.study_uid, hit.series_uid, None, unnamed[hit.series_uid]))
            continue
        if (hit.series_uid, hit.sop_uid) in seen:
            # Paged answers can overlap when the PACS changes between pages.
            continue
        seen.add((hit.series_uid, hit.sop_uid))
        refs.append(InstanceRef(hit.study_uid, hit.series_uid, hit.sop_uid))
    return refs


def build_listing(
    day: date,
    studies: Iterable[StudyHit],
    series: Mapping[str, Sequence[SeriesHit]],
    instances: Mapping[str, Sequence[InstanceHit]],
) -> PacsListing:
    """The day's routed studies, each with its instances as `SourceFile`s.

    `series` and `instances` are keyed by StudyInstanceUID. Studies of another date (a PACS that
    matched loosely), without instances, or that no programme takes are counted and left out.
    """
    found: dict[str, FoundStudy] = {}
    unrouted = empty = other_day = 0
    for study in studies:
        if study.study_uid in found:
            continue
        if study.study_date != day:
            other_day += 1
            continue
        refs = instance_refs(instances.get(study.study_uid, ()))
        if not refs:
            empty += 1
            continue
        programme, deciding = route_by_series(series.get(study.study_uid, ()))
        if programme is None or deciding is None:
            unrouted += 1
            continue
        found[study.study_uid] = FoundStudy(
            study_instance_uid=study.study_uid,
            patient_id=study.patient_id,
            accession_number=study.accession_number,
            study_date=study.study_date,
            modality=deciding.modality,
            body_part=deciding.body_part,
            programme=programme,
            # An instance without SOPInstanceUID is landed like any other, as the drop lands
            # one; de-identification then quarantines it with its reason.
            files=tuple(
                SourceFile(r.ref, study.study_uid, r.sop_uid)
                for r in sorted(refs, key=lambda r: r.ref)
            ),
            issuer_of_patient_id=study.issuer_of_patient_id,
        )
    listing = DayListing(day=day, studies=tuple(found[uid] for uid in sorted(found)), orphans=())
    return PacsListing(listing, unrouted, empty, other_day)


def day_summaries(studies: Iterable[StudyHit]) -> dict[date, str]:
    """Per study date, a summary that changes when the day gains studies or instances; counts
    only, so that a sensor cursor holding it holds nothing identifying."""
    uids: dict[date, set[str]] = defaultdict(set)
    counts: dict[date, int] = defaultdict(int)
    for study in studies:
        if study.study_date is None or study.study_uid in uids[study.study_date]:
            continue
        uids[study.study_date].add(study.study_uid)
        counts[study.study_date] += study.instances or 0
    return {day: f"studies={len(uids[day])} instances={counts[day]}" for day in sorted(uids)}
