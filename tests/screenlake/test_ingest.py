from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from screenlake.ingest import (
    SourceFile,
    batch_files,
    land_files,
    scan_drop_day,
    sha256_of,
    source_files_of,
    study_index,
)
from screenlake.layout import Batch
from screenlake.programmes import PROGRAMME_NAMES
from tests.conftest import Export
from tests.dicom_factory import ct_slice, write

DAY = date(2024, 3, 12)


@pytest.fixture
def day_dir(tmp_path: Path) -> Path:
    day = tmp_path / "drop" / "20240312"
    study = "1.2.826.0.1.3680043.8.498.11"
    for i in range(3):
        write(
            ct_slice(study_uid=study, z=float(i)),
            day / "JANSEN_P_7654321" / "ACC1" / "1_CT" / f"IM{i}.dcm",
        )
    mr = ct_slice(
        study_uid="1.2.826.0.1.3680043.8.498.12",
        modality="MR",
        body_part="HEAD",
        patient_id="1234567",
    )
    write(mr, day / "DEVRIES_A_1234567" / "ACC2" / "1_MR" / "IM0.dcm")
    (day / "JANSEN_P_7654321" / "ACC1" / "1_CT" / "IM9.dcm").write_bytes(b"")
    (day / "JANSEN_P_7654321" / "ACC1" / "notes.txt").write_text("not dicom")
    (day / "stray.bin").write_bytes(b"\x00" * 200)
    return day


def test_studies_are_routed_and_bad_files_follow_their_folder(day_dir: Path) -> None:
    listing = scan_drop_day(day_dir, DAY)
    lung = listing.batch_studies("lung_ldct")
    assert len(lung) == 1
    refs = {f.ref.split("/")[-1]: f for f in lung[0].files}
    assert set(refs) == {"IM0.dcm", "IM1.dcm", "IM2.dcm", "IM9.dcm", "notes.txt"}
    assert refs["IM9.dcm"].problem == "empty file (0 bytes)"
    assert refs["notes.txt"].problem is not None and refs["notes.txt"].problem.startswith(
        "not a DICOM"
    )
    assert all(f.ref.startswith("20240312/") for f in lung[0].files)
    assert listing.file_count == 7


def test_unclaimed_files_are_orphans_taken_once_by_the_first_programme(day_dir: Path) -> None:
    listing = scan_drop_day(day_dir, DAY)
    problems = {o.ref.split("/")[-1]: o.problem for o in listing.orphans}
    assert set(problems) == {"IM0.dcm", "stray.bin"}  # the MR study and a stray file
    assert "no screening programme takes this study (modality MR" in str(problems["IM0.dcm"])
    first, *others = PROGRAMME_NAMES
    assert len(listing.batch_orphans(first)) == 2
    assert all(listing.batch_orphans(p) == () for p in others)
    # Every file of the day ends in exactly one batch.
    total = sum(batch_files(listing, Batch(DAY, p)).height for p in PROGRAMME_NAMES)
    assert total == listing.file_count


def test_study_index_holds_the_routing_header(day_dir: Path) -> None:
    listing = scan_drop_day(day_dir, DAY)
    index = study_index(listing, Batch(DAY, "lung_ldct"))
    row = index.row(0, named=True)
    assert (row["patient_id"], row["accession_number"], row["modality"]) == (
        "7654321",
        "1000000001",
        "CT",
    )
    assert row["study_date"] == date(2024, 3, 12) and row["source_files"] == 5


def test_an_absent_day_has_no_studies(tmp_path: Path) -> None:
    listing = scan_drop_day(tmp_path / "20240101", date(2024, 1, 1))
    assert listing.studies == () and listing.orphans == ()


def test_landing_copies_checksums_and_replaces_on_rerun(day_dir: Path, tmp_path: Path) -> None:
    batch = Batch(DAY, "lung_ldct")
    listing = scan_drop_day(day_dir, DAY)
    files = source_files_of(batch_files(listing, batch))
    drop = day_dir.parent

    def fetch(file: SourceFile, dest: Path) -> None:
        shutil.copyfile(drop / file.ref, dest)

    raw = tmp_path / "phi" / "raw"
    manifest = land_files(files, batch, fetch, raw)
    assert manifest.height == len(files) == len(list(raw.iterdir()))
    for row in manifest.iter_rows(named=True):
        assert row["sha256"] == sha256_of(drop / row["source_path"])
        assert row["landed_path"] == f"{row['ordinal']:06d}.dcm"
    again = land_files(files[:2], batch, fetch, raw)
    assert again.height == 2 and len(list(raw.iterdir())) == 2
    assert not any(p.name.endswith((".staging", ".retired")) for p in raw.parent.iterdir())


def test_synthetic_export_routes_both_programmes(synthetic_export: Export) -> None:
    studies = 0
    for day in synthetic_export.days:
        listing = scan_drop_day(synthetic_export.drop / day.strftime("%Y%m%d"), day)
        studies += len(listing.studies)
        assert {s.programme for s in listing.studies} <= set(PROGRAMME_NAMES)
    assert studies == synthetic_export.studies
