"""The erasure proof's search: every kind of file decoded so that no compression or encryption
hides an erased value, whole tokens only, findings that never show the value."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import polars as pl
import pydicom
import pytest
from cryptography.fernet import Fernet
from openpyxl import Workbook
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage

from resources.zones import ZoneStore
from screenlake import layout
from screenlake.erasure.run import ErasureRequest
from screenlake.erasure.scan import (
    Erased,
    ErasedTraceFinding,
    ValueMatcher,
    dataset_texts,
    erased_values,
    prove_erasures,
    scan_zone,
)
from screenlake.erasure.traces import PatientTraces
from screenlake.tables import VAULT_ENTRIES, frame_of
from screenlake.vault import write_vault

PATIENT_ID = "7000001"
SOP_UID = "2.25.318270133457291820361723958172635"
STUDY_UID = "2.25.918273645546372819102938475610293"
PSEUDONYM = "SL3FA94C02D17B6E58"
ACCESSION = "ACC1"
ERASURE = "E0123456789ABCDEF"
WANTED = {
    PATIENT_ID: Erased(ERASURE, "patient_id"),
    SOP_UID: Erased(ERASURE, "sop_uid"),
    STUDY_UID: Erased(ERASURE, "study_uid"),
    PSEUDONYM: Erased(ERASURE, "patient_pseudonym"),
    ACCESSION: Erased(ERASURE, "accession_number"),
}


@pytest.fixture
def cipher() -> Fernet:
    return Fernet(Fernet.generate_key())


def _scan(root: Path, cipher: Fernet, zone: str = "research") -> list[ErasedTraceFinding]:
    return list(scan_zone(root, zone, WANTED, cipher, (layout.ERASURE_REQUESTS,)).findings)


def _other_uids(n: int) -> list[str]:
    """Other patients' UIDs, sorting before and after ours (Parquet keeps a column's least
    and greatest value in plain text)."""
    return [f"2.25.{i % 9 + 1}18270133457291820361723958172{i:03d}" for i in range(n)]


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def test_a_value_in_a_zstd_parquet_column_is_found_where_raw_bytes_miss_it(
    tmp_path: Path, cipher: Fernet
) -> None:
    uids = [*_other_uids(99), SOP_UID]
    path = tmp_path / "lake" / "instance_catalog" / "b.parquet"
    path.parent.mkdir(parents=True)
    pl.DataFrame({"sop_instance_uid": uids * 20}).write_parquet(path, compression="zstd")
    assert SOP_UID.encode() not in path.read_bytes()  # compression hides it from a grep

    [finding] = _scan(tmp_path, cipher)

    assert finding == ErasedTraceFinding(
        "research", "lake/instance_catalog/b.parquet", ERASURE, "sop_uid", ("parquet",)
    )


def test_a_value_in_an_xlsx_cell_is_found(tmp_path: Path, cipher: Fernet) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row, uid in enumerate([*_other_uids(50), STUDY_UID], start=1):
        sheet.cell(row=row, column=1, value=uid)
    path = tmp_path / "worklists" / "cxr_tb" / "2024-03-11.xlsx"
    path.parent.mkdir(parents=True)
    book.save(path)
    assert STUDY_UID.encode() not in path.read_bytes()

    [finding] = _scan(tmp_path, cipher, "phi")

    assert (finding.file, finding.kind, finding.found_in) == (
        "worklists/cxr_tb/2024-03-11.xlsx",
        "study_uid",
        ("zip member",),
    )


def test_a_value_in_a_sequence_of_a_deflated_dicom_file_is_found(
    tmp_path: Path, cipher: Fernet
) -> None:
    item = Dataset()
    item.ReferencedSOPClassUID = SecondaryCaptureImageStorage
    item.ReferencedSOPInstanceUID = SOP_UID
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID("2.25.5")
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "2.25.5"
    ds.ImageComments = "padding so that deflate has something to work with " * 8
    ds.ReferencedImageSequence = Sequence([item])
    path = tmp_path / "dicom" / "x" / "2.25.5.dcm"
    path.parent.mkdir(parents=True)
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert SOP_UID.encode() not in path.read_bytes()

    [finding] = _scan(tmp_path, cipher)

    assert (finding.kind, finding.found_in) == ("sop_uid", ("dicom",))


def test_person_names_and_multiple_values_are_read_whole() -> None:
    ds = Dataset()
    ds.PatientName = f"Doe^{PATIENT_ID}"
    ds.OtherPatientIDs = ["A1", ACCESSION]

    matcher = ValueMatcher(WANTED)

    assert matcher.in_text("\n".join(dataset_texts(ds))) == {PATIENT_ID, ACCESSION}


def test_a_value_in_a_duckdb_table_and_in_a_view_that_no_longer_reads_is_found(
    tmp_path: Path, cipher: Fernet
) -> None:
    read = tmp_path / "x" / f"{PSEUDONYM}.parquet"
    read.parent.mkdir()
    pl.DataFrame({"uid": ["2.25.1"]}).write_parquet(read)
    with duckdb.connect(str(tmp_path / "lake.duckdb")) as con:
        con.execute("CREATE TABLE seen (uid VARCHAR)")
        con.execute("INSERT INTO seen VALUES (?)", [STUDY_UID])
        con.execute(f"CREATE VIEW gone AS SELECT * FROM read_parquet('{read}')")
    read.unlink()  # the view no longer reads: its SQL is still searched

    found = {f.kind: f.found_in for f in _scan(tmp_path, cipher)}

    assert "duckdb table" in found["study_uid"]
    assert "duckdb view sql" in found["patient_pseudonym"]


def test_a_value_in_an_html_file_is_found(tmp_path: Path, cipher: Fernet) -> None:
    _write(tmp_path / "reports" / "r.html", f"<td>{PSEUDONYM}</td>")

    [finding] = _scan(tmp_path, cipher)

    assert (finding.file, finding.kind, finding.found_in) == (
        "reports/r.html",
        "patient_pseudonym",
        ("bytes",),
    )


def test_a_value_in_an_encrypted_vault_is_found(tmp_path: Path, cipher: Fernet) -> None:
    row = {
        "patient_pseudonym": "SL0000000000000000",
        "study_instance_uid": "2.25.77",
        "accession_pseudonym": None,
        "patient_id": PATIENT_ID,
        "issuer_of_patient_id": None,
        "accession_number": None,
        "original_study_instance_uid": "1.2.3.77",
        "original_study_date": date(2024, 3, 11),
        "date_shift_days": 3,
    }
    path = tmp_path / layout.vault_path(layout.Batch(date(2024, 3, 11), "cxr_tb"))
    path.parent.mkdir(parents=True)
    write_vault(frame_of([row], VAULT_ENTRIES), path, cipher)
    assert PATIENT_ID.encode() not in path.read_bytes()

    [finding] = _scan(tmp_path, cipher, "phi")

    assert (finding.kind, finding.found_in) == ("patient_id", ("vault",))


def test_a_phi_path_that_names_the_patient_is_reported_without_the_id(
    tmp_path: Path, cipher: Fernet
) -> None:
    _write(tmp_path / "a.txt", "nothing")
    _write(tmp_path / "raw" / PATIENT_ID / "notes.txt", "nothing of theirs")

    [finding] = _scan(tmp_path, cipher, "phi")

    assert finding == ErasedTraceFinding("phi", "<phi file #2>", ERASURE, "patient_id", ("path",))
    assert PATIENT_ID not in repr(finding)


def test_a_clean_tree_holds_no_trace(tmp_path: Path, cipher: Fernet) -> None:
    _write(tmp_path / "a.csv", "study_instance_uid\n" + "\n".join(_other_uids(5)))
    pl.DataFrame({"uid": _other_uids(5)}).write_parquet(tmp_path / "b.parquet")
    _write(tmp_path / "c.html", "<p>SL3FA94C02D17B6E5 ACC10 1.2.7000001.3 x7000001</p>")

    scan = scan_zone(tmp_path, "research", WANTED, cipher)

    assert scan.files == 3
    assert scan.findings == ()
    assert scan.undecoded == ()


def test_values_of_one_kind_in_a_file_make_one_finding(tmp_path: Path, cipher: Fernet) -> None:
    other_sop = "2.25.1234567890123456789"
    wanted = {**WANTED, other_sop: Erased(ERASURE, "sop_uid")}
    _write(tmp_path / "a.csv", f"{SOP_UID},{STUDY_UID}\n{other_sop},{STUDY_UID}\n")

    scan = scan_zone(tmp_path, "research", wanted, cipher)

    assert [(f.kind, f.values) for f in scan.findings] == [("sop_uid", 2), ("study_uid", 1)]


def test_a_uid_is_not_found_inside_a_longer_uid() -> None:
    matcher = ValueMatcher(["1.2.3.4", "7000001", "AB-12"])

    for text in ("1.2.3.45", "1.2.3.4.5", "9.1.2.3.4", "x1.2.3.4", "1.2.7000001.3", "AB-123"):
        assert matcher.in_text(text) == set(), text
        assert matcher.in_bytes(text.encode()) == set(), text
    for text in ("1.2.3.4", "a/1.2.3.4.dcm", "'1.2.3.4',", "id=7000001.", "(AB-12)"):
        assert matcher.in_text(text), text
        assert matcher.in_bytes(b"\x00" + text.encode() + b"\xff"), text


def test_the_request_records_are_left_out_and_nothing_else(tmp_path: Path, cipher: Fernet) -> None:
    _write(tmp_path / layout.erasure_request_path(ERASURE), PATIENT_ID)
    _write(tmp_path / "erasures-old" / "copy.json", PATIENT_ID)

    scan = scan_zone(tmp_path, "phi", WANTED, cipher, (layout.ERASURE_REQUESTS,))

    assert [f.file for f in scan.findings] == ["erasures-old/copy.json"]
    assert scan.files == 1


def test_a_damaged_file_is_searched_as_bytes_and_reported_undecoded(
    tmp_path: Path, cipher: Fernet
) -> None:
    _write(tmp_path / "broken.parquet", f"PAR1 not really {SOP_UID}")
    _write(tmp_path / "quarantine" / "000001.dcm", "no DICOM preamble at all")

    scan = scan_zone(tmp_path, "research", WANTED, cipher)

    assert scan.undecoded == ("broken.parquet",)
    assert [(f.file, f.found_in) for f in scan.findings] == [("broken.parquet", ("bytes",))]


def _request(erasure_id: str) -> ErasureRequest:
    return ErasureRequest(
        erasure_id=erasure_id,
        token="T1",
        asked_on=date(2024, 5, 2),
        started_at=datetime(2024, 5, 3, tzinfo=UTC),
        finished_at=datetime(2024, 5, 3, 1, tzinfo=UTC),
        traces=PatientTraces(
            batches=frozenset({layout.Batch(date(2024, 3, 11), "cxr_tb")}),
            patient_ids=frozenset({PATIENT_ID}),
            study_uids=frozenset({STUDY_UID}),
            sop_uids=frozenset({SOP_UID}),
        ),
    )


def test_the_values_of_every_request_are_wanted_under_their_kind() -> None:
    wanted = erased_values([_request("E1"), _request("E2")])

    assert wanted == {
        PATIENT_ID: Erased("E1", "patient_id"),
        STUDY_UID: Erased("E1", "study_uid"),
        SOP_UID: Erased("E1", "sop_uid"),
    }


def test_the_proof_searches_both_zones_for_every_recorded_erasure(
    tmp_path: Path, cipher: Fernet
) -> None:
    phi = ZoneStore(name="PHI", root=str(tmp_path / "phi"))
    research = ZoneStore(name="research", root=str(tmp_path / "research"))
    _write(phi.path("ingest") / "kept.csv", "other patient")
    _write(research.path("exports") / "leak.csv", f"sop_instance_uid\n{SOP_UID}\n")

    assert prove_erasures(phi, research, cipher).erasures == 0
    _write(phi.path(layout.erasure_request_path("E1")), _request("E1").encrypted(cipher))
    proof = prove_erasures(phi, research, cipher)

    assert proof.erasures == 1
    assert [(s.zone, s.files) for s in proof.scans] == [("phi", 1), ("research", 1)]
    assert proof.findings == (
        ErasedTraceFinding("research", "exports/leak.csv", "E1", "sop_uid", ("bytes",)),
    )
