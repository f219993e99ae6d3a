from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files

from screenlake import verify
from screenlake.text_elements import NotReadHere, text_elements
from tests.dicom_factory import ct_slice, write


def _pydicom_tags(path: Path) -> Counter[int]:
    """The text elements pydicom finds, by the walk the scan uses on files left to pydicom."""
    ds = pydicom.dcmread(path, defer_size=verify.DEFER_SIZE)
    return Counter(int(element.tag) for _, element, _, _ in verify._file_elements(ds))


def test_it_finds_the_text_elements_pydicom_finds_in_its_test_files() -> None:
    read = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in get_testdata_files():
            path = Path(name)
            if not path.is_file():
                continue
            try:
                found = text_elements(path)
            except NotReadHere:
                continue
            read += 1
            assert Counter(e.tag for e in found) == _pydicom_tags(path), path.name
    assert read > 150  # of some 240: the rest is big endian, deflated, damaged or not DICOM


def test_values_and_character_sets_are_as_written(tmp_path: Path) -> None:
    ds = ct_slice(patient_name="Çelik^Zoë")
    ds.SpecificCharacterSet = "ISO_IR 192"
    item = pydicom.Dataset()
    item.SpecificCharacterSet = "ISO_IR 100"
    item.TextValue = "Zoë"
    ds.ContentSequence = [item]
    found = {e.tag: e for e in text_elements(write(ds, tmp_path / "x.dcm"))}
    assert found[0x00100010].value.decode(found[0x00100010].encodings[0]).strip() == "Çelik^Zoë"
    assert found[0x0040A160].value.decode(found[0x0040A160].encodings[0]).strip() == "Zoë"
    assert found[0x0040A160].encodings == ("latin_1",)
    assert 0x7FE00010 not in found and 0x00280010 not in found  # pixel data, Rows: binary


@pytest.mark.parametrize(
    "name",
    ["MR_small_bigendian.dcm", "image_dfl.dcm", "no_meta.dcm", "rtplan_truncated.dcm"],
)
def test_files_it_does_not_walk_are_left_to_pydicom(name: str) -> None:
    with pytest.raises(NotReadHere):
        text_elements(Path(get_testdata_file(name)))  # type: ignore[arg-type]


def test_an_empty_file_is_left_to_pydicom(tmp_path: Path) -> None:
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(NotReadHere):
        text_elements(tmp_path / "empty.dcm")


def test_a_value_running_past_the_end_of_the_file_is_not_read(tmp_path: Path) -> None:
    path = write(ct_slice(), tmp_path / "x.dcm")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(NotReadHere):
        text_elements(path)
