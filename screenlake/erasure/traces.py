"""What screenlake holds about the patients whose objection has scope `all`, found through the
re-identification vaults, so that every copy can be removed and a scan can prove none is left.

A vault row is one study: the patient's ID (and its issuer), accession number and original
study UID on the PHI side, and the patient pseudonym, pseudonymous study UID and accession
pseudonym the research zone knows them by. The series and instance UIDs of the research zone
are keyed remaps of originals no vault keeps; they are read from the instance catalogue rows of
the studies found here (`with_catalogue`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

import polars as pl
from cryptography.fernet import Fernet

from screenlake import layout
from screenlake.objections import patient_tokens
from screenlake.vault import read_vault

# Columns by which a table's row belongs to a patient, in order of preference.
PATIENT_COLUMNS = ("study_instance_uid", "patient_pseudonym", "sop_instance_uid")


@dataclass(frozen=True)
class PatientTraces:
    """Everything by which the zones may hold the patients being erased: in which batches, and
    under which values, PHI and pseudonymous."""

    batches: frozenset[layout.Batch] = frozenset()
    # PHI zone
    patient_ids: frozenset[str] = frozenset()
    accession_numbers: frozenset[str] = frozenset()
    original_study_uids: frozenset[str] = frozenset()
    # Research zone
    patient_pseudonyms: frozenset[str] = frozenset()
    study_uids: frozenset[str] = frozenset()
    accession_pseudonyms: frozenset[str] = frozenset()
    series_uids: frozenset[str] = frozenset()
    sop_uids: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.study_uids)

    def research_values(self) -> frozenset[str]:
        """Every pseudonymous value by which the research zone may name them."""
        return (
            self.patient_pseudonyms
            | self.study_uids
            | self.accession_pseudonyms
            | self.series_uids
            | self.sop_uids
        )

    def phi_values(self) -> frozenset[str]:
        """Every identifying value by which the PHI zone may name them."""
        return self.patient_ids | self.accession_numbers | self.original_study_uids

    def rows_of(self, frame: pl.DataFrame) -> pl.Series:
        """A mask of `frame`'s rows that belong to the patients: by study, patient pseudonym
        or instance, whichever of those columns the frame has."""
        values = {
            "study_instance_uid": self.study_uids,
            "patient_pseudonym": self.patient_pseudonyms,
            "sop_instance_uid": self.sop_uids,
        }
        mask = pl.repeat(False, frame.height, eager=True)
        for column in PATIENT_COLUMNS:
            if column in frame.columns:
                mask = mask | frame[column].is_in(list(values[column])).fill_null(False)
        return mask

    def with_catalogue(self, catalogue: pl.DataFrame) -> PatientTraces:
        """These traces with the series and instance UIDs of the patients' studies in an
        instance catalogue."""
        theirs = catalogue.filter(pl.col("study_instance_uid").is_in(list(self.study_uids)))
        return replace(
            self,
            series_uids=self.series_uids | frozenset(theirs["series_instance_uid"].drop_nulls()),
            sop_uids=self.sop_uids | frozenset(theirs["sop_instance_uid"].drop_nulls()),
        )


def batch_vaults(phi_root: Path, cipher: Fernet) -> Iterator[tuple[layout.Batch, pl.DataFrame]]:
    """Every batch's vault under the PHI zone's local folder `phi_root`, decrypted."""
    for batch in layout.batches_in(phi_root / layout.VAULT_DIR, layout.VAULT_FILE):
        yield batch, read_vault(phi_root / layout.vault_path(batch), cipher)


def traces_of(
    tokens: Collection[str],
    vaults: Iterable[tuple[layout.Batch, pl.DataFrame]],
    key: bytes,
) -> PatientTraces:
    """The traces of the patients held under `tokens` (objection tokens under the pseudonym
    `key`), from every batch's vault rows."""
    wanted = set(tokens)
    found: dict[str, set[object]] = {f.name: set() for f in fields(PatientTraces)}
    for batch, vault in vaults:
        issuers = (
            vault["issuer_of_patient_id"]
            if "issuer_of_patient_id" in vault.columns
            else pl.repeat(None, vault.height, dtype=pl.String, eager=True)
        )
        for row, issuer in zip(vault.iter_rows(named=True), issuers, strict=True):
            if not patient_tokens(key, issuer, row["patient_id"]) & wanted:
                continue
            found["batches"].add(batch)
            found["patient_ids"].add(row["patient_id"])
            found["original_study_uids"].add(row["original_study_instance_uid"])
            found["patient_pseudonyms"].add(row["patient_pseudonym"])
            found["study_uids"].add(row["study_instance_uid"])
            for column, name in (
                ("accession_number", "accession_numbers"),
                ("accession_pseudonym", "accession_pseudonyms"),
            ):
                if row[column]:
                    found[name].add(row[column])
    return PatientTraces(**{name: frozenset(values) for name, values in found.items()})  # type: ignore[arg-type]
