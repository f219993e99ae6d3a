"""Tests for screenlake.deid.private: private attributes, the Retain Safe Private allow-list."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from screenlake.deid import Profile, deidentify_file, load_default_profile, write_deidentified
from tests.screenlake.test_deid_corpus import (
    KEY,
    NAME,
    PATIENT_ID,
    item,
    make_ct,
    profile_with,
    save,
)

CSA = "SIEMENS CSA HEADER"
HOSPITAL = "NOORD HOSPITAL 1.0"


def _private_ct() -> Dataset:
    """Private blocks as exports hold them: a safe Siemens element, a hospital block whose
    element sits at the very offset the allow-list names for Siemens, a second block with
    Siemens's creator again, orphans, and UN."""
    ds = make_ct()
    for tag in [e.tag for e in ds if e.tag.is_private]:
        del ds[tag]
    ds.add_new(0x00290010, "LO", CSA)
    ds.add_new(0x00291008, "CS", "IMAGE NUM 4")  # allowed: CSA Image Header Type
    ds.add_new(0x00291010, "OB", NAME.encode())  # CSA Image Header Info: not on the list
    ds.add_new(0x00290011, "LO", HOSPITAL)
    ds.add_new(0x00291108, "CS", "JANSEN")  # offset 0x08 again, but the hospital's block
    ds.add_new(0x00290012, "LO", CSA)  # a duplicate creator: the same vendor's block
    ds.add_new(0x00291208, "CS", "IMAGE NUM 5")
    ds.add_new(0x00291308, "CS", "PID 8403921")  # block 0x13 has no creator: an orphan
    ds.add_new(0x00311001, "LO", NAME)  # a group without any creator
    ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    ds.add(DataElement(0x0019100C, "UN", b"1000"))  # B_value, allowed, sent as UN
    ds.add(DataElement(0x00191010, "UN", PATIENT_ID.encode()))  # not allowed
    ds.add_new(0x00430010, "LO", "GEMS_PARM_01")
    ds.add_new(0x00431027, "DS", "1.375")  # allowed, but the list says SH: wrong VR
    nested = ds.SourceImageSequence[0]
    nested.add_new(0x00290010, "LO", CSA)
    nested.add_new(0x00291008, "CS", "NESTED")
    nested.add_new(0x00291009, "LO", NAME)
    return ds


def _private(ds: Dataset) -> dict[int, object]:
    return {int(e.tag): e.value for e in ds if e.tag.is_private}


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_default_profile()


def test_without_the_option_every_private_element_goes(profile: Profile, tmp_path: Path) -> None:
    out = deidentify_file(save(_private_ct(), tmp_path / "in.dcm"), KEY, profile).dataset
    assert [e for e in out.iterall() if e.tag.is_private] == []


def test_the_allow_list_keeps_safe_elements_per_block(tmp_path: Path) -> None:
    profile = profile_with(tmp_path, rtnSafePrivOpt=True)
    result = deidentify_file(save(_private_ct(), tmp_path / "in.dcm"), KEY, profile)
    write_deidentified(result, tmp_path / "out.dcm")
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert _private(out) == {
        0x00190010: "SIEMENS MR HEADER",
        0x0019100C: "1000",  # UN read as the list's IS
        0x00290010: CSA,
        0x00291008: "IMAGE NUM 4",
        0x00290012: CSA,
        0x00291208: "IMAGE NUM 5",
    }
    assert out[0x0019100C].VR == "IS"
    # The Retain Safe Private option reads the creator of the element's own block.
    assert 0x00291108 not in out and 0x00290011 not in out
    nested = out.SourceImageSequence[0]
    assert _private(nested) == {0x00290010: CSA, 0x00291008: "NESTED"}
    codes = [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    assert "113111" in codes


def test_a_creator_without_a_kept_element_goes(tmp_path: Path) -> None:
    profile = profile_with(tmp_path, rtnSafePrivOpt=True)
    ds = make_ct()
    for tag in [e.tag for e in ds if e.tag.is_private]:
        del ds[tag]
    ds.add_new(0x00290010, "LO", CSA)
    ds.add_new(0x00291010, "OB", NAME.encode())
    out = deidentify_file(save(ds, tmp_path / "in.dcm"), KEY, profile).dataset
    assert _private(out) == {}


def test_kept_private_text_is_cleaned_inside_a_cleaned_sequence(tmp_path: Path) -> None:
    profile = profile_with(tmp_path, rtnSafePrivOpt=True, cleanDescOpt=True)
    ds = make_ct()
    for tag in [e.tag for e in ds if e.tag.is_private]:
        del ds[tag]
    request = ds.RequestAttributesSequence = [item(RequestedProcedureID="RQ-1")]
    request[0].add_new(0x00430010, "LO", "GEMS_PARM_01")
    request[0].add_new(0x00431027, "SH", "JANSEN 1.375:1")
    out = deidentify_file(save(ds, tmp_path / "in.dcm"), KEY, profile).dataset
    (cleaned,) = out.RequestAttributesSequence  # C under Clean Descriptors: kept, cleaned
    assert cleaned[0x00431027].value == "1.375:1"
    assert "RequestedProcedureID" not in cleaned
