"""Great Expectations suites for one batch's catalogue, predictions and findings.

A suite is data here: `Expect` rows (a GX expectation's class name, its arguments, and the group
of rules it belongs to), built from the table schemas, so that it can be read and tested
without GX. `run_suite` hands it to GX (imported there: it takes about 3 s) on a pandas copy of
the frames, keeps the validation results and their Data Docs in a folder when given one, and
returns what each expectation found: counts and a few failing rows, named by their keys.

Values that look like an identifier are withheld from the results and the Data Docs alike: the
evidence of a leaked BSN must not be a second copy of it. `screenlake.gx_runner` runs them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from screenlake.identifiers import DUTCH_PHONE, DUTCH_POSTCODE, NINE_DIGITS
from screenlake.programmes import PROGRAMME_NAMES
from screenlake.tables import (
    INSTANCE_CATALOG,
    INSTANCE_PREDICTIONS,
    STUDY_FINDINGS,
    VALIDATED_FINDINGS,
    TableSchema,
)

if TYPE_CHECKING:
    # The manifest module imports the model architectures, and with them torch.
    from screenlake.inference.manifest import ModelManifest

MAX_EXAMPLES = 5
WITHHELD = "(withheld: looks like an identifier)"
# Shown for a pseudonymous value in a check's result: rows are named by number instead.
PSEUDONYMOUS = "(pseudonymous: not shown)"
DATA_DOCS_SITE = "evidence"
# One-sided level of the binomial test that decides whether a batch's positive rate is one the
# programme's band cannot explain: small batches swing widely by chance, and that must not block.
POSITIVE_RATE_ALPHA = 0.01

# A DICOM person name written out (Family^Given): what a PatientName looks like in a table.
PERSON_NAME = re.compile(r"[^\W\d_]{2,}\^")
IDENTIFIER_PATTERNS: Mapping[str, str] = {
    "BSN-like nine-digit number": NINE_DIGITS.pattern,
    "Dutch phone number": DUTCH_PHONE.pattern,
    "Dutch postcode": DUTCH_POSTCODE.pattern,
    "DICOM person name": PERSON_NAME.pattern,
}
PSEUDONYMOUS_FORMATS: Mapping[str, str] = {
    "study_instance_uid": r"^2\.25\.\d{1,39}$",
    "series_instance_uid": r"^2\.25\.\d{1,39}$",
    "sop_instance_uid": r"^2\.25\.\d{1,39}$",
    "patient_pseudonym": r"^SL[0-9A-F]{16}$",
}
PROVENANCE_FORMATS: Mapping[str, str] = {
    "model_name": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    "model_version": r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$",
    "weights_sha256": r"^[0-9a-f]{64}$",
}
PREDICTION_STATUSES = ("ok", "failed")
CONDITIONS = ("==", "is null", "is not null")


@dataclass(frozen=True)
class Expect:
    """One expectation: a GX expectation class by name, its arguments, and the rule group it
    belongs to (schema, completeness, uniqueness, ranges, allowed values, provenance,
    identifiers, positive rate). `where` limits it to rows where (column, "==", value), or
    (column, "is null" / "is not null", None), holds."""

    group: str
    kind: str
    kwargs: Mapping[str, Any]
    notes: str = ""
    where: tuple[str, str, object] | None = None
    withhold_values: bool = False

    def __post_init__(self) -> None:
        if self.where is not None and self.where[1] not in CONDITIONS:
            raise ValueError(f"{self.kind}: condition {self.where[1]!r} is not one of {CONDITIONS}")

    @property
    def column(self) -> str | None:
        """The column it looks at; None for a table-level expectation."""
        column = self.kwargs.get("column")
        return str(column) if column is not None else None

    @property
    def label(self) -> str:
        """A readable name, unique within a suite: `expect_..._unique(sop_instance_uid)`."""
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", self.kind).lower()
        label = f"{snake}({self.column})" if self.column else snake
        if self.where is not None:
            column, op, value = self.where
            label += f" where {column} {op}" + ("" if value is None else f" {value!r}")
        return label


@dataclass(frozen=True)
class Validation:
    """One GX suite on one frame: `key` names the rows in examples."""

    name: str
    frame: pl.DataFrame
    key: tuple[str, ...]
    expectations: tuple[Expect, ...]

    def __post_init__(self) -> None:
        labels = [e.label for e in self.expectations]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"suite {self.name} holds an expectation twice: {twice}")


@dataclass(frozen=True)
class Suite:
    """What one asset check validates: one or more GX suites, each on its frame."""

    name: str
    validations: tuple[Validation, ...]


@dataclass(frozen=True)
class ExpectationOutcome:
    """What one expectation found: rows that broke it (None for a table-level expectation),
    the observed value of a table-level one, a few failing rows by key, GX's error if any."""

    validation: str
    group: str
    expectation: str
    success: bool
    unexpected: int | None = None
    observed: str | None = None
    examples: tuple[dict[str, str], ...] = ()
    error: str | None = None

    def as_metadata(self) -> dict[str, object]:
        """The outcome as a JSON-ready dict for a check's metadata."""
        out: dict[str, object] = {
            "suite": self.validation,
            "group": self.group,
            "expectation": self.expectation,
            "success": self.success,
        }
        for name in ("unexpected", "observed", "error"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.examples:
            out["examples"] = list(self.examples)
        return out


@dataclass(frozen=True)
class SuiteResult:
    """A suite's outcome: every expectation's, and where its Data Docs were written."""

    name: str
    outcomes: tuple[ExpectationOutcome, ...]
    data_docs: Path | None = field(default=None, compare=False)

    @property
    def success(self) -> bool:
        """Whether every expectation held."""
        return all(o.success for o in self.outcomes)

    def failed(self) -> list[ExpectationOutcome]:
        """The expectations that did not hold."""
        return [o for o in self.outcomes if not o.success]

    def failed_by_group(self) -> dict[str, int]:
        """Failed expectations per rule group."""
        counts: dict[str, int] = {}
        for outcome in self.failed():
            counts[outcome.group] = counts.get(outcome.group, 0) + 1
        return counts

    @property
    def summary(self) -> str:
        """One line for a person: how many expectations held, and which did not."""
        failed = self.failed()
        if not failed:
            return f"{self.name} suite: all {len(self.outcomes)} expectations met"
        named = "; ".join(
            o.expectation + (f" ({o.unexpected} rows)" if o.unexpected else "") for o in failed
        )
        return (
            f"{self.name} suite: {len(failed)} of {len(self.outcomes)} expectations failed: {named}"
        )


# Building the suites (no GX here)


def _x(
    group: str,
    kind: str,
    *,
    notes: str = "",
    where: tuple[str, str, object] | None = None,
    withhold: bool = False,
    **kwargs: Any,
) -> Expect:
    """An `Expect` with GX's arguments as keywords: `_x("ranges", "...Between", column=...)`."""
    return Expect(group, kind, kwargs, notes, where, withhold)


def _type_name(kind: pa.DataType) -> str:
    """The type GX sees in the pandas copy (see `to_pandas`)."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "str"
    if pa.types.is_floating(kind):
        return "float"
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_timestamp(kind) and kind.tz:
        return "Timestamp"
    if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
        return "datetime64"
    return str(kind)  # int32, int64: numpy's names


def _table_expectations(table: TableSchema, batch_id: str, programme: str) -> list[Expect]:
    """What every research table holds to: its schema, its key, its batch, no identifiers."""
    fields = list(table.schema)
    key = table.key
    out = [_x("schema", "ExpectTableColumnsToMatchOrderedList", column_list=table.columns)]
    out += [
        _x("schema", "ExpectColumnValuesToBeOfType", column=f.name, type_=_type_name(f.type))
        for f in fields
    ]
    out += [
        _x("completeness", "ExpectColumnValuesToNotBeNull", column=f.name)
        for f in fields
        if not f.nullable and f.name not in PROVENANCE_FORMATS
    ]
    out.append(
        _x("uniqueness", "ExpectColumnValuesToBeUnique", column=key[0])
        if len(key) == 1
        else _x("uniqueness", "ExpectCompoundColumnsToBeUnique", column_list=list(key))
    )
    out += [
        # Withheld: another batch's token in a failing row would reach the check's metadata,
        # where Dagster shows it beside this partition's real date.
        _x(
            "allowed values",
            "ExpectColumnValuesToBeInSet",
            withhold=True,
            column="batch_id",
            value_set=[batch_id],
        ),
        _x(
            "allowed values",
            "ExpectColumnValuesToBeInSet",
            column="programme",
            value_set=[programme],
        ),
    ]
    pseudonyms = "a research table names patients, studies and images by pseudonyms only"
    out += [
        _x(
            "identifiers",
            "ExpectColumnValuesToMatchRegex",
            notes=pseudonyms,
            withhold=True,
            column=c,
            regex=r,
        )
        for c, r in PSEUDONYMOUS_FORMATS.items()
        if c in table.columns
    ]
    nothing = "no " + ", ".join(IDENTIFIER_PATTERNS) + " in a research table"
    patterns = list(IDENTIFIER_PATTERNS.values())
    out += [
        _x(
            "identifiers",
            "ExpectColumnValuesToNotMatchRegexList",
            notes=nothing,
            withhold=True,
            column=f.name,
            regex_list=patterns,
        )
        for f in fields
        if pa.types.is_string(f.type) and f.name not in PSEUDONYMOUS_FORMATS
    ]
    return out


def _provenance() -> list[Expect]:
    """Every row names the model that made it (name, version, weights hash), well formed, and
    one model made the whole batch."""
    out = [_x("provenance", "ExpectColumnValuesToNotBeNull", column=c) for c in PROVENANCE_FORMATS]
    out += [
        _x("provenance", "ExpectColumnValuesToMatchRegex", column=c, regex=r)
        for c, r in PROVENANCE_FORMATS.items()
    ]
    out.append(
        _x(
            "provenance",
            "ExpectColumnUniqueValueCountToBeBetween",
            notes="one model scores a batch",
            column="weights_sha256",
            min_value=0,
            max_value=1,
        )
    )
    return out


def _between(column: str, low: float | None, high: float | None, **extra: Any) -> Expect:
    return _x(
        "ranges",
        "ExpectColumnValuesToBeBetween",
        column=column,
        min_value=low,
        max_value=high,
        **extra,
    )


def _require_programme(programme: str) -> None:
    if programme not in PROGRAMME_NAMES:
        raise ValueError(f"unknown programme {programme!r}; known: {', '.join(PROGRAMME_NAMES)}")


def catalogue_suite(catalog: pl.DataFrame, batch_id: str, programme: str) -> Suite:
    """The catalogue suite on one batch's `instance_catalog`: schema and types, every required
    value present, SOPInstanceUID unique, the batch's own rows, sizes and geometry in range,
    research paths inside the batch's folder, pseudonymous keys and no identifiers."""
    _require_programme(programme)
    folder = f"^dicom/programme={re.escape(programme)}/batch={re.escape(batch_id)}/"
    expectations = [
        *_table_expectations(INSTANCE_CATALOG, batch_id, programme),
        _between("rows", 1, 65535),
        _between("columns", 1, 65535),
        _between("number_of_frames", 1, None),
        _between("size_bytes", 1, None),
        *(
            _between(column, 0, None, strict_min=True)
            for column in ("pixel_spacing_row_mm", "pixel_spacing_col_mm", "slice_thickness_mm")
        ),
        _between("kvp", 0, None, strict_min=True),
        _x(
            "allowed values",
            "ExpectColumnValuesToMatchRegex",
            notes="every catalogued file lies in its batch's folder of the research zone",
            withhold=True,
            column="research_path",
            regex=folder,
        ),
    ]
    table = INSTANCE_CATALOG
    return Suite("catalogue", (Validation(table.name, catalog, table.key, tuple(expectations)),))


def predictions_suite(
    predictions: pl.DataFrame, catalog: pl.DataFrame, batch_id: str, programme: str
) -> Suite:
    """The predictions suite on one batch's `instance_predictions`: schema, a status of ok or
    failed, a score in [0, 1] for each ok row and a reason for each failed one, input
    statistics in range, model provenance on every row; and, against the catalogue, a
    prediction or a failure row for every catalogued instance and none for any other."""
    _require_programme(programme)
    ok, failed = ("status", "==", "ok"), ("status", "==", "failed")
    expectations = [
        *_table_expectations(INSTANCE_PREDICTIONS, batch_id, programme),
        _x(
            "allowed values",
            "ExpectColumnValuesToBeInSet",
            column="status",
            value_set=list(PREDICTION_STATUSES),
        ),
        _between("score", 0.0, 1.0),
        _between("input_mean", 0.0, 1.0),
        _between("input_std", 0.0, 1.0),
        _x("completeness", "ExpectColumnValuesToNotBeNull", where=ok, column="score"),
        _x("completeness", "ExpectColumnValuesToBeNull", where=failed, column="score"),
        _x("completeness", "ExpectColumnValuesToNotBeNull", where=failed, column="failure_reason"),
        *_provenance(),
    ]
    # Completeness is a suite of its own on both tables' keys: a GX suite reads one frame.
    key = "sop_instance_uid"
    joined = (
        catalog.select(key)
        .with_columns(catalogued=pl.lit(True))
        .join(
            predictions.select(key).with_columns(predicted=pl.lit(True)),
            on=key,
            how="full",
            coalesce=True,
        )
        .with_columns(pl.col("catalogued", "predicted").fill_null(False))
    )
    completeness = (
        _x(
            "completeness",
            "ExpectColumnValuesToBeInSet",
            notes="every catalogued instance has a prediction or a failure row",
            column="predicted",
            value_set=[True],
        ),
        _x(
            "completeness",
            "ExpectColumnValuesToBeInSet",
            notes="no prediction for an instance the catalogue does not hold",
            column="catalogued",
            value_set=[True],
        ),
    )
    table = INSTANCE_PREDICTIONS
    return Suite(
        "predictions",
        (
            Validation(table.name, predictions, table.key, tuple(expectations)),
            Validation(f"{table.name}_completeness", joined, (key,), completeness),
        ),
    )


def positive_rate_bounds(
    studies: int, low: float, high: float, alpha: float = POSITIVE_RATE_ALPHA
) -> tuple[float, float]:
    """The positive rates `studies` scored studies may show when the true rate lies in the band
    [low, high]: flagging k studies is refused when P(X <= k | low) < alpha (too few) or
    P(X >= k | high) < alpha (too many), X binomial. Half a study of slack on each side keeps
    the rates of the accepted counts inside the bounds despite rounding."""
    from scipy.stats import binom

    if studies < 1:
        raise ValueError("a positive rate needs at least one scored study")
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"the band [{low}, {high}] is not inside [0, 1]")
    fewest = next(k for k in range(studies + 1) if binom.cdf(k, studies, low) >= alpha)
    most = next(k for k in range(studies, -1, -1) if binom.sf(k - 1, studies, high) >= alpha)
    return max(0.0, (fewest - 0.5) / studies), min(1.0, (most + 0.5) / studies)


def findings_suite(
    findings: pl.DataFrame,
    batch_id: str,
    programme: str,
    manifest: ModelManifest,
    table: TableSchema = STUDY_FINDINGS,
) -> Suite:
    """The findings suite on one batch's `study_findings` (or `validated_findings`): schema,
    study UIDs and priority ranks unique, a score in [0, 1] and a flag for each scored study and
    neither for an unscored one, one threshold, the provenance of `manifest`'s model, and a
    positive rate that the band in the manifest's `monitoring` can explain."""
    _require_programme(programme)
    if table not in (STUDY_FINDINGS, VALIDATED_FINDINGS):
        raise ValueError(f"the findings suite reads study or validated findings, not {table.name}")
    scored, unscored = ("score", "is not null", None), ("score", "is null", None)
    expectations = [
        *_table_expectations(table, batch_id, programme),
        _between("score", 0.0, 1.0),
        _between("threshold", 0.0, 1.0),
        _between("priority_rank", 1, max(findings.height, 1)),
        _between("instances_scored", 0, None),
        _between("instances_failed", 0, None),
        _x(
            "ranges",
            "ExpectColumnValuesToBeBetween",
            notes="a scored study had an image scored",
            where=scored,
            column="instances_scored",
            min_value=1,
        ),
        _x("uniqueness", "ExpectColumnValuesToBeUnique", column="priority_rank"),
        _x("completeness", "ExpectColumnValuesToNotBeNull", where=scored, column="flag"),
        _x("completeness", "ExpectColumnValuesToBeNull", where=unscored, column="flag"),
        _x(
            "provenance",
            "ExpectColumnUniqueValueCountToBeBetween",
            notes="one operating point a batch",
            column="threshold",
            min_value=0,
            max_value=1,
        ),
        *_provenance(),
        _x(
            "provenance",
            "ExpectColumnValuesToBeInSet",
            notes=f"made by {manifest.name} {manifest.version}, whose band the positive rate is held to",
            column="weights_sha256",
            value_set=[manifest.weights_sha256],
        ),
        *_positive_rate(findings, manifest),
    ]
    return Suite("findings", (Validation(table.name, findings, table.key, tuple(expectations)),))


def _positive_rate(findings: pl.DataFrame, manifest: ModelManifest) -> list[Expect]:
    """The positive-rate expectation, when the manifest declares a band and a study was scored:
    the mean of the flags of the scored studies (GX skips the unscored ones' nulls)."""
    limits = manifest.monitoring
    scored = findings["flag"].count() if "flag" in findings.columns else 0
    if limits is None or scored == 0:
        return []
    band = (limits.positive_rate_low, limits.positive_rate_high)
    low, high = positive_rate_bounds(scored, *band)
    notes = (
        f"{manifest.name}'s manifest declares a positive rate in [{band[0]}, {band[1]}]; with "
        f"{scored} scored studies, a binomial test (p < {POSITIVE_RATE_ALPHA}) accepts rates in "
        f"[{low:.3f}, {high:.3f}]"
    )
    return [
        _x(
            "positive rate",
            "ExpectColumnMeanToBeBetween",
            notes=notes,
            column="flag",
            min_value=round(low, 6),
            max_value=round(high, 6),
        )
    ]


# Running the suites (GX is imported here only)
