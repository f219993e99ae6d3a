"""Queries and their answers: identifiers and filters per modality, records from QIDO JSON and
C-FIND identifiers alike, routing by series, references, counts for the sensor."""

from __future__ import annotations

from datetime import date

import pytest
from pydicom.dataset import Dataset

from screenlake.errors import ConfigurationError
from screenlake.pacs.listing import (
    InstanceRef,
    build_listing,
    day_summaries,
    instance_refs,
    route_by_series,
)
from screenlake.pacs.query import (
    InstanceHit,
    SeriesHit,
    StudyHit,
    date_range,
    from_qido,
    instance_hit,
    lookback_range,
    qido_study_filters,
    routed_modalities,
    series_hit,
    study_hit,
    study_identifier,
)

DAY = date(2024, 3, 11)


def test_a_day_is_asked_for_once_per_routed_modality() -> None:
    assert routed_modalities() == ("CR", "CT", "DX")
    ds = study_identifier("20240311", "CT")
    assert (ds.QueryRetrieveLevel, ds.StudyDate, ds.ModalitiesInStudy) == (
        "STUDY",
        "20240311",
        "CT",
    )
    assert ds.PatientID == "" and ds.NumberOfStudyRelatedInstances == ""  # return keys
    assert qido_study_filters("20240311", "CR") == {
        "StudyDate": "20240311",
        "ModalitiesInStudy": "CR",
    }
    assert date_range(DAY, 7) == "20240305-20240311"
    with pytest.raises(ConfigurationError, match="SCREENLAKE_PACS_LOOKBACK_DAYS"):
        date_range(DAY, 0)
    assert lookback_range(None, 2, DAY) == "20240310-20240311"
    assert lookback_range("2024-03-01", 1, DAY) == "20240301-20240301"
    with pytest.raises(ConfigurationError, match="SCREENLAKE_PACS_LOOKBACK_UNTIL"):
        lookback_range("1 March", 1, DAY)


def test_qido_json_and_c_find_identifiers_give_the_same_records() -> None:
    qido = {
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00080020": {"vr": "DA", "Value": ["20240311"]},
        "00100020": {"vr": "LO", "Value": ["7654321"]},
        "00080050": {"vr": "SH", "Value": ["1000000001"]},
        "00201208": {"vr": "IS", "Value": [24]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Jansen^Pieter"}]},
    }
    found = Dataset()
    found.StudyInstanceUID, found.StudyDate, found.PatientID = "1.2.3", "20240311", "7654321"
    found.AccessionNumber, found.NumberOfStudyRelatedInstances = "1000000001", "24"
    expected = StudyHit("1.2.3", DAY, "7654321", "1000000001", 24)
    assert study_hit(from_qido(qido)) == study_hit(found) == expected
    assert study_hit(Dataset()) is None


def test_series_and_instances_tolerate_what_a_pacs_leaves_out() -> None:
    series = Dataset()
    series.SeriesInstanceUID, series.Modality, series.SeriesNumber = "1.2.3.4", "CT", "2"
    assert series_hit(series, "1.2.3") == SeriesHit("1.2.3", "1.2.3.4", "CT", None, 2)
    unnamed = Dataset()
    unnamed.InstanceNumber = "7"
    assert instance_hit(unnamed, "1.2.3", "1.2.3.4") == InstanceHit("1.2.3", "1.2.3.4", None, 7)
    assert instance_hit(unnamed, "1.2.3") is None  # no series: nothing to ask for


def test_a_study_goes_where_its_first_routed_series_says() -> None:
    scout = SeriesHit("s", "1", "CT", "HEAD", 1)
    chest = SeriesHit("s", "2", "CT", "CHEST", 2)
    assert route_by_series([chest, scout]) == ("lung_ldct", chest)
    assert route_by_series([scout]) == (None, scout)
    assert route_by_series([]) == (None, None)


def test_references_round_trip_and_name_unnamed_instances_by_position() -> None:
    refs = instance_refs(
        [
            InstanceHit("st", "se", "1.9", 2),
            InstanceHit("st", "se", None, 3),
            InstanceHit("st", "se", "1.8", 1),
            InstanceHit("st", "se", "1.8", 1),  # pages that overlap
        ]
    )
    assert [r.ref for r in refs] == ["st/se/1.8", "st/se/1.9", "st/se/?1"]
    assert [InstanceRef.parse(r.ref) for r in refs] == refs
    with pytest.raises(ValueError, match="study/series/instance"):
        InstanceRef.parse("20240311/JANSEN_P/IM1.dcm/x")


def _hits(uid: str, day: date, modality: str, body_part: str, count: int) -> tuple:  # type: ignore[type-arg]
    return (
        StudyHit(uid, day, "p", "a", count),
        [SeriesHit(uid, uid + ".1", modality, body_part, 1)],
        [InstanceHit(uid, uid + ".1", f"{uid}.1.{i}", i) for i in range(count)],
    )


def test_the_listing_holds_routed_studies_only_and_counts_the_rest() -> None:
    parts = [
        _hits("1.1", DAY, "CT", "CHEST", 3),
        _hits("1.2", DAY, "CR", "CHEST", 1),
        _hits("1.3", DAY, "CT", "HEAD", 2),  # no programme takes it: not retrieved at all
        _hits("1.4", DAY, "CT", "CHEST", 0),  # nothing to land
        _hits("1.5", date(2024, 3, 10), "CT", "CHEST", 1),  # a PACS that matched loosely
    ]
    result = build_listing(
        DAY,
        [p[0] for p in parts] + [parts[0][0]],  # listed twice: once per modality searched
        {p[0].study_uid: p[1] for p in parts},
        {p[0].study_uid: p[2] for p in parts},
    )
    listing = result.listing
    assert [(s.study_instance_uid, s.programme, len(s.files)) for s in listing.studies] == [
        ("1.1", "lung_ldct", 3),
        ("1.2", "cxr_tb", 1),
    ]
    assert listing.orphans == () and listing.file_count == 4
    assert (result.unrouted_studies, result.empty_studies, result.other_day_studies) == (1, 1, 1)
    first = listing.studies[0].files[0]
    assert (first.ref, first.study_instance_uid, first.sop_instance_uid) == (
        "1.1/1.1.1/1.1.1.0",
        "1.1",
        "1.1.1.0",
    )


def test_day_summaries_count_studies_and_instances_only() -> None:
    hits = [
        StudyHit("1.1", DAY, "p", "a", 3),
        StudyHit("1.1", DAY, "p", "a", 3),
        StudyHit("1.2", DAY, "q", "b", None),
        StudyHit("1.3", date(2024, 3, 12), "r", "c", 5),
        StudyHit("1.4", None, "s", "d", 1),
    ]
    assert day_summaries(hits) == {
        DAY: "studies=2 instances=3",
        date(2024, 3, 12): "studies=1 instances=5",
    }
