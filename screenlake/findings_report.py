"""The DICOM Structured Report that carries one screening finding back to the hospital's PACS.

The report is built in the PHI zone from a re-identified worklist row and is filed into the
*original* study, so it holds real identifiers and goes only to the hospital's own PACS. It is a
Comprehensive SR whose content follows TID 1500 (Measurement Report): one TID 1501 measurement
group holds the score, the threshold, the priority rank and the coded flag, with the model's
TID 4019 Algorithm Identification (name, version, weights hash); a TID 1500 "Qualitative
Evaluations" container holds the decision-support statement, which the series description
repeats so that a viewer's series list shows it too. `FindingsReportBuilder` builds a run's
reports, equal to `findings_report`'s, with highdicom's document constructor run once. Sending
is not done here.

Error messages name the field and the rule, never the value: identifiers must not reach logs.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import highdicom as hd
import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr.utils import collect_evidence
from pydicom.sr.codedict import codes
from pydicom.uid import UID, ComprehensiveSRStorage, generate_uid
from pydicom.valuerep import DA, DT, TM

from screenlake.programmes import get_programme

DECISION_SUPPORT_STATEMENT = "Decision support for clinician review; not a diagnosis."
SR_SOP_CLASS_UID = ComprehensiveSRStorage
# High, so that the AI series sorts after the acquired series in a viewer's series list.
SERIES_NUMBER = 9900
INSTANCE_NUMBER = 1

# Local concepts: DICOM reserves designators starting with "99" for them (PS3.16 section 8).
CODING_SCHEME = "99SCREENLAKE"


def _code(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=CODING_SCHEME, meaning=meaning)


SCORE = _code("SCORE", "Screening AI score")
THRESHOLD = _code("THRESHOLD", "Flag threshold")
PRIORITY_RANK = _code("PRIORITY-RANK", "Review priority rank")
TRIAGE_FLAG = _code("TRIAGE-FLAG", "Triage flag")
FLAGGED = _code("FLAGGED", "Flagged for clinician review")
NOT_FLAGGED = _code("NOT-FLAGGED", "Not flagged for clinician review")
INTENDED_USE = _code("INTENDED-USE", "Intended use")
_QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
_RANK_UNIT = hd.sr.CodedConcept("{rank}", "UCUM", "rank")
_NO_UNITS = hd.sr.CodedConcept.from_code(codes.UCUM.NoUnits)

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_DA = re.compile(r"[0-9]{8}")
_SEXES = frozenset({"M", "F", "O"})


@dataclass(frozen=True)
class StudyFinding:
    """One re-identified flagged study, as the PHI-zone worklist has it.

    `patient_birth_date` is a DICOM DA string (YYYYMMDD). `evidence` optionally holds headers
    (pixels not needed) of original instances the finding rests on; they are listed as the
    report's evidence and referenced as the measurement group's source images.
    """

    original_study_instance_uid: str
    patient_id: str
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None
    accession_number: str | None
    study_date: date | None
    programme: str
    score: float
    flag: bool
    threshold: float
    priority_rank: int | None
    model_name: str
    model_version: str
    weights_sha256: str
    evidence: Sequence[pydicom.Dataset] = ()


def findings_report(
    finding: StudyFinding,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    institution_name: str | None = None,
    manufacturer: str = "screenlake",
    content_datetime: datetime,
) -> pydicom.Dataset:
    """A Comprehensive SR (TID 1500) filing `finding` into its original study.

    The result is deterministic: the same finding, UIDs and `content_datetime` give an equal
    dataset, because `content_datetime` also stands for the instance's creation time. The
    report is complete, unverified and preliminary: a clinician decides what it means.
    Raises ValueError naming the offending field when an input is invalid.
    """
    _check_inputs(finding, series_instance_uid, sop_instance_uid, manufacturer, institution_name)
    if not isinstance(content_datetime, datetime):
        raise TypeError("content_datetime must be a datetime")

    content = _content(finding, manufacturer=manufacturer, sop_instance_uid=sop_instance_uid)
    ascii_only = _ascii_only(finding, manufacturer, institution_name)
    report = hd.sr.ComprehensiveSR(
        # highdicom takes the Patient and Study modules from the first evidence dataset; the
        # re-identified worklist is the authority for them, so that dataset is built from it.
        evidence=[_patient_study_header(finding, series_instance_uid, sop_instance_uid)]
        + list(finding.evidence),
        content=content,
        series_instance_uid=series_instance_uid,
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=INSTANCE_NUMBER,
        manufacturer=manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
        institution_name=institution_name,
        series_description=DECISION_SUPPORT_STATEMENT,
        content_date=content_datetime.date(),
        content_time=content_datetime.time(),
        series_date=content_datetime.date(),
        series_time=content_datetime.time(),
        specific_character_set=None if ascii_only else "ISO_IR 192",
        coding_schemes=[CodingSchemeIdentificationItem(CODING_SCHEME, name="screenlake concepts")],
    )
    # Set after construction: highdicom warns with the value of a one-component name, and a
    # warning can end up in a log.
    report.PatientName = finding.patient_name
    # The header above is not an instance to reference; list only the real evidence.
    del report.CurrentRequestedProcedureEvidenceSequence
    if finding.evidence:
        same_study, _ = collect_evidence(
            finding.evidence, content[0], study_instance_uid=finding.original_study_instance_uid
        )
        report.CurrentRequestedProcedureEvidenceSequence = same_study
    # highdicom stamps these with the wall clock; the caller's time keeps builds reproducible.
    report.InstanceCreationDate = DA(content_datetime.date())
    report.InstanceCreationTime = TM(content_datetime.time())
    for equipment in report.get("ContributingEquipmentSequence", []):
        equipment.ContributionDateTime = DT(content_datetime)
    return report


class FindingsReportBuilder:
    """Builds the findings reports of one run: `build` gives the dataset that `findings_report`
    gives for the same arguments, at a fraction of the cost.

    highdicom's SR constructor copies and re-reads the whole content tree and looks up the IOD
    tables on every call, tens of milliseconds a report. Here it runs once per character set
    (`benchmarks/pacs_reports.py` measures both): every
    report after that is a copy of that first report's header with its own patient, study,
    UIDs, times, content tree and evidence references. The content tree is still built by
    highdicom for every report (`_content`), so what highdicom checks there is checked.
    """

    def __init__(self, *, manufacturer: str = "screenlake", institution_name: str | None = None):
        _check_text(manufacturer, "manufacturer", 64)
        if institution_name is not None:
            _check_text(institution_name, "institution_name", 64)
        self.manufacturer = manufacturer
        self.institution_name = institution_name
        # By whether the report is ASCII only: that decides its SpecificCharacterSet.
        self._templates: dict[bool, pydicom.Dataset] = {}

    def build(
        self,
        finding: StudyFinding,
        *,
        series_instance_uid: str,
        sop_instance_uid: str,
        content_datetime: datetime,
    ) -> pydicom.Dataset:
        """The report `findings_report` builds for these arguments and the builder's
        manufacturer and institution; raises ValueError naming the offending field."""
        _check_inputs(
            finding, series_instance_uid, sop_instance_uid, self.manufacturer, self.institution_name
        )
        if not isinstance(content_datetime, datetime):
            raise TypeError("content_datetime must be a datetime")
        ascii_only = _ascii_only(finding, self.manufacturer, self.institution_name)
        template = self._templates.get(ascii_only)
        if template is None:
            template = self._templates[ascii_only] = findings_report(
                finding,
                series_instance_uid=series_instance_uid,
                sop_instance_uid=sop_instance_uid,
                institution_name=self.institution_name,
                manufacturer=self.manufacturer,
                content_datetime=content_datetime,
            )
        report = pydicom.Dataset()
        report.preamble = template.preamble
        report.file_meta = copy.deepcopy(template.file_meta)
        report.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
        for element in template:
            if element.keyword not in _PER_REPORT:
                report.add(copy.deepcopy(element))
        header = _patient_study_header(finding, series_instance_uid, sop_instance_uid)
        for keyword in _FROM_HEADER:
            report[keyword] = header[keyword]
        # As in findings_report: set after the header, as given.
        report.PatientName = finding.patient_name
        report.SeriesInstanceUID = series_instance_uid
        report.SOPInstanceUID = sop_instance_uid
        report.ContentDate = report.SeriesDate = DA(content_datetime.date())
        report.ContentTime = report.SeriesTime = TM(content_datetime.time())
        report.InstanceCreationDate = DA(content_datetime.date())
        report.InstanceCreationTime = TM(content_datetime.time())
        for equipment in report.get("ContributingEquipmentSequence", []):
            equipment.ContributionDateTime = DT(content_datetime)
        content = _content(
            finding, manufacturer=self.manufacturer, sop_instance_uid=sop_instance_uid
        )
        for tag, value in content[0].items():
            report[tag] = value
        if finding.evidence:
            # The content cites only evidence (`_content` builds its source images from it), so
            # highdicom's search of the content for citations is left out.
            same_study, _ = collect_evidence(
                finding.evidence,
                _NO_CONTENT,
                study_instance_uid=finding.original_study_instance_uid,
            )
            report.CurrentRequestedProcedureEvidenceSequence = same_study
        return report


_NO_CONTENT = pydicom.Dataset()
_NO_CONTENT.ContentSequence = []

# What differs between two reports with the same character set, manufacturer and institution.
_FROM_HEADER = (
    "StudyInstanceUID",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyDate",
)
_PER_REPORT = frozenset(
    {
        *_FROM_HEADER,
        "PatientName",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "ContentDate",
        "ContentTime",
        "SeriesDate",
        "SeriesTime",
        "InstanceCreationDate",
        "InstanceCreationTime",
        "CurrentRequestedProcedureEvidenceSequence",
        "ValueType",
        "ConceptNameCodeSequence",
        "ContinuityOfContent",
        "ContentTemplateSequence",
        "ContentSequence",
    }
)


def _check_inputs(
    finding: StudyFinding,
    series_instance_uid: str,
    sop_instance_uid: str,
    manufacturer: str,
    institution_name: str | None,
) -> None:
    _check_finding(finding)
    _check_uid(series_instance_uid, "series_instance_uid")
    _check_uid(sop_instance_uid, "sop_instance_uid")
    uids = {finding.original_study_instance_uid, series_instance_uid, sop_instance_uid}
    if len(uids) != 3:
        raise ValueError(
            "original_study_instance_uid, series_instance_uid and sop_instance_uid must differ; "
            "generate new series and SOP instance UIDs for the report"
        )
    _check_text(manufacturer, "manufacturer", 64)
    if institution_name is not None:
        _check_text(institution_name, "institution_name", 64)


def _ascii_only(finding: StudyFinding, manufacturer: str, institution_name: str | None) -> bool:
    texts = (finding.patient_id, finding.patient_name, finding.accession_number, manufacturer)
    return all(t.isascii() for t in (*texts, finding.model_name, institution_name) if t)


def _content(
    finding: StudyFinding, *, manufacturer: str, sop_instance_uid: str
) -> hd.sr.MeasurementReport:
    algorithm = hd.sr.AlgorithmIdentification(
        name=finding.model_name,
        version=finding.model_version,
        parameters=[f"weights_sha256={finding.weights_sha256.lower()}"],
    )
    measurements = [
        hd.sr.Measurement(
            name=SCORE, value=float(finding.score), unit=_NO_UNITS, algorithm_id=algorithm
        ),
        hd.sr.Measurement(name=THRESHOLD, value=float(finding.threshold), unit=_NO_UNITS),
    ]
    if finding.priority_rank is not None:
        measurements.append(
            hd.sr.Measurement(name=PRIORITY_RANK, value=finding.priority_rank, unit=_RANK_UNIT)
        )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[sop_instance_uid, "finding"]),
            identifier=f"{finding.programme} screening finding",
        ),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=TRIAGE_FLAG, value=FLAGGED if finding.flag else NOT_FLAGGED
            )
        ],
        source_images=[_source_image(ds, i) for i, ds in enumerate(finding.evidence)] or None,
    )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        # One UID per model build, so that a PACS sees each build as the same observer.
        uid=generate_uid(
            entropy_srcs=[manufacturer, finding.model_name, finding.model_version]
            + [finding.weights_sha256.lower()]
        ),
        name=finding.model_name,
        manufacturer_name=manufacturer,
        model_name=finding.model_name,
    )
    programme = get_programme(finding.programme)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device, observer_identifying_attributes=device
            )
        ),
        procedure_reported=_code(programme.name, programme.title),
        imaging_measurements=[group],
    )
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    statement = hd.sr.ContainerContentItem(
        name=_QUALITATIVE_EVALUATIONS, relationship_type=contains
    )
    statement.ContentSequence = hd.sr.ContentSequence(
        [hd.sr.TextContentItem(INTENDED_USE, DECISION_SUPPORT_STATEMENT, contains)]
    )
    report[0].ContentSequence.append(statement)
    return report


def _source_image(header: pydicom.Dataset, index: int) -> hd.sr.SourceImageForMeasurementGroup:
    try:
        return hd.sr.SourceImageForMeasurementGroup.from_source_image(header)
    except (AttributeError, ValueError) as error:
        raise ValueError(f"evidence[{index}] is not an image header: {error}") from error


def _patient_study_header(
    finding: StudyFinding, series_instance_uid: str, sop_instance_uid: str
) -> pydicom.Dataset:
    header = pydicom.Dataset()
    header.SOPClassUID = SR_SOP_CLASS_UID
    header.SOPInstanceUID = sop_instance_uid
    header.SeriesInstanceUID = series_instance_uid
    header.StudyInstanceUID = finding.original_study_instance_uid
    header.PatientID = finding.patient_id
    header.PatientName = None
    header.PatientBirthDate = finding.patient_birth_date or None
    header.PatientSex = finding.patient_sex or None
    header.AccessionNumber = finding.accession_number
    header.StudyID = None
    header.StudyDate = DA(finding.study_date) if finding.study_date is not None else None
    header.StudyTime = None
    return header


def _check_finding(finding: StudyFinding) -> None:
    _check_uid(finding.original_study_instance_uid, "original_study_instance_uid")
    _check_text(finding.patient_id, "patient_id", 64)
    if finding.patient_name and any(len(g) > 64 for g in finding.patient_name.split("=")):
        raise ValueError("patient_name has a component group longer than 64 characters")
    if finding.patient_birth_date and not _is_da(finding.patient_birth_date):
        raise ValueError(
            "patient_birth_date must be a DICOM date YYYYMMDD (a calendar date) or None"
        )
    if finding.patient_sex and finding.patient_sex not in _SEXES:
        raise ValueError("patient_sex must be M, F, O, empty or None")
    if finding.accession_number is not None and len(finding.accession_number) > 16:
        raise ValueError("accession_number is longer than 16 characters (DICOM SH)")
    get_programme(finding.programme)
    _check_unit_interval(finding.score, "score")
    _check_unit_interval(finding.threshold, "threshold")
    if finding.flag != (finding.score >= finding.threshold):
        raise ValueError(
            f"flag is {finding.flag} but score {finding.score} vs threshold {finding.threshold} "
            "says otherwise (flag means score >= threshold); rebuild the finding"
        )
    rank = finding.priority_rank
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError("priority_rank must be a whole number from 1 (highest priority) or None")
    _check_text(finding.model_name, "model_name", 64)
    _check_text(finding.model_version, "model_version", 64)
    if not isinstance(finding.weights_sha256, str) or not _SHA256.fullmatch(finding.weights_sha256):
        raise ValueError(
            "weights_sha256 must be the SHA-256 of the model weights: 64 hexadecimal characters"
        )
    for index, header in enumerate(finding.evidence):
        _check_evidence(header, index, finding)


def _check_evidence(header: pydicom.Dataset, index: int, finding: StudyFinding) -> None:
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        if not header.get(keyword):
            raise ValueError(f"evidence[{index}] lacks {keyword}; pass headers of DICOM instances")
    if header.StudyInstanceUID != finding.original_study_instance_uid:
        raise ValueError(
            f"evidence[{index}] belongs to another study than original_study_instance_uid; "
            "pass only instances of the study the finding is about"
        )
    if header.get("PatientID") and header.PatientID != finding.patient_id:
        raise ValueError(
            f"evidence[{index}] names another PatientID than the finding; "
            "check the re-identification before filing anything"
        )


def _check_uid(value: object, field: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field} is empty; a DICOM UID is required")
    if len(value) > 64 or not _UID.fullmatch(value):
        raise ValueError(f"{field} is not a DICOM UID (digits and dots, at most 64 characters)")


def _check_text(value: object, field: str, max_length: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field} is empty; it is required")
    if len(value) > max_length:
        raise ValueError(f"{field} is longer than {max_length} characters")
    if any(c in value for c in "\\\r\n\t\f"):
        raise ValueError(f"{field} contains a backslash or control character")


def _check_unit_interval(value: object, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field} must be a number in [0, 1]")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{field} is {value}, outside [0, 1]")


def _is_da(value: str) -> bool:
    try:
        return bool(_DA.fullmatch(value)) and bool(datetime.strptime(value, "%Y%m%d"))
    except ValueError:
        return False
