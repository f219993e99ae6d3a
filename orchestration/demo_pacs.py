"""`make demo-pacs`: the demo against a PACS instead of the folder drop.

Starts a throwaway Orthanc on loopback (Debian's `orthanc` and `orthanc-dicomweb`) with its
storage in var/orthanc, loads the demo's synthetic export into it, and runs the same assets with
`SCREENLAKE_PACS=dicomweb` (QIDO-RS, WADO-RS, STOW-RS) or, with `DEMO_PACS=dimse`, over DIMSE
(C-FIND, C-MOVE to screenlake's storage SCP, C-STORE). The findings reports go back into
Orthanc; the summary says how many it holds. Orthanc is stopped by its process id at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from datetime import date

import requests

from orchestration.demo import VAR, finish, prepare, run_partitions, summary
from resources.sources import ExportDropSource
from screenlake.devservers.orthanc import ORTHANC_AET, PASSWORD, SCREENLAKE_AET, USER, Orthanc

PROTOCOLS = ("dicomweb", "dimse")


def pacs_settings(orthanc: Orthanc, protocol: str, days: list[str]) -> dict[str, str]:
    """The settings that point screenlake at `orthanc` over `protocol`, looking back over the
    export's days (ISO dates, oldest first)."""
    span = (date.fromisoformat(days[-1]) - date.fromisoformat(days[0])).days + 1
    common = {
        "SCREENLAKE_PACS": protocol,
        "SCREENLAKE_PACS_LOOKBACK_UNTIL": days[-1],
        "SCREENLAKE_PACS_LOOKBACK_DAYS": str(span),
    }
    if protocol == "dicomweb":
        return {
            **common,
            "SCREENLAKE_DICOMWEB_URL": orthanc.url,
            "SCREENLAKE_DICOMWEB_USER": USER,
            "SCREENLAKE_DICOMWEB_PASSWORD": PASSWORD,
        }
    return {
        **common,
        "SCREENLAKE_DIMSE_HOST": "127.0.0.1",
        "SCREENLAKE_DIMSE_PORT": str(orthanc.dicom_port),
        "SCREENLAKE_DIMSE_AET": ORTHANC_AET,
        "SCREENLAKE_AET": SCREENLAKE_AET,
        "SCREENLAKE_DIMSE_RETRIEVE": "move",
        "SCREENLAKE_DIMSE_SCP_HOST": "127.0.0.1",
        "SCREENLAKE_DIMSE_SCP_PORT": str(orthanc.scp_port),
    }


def reports_in(orthanc: Orthanc) -> int:
    """Structured Report instances Orthanc holds."""
    response = requests.post(
        f"{orthanc.rest}/tools/find",
        json={"Level": "Series", "Query": {"Modality": "SR"}, "Expand": True},
        auth=(USER, PASSWORD),
        timeout=30,
    )
    response.raise_for_status()
    return sum(len(series["Instances"]) for series in response.json())


def main() -> int:
    """Load the demo export into a loopback Orthanc, run every partition from it, summarise."""
    protocol = (os.environ.get("DEMO_PACS") or "dicomweb").strip().lower()
    if protocol not in PROTOCOLS:
        print(f"DEMO_PACS={protocol!r}: use one of {', '.join(PROTOCOLS)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    prepare()
    drop = VAR / "drop"
    days = [d.isoformat() for d in ExportDropSource(root=str(drop)).available_days()]
    storage = VAR / "orthanc"
    shutil.rmtree(storage, ignore_errors=True)
    orthanc = Orthanc(storage).start()
    try:
        loaded = orthanc.upload(sorted(p for p in drop.rglob("*") if p.is_file()), workers=4)
        print(
            f"Orthanc on 127.0.0.1:{orthanc.http_port} (DICOM {orthanc.dicom_port}) holds "
            f"{loaded} instances of the export (it refuses the bad files, as a PACS would)"
        )
        os.environ.update(pacs_settings(orthanc, protocol, days))
        print(f"running every asset for each day x programme partition, over {protocol}:")
        failed = run_partitions()
        summary()
        print(f"  findings reports filed in Orthanc: {reports_in(orthanc)}")
    finally:
        orthanc.stop()
    return finish("demo against Orthanc", started, failed)


if __name__ == "__main__":
    sys.exit(main())
