"""De-identifying a batch of landed files: each ends de-identified or quarantined with a reason.

The files are spread over worker processes; the parent places the outputs, so that two files
with one SOPInstanceUID cannot overwrite each other and the second is quarantined instead.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import polars as pl

from screenlake.deid.engine import deidentify_file, write_deidentified
from screenlake.deid.profile import Profile
from screenlake.errors import UnreadableInstanceError
from screenlake.fsutil import fresh_staging_folder, swap_in_folder
from screenlake.lifeline import bound_pool
from screenlake.tables import DEIDENTIFICATION_AUDIT, frame_of


@dataclass(frozen=True)
class LandedFile:
    """One landed file to de-identify; `problem` is set when ingest already knows it is unusable."""

    ordinal: int
    path: Path
    problem: str | None


@dataclass(frozen=True)
class _FileResult:
    ordinal: int
    reason: str | None
    actions_applied: int = 0
    kept_text_cleaned: int = 0
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    work_file: Path | None = None


@dataclass(frozen=True)
class BatchResult:
    """What happened to a batch: the audit rows and the counts a person reads."""

    audit: pl.DataFrame
    deidentified: int
    quarantined: int
    quarantine_reasons: dict[str, int]


def _deidentify_one(args: tuple[LandedFile, bytes, Profile, Path]) -> _FileResult:
    landed, key, profile, work_dir = args
    if landed.problem:
        return _FileResult(landed.ordinal, landed.problem)
    try:
        result = deidentify_file(landed.path, key, profile)
    except UnreadableInstanceError as error:
        return _FileResult(landed.ordinal, str(error))
    work_file = work_dir / f"{landed.ordinal:06d}.dcm"
    write_deidentified(result, work_file)
    return _FileResult(
        ordinal=landed.ordinal,
        reason=None,
        actions_applied=result.actions_applied,
        kept_text_cleaned=result.kept_text_cleaned,
        study_uid=result.study_instance_uid,
        series_uid=str(result.dataset.SeriesInstanceUID),
        sop_uid=result.sop_instance_uid,
        work_file=work_file,
    )


def _results(
    files: list[LandedFile], key: bytes, profile: Profile, work_dir: Path, workers: int
) -> Iterator[_FileResult]:
    jobs = [(f, key, profile, work_dir) for f in files]
    if workers <= 1 or len(files) < 2:
        yield from map(_deidentify_one, jobs)
        return
    # Workers die with this process: killed, it cannot shut its pool down itself.
    with bound_pool(workers) as pool:
        yield from pool.map(_deidentify_one, jobs, chunksize=max(1, len(jobs) // (workers * 8)))


def quarantine_file(source: Path, ordinal: int, reason: str, quarantine_dir: Path) -> None:
    """Put an original into quarantine with its reason in a text file beside it.

    Within one zone the original is hard-linked, not copied: landed files are never changed,
    and a copy per quarantined file would make the parent process the batch's bottleneck.
    """
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = quarantine_dir / f"{ordinal:06d}.dcm"
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, target)
    (quarantine_dir / f"{ordinal:06d}.reason.txt").write_text(reason + "\n", encoding="utf-8")


def deidentify_batch(
    files: list[LandedFile],
    *,
    key: bytes,
    profile: Profile,
    batch_id: str,
    programme: str,
    output_dir: Path,
    output_prefix: PurePosixPath,
    quarantine_dir: Path,
    workers: int = 1,
) -> BatchResult:
    """De-identify `files` into `output_dir` and quarantine the rest into `quarantine_dir`.

    Both folders are rebuilt and swapped in whole, so a re-run replaces the batch.
    `output_prefix` is `output_dir` relative to the research zone, for the audit rows.
    """
    staging = fresh_staging_folder(output_dir)
    quarantine_staging = fresh_staging_folder(quarantine_dir)
    work_dir = staging / ".work"
    work_dir.mkdir()
    by_ordinal = {f.ordinal: f for f in files}
    placed: dict[str, int] = {}
    rows: list[dict[str, object]] = []
    reasons: Counter[str] = Counter()
    now = datetime.now(UTC)
    for result in _results(files, key, profile, work_dir, workers):
        reason = result.reason
        if reason is None and result.sop_uid in placed:
            reason = f"duplicate SOPInstanceUID: input {placed[result.sop_uid]} has the same one"
        research_path = None
        if reason is None:
            assert result.work_file and result.study_uid and result.series_uid and result.sop_uid
            relative = PurePosixPath(result.study_uid, result.series_uid, f"{result.sop_uid}.dcm")
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            result.work_file.replace(staging / relative)
            placed[result.sop_uid] = result.ordinal
            research_path = str(output_prefix / relative)
        else:
            quarantine_file(
                by_ordinal[result.ordinal].path, result.ordinal, reason, quarantine_staging
            )
            reasons[reason.split(":")[0]] += 1
        rows.append(
            {
                "batch_id": batch_id,
                "programme": programme,
                "ordinal": result.ordinal,
                "outcome": "deidentified" if reason is None else "quarantined",
                "reason": reason,
                "profile_version": profile.version,
                "actions_applied": result.actions_applied,
                "kept_text_cleaned": result.kept_text_cleaned,
                "sop_instance_uid": result.sop_uid if reason is None else None,
                "research_path": research_path,
                "processed_at": now,
            }
        )
    shutil.rmtree(work_dir)
    swap_in_folder(staging, output_dir)
    swap_in_folder(quarantine_staging, quarantine_dir)
    audit = frame_of(rows, DEIDENTIFICATION_AUDIT)
    quarantined = int(audit.filter(pl.col("outcome") == "quarantined").height)
    return BatchResult(
        audit=audit,
        deidentified=audit.height - quarantined,
        quarantined=quarantined,
        quarantine_reasons=dict(reasons),
    )
