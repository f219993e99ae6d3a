"""What is held about patients being erased, found through the vaults."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
from cryptography.fernet import Fernet

from screenlake import layout
from screenlake.erasure.traces import batch_vaults, traces_of
from screenlake.objections import objection_token
from screenlake.tables import VAULT_ENTRIES, frame_of
from screenlake.vault import write_vault

KEY = b"erasure-test-key-0123456789abcdef0123456"
MONDAY = layout.Batch(date(2024, 3, 11), "cxr_tb")
TUESDAY = layout.Batch(date(2024, 3, 12), "lung_ldct")


def _vault(*studies: tuple[str, str | None, int]) -> pl.DataFrame:
    """Vault rows for (patient ID, issuer, study number)."""
    return frame_of(
        [
            {
                "patient_pseudonym": f"SL{patient}",
                "study_instance_uid": f"2.25.{n}",
                "accession_pseudonym": f"A{n}",
                "patient_id": patient,
                "issuer_of_patient_id": issuer,
                "accession_number": f"ACC{n}",
                "original_study_instance_uid": f"1.2.3.{n}",
                "original_study_date": date(2024, 3, 11),
                "date_shift_days": 10,
            }
            for patient, issuer, n in studies
        ],
        VAULT_ENTRIES,
    )


VAULTS = [
    (MONDAY, _vault(("7000001", "HOSP-A", 1), ("7000002", None, 2))),
    (TUESDAY, _vault(("7000001", "HOSP-A", 3), ("7000003", None, 4))),
]


def test_a_patient_is_found_in_every_batch_under_every_value() -> None:
    traces = traces_of([objection_token(KEY, None, "7000001")], VAULTS, KEY)
    assert traces.batches == {MONDAY, TUESDAY}
    assert traces.study_uids == {"2.25.1", "2.25.3"}
    assert traces.patient_pseudonyms == {"SL7000001"}
    assert traces.phi_values() == {"7000001", "ACC1", "ACC3", "1.2.3.1", "1.2.3.3"}
    assert traces.research_values() == {"SL7000001", "2.25.1", "2.25.3", "A1", "A3"}


def test_an_objection_under_another_issuer_finds_nobody() -> None:
    assert not traces_of([objection_token(KEY, "HOSP-B", "7000001")], VAULTS, KEY)
    assert traces_of([objection_token(KEY, "HOSP-A", "7000001")], VAULTS, KEY).study_uids == {
        "2.25.1",
        "2.25.3",
    }


def test_rows_are_found_by_study_patient_or_instance_and_the_catalogue_adds_instances() -> None:
    traces = traces_of([objection_token(KEY, None, "7000002")], VAULTS, KEY)
    catalogue = pl.DataFrame(
        {
            "study_instance_uid": ["2.25.2", "2.25.2", "2.25.4"],
            "series_instance_uid": ["2.25.20", "2.25.20", "2.25.40"],
            "sop_instance_uid": ["2.25.200", "2.25.201", "2.25.400"],
        }
    )
    traces = traces.with_catalogue(catalogue)
    assert traces.sop_uids == {"2.25.200", "2.25.201"} and traces.series_uids == {"2.25.20"}
    predictions = pl.DataFrame({"sop_instance_uid": ["2.25.201", "2.25.400", None]})
    assert traces.rows_of(predictions).to_list() == [True, False, False]
    findings = pl.DataFrame({"patient_pseudonym": ["SL7000002", "SL7000003"]})
    assert traces.rows_of(findings).to_list() == [True, False]


def test_vaults_are_read_from_the_phi_zone(tmp_path: Path) -> None:
    cipher = Fernet(Fernet.generate_key())
    for batch, vault in VAULTS:
        write_vault(vault, tmp_path / layout.vault_path(batch), cipher)
    read = list(batch_vaults(tmp_path, cipher))
    assert [b for b, _ in read] == [MONDAY, TUESDAY]
    assert read[1][1].equals(VAULTS[1][1])


def test_a_table_loses_the_patients_rows_and_keeps_every_other_as_it_was(tmp_path: Path) -> None:
    from screenlake.erasure.artefacts import erase_rows
    from screenlake.fsutil import sha256_of
    from screenlake.tables import read_parquet, write_parquet

    table = tmp_path / "vault.parquet"
    monday = VAULTS[0][1]
    write_parquet(monday, VAULT_ENTRIES, table)
    before = sha256_of(table)
    nobody = traces_of([objection_token(KEY, None, "7999999")], VAULTS, KEY)
    assert erase_rows(table, VAULT_ENTRIES, nobody) is None
    assert sha256_of(table) == before

    traces = traces_of([objection_token(KEY, None, "7000001")], VAULTS, KEY)
    change = erase_rows(table, VAULT_ENTRIES, traces)
    assert change is not None
    assert (change.rows_before, change.rows_after) == (2, 1)
    assert change.sha256_before == before and change.sha256_after == sha256_of(table)
    assert read_parquet(VAULT_ENTRIES, table).equals(
        monday.filter(pl.col("patient_id") != "7000001")
    )
