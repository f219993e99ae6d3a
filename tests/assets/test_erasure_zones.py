"""Erasing a patient from a published partition: in the research zone their de-identified files
and their rows of every lake table go; in the PHI zone their landed originals, quarantined
files, manifest, study index and file list rows and vault entries. Every other row stays as it
was."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from cryptography.fernet import Fernet

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from screenlake import layout
from screenlake.erasure.artefacts import erase_from_phi_zone, erase_from_research_zone
from screenlake.erasure.traces import PatientTraces, batch_vaults, traces_of
from screenlake.lake import PARTITION_TABLES
from screenlake.objections import objection_token
from screenlake.tables import INSTANCE_CATALOG, read_parquet
from screenlake.vault import read_vault
from tests.assets.zones import local_resources
from tests.conftest import Export

pytestmark = pytest.mark.slow
PROGRAMME = "cxr_tb"


def test_a_patient_leaves_the_research_zone_and_nobody_else_does(
    synthetic_export: Export, session_keys: dict[str, str], tmp_path: Path
) -> None:
    resources = local_resources(synthetic_export.drop, tmp_path)
    batch = layout.Batch(synthetic_export.days[0], PROGRAMME)
    assert dg.materialize(
        [*defs.assets, *defs.asset_checks],  # type: ignore[list-item]
        resources=resources,
        partition_key=partition_key(batch.day, PROGRAMME),
    ).success
    key = resources["pseudonym_key"].key()
    research = tmp_path / "research"
    vaults = list(batch_vaults(tmp_path / "phi", resources["vault_key"].cipher()))
    patients = sorted({p for _, vault in vaults for p in vault["patient_id"]})
    assert len(patients) >= 2  # one to erase, one to keep
    erased = patients[0]
    traces = traces_of([objection_token(key, None, erased)], vaults, key)
    before = {
        t.name: read_parquet(t, path)
        for t in PARTITION_TABLES
        if (path := research / layout.lake_table_path(t, batch, key)).exists()
    }
    full = traces.with_catalogue(before[INSTANCE_CATALOG.name])
    files_before = {p for p in (research / "dicom").rglob("*.dcm")}

    phi = erase_from_phi_zone(tmp_path / "phi", batch, traces, resources["vault_key"].cipher())
    changes = erase_from_research_zone(research, batch, key, traces, phi.ordinals)

    kinds = {c.kind for c in changes}
    assert {"research dicom", "table instance_catalog", "table study_findings"} <= kinds
    assert {"raw files", "table raw_instances", "table pacs_studies", "vault"} <= {
        c.kind for c in phi.changes
    }
    for change in [*changes, *phi.changes]:
        assert change.rows_after < change.rows_before, change
        assert change.sha256_after != change.sha256_before, change
    for table in PARTITION_TABLES:
        if table.name not in before:
            continue
        after = read_parquet(table, research / layout.lake_table_path(table, batch, key))
        frame = before[table.name]
        theirs = full.rows_of(frame)
        if "ordinal" in frame.columns:
            theirs = theirs | frame["ordinal"].is_in(list(phi.ordinals))
        assert after.equals(frame.filter(~theirs)), table
    files_after = {p for p in (research / "dicom").rglob("*.dcm")}
    assert files_after < files_before
    assert all(p.parent.parent.name not in traces.study_uids for p in files_after)
    values = [v.encode() for v in full.research_values()]
    for path in files_after:
        data = path.read_bytes()
        assert not [v for v in values if v in data], path.relative_to(research)
    # Parquet pages are compressed: its values are compared decoded, not as bytes.
    for path in (research / "lake").rglob("*.parquet"):
        cells = {str(v) for column in pl.read_parquet(path).iter_columns() for v in column}
        assert not cells & full.research_values(), path.relative_to(research)
    _assert_gone_from_the_phi_zone(tmp_path / "phi", batch, full, resources["vault_key"].cipher())
    # Every other patient's catalogued study is still there.
    others = set(
        pl.concat([v for _, v in vaults]).filter(pl.col("patient_id") != erased)[
            "study_instance_uid"
        ]
    )
    catalogued = set(before[INSTANCE_CATALOG.name]["study_instance_uid"])
    kept = read_parquet(
        INSTANCE_CATALOG, research / layout.lake_table_path(INSTANCE_CATALOG, batch, key)
    )
    assert set(kept["study_instance_uid"]) == catalogued & others != set()


def _assert_gone_from_the_phi_zone(
    phi: Path, batch: layout.Batch, traces: PatientTraces, cipher: Fernet
) -> None:
    """No identifying value of the patients in the batch's landed and quarantined files, in
    its manifest, study index and file list (decoded), nor in its vault (decrypted)."""
    values = traces.phi_values()
    encoded = [v.encode() for v in values]
    for folder in (layout.raw_dir(batch), layout.quarantine_dir(batch)):
        for path in (phi / folder).glob("*"):
            if path.suffix != ".parquet":
                assert not [v for v in encoded if v in path.read_bytes()], path.name
    for path in (
        layout.raw_manifest_path(batch),
        layout.study_index_path(batch),
        layout.source_files_path(batch),
    ):
        cells = {str(v) for column in pl.read_parquet(phi / path).iter_columns() for v in column}
        assert not cells & values, path
    vault = read_vault(phi / layout.vault_path(batch), cipher)
    assert vault.height > 0
    assert not {str(v) for column in vault.iter_columns() for v in column} & values
