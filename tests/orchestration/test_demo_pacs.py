"""`make demo-pacs` points the unchanged assets at its Orthanc over either protocol."""

from __future__ import annotations

from pathlib import Path

from orchestration.demo_pacs import pacs_settings
from orchestration.resources import source_for
from resources.dicomweb import DicomWebSource
from resources.dimse import DimseSource
from screenlake.devservers.orthanc import ORTHANC_AET, Orthanc

DAYS = ["2024-03-11", "2024-03-12"]


def test_the_dicomweb_demo_reads_orthanc_over_the_export_days(tmp_path: Path) -> None:
    orthanc = Orthanc(tmp_path)
    source = source_for(pacs_settings(orthanc, "dicomweb", DAYS))
    assert isinstance(source, DicomWebSource)
    assert source.url == orthanc.url
    assert (source.lookback_until, source.lookback_days) == ("2024-03-12", 2)


def test_the_dimse_demo_moves_to_the_scp_orthanc_knows(tmp_path: Path) -> None:
    orthanc = Orthanc(tmp_path)
    source = source_for(pacs_settings(orthanc, "dimse", DAYS))
    assert isinstance(source, DimseSource)
    assert (source.port, source.called_aet, source.retrieve) == (
        orthanc.dicom_port,
        ORTHANC_AET,
        "move",
    )
    # C-MOVE only reaches screenlake where Orthanc's DicomModalities names this port.
    assert source.scp_port == orthanc.scp_port
