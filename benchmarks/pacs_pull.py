"""Print how fast screenlake pulls from a PACS, over DICOMweb and over DIMSE, next to how fast
the same Orthanc serves the same instances to plain clients (curl, getscu).

Usage: .venv/bin/python benchmarks/pacs_pull.py [--instances 5000] [--dimse-instances 1500]
           [--no-move] [--keep DIR]

A loopback Orthanc (`screenlake/devservers/orthanc.py`, temporary storage, stopped by pid
at the end) is loaded with
a synthetic export of at least `--instances` instances (POSTed to /instances over a few
connections; the upload is timed on its own). Then, each into a fresh folder:

- dicomweb: `DicomWebSource` (default connections) lists each day (QIDO-RS, timed apart) and
  `land_files` lands every programme's batch (WADO-RS, one instance per request);
- curl: the same instance list, one `curl -K` invocation per connection, as many connections
  as screenlake uses, each reusing its connection for its share of whole series;
- dimse-get / dimse-move: `DimseSource` lists each day (C-FIND, timed apart) and lands every
  batch by C-GET, then by C-MOVE to its storage SCP (default associations);
- getscu: dcmtk's `getscu`, one process per series (QueryRetrieveLevel=SERIES), as many at a
  time as screenlake opens associations.

Orthanc serves C-GET and C-MOVE at a few tens of instances a second on loopback (tens of ms a
sub-operation, for getscu as for screenlake), so the three DIMSE retrievals take the first whole
studies up to `--dimse-instances` (0: all), to keep the default run near five minutes; the
output says so, and the DIMSE rows count what they pulled. C-FIND always lists whole days.

Rates count retrieval only; MB are 10^6 bytes of what was written (for curl, the multipart
bodies). `ratio` is the run's instances/s over its baseline's: what screenlake's own work
(listing excluded) costs against the server's rate to a plain client. The last line holds every
figure as name=value pairs.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from resources.dicomweb import PASSWORD_ENV, DicomWebSource
from resources.dimse import DimseSource
from resources.sources import StudySource
from screenlake.devservers.orthanc import ORTHANC_AET, PASSWORD, SCREENLAKE_AET, USER, Orthanc
from screenlake.ingest import DayListing, SourceFile, batch_files, land_files, source_files_of
from screenlake.layout import Batch
from screenlake.pacs.parallel import split_evenly
from screenlake.programmes import PROGRAMME_NAMES
from screenlake.synth.export import generate_export

CT_SLICES = 40  # with half the studies one-image radiographs: about 20.5 instances a study
START = date(2024, 3, 11)
DAYS = 2
SEED = 7
UPLOAD_WORKERS = 4
_ACCEPT = r"Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*"


@dataclass
class Timed:
    """One retrieval run: what it pulled, how long it took, what it is compared with."""

    name: str
    instances: int
    bytes: int
    seconds: float
    baseline: str | None = None

    @property
    def rate(self) -> float:
        return self.instances / self.seconds

    @property
    def mb_s(self) -> float:
        return self.bytes / 1e6 / self.seconds


def _folder_bytes(folder: Path) -> tuple[int, int]:
    """Non-empty files under `folder` and their bytes (a failed transfer may leave an empty one)."""
    sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file()]
    return sum(1 for s in sizes if s), sum(sizes)


def load(server: Orthanc, work: Path, wanted: int) -> tuple[int, int, float]:
    """Generate an export of at least `wanted` instances and upload it; returns the instances
    Orthanc holds, files POSTed and upload seconds."""
    studies = max(2, math.ceil(wanted / 20) + 2)
    started = time.perf_counter()
    summary = generate_export(
        work / "drop",
        studies=studies,
        seed=SEED,
        labels_path=work / "labels.csv",
        start_date=START,
        days=DAYS,
        ct_slices=CT_SLICES,
    )
    files = sorted(p for p in (work / "drop").rglob("*") if p.is_file())
    print(
        f"export: {summary.studies} studies, {summary.instances} instances, "
        f"{summary.bad_files} bad files in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    started = time.perf_counter()
    taken = server.upload(files, UPLOAD_WORKERS, remember=False)
    seconds = time.perf_counter() - started
    held = server.instance_count()
    print(
        f"upload: {taken} of {len(files)} files taken in {seconds:.1f} s "
        f"({len(files) / seconds:.0f} files/s over {UPLOAD_WORKERS} connections); "
        f"Orthanc holds {held} instances",
        flush=True,
    )
    if held < wanted:
        print(f"warning: Orthanc holds {held} instances, fewer than the {wanted} asked for")
    return held, len(files), seconds


def list_days(source: StudySource) -> tuple[dict[date, DayListing], float]:
    started = time.perf_counter()
    listings = {d: source.list_day(d) for d in (START + timedelta(n) for n in range(DAYS))}
    return listings, time.perf_counter() - started


def land_all(name: str, source: StudySource, listings: dict[date, DayListing], raw: Path) -> Timed:
    """`land_files` of every programme's batch of every day, timed together."""
    count = size = 0
    started = time.perf_counter()
    for day, listing in listings.items():
        for programme in PROGRAMME_NAMES:
            batch = Batch(day, programme)
            files = source_files_of(batch_files(listing, batch))
            manifest = land_files(files, batch, source, raw / day.isoformat() / programme)
            count += manifest.height
            size += int(manifest["size_bytes"].sum() or 0)
    return Timed(name, count, size, time.perf_counter() - started)


def refs_of(listings: dict[date, DayListing]) -> list[SourceFile]:
    return [
        f
        for listing in listings.values()
        for programme in PROGRAMME_NAMES
        for f in source_files_of(batch_files(listing, Batch(listing.day, programme)))
    ]


def first_studies(listings: dict[date, DayListing], limit: int) -> dict[date, DayListing]:
    """The listings cut to their first whole studies, day by day, up to `limit` instances
    (orphans dropped); `limit` 0 keeps everything."""
    if limit == 0:
        return listings
    cut, total = {}, 0
    for day, listing in listings.items():
        kept = []
        for study in listing.studies:
            if total + len(study.files) > limit:
                break
            kept.append(study)
            total += len(study.files)
        cut[day] = replace(listing, studies=tuple(kept), orphans=())
    return cut


def curl_baseline(server: Orthanc, files: list[SourceFile], connections: int, out: Path) -> Timed:
    """WADO-RS of each instance by curl: one process per connection, each given its share of
    whole series in one config file, so each reuses one connection as screenlake's sessions do."""
    by_series: dict[str, list[SourceFile]] = {}
    for f in files:
        by_series.setdefault(f.ref.rsplit("/", 1)[0], []).append(f)
    chunks = split_evenly(list(by_series.values()), connections)
    configs = []
    for n, chunk in enumerate(chunks):
        folder = out / str(n)
        folder.mkdir(parents=True)
        lines = [f'user = "{USER}:{PASSWORD}"', f'header = "{_ACCEPT}"', "fail", "silent"]
        for f in chunk:
            study, series, sop = f.ref.split("/")
            lines.append(f'url = "{server.url}/studies/{study}/series/{series}/instances/{sop}"')
            lines.append(f'output = "{folder / (sop + ".multipart")}"')
        config = out.with_name(f"{out.name}-{n}.conf")
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        configs.append(config)
    started = time.perf_counter()
    processes = [subprocess.Popen(["curl", "-K", str(c)]) for c in configs]
    codes = [p.wait() for p in processes]
    seconds = time.perf_counter() - started
    count, size = _folder_bytes(out)
    if any(codes) or count != len(files):
        raise RuntimeError(f"curl: exit codes {codes}, {count} of {len(files)} instances")
    return Timed("curl", count, size, seconds)


def getscu_baseline(server: Orthanc, files: list[SourceFile], parallel: int, out: Path) -> Timed:
    """C-GET of each series by dcmtk's getscu, one process per series, `parallel` at a time."""
    series = sorted({tuple(f.ref.split("/")[:2]) for f in files})

    def get(n_and_series: tuple[int, tuple[str, str]]) -> int:
        n, (study, uid) = n_and_series
        folder = out / f"{n:05d}"
        folder.mkdir(parents=True)
        command = [
            "getscu", "-q", "-S", "-aet", SCREENLAKE_AET, "-aec", ORTHANC_AET,
            "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study}",
            "-k", f"SeriesInstanceUID={uid}", "-od", str(folder),
            "127.0.0.1", str(server.dicom_port),
        ]  # fmt: skip
        return subprocess.run(command, check=False).returncode

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        codes = list(pool.map(get, enumerate(series)))
    seconds = time.perf_counter() - started
    count, size = _folder_bytes(out)
    if any(codes) or count != len(files):
        raise RuntimeError(
            f"getscu: {sum(1 for c in codes if c)} failed series, {count} of {len(files)} instances"
        )
    return Timed("getscu", count, size, seconds)


def report(runs: list[Timed], listing: dict[str, float], figures: dict[str, float]) -> None:
    by_name = {r.name: r for r in runs}
    print()
    print(f"{'run':<12} {'instances':>9} {'seconds':>8} {'inst/s':>8} {'MB/s':>7}  ratio")
    for run in runs:
        ratio = ""
        if run.baseline in by_name:
            ratio = f"{run.rate / by_name[run.baseline].rate:.2f} of {run.baseline}"
        print(
            f"{run.name:<12} {run.instances:>9} {run.seconds:>8.1f} {run.rate:>8.1f} "
            f"{run.mb_s:>7.2f}  {ratio}"
        )
    for name, seconds in listing.items():
        print(f"listing by {name}: {seconds:.1f} s (not in the rates above)")
    for run in runs:
        key = run.name.replace("-", "_")
        figures |= {
            f"{key}_instances": run.instances,
            f"{key}_s": round(run.seconds, 2),
            f"{key}_inst_per_s": round(run.rate, 1),
            f"{key}_mb_per_s": round(run.mb_s, 2),
        }
        if run.baseline in by_name:
            figures[f"{key}_ratio"] = round(run.rate / by_name[run.baseline].rate, 3)
    for name, seconds in listing.items():
        figures[f"{name.replace('-', '_')}_list_s"] = round(seconds, 2)
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=5000, help="at least this many")
    parser.add_argument(
        "--dimse-instances",
        type=int,
        default=1500,
        help="DIMSE runs pull the first whole studies up to this many instances (0: all)",
    )
    parser.add_argument("--no-move", action="store_true", help="skip screenlake's C-MOVE run")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args()
    if args.instances < 1 or args.dimse_instances < 0:
        parser.error("--instances must be at least 1 and --dimse-instances at least 0")
    if shutil.which("curl") is None or shutil.which("getscu") is None:
        sys.exit("curl and dcmtk's getscu must be on PATH")
    work = args.keep or Path(tempfile.mkdtemp(prefix="pacs-pull-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ[PASSWORD_ENV] = PASSWORD  # read by the DICOMweb source at run time
    server = Orthanc(work / "orthanc")
    began = time.perf_counter()
    try:
        server.start()
        held, posted, upload_s = load(server, work, args.instances)
        until = (START + timedelta(DAYS - 1)).isoformat()
        web = DicomWebSource(url=server.url, username=USER, lookback_until=until)
        listings, web_list_s = list_days(web)
        runs = [land_all("dicomweb", web, listings, work / "raw-dicomweb")]
        runs[-1].baseline = "curl"
        print(f"dicomweb: {runs[-1].instances} instances in {runs[-1].seconds:.1f} s", flush=True)
        files = refs_of(listings)
        runs.append(curl_baseline(server, files, web.connections, work / "raw-curl"))
        print(f"curl: {runs[-1].instances} instances in {runs[-1].seconds:.1f} s", flush=True)

        dimse: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": server.dicom_port,
            "called_aet": ORTHANC_AET,
            "calling_aet": SCREENLAKE_AET,
            "scp_host": "127.0.0.1",
            "scp_port": server.scp_port,
            "lookback_until": until,
        }
        get = DimseSource(**dimse, retrieve="get")
        dimse_listings, dimse_list_s = list_days(get)
        dimse_listings = first_studies(dimse_listings, args.dimse_instances)
        dimse_files = refs_of(dimse_listings)
        print(
            f"c-find: listed {sum(x.file_count for x in listings.values())} instances in "
            f"{dimse_list_s:.1f} s; the DIMSE runs pull {len(dimse_files)} of them "
            f"(--dimse-instances {args.dimse_instances})",
            flush=True,
        )
        retrievals = [("dimse-get", get)]
        if not args.no_move:
            retrievals.append(("dimse-move", DimseSource(**dimse, retrieve="move")))
        for name, source in retrievals:
            runs.append(land_all(name, source, dimse_listings, work / f"raw-{name}"))
            runs[-1].baseline = "getscu"
            print(f"{name}: {runs[-1].instances} instances in {runs[-1].seconds:.1f} s", flush=True)
        runs.append(getscu_baseline(server, dimse_files, get.associations, work / "raw-getscu"))
        print(f"getscu: {runs[-1].instances} instances in {runs[-1].seconds:.1f} s", flush=True)
        report(
            runs,
            {"qido": web_list_s, "c-find": dimse_list_s},
            {
                "orthanc_instances": held,
                "files_posted": posted,
                "upload_s": round(upload_s, 2),
                "upload_files_per_s": round(posted / upload_s, 1),
                "connections": web.connections,
                "associations": get.associations,
                "dimse_limit": args.dimse_instances,
                "total_s": round(time.perf_counter() - began, 1),
            },
        )
    finally:
        server.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
