"""What the PACS tests share: sources for an Orthanc, quick to give up; a PACS listing checked
against the drop's; landed files checked against the originals (by SOPInstanceUID and pixel
bytes: a PACS may rewrite the file meta)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pydicom

from orchestration.resources import resources_for
from resources.dicomweb import DicomWebSource
from resources.dimse import DimseSource
from resources.sources import ExportDropSource, StudySource
from screenlake.devservers.orthanc import ORTHANC_AET, SCREENLAKE_AET, USER, Orthanc
from screenlake.fsutil import sha256_of
from screenlake.ingest import DayListing, SourceFile
from tests.pacs.conftest import PacsExport


def assert_routed_like_the_drop(
    source: StudySource, drop: Path, day: date, uploaded: dict[str, Path]
) -> DayListing:
    """The PACS lists the day's studies with the drop's routing and header values, each with
    every instance the PACS took; returns the PACS's listing."""
    expected = ExportDropSource(root=str(drop), settle_seconds=0).list_day(day)
    listing = source.list_day(day)
    assert [s.study_instance_uid for s in listing.studies] == [
        s.study_instance_uid for s in expected.studies
    ]
    for pacs, dropped in zip(listing.studies, expected.studies, strict=True):
        assert (pacs.programme, pacs.patient_id, pacs.accession_number, pacs.study_date) == (
            dropped.programme,
            dropped.patient_id,
            dropped.accession_number,
            dropped.study_date,
        )
        assert (pacs.modality, pacs.body_part) == (dropped.modality, dropped.body_part)
        stored = {f.sop_instance_uid for f in dropped.files} & set(uploaded)
        assert {f.sop_instance_uid for f in pacs.files} == stored
        assert len(pacs.files) == len(stored)  # each instance once
        assert all(f.problem is None for f in pacs.files)
    assert listing.orphans == ()
    return listing


def assert_landed_intact(manifest: pl.DataFrame, raw_dir: Path, uploaded: dict[str, Path]) -> None:
    """Every landed file is the instance the manifest names, pixels byte for byte, checksum
    recorded; no instance twice."""
    assert manifest["sop_instance_uid"].n_unique() == manifest.height
    for row in manifest.iter_rows(named=True):
        path = raw_dir / row["landed_path"]
        landed = pydicom.dcmread(path)
        original = pydicom.dcmread(uploaded[row["sop_instance_uid"]])
        assert landed.SOPInstanceUID == row["sop_instance_uid"]
        assert landed.PixelData == original.PixelData
        assert row["sha256"] == sha256_of(path)
        assert row["size_bytes"] == path.stat().st_size
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(manifest["landed_path"])


def dicomweb(server: Orthanc, **settings: Any) -> DicomWebSource:
    """A DICOMweb source for `server`, quick to give up."""
    defaults: dict[str, Any] = {
        "url": server.url,
        "username": USER,
        "retry_attempts": 3,
        "retry_delay_s": 0.05,
        "connections": 2,
        "lookback_until": "2024-03-12",
    }
    return DicomWebSource(**(defaults | settings))


def dimse(server: Orthanc, **settings: Any) -> DimseSource:
    """A DIMSE source for `server`, quick to give up."""
    defaults: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server.dicom_port,
        "called_aet": ORTHANC_AET,
        "calling_aet": SCREENLAKE_AET,
        "scp_host": "127.0.0.1",
        "scp_port": server.scp_port,
        "retry_attempts": 3,
        "retry_delay_s": 0.05,
        "lookback_until": "2024-03-12",
    }
    return DimseSource(**(defaults | settings))


def first_day_orthanc(root: Path, export: PacsExport) -> Orthanc:
    """A started Orthanc of its own holding the export's first day (stop it when done)."""
    server = Orthanc(root).start()
    day = export.days[0].strftime("%Y%m%d")
    server.upload([p for p in export.files if p.relative_to(export.drop).parts[0] == day])
    return server


def dicomweb_resources(server: Orthanc, zones: Path) -> dict[str, Any]:
    """Resources for a Dagster run pulling from `server` over DICOMweb, zones under `zones`;
    the password comes from the environment, as in a deployment."""
    return resources_for(
        "local",
        {
            "SCREENLAKE_PACS": "dicomweb",
            "SCREENLAKE_DICOMWEB_URL": server.url,
            "SCREENLAKE_DICOMWEB_USER": USER,
            "SCREENLAKE_PACS_RETRIES": "2",
            "SCREENLAKE_PACS_RETRY_DELAY": "0.05",
            "SCREENLAKE_PHI_ZONE": str(zones / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(zones / "research"),
            "SCREENLAKE_DEID_WORKERS": "1",
        },
    )


@dataclass
class StopAfter:
    """Fetches through `source` and stops the PACS once `count` files have landed."""

    source: StudySource
    server: Orthanc
    count: int

    def fetch_many(
        self,
        files: Sequence[tuple[SourceFile, Path]],
        on_file: Callable[[SourceFile, Path], None],
        on_problem: Callable[[SourceFile, str], None],
    ) -> None:
        landed = 0

        def counting(file: SourceFile, path: Path) -> None:
            nonlocal landed
            on_file(file, path)
            landed += 1
            if landed == self.count:
                self.server.crash()

        self.source.fetch_many(files, counting, on_problem)

    def source_checksum(self, file: SourceFile) -> str | None:
        return None
