from __future__ import annotations

from pathlib import Path

import pydicom

from screenlake.verify import index_originals, scan_file
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
