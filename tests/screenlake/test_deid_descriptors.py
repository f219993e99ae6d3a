"""Tests for screenlake.deid.descriptors: text kept, every known identifier taken out of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from screenlake.deid import deidentify_dataset, load_default_profile
from screenlake.deid.descriptors import Identifiers
from tests.screenlake.test_deid_corpus import (
    ACCESSION,
    ADDRESS,
    BIRTH_DATE,
    BSN,
    INSTITUTION,
    KEY,
    NAME,
    PATIENT_ID,
    PHONE,
    REFERRING,
    make_ct,
    profile_with,
)


@pytest.fixture(scope="module")
def identifiers() -> Identifiers:
    found = Identifiers()
    found.add("name", [NAME, REFERRING])
    found.add("id", [PATIENT_ID, ACCESSION])
    found.add("id", [BSN])
    found.add("birth_date", [BIRTH_DATE])
    found.add("address", [ADDRESS])
    found.add("phone", [PHONE])
    found.add("phrase", [INSTITUTION])
    return found


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("Longscreening Jansen", "Longscreening"),
        ("CT thorax P. JANSEN", "CT thorax P."),
        ("pieter hendrik jansen, follow-up", "follow-up"),
        ("Jansen^Pieter^Hendrik", ""),
        ("Dr. de Vries, Anna", "Dr."),
        ("ID PID-8403921 / PID8403921 / 8403921", "ID"),
        ("acc ACC20240117-0042", "acc"),
        ("BSN 123456782", "BSN"),
        ("born 19560314", "born"),
        ("born 1956-03-14", "born"),
        ("born 14-03-1956", "born"),
        ("born 14/3/1956", "born"),
        ("born 03/14/1956", "born"),
        ("born 14.03.56", "born"),
        ("born 14 maart 1956", "born"),
        ("born March 14, 1956", "born"),
        ("born 14 Mar 1956", "born"),
        ("Kerkstraat 12, 3512 AB Utrecht", ""),
        ("lives in Utrecht", "lives in"),
        ("tel 030-1234567", "tel"),
        ("tel +31 (0)30 123 45 67", "tel"),
        ("tel 0031301234567", "tel"),
        ("Ziekenhuis Noorderlicht radiology", "radiology"),
        # The identifier patterns of screenlake.verify, whoever they belong to.
        ("other BSN 111222333", "other BSN"),
        ("call 06-12345678", "call"),
        ("tel 030-7654321", "tel"),
        ("postcode 9712 CP", "postcode"),
    ],
)
def test_identifiers_are_cut_out_of_text(identifiers: Identifiers, text: str, cleaned: str) -> None:
    assert identifiers.mentioned_in(text)
    assert identifiers.clean(text) == cleaned


@pytest.mark.parametrize(
    "text",
    [
        "Thorax 1.25 mm B30f",
        "LDCT 120 kV 30 mAs",
        "born 15-03-1956",  # another date
        "Series 19560315",
        "Janssen protocol",  # another name
        "SIEMENS",
        "ref 7654321",
        "other 123456789",  # nine digits, no valid BSN
    ],
)
def test_other_text_is_left_alone(identifiers: Identifiers, text: str) -> None:
    assert identifiers.clean(text) == text


def test_clean_descriptors_on_keeps_the_text(tmp_path: Path) -> None:
    profile = profile_with(tmp_path, cleanDescOpt=True)
    out = deidentify_dataset(make_ct(), KEY, profile).dataset
    assert out.StudyDescription == "Longscreening"
    assert out.SeriesDescription == "Thorax P"
    assert out.ImageComments == "Pt, BSN, tel"
    codes = [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105", "113107", "113108"]


def test_clean_descriptors_off_removes_them() -> None:
    out = deidentify_dataset(make_ct(), KEY, load_default_profile()).dataset
    for keyword in ("StudyDescription", "SeriesDescription", "ImageComments"):
        assert keyword not in out


def test_a_descriptor_of_only_identifiers_gets_the_dummy(tmp_path: Path) -> None:
    profile = profile_with(tmp_path, cleanDescOpt=True)
    ds = make_ct()
    ds.StudyDescription = "Jansen"
    ds.ProtocolName = "Lung screening"
    out = deidentify_dataset(ds, KEY, profile).dataset
    assert out.StudyDescription == "ANONYMIZED"
    assert out.ProtocolName == "Lung screening"


def test_staff_names_nested_anywhere_are_known(tmp_path: Path) -> None:
    profile = profile_with(tmp_path, cleanDescOpt=True)
    ds = make_ct()
    ds.StudyDescription = "Reviewed by Visser and Mulder"  # names from a nested item only
    out = deidentify_dataset(ds, KEY, profile).dataset
    assert out.StudyDescription == "Reviewed by and"
