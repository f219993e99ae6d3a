from __future__ import annotations

import dataclasses
import io
import warnings
from datetime import date, datetime
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from highdicom.sr.utils import find_content_items
from pydicom.uid import ComprehensiveSRStorage

from screenlake.findings_report import (
    DECISION_SUPPORT_STATEMENT,
    FLAGGED,
    INTENDED_USE,
    NOT_FLAGGED,
    PRIORITY_RANK,
    SCORE,
    THRESHOLD,
    TRIAGE_FLAG,
    FindingsReportBuilder,
    StudyFinding,
    findings_report,
)
from tests.dicom_factory import ct_slice

STUDY_UID = "1.2.826.0.1.3680043.8.498.1001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1002"
SOP_UID = "1.2.826.0.1.3680043.8.498.1003"
WEIGHTS = "0123456789abcdef" * 4
WHEN = datetime(2024, 3, 13, 8, 30, 15)


def _finding(**changes: Any) -> StudyFinding:
    finding = StudyFinding(
        original_study_instance_uid=STUDY_UID,
        patient_id="7654321",
        patient_name="Jansen^Pieter",
        patient_birth_date="19580312",
        patient_sex="F",
        accession_number="1000000001",
        study_date=date(2024, 3, 12),
        programme="lung_ldct",
        score=0.8734567890123456,
        flag=True,
        threshold=0.5,
        priority_rank=1,
        model_name="lung_ldct_reference",
        model_version="1.2.0",
        weights_sha256=WEIGHTS,
    )
    return dataclasses.replace(finding, **changes)


def _build(finding: StudyFinding, **kwargs: Any) -> pydicom.Dataset:
    return findings_report(
        finding,
        series_instance_uid=SERIES_UID,
        sop_instance_uid=SOP_UID,
        content_datetime=WHEN,
        **kwargs,
    )


def _round_trip(report: pydicom.Dataset, tmp_path: Path) -> pydicom.Dataset:
    path = tmp_path / "report.dcm"
    report.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def _texts(ds: pydicom.Dataset) -> list[str]:
    return [
        str(item.TextValue)
        for item in find_content_items(ds, recursive=True)
        if "TextValue" in item
    ]


def _measurement_group(path: Path) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    report = hd.sr.srread(path)
    assert isinstance(report.content, hd.sr.MeasurementReport)
    (group,) = report.content.get_image_measurement_groups()
    assert isinstance(group, hd.sr.MeasurementsAndQualitativeEvaluations)
    return group


def test_flagged_report_is_filed_into_the_original_study(tmp_path: Path) -> None:
    finding = _finding()
    ds = _round_trip(_build(finding, institution_name="Ziekenhuis Oost"), tmp_path)

    assert ds.SOPClassUID == ComprehensiveSRStorage
    assert ds.file_meta.MediaStorageSOPClassUID == ComprehensiveSRStorage
    assert ds.StudyInstanceUID == STUDY_UID
    assert (ds.SeriesInstanceUID, ds.SOPInstanceUID) == (SERIES_UID, SOP_UID)
    assert ds.PatientID == "7654321"
    assert str(ds.PatientName) == "Jansen^Pieter"
    assert ds.PatientBirthDate == "19580312"
    assert ds.PatientSex == "F"
    assert ds.AccessionNumber == "1000000001"
    assert ds.StudyDate == "20240312"
    assert ds.Modality == "SR"
    assert ds.Manufacturer == "screenlake"
    assert ds.InstitutionName == "Ziekenhuis Oost"
    assert ds.SeriesNumber > 1 and ds.InstanceNumber == 1
    assert (ds.ContentDate, ds.ContentTime) == ("20240313", "083015")
    assert (ds.InstanceCreationDate, ds.InstanceCreationTime) == ("20240313", "083015")
    assert ds.VerificationFlag == "UNVERIFIED"
    assert ds.CompletionFlag == "COMPLETE"
    assert ds.PreliminaryFlag == "PRELIMINARY"
    assert ds.SeriesDescription == DECISION_SUPPORT_STATEMENT
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert "CurrentRequestedProcedureEvidenceSequence" not in ds

    group = _measurement_group(tmp_path / "report.dcm")
    (score,) = group.get_measurements(name=SCORE)
    assert score.value == finding.score
    assert score.unit == hd.sr.CodedConcept("1", "UCUM", "no units")
    assert group.get_measurements(name=THRESHOLD)[0].value == 0.5
    assert group.get_measurements(name=PRIORITY_RANK)[0].value == 1
    (flag,) = group.get_qualitative_evaluations(name=TRIAGE_FLAG)
    assert flag.value == FLAGGED

    statements = find_content_items(ds, name=INTENDED_USE, recursive=True)
    assert [s.TextValue for s in statements] == [DECISION_SUPPORT_STATEMENT]
    procedure = find_content_items(
        ds, name=hd.sr.CodedConcept("121058", "DCM", "Procedure reported")
    )
    assert procedure[0].ConceptCodeSequence[0].CodeValue == "lung_ldct"


def test_algorithm_identification_travels_with_the_score(tmp_path: Path) -> None:
    ds = _round_trip(_build(_finding()), tmp_path)
    group = _measurement_group(tmp_path / "report.dcm")
    (score,) = group.get_measurements(name=SCORE)
    for container in (group[0], score[0]):
        items = {
            item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue
            for item in container.ContentSequence
            if item.ValueType == "TEXT"
        }
        assert items["Algorithm Name"] == "lung_ldct_reference"
        assert items["Algorithm Version"] == "1.2.0"
        assert items["Algorithm Parameters"] == f"weights_sha256={WEIGHTS}"
    assert any(WEIGHTS in text for text in _texts(ds))


def test_unflagged_report_says_not_flagged(tmp_path: Path) -> None:
    _round_trip(_build(_finding(score=0.12, flag=False, priority_rank=None)), tmp_path)
    group = _measurement_group(tmp_path / "report.dcm")
    assert group.get_qualitative_evaluations(name=TRIAGE_FLAG)[0].value == NOT_FLAGGED
    assert group.get_measurements(name=SCORE)[0].value == 0.12
    assert group.get_measurements(name=PRIORITY_RANK) == []


def test_evidence_is_listed_and_referenced(tmp_path: Path) -> None:
    headers = [ct_slice(study_uid=STUDY_UID, series_uid="1.2.3.4", z=z) for z in (0.0, 2.5)]
    ds = _round_trip(_build(_finding(evidence=headers)), tmp_path)

    (study,) = ds.CurrentRequestedProcedureEvidenceSequence
    assert study.StudyInstanceUID == STUDY_UID
    (series,) = study.ReferencedSeriesSequence
    listed = [ref.ReferencedSOPInstanceUID for ref in series.ReferencedSOPSequence]
    assert listed == [h.SOPInstanceUID for h in headers]
    assert "PertinentOtherEvidenceSequence" not in ds
    sources = _measurement_group(tmp_path / "report.dcm").source_images
    assert [s.referenced_sop_instance_uid for s in sources] == listed


def test_same_inputs_build_equal_reports() -> None:
    first, second = _build(_finding()), _build(_finding())
    assert first == second
    assert first.file_meta == second.file_meta


def test_non_ascii_and_one_component_names_round_trip_without_warnings(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning could carry the name into a log
        ds = _round_trip(_build(_finding(patient_name="Müller")), tmp_path)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Müller"


def test_optional_patient_attributes_may_be_absent(tmp_path: Path) -> None:
    finding = _finding(
        patient_name=None,
        patient_birth_date=None,
        patient_sex=None,
        accession_number=None,
        study_date=None,
    )
    ds = _round_trip(_build(finding), tmp_path)
    assert ds.PatientID == "7654321"
    for keyword in ("PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber"):
        assert keyword in ds and not ds[keyword].value  # type 2: present, empty


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"score": 1.5, "flag": True}, "score is 1.5, outside"),
        ({"score": -0.1, "flag": False}, "score is -0.1, outside"),
        ({"score": float("nan"), "flag": False}, "score is nan, outside"),
        ({"threshold": 2.0, "flag": False}, "threshold is 2.0, outside"),
        ({"flag": False}, "flag is False but score"),
        ({"model_name": ""}, "model_name is empty"),
        ({"model_version": "   "}, "model_version is empty"),
        ({"weights_sha256": "abc123"}, "weights_sha256 must be the SHA-256"),
        ({"weights_sha256": "g" * 64}, "weights_sha256 must be the SHA-256"),
        ({"original_study_instance_uid": ""}, "original_study_instance_uid is empty"),
        (
            {"original_study_instance_uid": "1.2.x"},
            "original_study_instance_uid is not a DICOM UID",
        ),
        ({"patient_id": ""}, "patient_id is empty"),
        ({"patient_birth_date": "1958-03-12"}, "patient_birth_date must be a DICOM date"),
        ({"patient_birth_date": "19581312"}, "patient_birth_date must be a DICOM date"),
        ({"patient_sex": "X"}, "patient_sex must be"),
        ({"accession_number": "A" * 17}, "accession_number is longer than 16"),
        ({"priority_rank": 0}, "priority_rank must be"),
        ({"programme": "knee_mri"}, "unknown screening programme"),
    ],
)
def test_invalid_findings_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _build(_finding(**changes))


def test_invalid_report_uids_are_refused() -> None:
    with pytest.raises(ValueError, match="sop_instance_uid is empty"):
        findings_report(
            _finding(), series_instance_uid=SERIES_UID, sop_instance_uid="", content_datetime=WHEN
        )
    with pytest.raises(ValueError, match="must differ"):
        findings_report(
            _finding(),
            series_instance_uid=STUDY_UID,
            sop_instance_uid=SOP_UID,
            content_datetime=WHEN,
        )


def test_evidence_from_another_study_or_patient_is_refused() -> None:
    other_study = ct_slice(study_uid="1.2.3.999")
    with pytest.raises(ValueError, match=r"evidence\[0\] belongs to another study"):
        _build(_finding(evidence=[other_study]))
    other_patient = ct_slice(study_uid=STUDY_UID, patient_id="1111111")
    with pytest.raises(ValueError, match=r"evidence\[0\] names another PatientID") as refused:
        _build(_finding(evidence=[other_patient]))
    assert "1111111" not in str(refused.value) and "7654321" not in str(refused.value)


# --- one builder for a run's reports --------------------------------------------------------


def _written(report: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    report.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _varied_findings() -> list[StudyFinding]:
    """Findings that differ in every way a report can: patient, evidence, rank, flag,
    programme, model, character set; each its own study."""
    studies = [f"1.2.826.0.1.3680043.8.498.{2000 + i}" for i in range(8)]

    def slices(study: str, series: str, count: int) -> list[pydicom.Dataset]:
        return [ct_slice(study_uid=study, series_uid=series, z=2.5 * z) for z in range(count)]

    return [
        _finding(original_study_instance_uid=studies[0], evidence=slices(studies[0], "1.2.3.1", 3)),
        _finding(original_study_instance_uid=studies[1]),
        _finding(
            original_study_instance_uid=studies[2],
            patient_name=None,
            patient_birth_date=None,
            patient_sex=None,
            accession_number=None,
            study_date=None,
            priority_rank=None,
        ),
        _finding(
            original_study_instance_uid=studies[3], patient_name="Müller^Jörg", patient_id="8"
        ),
        _finding(
            original_study_instance_uid=studies[4],
            evidence=slices(studies[4], "1.2.3.5", 2) + slices(studies[4], "1.2.3.6", 1),
            score=0.2,
            flag=False,
            priority_rank=7,
        ),
        _finding(
            original_study_instance_uid=studies[5],
            programme="cxr_tb",
            model_name="cxr_tb_reference",
            model_version="2.0.0",
            weights_sha256="F" * 64,
            threshold=0.3,
            study_date=date(2023, 1, 2),
        ),
        _finding(original_study_instance_uid=studies[6], patient_name="Ådne", patient_sex="O"),
        _finding(
            original_study_instance_uid=studies[7], patient_id="1", patient_birth_date="20000229"
        ),
    ]


@pytest.mark.parametrize("institution_name", [None, "Ziekenhuis Oost"])
def test_builder_builds_what_findings_report_builds(institution_name: str | None) -> None:
    builder = FindingsReportBuilder(manufacturer="screenlake", institution_name=institution_name)
    for index, finding in enumerate(_varied_findings()):
        uids = {"series_instance_uid": f"2.25.{index}1", "sop_instance_uid": f"2.25.{index}2"}
        when = datetime(2024, 3, 13 + index, 8, index, 15)
        expected = findings_report(
            finding, **uids, content_datetime=when, institution_name=institution_name
        )
        built = builder.build(finding, **uids, content_datetime=when)
        assert built == expected, index
        assert built.file_meta == expected.file_meta, index
        assert _written(built) == _written(expected), index


def test_builder_runs_highdicoms_document_constructor_once_per_character_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    constructed = []
    original = hd.sr.ComprehensiveSR

    def counting(*args: Any, **kwargs: Any) -> hd.sr.ComprehensiveSR:
        constructed.append(kwargs["specific_character_set"])
        return original(*args, **kwargs)

    monkeypatch.setattr(hd.sr, "ComprehensiveSR", counting)
    builder = FindingsReportBuilder()
    findings = _varied_findings()
    for index, finding in enumerate(findings):
        builder.build(
            finding,
            series_instance_uid=f"2.25.{index}1",
            sop_instance_uid=f"2.25.{index}2",
            content_datetime=WHEN,
        )
    assert sorted(constructed, key=str) == ["ISO_IR 192", None]  # once each


def test_reports_of_one_builder_share_nothing_that_can_change() -> None:
    builder = FindingsReportBuilder()
    finding = _varied_findings()[0]
    args = {
        "series_instance_uid": SERIES_UID,
        "sop_instance_uid": "2.25.9",
        "content_datetime": WHEN,
    }
    first = builder.build(finding, **args)
    expected = _written(findings_report(finding, **args))
    first.ContributingEquipmentSequence[0].Manufacturer = "changed"
    first.CodingSchemeIdentificationSequence[0].CodingSchemeName = "changed"
    first.file_meta.ImplementationVersionName = "changed"
    first.ConceptNameCodeSequence[0].CodeMeaning = "changed"
    assert _written(builder.build(finding, **args)) == expected


def test_builder_refuses_what_findings_report_refuses() -> None:
    builder = FindingsReportBuilder()
    with pytest.raises(ValueError, match="flag is False but score"):
        builder.build(
            _finding(flag=False),
            series_instance_uid=SERIES_UID,
            sop_instance_uid=SOP_UID,
            content_datetime=WHEN,
        )
    with pytest.raises(ValueError, match=r"evidence\[0\] belongs to another study"):
        builder.build(
            _finding(evidence=[ct_slice(study_uid="1.2.3.999")]),
            series_instance_uid=SERIES_UID,
            sop_instance_uid=SOP_UID,
            content_datetime=WHEN,
        )
    with pytest.raises(ValueError, match="manufacturer is longer than 64"):
        FindingsReportBuilder(manufacturer="m" * 65)
