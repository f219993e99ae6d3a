"""What the assets share: one batch's lake tables, UI previews, check results from rules."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl

from orchestration.partitions import screening_partitions
from resources.lake import LakeDatabase
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.fsutil import sha256_of
from screenlake.quality import RuleOutcome
from screenlake.reidentify import ReidentificationRecord, append_audit, write_audit_record
from screenlake.tables import LANDED_INSTANCES, TableSchema, read_parquet, write_parquet


def read_batch_table(
    research_zone: ZoneStore, table: TableSchema, batch: layout.Batch, key: bytes
) -> pl.DataFrame:
    """One batch's rows of a lake table."""
    return read_parquet(table, research_zone.pull(layout.lake_table_path(table, batch, key)))


def write_batch_table(
    research_zone: ZoneStore,
    lake: LakeDatabase,
    frame: pl.DataFrame,
    table: TableSchema,
    batch: layout.Batch,
    key: bytes,
) -> int:
    """Replace one batch's rows of a lake table and refresh the lake's views; returns rows.
    Nothing is written for a run that has ended (`ZoneStore.require_run_in_progress`)."""
    research_zone.require_run_in_progress()
    path = layout.lake_table_path(table, batch, key)
    rows = write_parquet(frame, table, research_zone.path(path))
    research_zone.push(path)
    lake.refresh_views()
    return rows


def landed_manifest(
    phi_zone: ZoneStore, batch: layout.Batch, with_files: bool = True
) -> tuple[pl.DataFrame, Path]:
    """The batch's landed manifest and the local folder of its landed files. Without
    `with_files`, only the manifest is brought from a zone in object storage: counting the
    landed files must not download them."""
    phi_zone.pull(layout.raw_dir(batch) if with_files else layout.raw_manifest_path(batch))
    manifest = read_parquet(LANDED_INSTANCES, phi_zone.path(layout.raw_manifest_path(batch)))
    return manifest, phi_zone.path(layout.raw_dir(batch))


def record_reidentification(
    phi_zone: ZoneStore, record: ReidentificationRecord, writer: str
) -> None:
    """Audit one re-identification in the PHI zone: a row of the log in a local zone; in
    object storage, an object of its own, so that concurrent writers never lose a row."""
    if not phi_zone.is_remote:
        append_audit(phi_zone.path(layout.REIDENTIFICATION_LOG), record)
        return
    path = layout.reidentification_record_path(record.at, writer)
    write_audit_record(phi_zone.path(path), record)
    phi_zone.push(path)


def markdown_preview(frame: pl.DataFrame, rows: int = 5) -> dg.MetadataValue:
    """The first rows of a research-zone frame as a Markdown table for the UI."""
    head = frame.head(rows)
    lines = [
        "| " + " | ".join(head.columns) + " |",
        "|" + "---|" * len(head.columns),
        *(
            "| " + " | ".join("" if v is None else str(v) for v in row) + " |"
            for row in head.iter_rows()
        ),
    ]
    return dg.MetadataValue.md("\n".join(lines))


def check_result(outcome: RuleOutcome, check_name: str) -> dg.AssetCheckResult:
    """A Dagster check result from a data-quality rule's outcome: summary, counts, examples."""
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=outcome.passed,
        description=outcome.summary,
        metadata={**outcome.counts, "examples": dg.MetadataValue.json(outcome.examples)},
    )


JUDGED = "judged_sha256"


def table_digest(
    research_zone: ZoneStore, table: TableSchema, batch: layout.Batch, key: bytes
) -> str:
    """The SHA-256 of one batch's file of a lake table as it is in the research zone now."""
    return sha256_of(research_zone.pull(layout.lake_table_path(table, batch, key)))


class StepChecks:
    """The results of the checks an asset runs in its own step on what it has just written,
    the seconds they took (reported as the asset's `seconds_checking`, so that a benchmark can
    tell the checks' time from the asset's own work), and the digests of the lake files they
    judged (`judged_sha256`), so that publication can tell those files from a later change."""

    def __init__(self) -> None:
        self.results: list[dg.AssetCheckResult] = []
        self.seconds = 0.0
        self.judged: dict[str, str] = {}

    def judge(
        self, research_zone: ZoneStore, table: TableSchema, batch: layout.Batch, key: bytes
    ) -> pl.DataFrame:
        """One batch's rows of a lake table, read for the checks, its file's digest kept."""
        self.judged[table.name] = table_digest(research_zone, table, batch, key)
        return read_batch_table(research_zone, table, batch, key)

    def run(self, evaluate: Callable[[], dg.AssetCheckResult]) -> None:
        """Evaluate one check and keep its result."""
        started = time.perf_counter()
        self.results.append(evaluate())
        self.seconds += time.perf_counter() - started

    def materialize_result(self, metadata: dict[str, object]) -> dg.MaterializeResult:
        """The asset's result: its metadata and `seconds_checking`, and every check's result."""
        return dg.MaterializeResult(
            metadata={
                **metadata,
                "seconds_checking": round(self.seconds, 3),
                JUDGED: dg.MetadataValue.json(self.judged),
            },
            check_results=self.results,
        )


def step_check(asset: str, name: str, description: str, blocking: bool = True) -> dg.AssetCheckSpec:
    """The spec of a check that `asset` runs in its own step, one evaluation per partition."""
    return dg.AssetCheckSpec(
        name,
        asset=asset,
        blocking=blocking,
        partitions_def=screening_partitions,
        description=description,
    )


def with_code_version(assets: list[dg.AssetsDefinition], version: str) -> list[dg.AssetsDefinition]:
    """`assets` versioned by `version`: what a deployment configures (its models, its
    de-identification profile) set as their code version when the Definitions are built."""
    return list(
        dg.map_asset_specs(lambda spec: spec.replace_attributes(code_version=version), assets)
    )
