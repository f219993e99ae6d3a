"""Ingest: find the partition's studies in the source and land their files in the PHI zone."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import dagster as dg

from assets._shared import StepChecks, check_result, step_check
from assets.privacy import ERASURE_JOB, earlier_runs_in_progress
from orchestration.partitions import batch_of, screening_partitions
from resources.secrets import PseudonymKey, VaultKey, require_keys
from resources.sources import StudySource
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.ingest import batch_files, land_files, source_files_of, study_index
from screenlake.objections import ObjectionRegister, without_objecting_patients
from screenlake.reconcile import listed_landed, outcome_of
from screenlake.tables import (
    LANDED_INSTANCES,
    SOURCE_FILES,
    STUDY_INDEX,
    read_parquet,
    write_parquet,
)

# The metadata key under which `pacs_studies` records the source summary it listed against
# (counts and digests, no identifiers); `new_studies_sensor` compares it with the source's.
SOURCE_SUMMARY = "source_summary"
# The metadata key under which `pacs_studies` counts the files it left out for objections;
# `raw_instances` reconciles with it.
FILES_EXCLUDED = "files_excluded_by_objection"


class ListingWaits(dg.Config):
    """How long a night's listing waits for an erasure that started before it: erasures take
    minutes, so once a minute, for up to four hours; then the night fails loudly."""

    wait_seconds: int = 60
    waits: int = 240


@dg.asset(
    group_name="ingest",
    partitions_def=screening_partitions,
    kinds={"dicom", "parquet"},
    pool="pacs",
)
def pacs_studies(
    context: dg.AssetExecutionContext,
    config: ListingWaits,
    source: StudySource,
    phi_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    vault_key: VaultKey,
) -> dg.MaterializeResult:
    """Studies the source holds for the day, routed to this programme by their headers (PHI)."""
    # Before the source is even asked: a missing, malformed or unbound key must land nothing.
    require_keys(pseudonym_key, vault_key)
    # An erasure that started first finishes first: the night then lists with its objection.
    erasing = earlier_runs_in_progress(context.instance, ERASURE_JOB, context.run.run_id)
    if erasing:
        context.log.info("an erasure is in progress: the listing waits for it to end")
        raise dg.RetryRequested(max_retries=config.waits, seconds_to_wait=config.wait_seconds)
    batch = batch_of(context)
    # Taken before listing: a file that arrives in between changes the next summary, so the
    # sensor runs the day again instead of believing it listed.
    summary = source.day_summary(batch.day)
    everything = source.list_day(batch.day)
    # Objections are honoured between listing and retrieval: nothing of theirs is landed.
    key = pseudonym_key.key()
    objections = ObjectionRegister(phi_zone, key).in_force()
    listing, excluded = without_objecting_patients(everything, key, objections, batch.programme)
    studies = study_index(listing, batch)
    files = batch_files(listing, batch)
    write_parquet(studies, STUDY_INDEX, phi_zone.path(layout.study_index_path(batch)))
    write_parquet(files, SOURCE_FILES, phi_zone.path(layout.source_files_path(batch)))
    phi_zone.push(layout.study_index_path(batch))
    phi_zone.push(layout.source_files_path(batch))
    return dg.MaterializeResult(
        metadata={
            "studies": studies.height,
            "files": files.height,
            "files_unreadable_or_unrouted": files.filter(files["problem"].is_not_null()).height,
            "files_in_source_for_day": everything.file_count,
            "studies_excluded_by_objection": excluded.studies,
            FILES_EXCLUDED: excluded.files,
            SOURCE_SUMMARY: summary,
        }
    )


EVERY_LISTED_FILE_LANDED = "every_listed_file_landed_or_excluded"


@dg.asset(
    group_name="ingest",
    partitions_def=screening_partitions,
    deps=[pacs_studies],
    kinds={"dicom", "parquet"},
    pool="pacs",
    check_specs=[
        step_check(
            "raw_instances",
            EVERY_LISTED_FILE_LANDED,
            "Listed = landed + excluded by objection: every file the listing kept has landed "
            "(or landed as a problem, to be quarantined), and nothing else did.",
        )
    ],
)
def raw_instances(
    context: dg.AssetExecutionContext,
    source: StudySource,
    phi_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    vault_key: VaultKey,
) -> dg.MaterializeResult:
    """The partition's files landed in the PHI zone by ordinal, with checksums and a manifest."""
    require_keys(pseudonym_key, vault_key)  # this step can run alone: it checks for itself
    batch = batch_of(context)
    files_frame = read_parquet(SOURCE_FILES, phi_zone.pull(layout.source_files_path(batch)))
    files = source_files_of(files_frame)
    # The previous landing comes along, so that only what is new or changed is fetched.
    manifest = land_files(files, batch, source, phi_zone.pull(layout.raw_dir(batch)))
    write_parquet(manifest, LANDED_INSTANCES, phi_zone.path(layout.raw_manifest_path(batch)))
    phi_zone.push(layout.raw_dir(batch))
    size = int(manifest["size_bytes"].sum()) if manifest.height else 0
    excluded = _files_excluded_by_objection(context)
    checks = StepChecks()
    step = listed_landed(files_frame, manifest, excluded)
    checks.run(lambda: check_result(outcome_of([step]), EVERY_LISTED_FILE_LANDED))
    return checks.materialize_result(
        {
            "files_landed": manifest.height,
            "megabytes_landed": round(size / 1e6, 2),
            "files_flagged_at_ingest": manifest.filter(manifest["problem"].is_not_null()).height,
            FILES_EXCLUDED: excluded,
        }
    )


def _files_excluded_by_objection(context: dg.AssetExecutionContext) -> int:
    """What the partition's latest listing left out for objections (0 before any listing
    recorded it)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=pacs_studies.key, asset_partitions=[context.partition_key]),
        limit=1,
    ).records
    listed = records[0].asset_materialization if records else None
    value = listed.metadata.get(FILES_EXCLUDED) if listed else None
    return int(value.value) if value is not None else 0  # type: ignore[arg-type]
