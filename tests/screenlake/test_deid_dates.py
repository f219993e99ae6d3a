"""Tests for screenlake.deid.dates: one keyed offset per patient, every DA and DT moved."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import pytest

from screenlake.deid import Profile, deidentify_dataset, load_default_profile
from screenlake.deid.dates import patient_age, shift_date, shift_datetime
from screenlake.keys import date_shift_days
from tests.screenlake.test_deid_corpus import (
    KEY,
    OTHER_KEY,
    PATIENT_ID,
    SOP_UID,
    STUDY_UID,
    make_ct,
    make_enhanced,
)

DAYS = date_shift_days(KEY, PATIENT_ID)


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_default_profile()


def _day(value: str) -> date:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def test_dates_shift_by_the_patient_offset_and_times_stay(profile: Profile) -> None:
    out = deidentify_dataset(make_ct(), KEY, profile).dataset
    assert 1 <= DAYS <= 365
    shifted = (date(2024, 1, 17) - timedelta(days=DAYS)).strftime("%Y%m%d")
    assert out.StudyDate == out.SeriesDate == out.AcquisitionDate == out.ContentDate == shifted
    assert list(out.DateOfLastCalibration) == [
        shift_date("20231201", DAYS),
        shift_date("20240110", DAYS),
    ]
    assert out.AcquisitionDateTime == f"{shifted}101530.123456+0100"
    assert out.StudyTime == "101530"
    nested = out.ReferencedImageEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert nested.ReferencedSOPSequence[0].ContentDate == shifted


def test_per_frame_functional_group_dates(profile: Profile) -> None:
    out = deidentify_dataset(make_enhanced(), KEY, profile).dataset
    frames = out.PerFrameFunctionalGroupsSequence
    assert len(frames) == 3
    for number, frame in enumerate(frames):
        content = frame.FrameContentSequence[0]
        assert content.FrameAcquisitionDateTime == shift_datetime(
            f"20240117{10 + number:02d}1500.5+0100", DAYS
        )
        assert content.FrameAcquisitionDateTime.endswith(f"{10 + number:02d}1500.5+0100")
        assert content.FrameReferenceDateTime == shift_datetime(f"2024011710{number:02d}00", DAYS)
        assert content.FrameAcquisitionNumber == number + 1
    assert out.AcquisitionDateTime == shift_datetime("20240117101500", DAYS)
    shared = out.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert shared.SliceThickness == "1.0"


def test_two_studies_of_one_patient_keep_their_interval(profile: Profile) -> None:
    first = deidentify_dataset(make_ct(), KEY, profile).dataset
    later = make_ct(study_uid=STUDY_UID + "9", sop_uid=SOP_UID + "9", study_date="20250203")
    second = deidentify_dataset(later, KEY, profile).dataset
    assert _day(second.StudyDate) - _day(first.StudyDate) == date(2025, 2, 3) - date(2024, 1, 17)
    assert _day(second.AcquisitionDateTime) - _day(first.AcquisitionDateTime) == timedelta(383)
    assert second.PatientID == first.PatientID
    assert second.StudyInstanceUID != first.StudyInstanceUID
    other = deidentify_dataset(make_ct(), OTHER_KEY, profile).dataset
    assert other.StudyDate == shift_date("20240117", date_shift_days(OTHER_KEY, PATIENT_ID))


@pytest.mark.parametrize(
    ("shift", "value", "days", "expected"),
    [
        (shift_date, "20240301", 1, "20240229"),
        (shift_date, "2024.03.01", 1, "20240229"),
        (shift_datetime, "20240117101530.123456+0100", 20, "20231228101530.123456+0100"),
        (shift_datetime, "20240117-0500", 17, "20231231-0500"),
        (shift_datetime, "202401", 1, "202312"),
        (shift_datetime, "2024", 1, "2023"),
    ],
)
def test_shift_helpers(
    shift: Callable[[str, int], str], value: str, days: int, expected: str
) -> None:
    assert shift(value, days) == expected


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_malformed_date_is_emptied(profile: Profile) -> None:
    ds = make_ct()
    ds.SeriesDate = "not a date"
    assert deidentify_dataset(ds, KEY, profile).dataset.SeriesDate == ""


@pytest.mark.parametrize(
    ("birth", "on", "age"),
    [
        ("19560314", "20240117", "067Y"),
        ("20231020", "20240117", "002M"),
        ("20240101", "20240117", "002W"),
        ("20240115", "20240117", "002D"),
        ("20240118", "20240117", None),
        ("bad", "20240117", None),
    ],
)
def test_patient_age(birth: str, on: str, age: str | None) -> None:
    assert patient_age(birth, on) == age


def test_patient_age_is_computed_when_missing(profile: Profile) -> None:
    ds = make_ct()
    del ds.PatientAge
    assert deidentify_dataset(ds, KEY, profile).dataset.PatientAge == "067Y"
    ds.PatientBirthDate = "20231020"
    assert deidentify_dataset(ds, KEY, profile).dataset.PatientAge == "002M"
