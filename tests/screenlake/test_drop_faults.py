"""What an export drop does on a bad night: links, pipes, files that vanish or are still being
copied in. Every file ends landed or with a problem that names no path; none fails the day."""

from __future__ import annotations

import os
import threading
import time
from datetime import date
from pathlib import Path

import pytest

from resources.sources import ExportDropSource
from screenlake.ingest import (
    LINK_NOWHERE,
    LINK_OUT_OF_DROP,
    LINK_TO_FOLDER,
    NOT_A_FILE,
    batch_files,
    is_still_arriving,
    land_files,
    source_files_of,
)
from screenlake.layout import Batch
from tests.dicom_factory import ct_slice, write

DAY = date(2024, 3, 12)
STUDY = "1.2.826.0.1.3680043.8.498.77"
PATIENT_FOLDER = "JANSEN_PIETER_PID7730911"
BATCH = Batch(DAY, "lung_ldct")


def _drop_with_study(root: Path, slices: int = 3) -> Path:
    drop = root / "drop"
    for i in range(slices):
        write(
            ct_slice(study_uid=STUDY, z=float(i)),
            drop / "20240312" / PATIENT_FOLDER / "ACC1" / f"IM{i}.dcm",
        )
    return drop


def _problems(source: ExportDropSource) -> dict[str, str | None]:
    listing = source.list_day(DAY)
    files = [f for s in listing.studies for f in s.files] + list(listing.orphans)
    return {f.ref.rsplit("/", 1)[-1]: f.problem for f in files}


def test_links_pipes_and_loops_are_listed_with_their_problem(tmp_path: Path) -> None:
    drop = _drop_with_study(tmp_path)
    study = drop / "20240312" / PATIENT_FOLDER / "ACC1"
    outside = tmp_path / "outside.dcm"
    outside.write_bytes((study / "IM0.dcm").read_bytes())
    (study / "out.dcm").symlink_to(outside)
    (study / "loop.dcm").symlink_to(study / "loop.dcm")
    (study / "dangling.dcm").symlink_to(study / "nowhere.dcm")
    (study / "folder").symlink_to(study)
    (study / "inside.dcm").symlink_to(study / "IM1.dcm")
    os.mkfifo(study / "pipe.dcm")

    problems = _problems(ExportDropSource(root=str(drop), settle_seconds=0))

    assert problems == {
        "IM0.dcm": None,
        "IM1.dcm": None,
        "IM2.dcm": None,
        "inside.dcm": None,
        "out.dcm": LINK_OUT_OF_DROP,
        "loop.dcm": LINK_NOWHERE,
        "dangling.dcm": LINK_NOWHERE,
        "folder": LINK_TO_FOLDER,
        "pipe.dcm": NOT_A_FILE,
    }


def test_landing_takes_no_bytes_through_a_bad_link_and_fails_no_day(tmp_path: Path) -> None:
    drop = _drop_with_study(tmp_path)
    study = drop / "20240312" / PATIENT_FOLDER / "ACC1"
    (tmp_path / "outside.dcm").write_bytes(b"bytes from outside the drop")
    (study / "out.dcm").symlink_to(tmp_path / "outside.dcm")
    (study / "loop.dcm").symlink_to(study / "loop.dcm")
    os.mkfifo(study / "pipe.dcm")
    source = ExportDropSource(root=str(drop), settle_seconds=0)
    files = source_files_of(batch_files(source.list_day(DAY), BATCH))

    manifest = land_files(files, BATCH, source, tmp_path / "raw")

    assert manifest.height == len(files) == 6
    bad = manifest.filter(manifest["problem"].is_not_null())
    assert sorted(bad["problem"]) == sorted([LINK_OUT_OF_DROP, LINK_NOWHERE, NOT_A_FILE])
    assert set(bad["size_bytes"]) == {0}
    for landed in bad["landed_path"]:
        assert (tmp_path / "raw" / landed).read_bytes() == b""


def test_a_file_gone_between_listing_and_landing_is_one_files_problem(tmp_path: Path) -> None:
    drop = _drop_with_study(tmp_path)
    source = ExportDropSource(root=str(drop), settle_seconds=0)
    files = source_files_of(batch_files(source.list_day(DAY), BATCH))
    gone = drop / "20240312" / PATIENT_FOLDER / "ACC1" / "IM1.dcm"
    kept = gone.read_bytes()
    gone.unlink()

    manifest = land_files(files, BATCH, source, tmp_path / "raw")

    problems = dict(zip(manifest["source_path"], manifest["problem"], strict=True))
    reason = problems[f"20240312/{PATIENT_FOLDER}/ACC1/IM1.dcm"]
    assert reason == "gone from the export drop between listing and landing"
    assert sum(p is None for p in problems.values()) == 2

    # Back in the drop, the next landing asks for it again and takes it.
    gone.write_bytes(kept)
    again = land_files(files, BATCH, source, tmp_path / "raw")
    assert again["problem"].null_count() == 3
    assert set(again["sha256"]) >= {manifest["sha256"][0]}


def test_a_file_still_being_copied_in_is_not_landed_half_written(tmp_path: Path) -> None:
    drop = _drop_with_study(tmp_path)
    whole = (drop / "20240312" / PATIENT_FOLDER / "ACC1" / "IM0.dcm").read_bytes()
    copying = drop / "20240312" / PATIENT_FOLDER / "ACC1" / "IM9.dcm"
    copying.write_bytes(whole[:200])
    source = ExportDropSource(root=str(drop), settle_seconds=1.0)
    summary_while_copying = source.day_summary(DAY)
    stop = threading.Event()

    def copy_slowly() -> None:
        written = 200
        while not stop.is_set() and written < len(whole):
            time.sleep(0.1)
            with copying.open("ab") as handle:
                handle.write(whole[written : written + 64])
            written += 64

    writer = threading.Thread(target=copy_slowly)
    writer.start()
    try:
        files = source_files_of(batch_files(source.list_day(DAY), BATCH))
    finally:
        stop.set()
        writer.join()
    arriving = [f for f in files if is_still_arriving(f.problem)]
    assert [f.ref.rsplit("/", 1)[-1] for f in arriving] == ["IM9.dcm"]
    manifest = land_files(files, BATCH, source, tmp_path / "raw")
    row = manifest.filter(manifest["source_path"].str.ends_with("IM9.dcm"))
    assert row["size_bytes"].to_list() == [0]
    assert manifest.height == 4

    # The copy completes: the day's summary changes, so the sensor starts a run that lands it.
    copying.write_bytes(whole)
    os.utime(copying, ns=(time.time_ns() - 5 * 10**9,) * 2)
    assert source.day_summary(DAY) != summary_while_copying
    files = source_files_of(batch_files(source.list_day(DAY), BATCH))
    manifest = land_files(files, BATCH, source, tmp_path / "raw")
    assert manifest["problem"].null_count() == 4
    row = manifest.filter(manifest["source_path"].str.ends_with("IM9.dcm"))
    assert row["size_bytes"].to_list() == [len(whole)]


def test_settled_files_are_listed_without_waiting(tmp_path: Path) -> None:
    drop = _drop_with_study(tmp_path)
    for path in (drop / "20240312").rglob("*.dcm"):
        os.utime(path, ns=(time.time_ns() - 120 * 10**9,) * 2)
    started = time.monotonic()
    problems = _problems(ExportDropSource(root=str(drop), settle_seconds=60))
    assert time.monotonic() - started < 10
    assert set(problems.values()) == {None}


@pytest.mark.parametrize("change", ["add", "grow", "rewrite", "remove"])
def test_the_day_summary_changes_with_the_files_and_names_none(tmp_path: Path, change: str) -> None:
    drop = _drop_with_study(tmp_path)
    source = ExportDropSource(root=str(drop), settle_seconds=0)
    before = source.day_summary(DAY)
    assert PATIENT_FOLDER not in before and "IM" not in before
    study = drop / "20240312" / PATIENT_FOLDER / "ACC1"
    if change == "add":
        write(ct_slice(study_uid=STUDY, z=9.0), study / "IM9.dcm")
    elif change == "grow":
        with (study / "IM0.dcm").open("ab") as handle:
            handle.write(b"\0\0")
    elif change == "rewrite":
        os.utime(study / "IM0.dcm", ns=(1, 1))
    else:
        (study / "IM2.dcm").unlink()
    assert source.day_summary(DAY) != before
    assert source.day_summaries()[DAY] == source.day_summary(DAY)
