"""One timed run of one tool over a file list, in its own process: `deid_throughput.py` runs it.

Usage: python benchmarks/_runners.py TOOL --workers N --list FILES.txt --out DIR --result R.json

Each run is a fresh interpreter so that its peak memory belongs to that tool alone. The clock
starts after the imports and stops when the last output is written; a pool's start-up is
inside it. Peak memory is the larger of the process's own peak RSS and the sum of RSS over the
process tree sampled every 20 ms (what several workers hold at once).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path, PurePosixPath

import pydicom
from _memory import TreeSampler, own_peak_rss

TOOLS = ("headers", "plain", "screenlake", "deid", "dicognito")
BENCHMARK_KEY = "screenlake-benchmark-pseudonym-key-0123456789abcdef"
DICOGNITO_SEED = "screenlake-benchmark"
_BLANKED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "ReferringPhysicianName", "StudyID", "StudyDate", "StudyTime",
)  # fmt: skip
_DELETED = (
    "PatientBirthTime", "OtherPatientIDs", "OtherPatientNames", "OtherPatientIDsSequence",
    "PatientBirthName", "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers",
    "PatientTelecomInformation", "MilitaryRank", "BranchOfService", "MedicalRecordLocator",
    "EthnicGroup", "Occupation", "AdditionalPatientHistory", "PatientComments",
    "PatientReligiousPreference", "CountryOfResidence", "RegionOfResidence",
    "PatientInsurancePlanCodeSequence", "IssuerOfPatientID", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers", "PhysiciansOfRecord",
    "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "OperatorsName",
    "RequestingPhysician", "ResponsiblePerson", "StationName", "DeviceSerialNumber",
    "SeriesDate", "AcquisitionDate", "ContentDate", "SeriesTime", "AcquisitionTime",
    "ContentTime", "InstanceCreationDate", "InstanceCreationTime", "StudyDescription",
    "SeriesDescription", "ImageComments", "ProtocolName", "DerivationDescription",
    "RequestAttributesSequence", "RequestedProcedureDescription", "RequestedProcedureID",
    "PerformedProcedureStepDescription", "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "ScheduledProcedureStepID", "AdmittingDiagnosesDescription", "CurrentPatientLocation",
    "ReferencedPatientSequence", "ReferencedStudySequence",
)  # fmt: skip
PLAIN_TAG_ACTIONS = len(_BLANKED) + len(_DELETED)

_state: dict[str, object] = {}


def _headers(path: Path, out: Path) -> None:
    pydicom.dcmread(path, stop_before_pixels=True)


def _plain(path: Path, out: Path) -> None:
    ds = pydicom.dcmread(path)
    for keyword in _BLANKED:
        if keyword in ds:
            ds[keyword].value = ""
    for keyword in _DELETED:
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(out / path.name)


def _deid(path: Path, out: Path) -> None:
    from deid.config import DeidRecipe
    from deid.dicom import get_identifiers, replace_identifiers

    recipe = _state.get("recipe")
    if recipe is None:
        recipe = _state["recipe"] = DeidRecipe()  # deid's default recipe
    ids = get_identifiers([str(path)])
    replace_identifiers(
        [str(path)],
        deid=recipe,
        ids=ids,
        save=True,
        overwrite=True,
        output_folder=str(out),
        remove_private=True,
    )


def _dicognito(path: Path, out: Path) -> None:
    from dicognito.anonymizer import Anonymizer

    anonymizer = _state.get("anonymizer")
    if anonymizer is None:
        anonymizer = _state["anonymizer"] = Anonymizer(seed=DICOGNITO_SEED)
    ds = pydicom.dcmread(path)
    anonymizer.anonymize(ds)  # type: ignore[attr-defined]
    ds.save_as(out / path.name)


PER_FILE: dict[str, Callable[[Path, Path], None]] = {
    "headers": _headers,
    "plain": _plain,
    "deid": _deid,
    "dicognito": _dicognito,
}


def _chunk(args: tuple[str, list[Path], Path]) -> tuple[int, Counter[str]]:
    tool, paths, out = args
    done, failures = 0, Counter[str]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            try:
                PER_FILE[tool](path, out)
            except Exception as error:  # noqa: BLE001 - a peer's failure on a file is a figure
                failures[type(error).__name__] += 1
            else:
                done += 1
    return done, failures


def run_peer(tool: str, paths: list[Path], out: Path, workers: int) -> dict[str, object]:
    """Run a per-file tool over `paths`, in chunks, on `workers` processes."""
    size = max(1, min(32, len(paths) // (workers * 8)))
    chunks = [(tool, paths[i : i + size], out) for i in range(0, len(paths), size)]
    done, failures = 0, Counter[str]()
    if workers <= 1:
        results = map(_chunk, chunks)
        for ok, failed in results:
            done, failures = done + ok, failures + failed
    else:
        with Pool(workers) as pool:
            for ok, failed in pool.imap_unordered(_chunk, chunks):
                done, failures = done + ok, failures + failed
    return {"processed": len(paths), "deidentified": done, "failures": dict(failures)}


def run_screenlake(paths: list[Path], out: Path, workers: int) -> dict[str, object]:
    """De-identify `paths` with `deidentify_batch` under the default profile."""
    from screenlake.deid.batch import LandedFile, deidentify_batch
    from screenlake.deid.profile import load_default_profile
    from screenlake.keys import validate_pseudonym_key

    files = [LandedFile(i, p, None) for i, p in enumerate(paths)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = deidentify_batch(
            files,
            key=validate_pseudonym_key(BENCHMARK_KEY),
            profile=load_default_profile(),
            batch_id="benchmark",
            programme="benchmark",
            output_dir=out / "research",
            output_prefix=PurePosixPath("research"),
            quarantine_dir=out / "quarantine",
            workers=workers,
        )
    outputs = {
        row["research_path"]: paths[row["ordinal"]].name
        for row in result.audit.iter_rows(named=True)
        if row["research_path"]
    }
    return {
        "processed": len(paths),
        "deidentified": result.deidentified,
        "quarantined": result.quarantined,
        "quarantine_reasons": result.quarantine_reasons,
        "outputs": outputs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tool", choices=TOOLS)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--list", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    paths = [Path(line) for line in args.list.read_text().splitlines() if line]
    args.out.mkdir(parents=True, exist_ok=True)
    # Import the tool before the clock starts.
    if args.tool == "screenlake":
        import screenlake.deid.batch  # noqa: F401
    elif args.tool in ("deid", "dicognito"):
        __import__({"deid": "deid.dicom", "dicognito": "dicognito.anonymizer"}[args.tool])
    with TreeSampler(interval=0.02) as sampler:
        started = time.perf_counter()
        if args.tool == "screenlake":
            figures = run_screenlake(paths, args.out, args.workers)
        else:
            figures = run_peer(args.tool, paths, args.out, args.workers)
        seconds = time.perf_counter() - started
    own = own_peak_rss()
    figures.update(
        tool=args.tool,
        workers=args.workers,
        seconds=seconds,
        peak_bytes=max(own, sampler.tree_peak(os.getpid())),
        own_peak_bytes=own,
    )
    args.result.write_text(json.dumps(figures))


if __name__ == "__main__":
    os.environ.setdefault("MESSAGELEVEL", "ERROR")  # deid prints every action at its default
    main()
