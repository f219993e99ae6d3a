"""Tests for the synthetic PACS export: valid DICOM, fake PHI, layout, bad files, determinism."""

from __future__ import annotations

import csv
import hashlib
import random
from collections import Counter, defaultdict
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from faker import Faker
from pydicom.dataset import Dataset, validate_file_meta
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian

from screenlake.identifiers import is_valid_bsn
from screenlake.programmes import route_study
from screenlake.synth.export import ExportSummary, generate_export
from screenlake.synth.people import age_on, random_bsn, sanitise
from screenlake.synth.plan import plan_studies

BAD_NAMES = {"IM99999.dcm", "IM99998.dcm", "IM99997.dcm", "thumbnail.jpg", "notes.txt"}
START = date(2024, 3, 11)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportSummary]:
    root = tmp_path_factory.mktemp("synth")
    summary = generate_export(root / "drop", studies=6, seed=11, labels_path=root / "labels.csv")
    return root / "drop", summary


@pytest.fixture(scope="module")
def headers(export: tuple[Path, ExportSummary]) -> dict[Path, Dataset]:
    out, _ = export
    return {p: pydicom.dcmread(p) for p in _good_files(out)}


def _good_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name not in BAD_NAMES)


def _bad_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name in BAD_NAMES)


def _tree_hashes(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def _by_study(headers: dict[Path, Dataset]) -> dict[str, list[Dataset]]:
    studies: dict[str, list[Dataset]] = defaultdict(list)
    for ds in headers.values():
        studies[str(ds.AccessionNumber)].append(ds)
    return studies


# Argument checks


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    with pytest.raises(ValueError, match="studies"):
        generate_export(tmp_path / "a", studies=0, seed=1, labels_path=labels)
    with pytest.raises(ValueError, match="days"):
        generate_export(tmp_path / "a", studies=2, seed=1, labels_path=labels, days=0)
    with pytest.raises(ValueError, match="inside the export folder"):
        generate_export(tmp_path / "a", studies=2, seed=1, labels_path=tmp_path / "a" / "l.csv")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.dcm").write_bytes(b"")
    with pytest.raises(ValueError, match="not empty"):
        generate_export(tmp_path / "full", studies=2, seed=1, labels_path=labels)
    with pytest.raises(ValueError, match="ldct_share"):
        generate_export(tmp_path / "b", studies=2, seed=1, labels_path=labels, ldct_share=1.5)


@pytest.mark.parametrize(("share", "ldct"), [(0.0, 0), (20 / 220, 20), (0.5, 110), (1.0, 220)])
def test_programme_mix_follows_the_lung_ct_share(share: float, ldct: int) -> None:
    fake = Faker("nl_NL")
    fake.seed_instance(3)
    planned = plan_studies(fake, np.random.default_rng(3), 220, START, 2, ldct_share=share)
    counts = Counter(s.programme for s in planned)
    # A patient seen twice adds both visits to one programme: a count may overshoot by one.
    assert abs(counts["lung_ldct"] - ldct) <= 1
    assert counts["lung_ldct"] + counts["cxr_tb"] == 220
    assert {s.modality for s in planned if s.programme == "lung_ldct"} <= {"CT"}


def test_writes_into_an_existing_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "drop").mkdir()
    summary = generate_export(
        tmp_path / "drop", studies=1, seed=2, labels_path=tmp_path / "l.csv", days=1
    )
    assert summary.studies == 1
    assert summary.days == (START,)


# BSN


def test_bsn_eleven_test() -> None:
    assert is_valid_bsn("111222333")
    assert is_valid_bsn("123456782")
    assert not is_valid_bsn("123456789")
    assert not is_valid_bsn("000000000")
    assert not is_valid_bsn("11122233a")
    assert not is_valid_bsn("1112223334")
    assert not is_valid_bsn("")


def test_generated_bsns_pass_the_eleven_test() -> None:
    rnd = random.Random(5)
    assert all(is_valid_bsn(random_bsn(rnd)) for _ in range(2000))


def test_bsn_in_headers_is_valid_and_issued_by_the_ministry(headers: dict[Path, Dataset]) -> None:
    for ds in headers.values():
        (item,) = ds.OtherPatientIDsSequence
        assert is_valid_bsn(item.PatientID)
        assert item.IssuerOfPatientID == "NLMINBIZA"
        assert item.TypeOfPatientID == "TEXT"


# Valid DICOM and layout


def test_good_files_are_valid_part10_files(headers: dict[Path, Dataset]) -> None:
    for path, ds in headers.items():
        assert path.read_bytes()[128:132] == b"DICM"
        validate_file_meta(ds.file_meta, enforce_standard=True)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
        assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 0
        assert ds.PhotometricInterpretation == "MONOCHROME2"


def test_layout_matches_headers(headers: dict[Path, Dataset]) -> None:
    for path, ds in headers.items():
        day, patient, accession, series, name = path.parts[-5:]
        assert day == ds.StudyDate
        assert patient.endswith(f"_{ds.PatientID}")
        assert patient.startswith(sanitise(str(ds.PatientName.family_name)) + "_")
        assert accession == ds.AccessionNumber
        assert series == f"{ds.SeriesNumber}_{ds.Modality}"
        assert name == f"IM{ds.InstanceNumber:05d}.dcm"
        assert all(c.isalnum() or c in "_-" for c in "".join(path.parts[-5:-1]))


def test_uids_are_unique_and_consistent(headers: dict[Path, Dataset]) -> None:
    sop_uids = [ds.SOPInstanceUID for ds in headers.values()]
    assert len(set(sop_uids)) == len(sop_uids)
    for datasets in _by_study(headers).values():
        assert len({ds.StudyInstanceUID for ds in datasets}) == 1
        assert len({ds.SeriesInstanceUID for ds in datasets}) == 1


def test_ct_series_geometry(headers: dict[Path, Dataset]) -> None:
    for datasets in _by_study(headers).values():
        if datasets[0].Modality != "CT":
            continue
        datasets.sort(key=lambda ds: int(ds.InstanceNumber))
        assert len(datasets) == 24
        assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
        z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
        assert np.allclose(np.abs(np.diff(z)), float(datasets[0].SliceThickness), atol=0.01)
        for ds in datasets:
            assert float(ds.SliceLocation) == pytest.approx(float(ds.ImagePositionPatient[2]))
            assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert (ds.RescaleIntercept, ds.RescaleSlope) == (-1024, 1)
            assert ds.BitsStored in (12, 16) and ds.PatientPosition
            assert ds.BodyPartExamined == "CHEST"


def test_both_programmes_and_all_modalities_occur(headers: dict[Path, Dataset]) -> None:
    routed = {route_study(ds.Modality, ds.BodyPartExamined) for ds in headers.values()}
    assert routed == {"lung_ldct", "cxr_tb"}
    assert {ds.Modality for ds in headers.values()} == {"CT", "CR", "DX"}
    dx = [ds for ds in headers.values() if ds.Modality == "DX"]
    assert all(ds.PresentationIntentType == "FOR PRESENTATION" for ds in dx)


# Fake PHI


def test_phi_fields_are_present(headers: dict[Path, Dataset]) -> None:
    for ds in headers.values():
        for keyword in (
            "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
            "PatientAddress", "PatientTelephoneNumbers", "AccessionNumber", "StudyID",
            "InstitutionName", "InstitutionAddress", "StationName", "DeviceSerialNumber",
            "ReferringPhysicianName", "RequestingPhysician", "PerformingPhysicianName",
            "OperatorsName", "Manufacturer", "ManufacturerModelName", "SoftwareVersions",
            "KVP", "StudyTime", "ContentDate", "AcquisitionDate", "ImageComments",
        ):  # fmt: skip
            assert str(ds.get(keyword, "")).strip(), keyword
        assert "^" in str(ds.PatientName)
        assert len(ds.PatientID) == 7 and ds.PatientID.isdigit()
        assert len(ds.AccessionNumber) == 10 and ds.AccessionNumber.isdigit()
        assert str(ds.PatientName.given_name) in ds.ImageComments


def test_patient_age_matches_birth_date(headers: dict[Path, Dataset]) -> None:
    for ds in headers.values():
        birth = datetime.strptime(ds.PatientBirthDate, "%Y%m%d").date()
        study = datetime.strptime(ds.StudyDate, "%Y%m%d").date()
        assert ds.PatientAge == f"{age_on(birth, study):03d}Y"


def test_private_block_carries_an_identifier(headers: dict[Path, Dataset]) -> None:
    for ds in headers.values():
        block = ds.private_block(0x0029, "SYNTHVENDOR 1.0")
        values = [str(block[offset].value) for offset in (0x10, 0x11, 0x12)]
        assert all(values)
        assert ds.PatientID in values
        assert str(ds.PatientName.family_name) in values[0]


def test_some_patient_has_two_studies_on_different_days(headers: dict[Path, Dataset]) -> None:
    days_by_patient: dict[str, set[str]] = defaultdict(set)
    for ds in headers.values():
        days_by_patient[ds.PatientID].add(ds.StudyDate)
    assert any(len(days) == 2 for days in days_by_patient.values())


# Labels


def test_labels_match_headers(
    export: tuple[Path, ExportSummary], headers: dict[Path, Dataset]
) -> None:
    out, summary = export
    assert not summary.labels_path.is_relative_to(out)
    with summary.labels_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["accession_number", "programme", "label"]
    studies = _by_study(headers)
    assert len(rows) == summary.studies == len(studies)
    for row in rows:
        ds = studies[row["accession_number"]][0]
        assert row["programme"] == route_study(ds.Modality, ds.BodyPartExamined)
        assert row["label"] in {"0", "1"}
    for programme in ("lung_ldct", "cxr_tb"):
        labels = [r["label"] for r in rows if r["programme"] == programme]
        assert "1" in labels and "0" in labels


def _reachable_from_border(passable: np.ndarray) -> np.ndarray:
    """Voxels of `passable` connected, within their slice, to the slice's border."""
    reached = np.zeros_like(passable)
    reached[:, [0, -1], :] = passable[:, [0, -1], :]
    reached[:, :, [0, -1]] = passable[:, :, [0, -1]]
    while True:
        grown = reached.copy()
        grown[:, 1:, :] |= reached[:, :-1, :]
        grown[:, :-1, :] |= reached[:, 1:, :]
        grown[:, :, 1:] |= reached[:, :, :-1]
        grown[:, :, :-1] |= reached[:, :, 1:]
        grown &= passable
        if (grown == reached).all():
            return reached
        reached = grown


def _between(mask: np.ndarray, axis: int) -> np.ndarray:
    before = np.maximum.accumulate(mask, axis=axis)
    after = np.flip(np.maximum.accumulate(np.flip(mask, axis=axis), axis=axis), axis=axis)
    return before & after


def _dense_voxels_in_lung(hounsfield: np.ndarray) -> int:
    """Dense voxels lying between voxels of one lung along their row or their column.

    Each lung is convex and on its own side of the midline, so in a negative study nothing
    dense lies between lung voxels: chest wall, mediastinum and outside air never count.
    A nodule does, even one that touches the pleura.
    """
    low = hounsfield < -500
    lung = low & ~_reachable_from_border(low)
    midline = hounsfield.shape[2] // 2
    count = 0
    for side in (slice(None, midline), slice(midline, None)):
        one_lung = lung[:, :, side]
        inside = _between(one_lung, axis=1) | _between(one_lung, axis=2)
        count += int((inside & ~low[:, :, side]).sum())
    return count


def test_positive_ct_studies_have_dense_voxels_in_lung(
    export: tuple[Path, ExportSummary], headers: dict[Path, Dataset]
) -> None:
    _, summary = export
    with summary.labels_path.open(newline="") as handle:
        labels = {r["accession_number"]: r["label"] == "1" for r in csv.DictReader(handle)}
    ct_studies = {a: d for a, d in _by_study(headers).items() if d[0].Modality == "CT"}
    assert any(labels[a] for a in ct_studies) and not all(labels[a] for a in ct_studies)
    for accession, datasets in ct_studies.items():
        datasets.sort(key=lambda ds: int(ds.InstanceNumber))
        hu = np.stack(
            [
                ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                for ds in datasets
            ]
        )
        assert (_dense_voxels_in_lung(hu) > 0) == labels[accession], accession


# Bad files and counts


def test_bad_files_sit_in_study_folders_and_fail(
    export: tuple[Path, ExportSummary], headers: dict[Path, Dataset]
) -> None:
    out, summary = export
    bad = _bad_files(out)
    assert len(bad) == summary.bad_files == 4 * len(summary.days)
    hosts = set()
    for path in bad:
        neighbour = pydicom.dcmread(path.parent / "IM00001.dcm", stop_before_pixels=True)
        hosts.add((path.parts[-5], route_study(neighbour.Modality, neighbour.BodyPartExamined)))
        if path.name in {"IM99997.dcm", "thumbnail.jpg", "notes.txt"}:
            assert path.name != "IM99997.dcm" or path.stat().st_size == 0
            with pytest.raises(InvalidDicomError):
                pydicom.dcmread(path)
        elif path.name == "IM99999.dcm":
            ds = pydicom.dcmread(path)
            expected = ds.Rows * ds.Columns * ds.BitsAllocated // 8
            assert len(ds.get("PixelData", b"")) < expected
        else:
            ds = pydicom.dcmread(path)
            assert path.read_bytes()[128:132] == b"DICM"
            assert "SOPInstanceUID" not in ds
            assert "MediaStorageSOPInstanceUID" not in ds.file_meta
    for day in summary.days:
        names = {p.name for p in bad if p.parts[-5] == day.strftime("%Y%m%d")}
        assert {"IM99999.dcm", "IM99998.dcm", "IM99997.dcm"} <= names
        assert names & {"thumbnail.jpg", "notes.txt"}
    assert {programme for _, programme in hosts} == {"lung_ldct", "cxr_tb"}


def test_summary_adds_up_to_files_on_disk(
    export: tuple[Path, ExportSummary], headers: dict[Path, Dataset]
) -> None:
    out, summary = export
    all_files = [p for p in out.rglob("*") if p.is_file()]
    assert len(all_files) == summary.instances + summary.bad_files
    assert len(headers) == summary.instances
    assert summary.studies == len(list(out.glob("*/*/*"))) == 6
    assert summary.patients == len({ds.PatientID for ds in headers.values()})
    assert summary.days == tuple(
        datetime.strptime(p.name, "%Y%m%d").date() for p in sorted(out.iterdir())
    )
    assert summary.days == (START, date(2024, 3, 12))


# Determinism


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    def run(name: str, seed: int) -> tuple[dict[str, str], bytes]:
        labels = tmp_path / f"{name}.csv"
        generate_export(tmp_path / name, studies=4, seed=seed, labels_path=labels)
        return _tree_hashes(tmp_path / name), labels.read_bytes()

    first, again, other = run("a", 21), run("b", 21), run("c", 22)
    assert first == again
    assert first[0] != other[0] and first[1] != other[1]
