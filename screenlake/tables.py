"""One schema per table, used by the writers, the checks and the tests alike.

Tables marked PHI live in the PHI zone only; every other table lives in the research zone and
must never hold a name, a national number, a birth date, an accession number or an original UID.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class TableSchema:
    """A named table: its columns, its zone and its key."""

    name: str
    zone: str
    schema: pa.Schema
    key: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        """Column names in order."""
        return self.schema.names


def _table(name: str, zone: str, key: tuple[str, ...], *fields: pa.Field) -> TableSchema:
    return TableSchema(name=name, zone=zone, schema=pa.schema(list(fields)), key=key)


_s, _i32, _i64, _f64 = pa.string(), pa.int32(), pa.int64(), pa.float64()
_ts = pa.timestamp("us", tz="UTC")

STUDY_INDEX = _table(
    "pacs_studies",
    "phi",
    ("study_instance_uid",),
    pa.field("partition_date", pa.date32(), nullable=False),
    pa.field("programme", _s, nullable=False),
    pa.field("study_instance_uid", _s, nullable=False),
    pa.field("patient_id", _s),
    pa.field("accession_number", _s),
    pa.field("study_date", pa.date32()),
    pa.field("modality", _s),
    pa.field("source_files", _i32, nullable=False),
)

SOURCE_FILES = _table(
    "pacs_study_files",
    "phi",
    ("ref",),
    pa.field("partition_date", pa.date32(), nullable=False),
    pa.field("programme", _s, nullable=False),
    pa.field("ref", _s, nullable=False),
    pa.field("study_instance_uid", _s),
    pa.field("sop_instance_uid", _s),
    pa.field("problem", _s),
)

LANDED_INSTANCES = _table(
    "raw_instances",
    "phi",
    ("ordinal",),
    pa.field("partition_date", pa.date32(), nullable=False),
    pa.field("programme", _s, nullable=False),
    pa.field("ordinal", _i32, nullable=False),
    pa.field("source_path", _s, nullable=False),
    pa.field("landed_path", _s, nullable=False),
    pa.field("size_bytes", _i64, nullable=False),
    pa.field("sha256", _s, nullable=False),
    pa.field("study_instance_uid", _s),
    pa.field("sop_instance_uid", _s),
    pa.field("problem", _s),
)

DEIDENTIFICATION_AUDIT = _table(
    "deidentification_audit",
    "research",
    ("batch_id", "ordinal"),
    pa.field("batch_id", _s, nullable=False),
    pa.field("programme", _s, nullable=False),
    pa.field("ordinal", _i32, nullable=False),
    pa.field("outcome", _s, nullable=False),
    pa.field("reason", _s),
    pa.field("profile_version", _s, nullable=False),
    pa.field("actions_applied", _i32, nullable=False),
    pa.field("kept_text_cleaned", _i32, nullable=False),
    pa.field("sop_instance_uid", _s),
    pa.field("research_path", _s),
    pa.field("processed_at", _ts, nullable=False),
)

VAULT_ENTRIES = _table(
    "pseudonym_vault",
    "phi",
    ("study_instance_uid",),
    pa.field("patient_pseudonym", _s, nullable=False),
    pa.field("study_instance_uid", _s, nullable=False),
    pa.field("accession_pseudonym", _s),
    pa.field("patient_id", _s, nullable=False),
    # Whose patient ID: objections are matched on issuer and ID (screenlake.objections).
    pa.field("issuer_of_patient_id", _s),
    pa.field("accession_number", _s),
    pa.field("original_study_instance_uid", _s, nullable=False),
    pa.field("original_study_date", pa.date32()),
    pa.field("date_shift_days", _i32, nullable=False),
)

INSTANCE_CATALOG = _table(
    "instance_catalog",
    "research",
    ("sop_instance_uid",),
    pa.field("batch_id", _s, nullable=False),
    pa.field("programme", _s, nullable=False),
    pa.field("sop_instance_uid", _s, nullable=False),
    pa.field("series_instance_uid", _s, nullable=False),
    pa.field("study_instance_uid", _s, nullable=False),
    pa.field("patient_pseudonym", _s, nullable=False),
    pa.field("sop_class_uid", _s),
    pa.field("transfer_syntax_uid", _s),
    pa.field("modality", _s),
    pa.field("body_part_examined", _s),
    pa.field("study_date", pa.date32()),
    pa.field("series_number", _i32),
    pa.field("instance_number", _i32),
    pa.field("rows", _i32),
    pa.field("columns", _i32),
    pa.field("number_of_frames", _i32),
    pa.field("pixel_spacing_row_mm", _f64),
    pa.field("pixel_spacing_col_mm", _f64),
    pa.field("slice_thickness_mm", _f64),
    pa.field("slice_position_mm", _f64),
    pa.field("kvp", _f64),
    pa.field("manufacturer", _s),
    pa.field("manufacturer_model_name", _s),
    pa.field("patient_sex", _s),
    pa.field("patient_age", _s),
    pa.field("research_path", _s, nullable=False),
    pa.field("size_bytes", _i64, nullable=False),
)

SERIES_CATALOG = _table(
    "series_catalog",
    "research",
    ("series_instance_uid",),
    pa.field("batch_id", _s, nullable=False),
    pa.field("programme", _s, nullable=False),
    pa.field("series_instance_uid", _s, nullable=False),
    pa.field("study_instance_uid", _s, nullable=False),
    pa.field("patient_pseudonym", _s, nullable=False),
    pa.field("modality", _s),
    pa.field("series_number", _i32),
    pa.field("instances", _i32, nullable=False),
    pa.field("slice_thickness_mm", _f64),
    pa.field("manufacturer", _s),
    pa.field("size_bytes", _i64, nullable=False),
)

STUDY_CATALOG = _table(
    "study_catalog",
    "research",
    ("study_instance_uid",),
    pa.field("batch_id", _s, nullable=False),
    pa.field("programme", _s, nullable=False),
    pa.field("study_instance_uid", _s, nullable=False),
    pa.field("patient_pseudonym", _s, nullable=False),
    pa.field("study_date", pa.date32()),
    pa.field("modalities", _s),
    pa.field("series", _i32, nullable=False),
    pa.field("instances", _i32, nullable=False),
    pa.field("patient_sex", _s),
    pa.field("patient_age", _s),
)

INSTANCE_PREDICTIONS = _table(
    "instance_predictions",
    "research",
    ("sop_instance_uid",),
    pa.field("batch_id", _s, nullable=False),
    pa.field("programme", _s, nullable=False),
    pa.field("sop_instance_uid", _s, nullable=False),
    pa.field("study_instance_uid", _s, nullable=False),
    pa.field("status", _s, nullable=False),
    pa.field("score", _f64),
    pa.field("failure_reason", _s),
    # Mean and standard deviation of the model's input image: intensity drift without pixels.
    pa.field("input_mean", _f64),
    pa.field("input_std", _f64),
    pa.field("model_name", _s, nullable=False),
    pa.field("model_version", _s, nullable=False),
    pa.field("weights_sha256", _s, nullable=False),
)

STUDY_FINDINGS = _table(
    "study_findings",
    "research",
    ("study_instance_uid",),
    pa.field("batch_id", _s, nullable=False),
    pa.field("programme", _s, nullable=False),
    pa.field("study_instance_uid", _s, nullable=False),
    pa.field("patient_pseudonym", _s, nullable=False),
    pa.field("study_date", pa.date32()),
    pa.field("score", _f64),
    pa.field("flag", pa.bool_()),
    pa.field("priority_rank", _i32),
    pa.field("instances_scored", _i32, nullable=False),
    pa.field("instances_failed", _i32, nullable=False),
    pa.field("threshold", _f64, nullable=False),
    pa.field("model_name", _s, nullable=False),
    pa.field("model_version", _s, nullable=False),
    pa.field("weights_sha256", _s, nullable=False),
)

VALIDATED_FINDINGS = _table(
    "validated_findings",
    "research",
    ("study_instance_uid",),
    *STUDY_FINDINGS.schema,
    pa.field("validated_at", _ts, nullable=False),
)

DRIFT_METRICS = _table(
    "drift_metrics",
    "research",
    ("batch_id", "feature", "statistic"),
    pa.field("batch_id", _s, nullable=False),
    pa.field("programme", _s, nullable=False),
    pa.field("kind", _s, nullable=False),  # "input" or "output"
    pa.field("feature", _s, nullable=False),
    pa.field("statistic", _s, nullable=False),  # "psi", "ks", "positive_rate"
    pa.field("value", _f64),
    pa.field("p_value", _f64),
    pa.field("threshold", _f64),
    pa.field("warning", pa.bool_(), nullable=False),
    pa.field("reference_batches", _i32, nullable=False),
    pa.field("reference_rows", _i64, nullable=False),
    pa.field("current_rows", _i64, nullable=False),
    pa.field("computed_at", _ts, nullable=False),
)

PERFORMANCE_AUDIT = _table(
    "performance_audit",
    "research",
    ("programme", "window", "site", "device_model", "model_name", "model_version", "threshold"),
    pa.field("batch_id", _s, nullable=False),
    pa.field("programme", _s, nullable=False),
    pa.field("window", _s, nullable=False),  # "all_time" or "last_<N>_days"
    pa.field("site", _s, nullable=False),  # "all" or a keyed site token
    pa.field("device_model", _s, nullable=False),  # "all" or manufacturer + model name
    pa.field("model_name", _s, nullable=False),
    pa.field("model_version", _s, nullable=False),
    pa.field("threshold", _f64, nullable=False),
    pa.field("studies", _i64, nullable=False),
    pa.field("positives", _i64, nullable=False),
    pa.field("auc", _f64),
    pa.field("auc_low", _f64),
    pa.field("auc_high", _f64),
    pa.field("sensitivity", _f64),
    pa.field("sensitivity_low", _f64),
    pa.field("sensitivity_high", _f64),
    pa.field("specificity", _f64),
    pa.field("specificity_low", _f64),
    pa.field("specificity_high", _f64),
    pa.field("ppv", _f64),
    pa.field("ppv_low", _f64),
    pa.field("ppv_high", _f64),
    pa.field("computed_at", _ts, nullable=False),
)

AUDIT_TRAIL = _table(
    "audit_trail",
    "research",
    ("event_id",),
    pa.field("event_id", _s, nullable=False),
    pa.field("recorded_at", _ts, nullable=False),
    pa.field("run_token", _s, nullable=False),  # keyed token of the run ID, never the ID
    pa.field("batch_id", _s, nullable=False),
    pa.field("programme", _s, nullable=False),
    pa.field("event", _s, nullable=False),  # materialisation, check, export, reidentification
    pa.field("subject", _s, nullable=False),  # the asset, check or export it concerns
    pa.field("outcome", _s),  # passed / failed for checks
    pa.field("rows_in", _i64),
    pa.field("rows_out", _i64),
    pa.field("profile_version", _s),
    pa.field("model_name", _s),
    pa.field("model_version", _s),
    pa.field("actor", _s),  # who asked: a run, a schedule, a person (never a patient)
    pa.field("detail", _s),
)

# What each erasure removed, artefact by artefact: counts and digests, no patient (the PHI
# zone's encrypted request record links an erasure_id to whom it concerned).
ERASURE_LEDGER = _table(
    "erasure_ledger",
    "research",
    ("erasure_id", "zone", "batch_id", "artefact"),
    pa.field("erasure_id", _s, nullable=False),
    pa.field("scope", _s, nullable=False),
    pa.field("asked_on", pa.date32(), nullable=False),
    pa.field("erased_at", _ts, nullable=False),
    pa.field("run_token", _s, nullable=False),  # keyed token of the run ID, never the ID
    pa.field("zone", _s, nullable=False),
    pa.field("batch_id", _s, nullable=False),
    pa.field("artefact", _s, nullable=False),
    pa.field("rows_before", _i64, nullable=False),
    pa.field("rows_after", _i64, nullable=False),
    pa.field("sha256_before", _s, nullable=False),
    pa.field("sha256_after", _s),
)

REVIEW_DECISIONS = _table(
    "review_decisions",
    "phi",
    ("accession_number",),
    pa.field("programme", _s, nullable=False),
    pa.field("accession_number", _s, nullable=False),
    pa.field("patient_id", _s),
    pa.field("review_status", _s, nullable=False),  # e.g. confirmed, dismissed, recalled
    pa.field("label", pa.bool_()),  # the clinician's finding: True positive, False negative
    pa.field("reviewer", _s),
    pa.field("reviewed_at", _ts),
    pa.field("source_file", _s, nullable=False),
    pa.field("imported_at", _ts, nullable=False),
)

COORDINATOR_WORKLIST = _table(
    "coordinator_worklist",
    "phi",
    ("accession_number",),
    pa.field("priority_rank", _i32),
    pa.field("programme", _s, nullable=False),
    pa.field("patient_id", _s, nullable=False),
    pa.field("accession_number", _s),
    pa.field("study_date", pa.date32()),
    pa.field("score", _f64),
    pa.field("flag", pa.bool_(), nullable=False),
    pa.field("model_name", _s, nullable=False),
    pa.field("model_version", _s, nullable=False),
)


def conform(frame: pl.DataFrame, table: TableSchema) -> pa.Table:
    """`frame` as an Arrow table with exactly the table's columns and types; raises on a mismatch."""
    missing = [c for c in table.columns if c not in frame.columns]
    extra = [c for c in frame.columns if c not in table.columns]
    if missing or extra:
        raise ValueError(
            f"{table.name}: columns do not match its schema (missing {missing}, unexpected {extra})"
        )
    arrow = frame.select(table.columns).to_arrow()
    arrow = arrow.cast(table.schema)
    for field in table.schema:
        if not field.nullable and arrow.column(field.name).null_count:
            raise ValueError(f"{table.name}: column {field.name!r} holds nulls but may not")
    return arrow


def polars_schema(table: TableSchema) -> pl.Schema:
    """The table's columns and types as a polars schema."""
    empty = pl.from_arrow(table.schema.empty_table())
    assert isinstance(empty, pl.DataFrame)
    return empty.schema


def frame_of(rows: Sequence[Mapping[str, object]], table: TableSchema) -> pl.DataFrame:
    """Rows (dicts by column name) as a frame with the table's columns and types."""
    return pl.DataFrame(list(rows), schema=polars_schema(table), orient="row")


def write_parquet(frame: pl.DataFrame, table: TableSchema, path: Path) -> int:
    """Write `frame` to `path` atomically (temp file, then rename) under the table's schema.

    Returns the number of rows written. A re-run replaces the file whole, so nothing duplicates.
    """
    arrow = conform(frame, table)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(arrow, tmp, compression="zstd", row_group_size=256_000)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return arrow.num_rows


def read_parquet(table: TableSchema, path: Path) -> pl.DataFrame:
    """Read a table written by `write_parquet`, checked against its schema."""
    if not path.exists():
        # No file name: in the research zone it is the batch's token, and Dagster shows this
        # message beside the partition's real date.
        raise FileNotFoundError(
            f"{table.name} has not been written for this partition; "
            "materialise the upstream asset first"
        )
    frame = pl.read_parquet(path)
    conform(frame, table)
    return frame
