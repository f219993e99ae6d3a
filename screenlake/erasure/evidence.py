"""The data-quality evidence of a batch built again after an erasure: the catalogue,
predictions and findings suites run on the batch's tables as the erasure left them, so that
the Data Docs count what is there now. The orchestrator's check evaluations stay as they were:
they judged the night as it was, and the ledger says what the erasure removed since."""

from __future__ import annotations

from pathlib import Path

from screenlake import layout
from screenlake.erasure.artefacts import ArtefactErasure, listing_digest
from screenlake.inference.manifest import ModelManifest
from screenlake.tables import (
    INSTANCE_CATALOG,
    INSTANCE_PREDICTIONS,
    STUDY_FINDINGS,
    read_parquet,
)


def rebuild_data_docs(
    research_root: Path,
    batch: layout.Batch,
    key: bytes,
    manifest: ModelManifest,
    run_token: str,
) -> ArtefactErasure | None:
    """Run the batch's three suites again on its tables under the research zone's local
    folder, replacing their results and Data Docs in its evidence folder (each result named by
    `run_token`, the erasure run's research-zone name). None when the batch has no evidence."""
    # Great Expectations takes seconds to import: only an erasure that rebuilds pays for it.
    from screenlake.gx_runner import run_suite
    from screenlake.quality_suites import catalogue_suite, findings_suite, predictions_suite

    evidence = research_root / layout.evidence_dir(batch, key, layout.DATA_DOCS)
    if not evidence.is_dir():
        return None

    catalog = read_parquet(
        INSTANCE_CATALOG, research_root / layout.lake_table_path(INSTANCE_CATALOG, batch, key)
    )
    predictions = read_parquet(
        INSTANCE_PREDICTIONS,
        research_root / layout.lake_table_path(INSTANCE_PREDICTIONS, batch, key),
    )
    findings = read_parquet(
        STUDY_FINDINGS, research_root / layout.lake_table_path(STUDY_FINDINGS, batch, key)
    )
    batch_id = batch.research_id(key)
    files_before = sum(1 for p in evidence.rglob("*") if p.is_file())
    before = listing_digest(evidence)
    for suite in (
        catalogue_suite(catalog, batch_id, batch.programme),
        predictions_suite(predictions, catalog, batch_id, batch.programme),
        findings_suite(findings, batch_id, batch.programme, manifest),
    ):
        run_suite(suite, evidence, run_name=run_token)
    files_after = sum(1 for p in evidence.rglob("*") if p.is_file())
    return ArtefactErasure("data docs", files_before, files_after, before, listing_digest(evidence))
