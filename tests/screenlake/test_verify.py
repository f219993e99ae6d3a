from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import ImplicitVRLittleEndian, JPEGBaseline8Bit

from screenlake import verify
from screenlake.verify import index_originals, scan_file, scan_files
from tests.dicom_factory import ct_slice, write


def _clean_copy(original: pydicom.Dataset) -> pydicom.Dataset:
    ds = ct_slice(
        patient_id="SL0123456789ABCDEF",
        patient_name="SL0123456789ABCDEF",
        accession="A0123456789ABCDE",
        study_date="20231103",
    )
    ds.PatientBirthDate = ""
    ds.PatientSex, ds.PatientAge = original.PatientSex, original.PatientAge
    return ds


def test_a_clean_file_has_no_findings(tmp_path: Path) -> None:
    original = ct_slice()
    index = index_originals([write(original, tmp_path / "raw" / "1.dcm")])
    clean = write(_clean_copy(original), tmp_path / "research" / "x.dcm")
    assert scan_file(clean, "research/x.dcm", index) == []


def test_each_leak_is_found_by_element_without_its_value(tmp_path: Path) -> None:
    original = ct_slice(patient_name="Bakker^Willemijn", accession="2000000042")
    original.PatientAddress = "Kerkstraat 12, 3511 AB Utrecht"
    index = index_originals([write(original, tmp_path / "raw" / "1.dcm")])

    leaky = _clean_copy(original)
    leaky.ImageComments = "patient willemijn cooperative"
    leaky.StudyID = "2000000042"
    leaky.PatientBirthDate = "19580312"
    item = pydicom.Dataset()
    item.ReferencedSOPInstanceUID = original.SOPInstanceUID
    nested = pydicom.Dataset()
    nested.ReferencedImageSequence = [item]
    leaky.SourceImageSequence = [nested]
    leaky.DerivationDescription = "requested by 0612345678"
    path = write(leaky, tmp_path / "research" / "x.dcm")

    findings = scan_file(path, "research/x.dcm", index)
    by_element = {f.element.split(" ")[0]: f.kind for f in findings}
    assert by_element["ImageComments"] == "patient name"
    assert by_element["StudyID"] == "accession number"
    assert by_element["PatientBirthDate"] == "birth date"
    assert by_element["ReferencedSOPInstanceUID"] == "original UID"
    assert by_element["DerivationDescription"] == "phone number pattern"
    for finding in findings:
        assert "Willemijn" not in str(finding) and "2000000042" not in str(finding)


def test_a_name_in_a_file_path_is_found(tmp_path: Path) -> None:
    original = ct_slice(patient_name="Bakker^Willemijn")
    index = index_originals([write(original, tmp_path / "raw" / "1.dcm")])
    path = write(_clean_copy(original), tmp_path / "research" / "BAKKER" / "x.dcm")
    findings = scan_file(path, "research/BAKKER/x.dcm", index)
    assert [(f.element, f.kind) for f in findings] == [("file path", "patient name")]


def test_unreadable_originals_are_skipped_when_indexing(tmp_path: Path) -> None:
    (tmp_path / "bad.dcm").write_bytes(b"not dicom")
    index = index_originals([tmp_path / "bad.dcm", write(ct_slice(), tmp_path / "ok.dcm")])
    assert "7654321" in index.tokens


def test_kinds_a_switched_on_option_keeps_are_not_findings(tmp_path: Path) -> None:
    original = ct_slice()
    original.InstitutionName = "Ziekenhuis Rivierenland"
    original.StationName = "CTROOM7"
    raw = write(original, tmp_path / "raw" / "1.dcm")
    kept = _clean_copy(original)
    kept.InstitutionName = original.InstitutionName
    kept.StationName = original.StationName
    path = write(kept, tmp_path / "research" / "x.dcm")

    strict = scan_file(path, "x.dcm", index_originals([raw]))
    assert {f.kind for f in strict} == {"institution", "device identity"}
    relaxed = index_originals([raw], retained_options={"rtnInstIdOpt"})
    assert {f.kind for f in scan_file(path, "x.dcm", relaxed)} == {"device identity"}


def test_an_institution_kept_on_purpose_may_carry_its_own_postcode(tmp_path: Path) -> None:
    original = ct_slice()
    original.InstitutionAddress = "Ziekenhuisweg 1, 4000 AA Tiel"
    raw = write(original, tmp_path / "raw" / "1.dcm")
    kept = _clean_copy(original)
    kept.InstitutionAddress = original.InstitutionAddress
    path = write(kept, tmp_path / "research" / "x.dcm")
    relaxed = index_originals([raw], retained_options={"rtnInstIdOpt"})
    assert scan_file(path, "x.dcm", relaxed) == []
    # Anywhere else a postcode is still a finding, and without the option so is the address.
    kept.ImageComments = "patient moved to 5000 BB"
    path = write(kept, tmp_path / "research" / "y.dcm")
    assert [f.element.split()[0] for f in scan_file(path, "y.dcm", relaxed)] == ["ImageComments"]
    strict = {f.element.split()[0] for f in scan_file(path, "y.dcm", index_originals([raw]))}
    assert strict == {"InstitutionAddress", "ImageComments"}


def test_a_birth_date_written_another_way_in_free_text_is_found(tmp_path: Path) -> None:
    original = ct_slice()  # born 1958-03-12
    index = index_originals([write(original, tmp_path / "raw" / "1.dcm")])
    for written in ("born 12-03-1958", "dob 12/3/1958", "1958-03-12", "12.03.1958"):
        leaky = _clean_copy(original)
        leaky.ImageComments = written
        path = write(leaky, tmp_path / "research" / "x.dcm")
        assert [f.kind for f in scan_file(path, "x.dcm", index)] == ["birth date"], written
    other = _clean_copy(original)
    other.ImageComments = "follow-up 12-03-2025"
    assert scan_file(write(other, tmp_path / "research" / "y.dcm"), "y.dcm", index) == []


def test_placeholders_short_values_and_codes_are_not_findings(tmp_path: Path) -> None:
    original = ct_slice(accession="2")
    original.InstitutionName = "Philips Medical Systems"
    original.DeviceSerialNumber = "0"
    original.OperatorsName = "ANONYMOUS"
    index = index_originals([write(original, tmp_path / "raw" / "1.dcm")])
    kept = _clean_copy(original)
    kept.SeriesNumber = 2
    kept.Manufacturer = "Philips"
    kept.OperatorsName = "ANONYMOUS"
    kept.SpecificCharacterSet = ["", "ISO 2022 IR 13"]
    path = write(kept, tmp_path / "research" / "x.dcm")
    assert scan_file(path, "x.dcm", index) == []


@pytest.fixture(params=["bytes reader", "pydicom"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each leak is looked for on both reading paths: the scan's own reader, and pydicom for
    the files that reader leaves to it."""
    if request.param == "pydicom":

        def not_here(path: Path) -> list[object]:
            raise verify.NotReadHere("test")

        monkeypatch.setattr(verify, "text_elements", not_here)
    return str(request.param)


def _planted(tmp_path: Path, plant: Callable[[pydicom.Dataset], None], **save: Any) -> list[str]:
    original = ct_slice(patient_name="Bakker^Willemijn")
    index = index_originals([write(original, tmp_path / "raw" / "1.dcm")])
    leaky = _clean_copy(original)
    plant(leaky)
    path = tmp_path / "research" / "x.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    leaky.save_as(path, enforce_file_format=True, **save)
    return [f"{f.element.split(' ')[0]}:{f.kind}" for f in scan_file(path, "x.dcm", index)]


def _item(**elements: object) -> pydicom.Dataset:
    item = pydicom.Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def test_a_name_two_sequences_deep_is_found(tmp_path: Path, reader: str) -> None:
    def plant(ds: pydicom.Dataset) -> None:
        inner = _item(TextValue="seen by willemijn", ValueType="TEXT")
        ds.ContentSequence = [_item(ValueType="CONTAINER", ContentSequence=[inner])]

    assert _planted(tmp_path, plant) == ["TextValue:patient name"]


def test_a_name_in_a_private_element_is_found(tmp_path: Path, reader: str) -> None:
    def plant(ds: pydicom.Dataset) -> None:
        block = ds.private_block(0x0029, "SCREENLAKE TEST", create=True)
        block.add_new(0x10, "LO", "BAKKER W")

    assert _planted(tmp_path, plant) == ["private:patient name"]


def test_text_in_an_element_of_unknown_vr_is_found(tmp_path: Path, reader: str) -> None:
    # UN: a writer that did not know the element's type copied its bytes.
    def plant(ds: pydicom.Dataset) -> None:
        ds.add_new(0x00291010, "UN", b"call 0612345678 ")
        ds.add_new(0x00291011, "UN", "Willemijn Bakker".encode("latin-1"))

    assert _planted(tmp_path, plant) == ["private:phone number pattern", "private:patient name"]


def test_a_name_in_a_text_longer_than_any_deferred_value_is_found(
    tmp_path: Path, reader: str
) -> None:
    def plant(ds: pydicom.Dataset) -> None:
        ds.ContentSequence = [_item(TextValue="x " * verify.DEFER_SIZE + "Willemijn")]

    assert _planted(tmp_path, plant) == ["TextValue:patient name"]


def test_an_element_after_the_pixel_data_is_read(tmp_path: Path, reader: str) -> None:
    def plant(ds: pydicom.Dataset) -> None:
        ds.add_new(0x7FE10010, "LO", "SCREENLAKE TEST")
        ds.add_new(0x7FE11010, "LT", "reported to bakker")

    assert _planted(tmp_path, plant) == ["private:patient name"]


def test_an_implicit_vr_file_is_read(tmp_path: Path, reader: str) -> None:
    def plant(ds: pydicom.Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.ImageComments = "Willemijn"
        ds.add_new(0x00291010, "LO", "BSN 111222333")

    found = _planted(tmp_path, plant, implicit_vr=True)
    assert found == ["ImageComments:patient name", "private:BSN pattern"]


def test_a_name_in_another_character_set_is_found(tmp_path: Path, reader: str) -> None:
    original = ct_slice(patient_name="Çelik^Zoë")
    original.SpecificCharacterSet = "ISO_IR 192"
    index = index_originals([write(original, tmp_path / "raw" / "1.dcm")])
    leaky = _clean_copy(original)
    leaky.SpecificCharacterSet = "ISO_IR 100"
    leaky.ContentSequence = [_item(SpecificCharacterSet="ISO_IR 192", TextValue="zoë çelik")]
    path = write(leaky, tmp_path / "research" / "x.dcm")
    assert [f.kind for f in scan_file(path, "x.dcm", index)] == ["patient name"]


def test_the_pool_finds_what_one_process_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "_MIN_FILES_PER_WORKER", 2)
    originals, files = [], []
    for n in range(12):
        original = ct_slice(patient_name=f"Bakker^Willemijn{n:02d}", patient_id=f"P{n:07d}")
        originals.append(write(original, tmp_path / "raw" / f"{n}.dcm"))
        copy = _clean_copy(original)
        copy.ImageComments = f"willemijn{n:02d}" if n % 5 == 0 else "clean"
        files.append((write(copy, tmp_path / "research" / f"{n}.dcm"), f"{n}.dcm"))
    alone = index_originals(originals, workers=1)
    assert index_originals(originals, workers=2) == alone
    in_pool = scan_files(files, alone, workers=2)
    assert in_pool == scan_files(files, alone, workers=1)
    assert [f.file for f in in_pool] == ["0.dcm", "5.dcm", "10.dcm"]


def _reference_to(ds: pydicom.Dataset, uid: str) -> None:
    ds.SourceImageSequence = [_item(ReferencedSOPInstanceUID=uid)]


# Each alone in an otherwise clean file: no other leak may get the file read element by element.
ALONE = {
    "original UID": lambda ds, original: _reference_to(ds, original.SOPInstanceUID),
    "phone number pattern": lambda ds, _: setattr(ds, "ImageComments", "tel. 06-12345678"),
    "BSN pattern": lambda ds, _: setattr(ds, "ImageComments", "bsn 111222333"),
    "postcode pattern": lambda ds, _: setattr(ds, "ImageComments", "woont 3511 AB"),
    "birth date": lambda ds, original: setattr(ds, "ContentDate", original.PatientBirthDate),
    "accession number": lambda ds, original: setattr(ds, "StudyID", original.AccessionNumber),
    "institution": lambda ds, _: setattr(ds, "InstitutionName", "Ziekenhuis Rivierenland"),
    "device identity": lambda ds, _: setattr(ds, "ScanOptions", "CTROOM7"),
}


@pytest.mark.parametrize("kind", sorted(ALONE))
def test_each_leak_alone_is_found(tmp_path: Path, reader: str, kind: str) -> None:
    original = ct_slice()
    original.InstitutionName = "Ziekenhuis Rivierenland"
    original.StationName = "CTROOM7"
    index = index_originals([write(original, tmp_path / "raw" / "1.dcm")])
    leaky = _clean_copy(original)
    ALONE[kind](leaky, original)
    path = write(leaky, tmp_path / "research" / "x.dcm")
    assert [f.kind for f in scan_file(path, "x.dcm", index)] == [kind]


def test_a_file_truncated_in_its_pixel_data_is_still_searched(tmp_path: Path) -> None:
    original = ct_slice(patient_name="Bakker^Willemijn")
    index = index_originals([write(original, tmp_path / "raw" / "1.dcm")])
    leaky = _clean_copy(original)
    leaky.ImageComments = "Willemijn"
    # Compressed pixel data, of undefined length: pydicom, reading the whole file, gives up
    # on the data set and returns it empty.
    leaky.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    leaky.PixelData = encapsulate([b"\xff\xd8" + bytes(1000) + b"\xff\xd9"])
    leaky["PixelData"].VR = "OB"
    leaky["PixelData"].is_undefined_length = True
    path = write(leaky, tmp_path / "research" / "x.dcm")
    path.write_bytes(path.read_bytes()[:-100])
    assert [f.kind for f in scan_file(path, "x.dcm", index)] == ["patient name"]
