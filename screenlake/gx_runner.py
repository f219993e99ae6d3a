"""Running a `screenlake.quality_suites.Suite` with Great Expectations (imported here only: it
takes about 3 s): on a pandas copy of the frames, with the validation results and their Data
Docs kept in a folder when given one. Returns what each expectation found, counts and a few
failing rows named by their keys, with values that look like an identifier withheld from the
results and the Data Docs alike."""

from __future__ import annotations

import fcntl
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from screenlake.quality_suites import (
    DATA_DOCS_SITE,
    IDENTIFIER_PATTERNS,
    MAX_EXAMPLES,
    PSEUDONYMOUS,
    PSEUDONYMOUS_FORMATS,
    WITHHELD,
    Expect,
    ExpectationOutcome,
    Suite,
    SuiteResult,
    Validation,
)

WHOLE_FRAME = "whole dataframe"


def to_pandas(frame: pl.DataFrame) -> Any:
    """`frame` as GX reads it: nullable pandas types, so that an integer column with a gap stays
    an integer column; floats Arrow-backed, so that NaN (not a number, so no score) stays apart
    from a missing value; dates as datetime64."""
    import pandas as pd

    integers = {
        pa.int8(): pd.Int8Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
    }

    def dtype(kind: pa.DataType) -> Any:
        if (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind)
        ):
            return pd.StringDtype()
        if pa.types.is_floating(kind):
            return pd.ArrowDtype(kind)
        if pa.types.is_boolean(kind):
            return pd.BooleanDtype()
        return integers.get(kind)

    return frame.to_arrow().to_pandas(types_mapper=dtype, date_as_object=False)


def run_suite(
    suite: Suite, evidence: Path | None = None, run_name: str = "screenlake"
) -> SuiteResult:
    """Validate `suite` with GX and return every expectation's outcome.

    With `evidence`, a folder, GX keeps its project there (`gx/`: suites, validation results),
    each of the suite's validations replaces the previous result of the same name, and the Data
    Docs are rebuilt there: `evidence/index.html` lists every suite validated in that folder.
    `run_name` names the run in the Data Docs and the folder names of the evidence; in the
    research zone it is a keyed token of the orchestrator's run ID (`layout.research_run_id`),
    never the ID, which the orchestrator shows beside the partition's real date.
    """
    if evidence is None:
        return _run(suite, None, run_name)
    evidence.mkdir(parents=True, exist_ok=True)
    # The checks of one batch share the folder and may run at once: one writer at a time.
    with open(evidence / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _run(suite, evidence, run_name)


def _run(suite: Suite, evidence: Path | None, run_name: str) -> SuiteResult:
    context = _context(evidence)
    outcomes: list[ExpectationOutcome] = []
    for validation in suite.validations:
        batch_id, result = _validate(context, validation)
        _withhold(result, validation)
        if evidence is not None:
            _keep(context, evidence, validation.name, batch_id, result, run_name)
        outcomes += _outcomes(validation, result)
    if evidence is None:
        return SuiteResult(suite.name, tuple(outcomes))
    context.build_data_docs(site_names=[DATA_DOCS_SITE])
    return SuiteResult(suite.name, tuple(outcomes), evidence / "index.html")


def _context(evidence: Path | None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    quiet = ProgressBarsConfig(globally=False)
    if evidence is None:
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            progress_bars=quiet,
        )
        return gx.get_context(mode="ephemeral", project_config=config)
    context = gx.get_context(mode="file", project_root_dir=str(evidence))
    # The site's folder is set on every run: the working copy of a zone in object storage may
    # lie elsewhere on the next worker.
    site: Any = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(evidence),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    for name in list(context.list_data_docs_sites()):
        if name != DATA_DOCS_SITE:
            context.delete_data_docs_site(name)
    if DATA_DOCS_SITE in context.list_data_docs_sites():
        context.update_data_docs_site(DATA_DOCS_SITE, site)
    else:
        context.add_data_docs_site(DATA_DOCS_SITE, site)
    context.variables.progress_bars = quiet
    context.variables.save()
    return context


def _gx_expectation(expect: Expect) -> Any:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    extra: dict[str, Any] = {}
    if expect.where is not None:
        column, op, value = expect.where
        extra["row_condition"] = {
            "==": lambda: Column(column) == value,
            "is null": Column(column).is_null,
            "is not null": Column(column).is_not_null,
        }[op]()
    return getattr(gxe, expect.kind)(
        **expect.kwargs,
        **extra,
        notes=expect.notes or None,
        meta={"screenlake": {"label": expect.label, "group": expect.group}},
    )


def _validate(context: Any, validation: Validation) -> tuple[str, Any]:
    import great_expectations as gx

    sources = context.data_sources
    source = (
        sources.get("screenlake")
        if "screenlake" in sources.all()
        else sources.add_pandas("screenlake")
    )
    names = {asset.name for asset in source.assets}
    asset = (
        source.get_asset(validation.name)
        if validation.name in names
        else source.add_dataframe_asset(validation.name)
    )
    definitions = {d.name for d in asset.batch_definitions}
    definition = (
        asset.get_batch_definition(WHOLE_FRAME)
        if WHOLE_FRAME in definitions
        else asset.add_batch_definition_whole_dataframe(WHOLE_FRAME)
    )
    suite = context.suites.add_or_update(
        gx.ExpectationSuite(
            name=validation.name,
            expectations=[_gx_expectation(e) for e in validation.expectations],
        )
    )
    batch = definition.get_batch(batch_parameters={"dataframe": to_pandas(validation.frame)})
    # Examples name rows by their key; a key column the frame lacks fails the schema instead.
    keys = [k for k in validation.key if k in validation.frame.columns]
    result_format: dict[str, Any] = {
        "result_format": "SUMMARY",
        "partial_unexpected_count": MAX_EXAMPLES,
    }
    if keys:
        result_format["unexpected_index_column_names"] = keys
    return batch.id, batch.validate(suite, result_format=result_format)


def _shown(column: str | None, value: object) -> object:
    """`value` as evidence may show it: withheld when it looks like an identifier, or when it
    stands where a pseudonym belongs and is none (an original UID, say)."""
    if value is None or str(value) == "<NA>":
        return value
    text = str(value)
    pseudonym = PSEUDONYMOUS_FORMATS.get(column or "")
    if any(re.search(p, text) for p in IDENTIFIER_PATTERNS.values()) or (
        pseudonym is not None and not re.match(pseudonym, text)
    ):
        return WITHHELD
    return value


def _withhold(result: Any, validation: Validation) -> None:
    """Withhold, in `result` (which the Data Docs show too), every value of the identifier
    expectations' columns and any other value that `_shown` would not show; and name each
    failing row by its number in the table instead of its pseudonymous key, and show no
    pseudonymous value: check results stay in the orchestrator's event log and in the Data
    Docs, which an erasure of the patient does not reach."""
    expectations = {e.label: e for e in validation.expectations}
    rows_of = _rows_by_pseudonym(validation)
    for item in result.results:
        expect = expectations[item.expectation_config.meta["screenlake"]["label"]]
        found = item.result
        if not found:
            continue

        def shown(column: str | None, value: object, expect: Expect = expect) -> object:
            if expect.withhold_values and column == expect.column:
                return WITHHELD
            kept = _shown(column, value)
            if column in PSEUDONYMOUS_FORMATS and kept is not None and kept != WITHHELD:
                return PSEUDONYMOUS
            return kept

        column = expect.column
        found["partial_unexpected_list"] = [
            shown(column, v) for v in found.get("partial_unexpected_list") or []
        ]
        found["partial_unexpected_counts"] = [
            {**c, "value": shown(column, c.get("value"))}
            for c in found.get("partial_unexpected_counts") or []
        ]
        found["partial_unexpected_index_list"] = [
            _numbered(row, rows_of, shown)
            for row in found.get("partial_unexpected_index_list") or []
        ]
        found.pop("unexpected_list", None)
        found.pop("unexpected_index_list", None)


def _rows_by_pseudonym(validation: Validation) -> dict[str, dict[object, int]]:
    """For each pseudonymous key column of the validated frame, the number (from 1) of the
    first row holding each value."""
    rows: dict[str, dict[object, int]] = {}
    for key in validation.key:
        if key in PSEUDONYMOUS_FORMATS and key in validation.frame.columns:
            first: dict[object, int] = {}
            for number, value in enumerate(validation.frame[key], start=1):
                first.setdefault(value, number)
            rows[key] = first
    return rows


def _numbered(
    row: Mapping[str, Any],
    rows_of: Mapping[str, Mapping[object, int]],
    shown: Any,
) -> dict[str, object]:
    """A failing row of GX's result with its pseudonymous keys replaced by its row number."""
    numbered: dict[str, object] = {}
    for name, value in row.items():
        if name in rows_of:
            number = rows_of[name].get(value)
            numbered.setdefault("row", number if number is not None else PSEUDONYMOUS)
        else:
            numbered[name] = shown(name, value)
    return numbered


def _keep(
    context: Any, evidence: Path, name: str, batch_id: str, result: Any, run_name: str
) -> None:
    """Store `result` as the only result of suite `name` in the project at `evidence`."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    store = context.validation_results_store
    for key in store.list_keys():
        if key.expectation_suite_identifier.name == name:
            store.remove_key(key)
    pages = evidence / "validations" / name
    if pages.exists():
        shutil.rmtree(pages)
    run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))
    result.meta["run_id"] = run_id
    result.meta["validation_time"] = run_id.run_time
    # GX names no data asset for a dataframe batch; the Data Docs then say "Data asset: None".
    result.meta.setdefault("batch_spec", {})["data_asset_name"] = name
    suite_id = ExpectationSuiteIdentifier(name=name)
    store.store_validation_results(
        result,
        ValidationResultIdentifier(
            expectation_suite_identifier=suite_id, run_id=run_id, batch_identifier=batch_id
        ),
        suite_id,
    )


def _text(value: object) -> str:
    if value is None or str(value) == "<NA>":  # None, or pandas' NA
        return "null"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _error(info: Mapping[str, Any] | None) -> str | None:
    """GX's error message(s) for an expectation it could not evaluate (e.g. a missing column)."""
    if not info:
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    messages = {
        str(e.get("exception_message"))
        for e in entries
        if isinstance(e, Mapping) and e.get("raised_exception")
    }
    return "; ".join(sorted(messages)) or None


def _outcomes(validation: Validation, result: Any) -> list[ExpectationOutcome]:
    order = {e.label: i for i, e in enumerate(validation.expectations)}
    outcomes = []
    for item in result.results:
        meta = item.expectation_config.meta["screenlake"]
        found: Mapping[str, Any] = item.result or {}
        observed = found.get("observed_value")
        rows: Sequence[Mapping[str, Any]] = found.get("partial_unexpected_index_list") or []
        outcomes.append(
            ExpectationOutcome(
                validation=validation.name,
                group=meta["group"],
                expectation=meta["label"],
                success=bool(item.success),
                unexpected=found.get("unexpected_count"),
                observed=None if observed is None else _text(observed),
                examples=tuple(
                    {k: _text(v) for k, v in row.items()} for row in rows[:MAX_EXAMPLES]
                ),
                error=_error(item.exception_info),
            )
        )
    return sorted(outcomes, key=lambda o: order.get(o.expectation, len(order)))
