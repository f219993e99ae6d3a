"""Catalogue: de-identified headers -> instance, series and study tables in the lake."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from collections.abc import Callable

import dagster as dg
import polars as pl

from assets._shared import (
    StepChecks,
    check_result,
    markdown_preview,
    read_batch_table,
    step_check,
    write_batch_table,
)
from assets.deidentify import deidentified_instances
from assets.quality_suites import suite_check
from orchestration.partitions import batch_of, screening_partitions
from resources.lake import LakeDatabase
from resources.secrets import PseudonymKey
from resources.zones import ZoneStore
from screenlake import catalog, layout
from screenlake.reconcile import deidentified_catalogued, outcome_of
from screenlake.tables import (
    DEIDENTIFICATION_AUDIT,
    INSTANCE_CATALOG,
    SERIES_CATALOG,
    STUDY_CATALOG,
    TableSchema,
)

CATALOGUED = "every_deidentified_file_catalogued"
CATALOGUE_SUITE = "catalogue_suite_passes"


@dg.asset(
    deps=[deidentified_instances],
    group_name="catalog",
    partitions_def=screening_partitions,
    kinds={"parquet", "duckdb"},
    check_specs=[
        step_check(
            "instance_catalog",
            CATALOGUED,
            "De-identified = catalogued: every file de-identification wrote has one row, and no"
            " row names another file.",
        ),
        step_check(
            "instance_catalog",
            CATALOGUE_SUITE,
            "The catalogue's Great Expectations suite: schema and types, required values, "
            "unique SOPInstanceUIDs, sizes and geometry in range, pseudonymous keys, no "
            "identifiers.",
        ),
    ],
)
def instance_catalog(
    context: dg.AssetExecutionContext,
    research_zone: ZoneStore,
    lake: LakeDatabase,
    pseudonym_key: PseudonymKey,
) -> dg.MaterializeResult:
    """One row per de-identified instance: UIDs, modality, geometry, device, file. Its checks
    run in its step, on the table read back from the lake."""
    from screenlake.quality_suites import catalogue_suite

    batch, key = batch_of(context), pseudonym_key.key()
    audit = read_batch_table(research_zone, DEIDENTIFICATION_AUDIT, batch, key)
    paths = audit.filter(pl.col("outcome") == "deidentified")["research_path"].to_list()
    research_zone.pull(layout.research_dicom_dir(batch, key))
    frame = catalog.instance_catalog(
        research_zone.path(), paths, batch.research_id(key), batch.programme
    )
    rows = write_batch_table(research_zone, lake, frame, INSTANCE_CATALOG, batch, key)
    checks = StepChecks()
    written = checks.judge(research_zone, INSTANCE_CATALOG, batch, key)
    checks.run(
        lambda: check_result(outcome_of([deidentified_catalogued(audit, written)]), CATALOGUED)
    )
    checks.run(
        lambda: suite_check(
            context,
            research_zone,
            catalogue_suite(written, batch.research_id(key), batch.programme),
            key,
            CATALOGUE_SUITE,
        )
    )
    return checks.materialize_result(
        {
            "instances": rows,
            "studies": frame["study_instance_uid"].n_unique(),
            "preview": markdown_preview(
                frame.select("modality", "series_number", "rows", "columns", "manufacturer")
            ),
        }
    )


def _roll_up(
    context: dg.AssetExecutionContext,
    research_zone: ZoneStore,
    lake: LakeDatabase,
    pseudonym_key: PseudonymKey,
    roll_up: Callable[[pl.DataFrame], pl.DataFrame],
    table: TableSchema,
) -> int:
    """Write one batch's roll-up of the instance catalogue; returns its rows."""
    batch, key = batch_of(context), pseudonym_key.key()
    frame = roll_up(read_batch_table(research_zone, INSTANCE_CATALOG, batch, key))
    return write_batch_table(research_zone, lake, frame, table, batch, key)


@dg.asset(
    deps=[instance_catalog],
    group_name="catalog",
    partitions_def=screening_partitions,
    kinds={"parquet", "duckdb"},
)
def series_catalog(
    context: dg.AssetExecutionContext,
    research_zone: ZoneStore,
    lake: LakeDatabase,
    pseudonym_key: PseudonymKey,
) -> dg.MaterializeResult:
    """One row per series, rolled up from the instance catalogue."""
    rows = _roll_up(
        context, research_zone, lake, pseudonym_key, catalog.series_catalog, SERIES_CATALOG
    )
    return dg.MaterializeResult(metadata={"series": rows})


@dg.asset(
    deps=[instance_catalog],
    group_name="catalog",
    partitions_def=screening_partitions,
    kinds={"parquet", "duckdb"},
)
def study_catalog(
    context: dg.AssetExecutionContext,
    research_zone: ZoneStore,
    lake: LakeDatabase,
    pseudonym_key: PseudonymKey,
) -> dg.MaterializeResult:
    """One row per study, rolled up from the instance catalogue."""
    rows = _roll_up(
        context, research_zone, lake, pseudonym_key, catalog.study_catalog, STUDY_CATALOG
    )
    return dg.MaterializeResult(metadata={"studies": rows})
