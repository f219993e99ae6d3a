"""Print how many milliseconds a findings report for the PACS takes to build, one report at a
time with `findings_report` (highdicom's SR constructor for every report, as before) and with
`build_reports` (one `FindingsReportBuilder` for the run), on the same synthetic partition.

Usage: .venv/bin/python benchmarks/pacs_reports.py [--studies 300] [--ct-slices 8]
           [--repeats 3] [--keep DIR]

A synthetic partition of `--studies` studies (small low-dose CTs of `--ct-slices` slices and
chest radiographs of one or two images, as the demo's export has them) is written as landed
files with a landed manifest, a vault and validated findings, every study flagged so that
every study gets a report. Then, each timed over all reports and `--repeats` times (the best
run counts; CPU time, steadier on a shared machine, is printed beside wall time):

- headers: `patients_by_study` and `evidence_by_study` (what the asset reads of the landed
  files), per report;
- before: `findings_report` for each report;
- after: `build_reports` for all of them;
- outbox: `write_outbox`, what an export-drop source does with the reports.

Both builds are warmed up on two reports first (highdicom reads its tables on first use).

Both builds are checked to give equal datasets before anything is printed. The last line holds
every figure as name=value pairs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from faker import Faker

from screenlake.findings_report import findings_report
from screenlake.pacs_reports import (
    PendingReport,
    build_reports,
    evidence_by_study,
    patients_by_study,
    pending_reports,
    report_uids,
    with_evidence,
    write_outbox,
)
from screenlake.synth.export import write_dataset
from screenlake.synth.modalities import ct_datasets, cxr_datasets
from screenlake.synth.plan import plan_studies

KEY = b"b" * 32
DAY = date(2024, 3, 11)
VALIDATED_AT = datetime(2024, 3, 12, 6, 0, tzinfo=UTC)
CT_SIZE = 32
CXR_SIZE = 64


def write_partition(
    raw: Path, studies: int, ct_slices: int, seed: int = 7
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Landed files under `raw` and the partition's landed manifest, validated findings (all
    flagged) and vault."""
    fake = Faker("nl_NL")
    fake.seed_instance(seed)
    rows: list[tuple[str, str, None]] = []
    findings: list[dict[str, Any]] = []
    vault: list[dict[str, Any]] = []
    for index, study in enumerate(
        plan_studies(fake, np.random.default_rng(seed), studies, DAY, 1)[:studies]
    ):
        if study.modality == "CT":
            datasets = ct_datasets(study, seed, ct_slices, CT_SIZE)
        else:
            datasets = cxr_datasets(study, seed, CXR_SIZE)
        for ds in datasets:
            name = f"{len(rows) + 1:06d}.dcm"
            write_dataset(ds, raw / name)
            rows.append((str(ds.StudyInstanceUID), name, None))
        pseudonym = f"2.25.{index + 1}"
        model = f"{study.programme}_reference"
        findings.append(
            {
                "study_instance_uid": pseudonym,
                "programme": study.programme,
                "score": 0.9,
                "flag": True,
                "threshold": 0.5,
                "priority_rank": index + 1,
                "model_name": model,
                "model_version": "1.0.0",
                "weights_sha256": "ab" * 32,
                "validated_at": VALIDATED_AT,
            }
        )
        vault.append(
            {
                "study_instance_uid": pseudonym,
                "patient_id": str(ds.PatientID),
                "accession_number": str(ds.AccessionNumber),
                "original_study_instance_uid": str(ds.StudyInstanceUID),
                "original_study_date": study.day,
            }
        )
    manifest = pl.DataFrame(
        rows,
        schema={"study_instance_uid": pl.String, "landed_path": pl.String, "problem": pl.String},
        orient="row",
    )
    return manifest, pl.DataFrame(findings), pl.DataFrame(vault)


def best_seconds(repeats: int, run: Callable[[], object]) -> tuple[float, float, Any]:
    """The least wall time and the least CPU time of this process over `repeats` calls of
    `run`, and the last call's result. CPU time is the steadier figure on a shared machine."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = run()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    return wall, cpu, result


def one_by_one(pending: list[PendingReport]) -> list[Any]:
    """The reports as `build_reports` built them before: highdicom's constructor each time."""
    reports = []
    for item in pending:
        finding = item.finding
        series, sop = report_uids(KEY, finding.original_study_instance_uid, finding.model_version)
        reports.append(
            findings_report(
                finding,
                series_instance_uid=series,
                sop_instance_uid=sop,
                content_datetime=item.validated_at,
            )
        )
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=300)
    parser.add_argument("--ct-slices", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the partition here and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="pacs-reports-"))
    raw, outbox = work / "raw", work / "outbox"
    raw.mkdir(parents=True, exist_ok=True)
    try:
        manifest, findings, vault = write_partition(raw, args.studies, args.ct_slices)

        def read_headers() -> list[PendingReport]:
            pending = pending_reports(findings, vault, patients_by_study(manifest, raw))
            studies = [p.finding.original_study_instance_uid for p in pending]
            return with_evidence(pending, evidence_by_study(manifest, raw, studies))

        headers_s, _, pending = best_seconds(args.repeats, read_headers)
        # Warm up both: highdicom reads its IOD tables on first use, once per process.
        one_by_one(pending[:2])
        build_reports(pending[:2], KEY)
        before_s, before_cpu, before = best_seconds(args.repeats, lambda: one_by_one(pending))
        after_s, after_cpu, after = best_seconds(args.repeats, lambda: build_reports(pending, KEY))
        if before != after:
            raise SystemExit("build_reports and findings_report disagree; this is a bug")
        outbox_s, _, _ = best_seconds(args.repeats, lambda: write_outbox(after, outbox))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    reports = len(after)
    evidence = sum(len(p.finding.evidence) for p in pending)
    figures = {
        "studies": args.studies,
        "reports": reports,
        "evidence_per_report": round(evidence / reports, 2),
        "headers_ms_per_report": round(1000 * headers_s / reports, 2),
        "before_ms_per_report": round(1000 * before_s / reports, 2),
        "after_ms_per_report": round(1000 * after_s / reports, 2),
        "before_cpu_ms_per_report": round(1000 * before_cpu / reports, 2),
        "after_cpu_ms_per_report": round(1000 * after_cpu / reports, 2),
        "speedup": round(before_s / after_s, 1),
        "outbox_ms_per_report": round(1000 * outbox_s / reports, 2),
    }
    print(
        f"{reports} reports ({figures['evidence_per_report']} cited images each): build "
        f"{figures['before_ms_per_report']} ms a report before, "
        f"{figures['after_ms_per_report']} ms after ({figures['speedup']}x; CPU "
        f"{figures['before_cpu_ms_per_report']} and {figures['after_cpu_ms_per_report']} ms); "
        "reading headers "
        f"{figures['headers_ms_per_report']} ms, writing to the outbox "
        f"{figures['outbox_ms_per_report']} ms a report"
    )
    print(" ".join(f"{name}={value}" for name, value in figures.items()))


if __name__ == "__main__":
    main()
