"""Tests for screenlake.deid.content: structured reports and presentation states, item by item."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from screenlake.deid import Profile, deidentify_dataset, load_default_profile
from screenlake.deid.dates import shift_date, shift_datetime
from screenlake.keys import date_shift_days, keyed_uid
from tests.screenlake.test_deid_corpus import (
    BIRTH_DATE,
    KEY,
    PATIENT_ID,
    SOP_UID,
    SOURCE_SOP_UID,
    make_gsps,
    make_sr,
    profile_with,
)

DAYS = date_shift_days(KEY, PATIENT_ID)


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_default_profile()


def _types(sequence: list[Dataset]) -> list[str]:
    return [str(i.ValueType) for i in sequence]


def test_sr_content_is_cleaned_item_by_item(profile: Profile) -> None:
    out = deidentify_dataset(make_sr(), KEY, profile).dataset
    # TEXT items go without Clean Structured Content; the tree around them stays.
    assert _types(out.ContentSequence) == ["PNAME", "DATE", "CONTAINER"]
    name, when, middle = out.ContentSequence
    assert name.PersonName == "ANONYMIZED"
    assert name.ConceptNameCodeSequence[0].CodeMeaning == "Person Observer Name"
    assert when.Date == shift_date(BIRTH_DATE, DAYS)
    assert _types(middle.ContentSequence) == ["CONTAINER", "DATETIME"]
    inner, stamp = middle.ContentSequence
    assert stamp.DateTime == shift_datetime("20240118093000", DAYS)
    assert _types(inner.ContentSequence) == ["UIDREF"]
    assert inner.ContentSequence[0].UID == keyed_uid(KEY, SOURCE_SOP_UID)


def test_sr_observers_and_participants(profile: Profile) -> None:
    out = deidentify_dataset(make_sr(), KEY, profile).dataset
    observer = out.VerifyingObserverSequence[0]
    assert observer.VerifyingObserverName == "ANONYMIZED"
    assert observer.VerifyingOrganization == "ANONYMIZED"
    assert observer.VerificationDateTime == shift_datetime("20240118130000", DAYS)
    assert len(observer.VerifyingObserverIdentificationCodeSequence) == 0
    assert "AuthorObserverSequence" not in out
    assert "ParticipantSequence" not in out
    (code,) = out.PersonIdentificationCodeSequence
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "ANONYMIZED",
        "ANONYMIZED",
        "ANONYMIZED",
    )
    assert (out.CompletionFlag, out.VerificationFlag) == ("COMPLETE", "VERIFIED")


def test_sr_text_is_cleaned_under_clean_structured_content(tmp_path: Path) -> None:
    profile = profile_with(tmp_path, cleanStructContOpt=True)
    out = deidentify_dataset(make_sr(), KEY, profile).dataset
    assert _types(out.ContentSequence) == ["PNAME", "DATE", "TEXT", "CONTAINER"]
    assert out.ContentSequence[2].TextValue == "Patient (geb.), BSN: nodule 6 mm"
    deep = out.ContentSequence[3].ContentSequence[0].ContentSequence[0]
    assert (deep.ValueType, deep.TextValue) == ("TEXT", "see")
    assert out.ContentSequence[0].PersonName == "ANONYMIZED"
    codes = [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    assert "113104" in codes


def test_gsps_text_annotations_go(profile: Profile) -> None:
    out = deidentify_dataset(make_gsps(), KEY, profile).dataset
    # The text-only annotation goes; the other keeps its graphic, without its text.
    (annotation,) = out.GraphicAnnotationSequence
    assert annotation.GraphicLayer == "ROI"
    assert len(annotation.TextObjectSequence) == 0
    assert annotation.GraphicObjectSequence[0].GraphicData == [1.0, 1.0, 20.0, 20.0]
    assert out.ContentLabel == "ANONYMIZED"
    assert out.ContentDescription == ""
    assert out.ContentCreatorName == ""
    assert out.PresentationCreationDate == shift_date("20240119", DAYS)
    assert out.PresentationCreationTime == "140000"
    reference = out.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == keyed_uid(KEY, SOP_UID)


def test_gsps_text_is_cleaned_under_clean_graphics(tmp_path: Path) -> None:
    profile = profile_with(tmp_path, cleanGraphOpt=True, cleanDescOpt=True)
    out = deidentify_dataset(make_gsps(), KEY, profile).dataset
    texts = [
        [t.UnformattedTextValue for t in a.TextObjectSequence]
        for a in out.GraphicAnnotationSequence
    ]
    assert texts == [["P"], ["P"]]
    assert out.ContentLabel == "ANONYMIZED"  # all identifier: the dummy keeps it type 1
    assert out.ContentDescription == "Annotated for"
    assert out.ContentCreatorName == ""
