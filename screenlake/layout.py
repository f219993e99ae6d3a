"""Where each thing lives inside the two zones, as paths relative to the zone's root.

PHI-zone paths may name the real study date: that zone is restricted. Research-zone paths name
a batch by a keyed token instead, because a real study date beside a shifted one would reveal
the patient's date shift. For the same reason the research zone names an orchestrator run by a
keyed token, never by its run ID: the orchestrator shows the run ID beside the partition's date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath

from screenlake.keys import keyed_token
from screenlake.tables import TableSchema


@dataclass(frozen=True)
class Batch:
    """One partition's work: the day's studies of one programme."""

    day: date
    programme: str

    @property
    def phi_prefix(self) -> PurePosixPath:
        """Folder of this batch under a PHI-zone area."""
        return PurePosixPath(f"date={self.day.isoformat()}", f"programme={self.programme}")

    def research_id(self, key: bytes) -> str:
        """The batch's name in the research zone: a keyed token, not the date."""
        return "B" + keyed_token(key, "batch", f"{self.day.isoformat()}|{self.programme}", 15)

    def research_prefix(self, key: bytes) -> PurePosixPath:
        """Folder of this batch under a research-zone area."""
        return PurePosixPath(f"programme={self.programme}", f"batch={self.research_id(key)}")


_PHI_PREFIX = re.compile(r"date=(\d{4}-\d{2}-\d{2})/programme=([a-z0-9_]+)")


def batches_in(folder: Path, filename: str) -> list[Batch]:
    """The batches that have `filename` under a PHI-zone area's local `folder` (e.g. the raw
    area and `manifest.parquet`), in date and programme order."""
    found = []
    for path in folder.glob(f"date=*/programme=*/{filename}"):
        match = _PHI_PREFIX.fullmatch(path.parent.relative_to(folder).as_posix())
        if match:
            found.append(Batch(date.fromisoformat(match[1]), match[2]))
    return sorted(found, key=lambda b: (b.day, b.programme))


def research_run_id(key: bytes, run_id: str) -> str:
    """An orchestrator run's name in the research zone: a keyed token of its run ID, which
    whoever holds the key can match to the run, and nobody else can."""
    return "R" + keyed_token(key, "run", run_id, 15)


# PHI zone
def study_index_path(batch: Batch) -> PurePosixPath:
    """The studies found for the batch, with their identifying header values."""
    return PurePosixPath("ingest") / batch.phi_prefix / "studies.parquet"


def source_files_path(batch: Batch) -> PurePosixPath:
    """Every file the batch must land, with where the source holds it."""
    return PurePosixPath("ingest") / batch.phi_prefix / "files.parquet"


RAW_DIR = PurePosixPath("raw")


def raw_dir(batch: Batch) -> PurePosixPath:
    """Landed files of the batch, named by ordinal."""
    return RAW_DIR / batch.phi_prefix


RAW_MANIFEST = "manifest.parquet"


def raw_manifest_path(batch: Batch) -> PurePosixPath:
    """Manifest of the landed files: source, checksum, size, UIDs."""
    return raw_dir(batch) / RAW_MANIFEST


def quarantine_dir(batch: Batch) -> PurePosixPath:
    """Quarantined originals of the batch, each with a reason file beside it."""
    return PurePosixPath("quarantine") / batch.phi_prefix


VAULT_DIR = PurePosixPath("vault")
VAULT_FILE = "vault.parquet.enc"


def vault_path(batch: Batch) -> PurePosixPath:
    """The batch's encrypted re-identification map."""
    return VAULT_DIR / batch.phi_prefix / VAULT_FILE


def worklist_path(batch: Batch, suffix: str = "csv") -> PurePosixPath:
    """The coordinators' worklist for one programme and day."""
    return PurePosixPath("worklists") / batch.programme / f"{batch.day.isoformat()}.{suffix}"


def reports_sent_path(batch: Batch) -> PurePosixPath:
    """Which findings reports the PACS accepted for the batch (SR UIDs, original study UIDs)."""
    return PurePosixPath("reports") / batch.phi_prefix / "sent.csv"


def outbox_dir(batch: Batch) -> PurePosixPath:
    """Findings reports of the batch kept for import when the source cannot store them."""
    return PurePosixPath("outbox") / batch.phi_prefix


def review_decisions_dir(programme: str) -> PurePosixPath:
    """Clinicians' review decisions imported from filled-in worklists (PHI zone)."""
    return PurePosixPath("reviews") / f"programme={programme}"


def review_decisions_path(programme: str, day: date) -> PurePosixPath:
    """The decisions imported from one programme's worklist of `day` (PHI zone)."""
    return review_decisions_dir(programme) / f"{day.isoformat()}.parquet"


# The objection register (screenlake.objections): one record a change, written once.
OBJECTION_RECORDS = PurePosixPath("objections") / "records"
# Erasure requests carried out (screenlake.erasure): whom each concerned and every value by
# which they were held, encrypted under the vault key, for `screenlake verify --erasures`.
ERASURE_REQUESTS = PurePosixPath("erasures")


def erasure_request_path(erasure_id: str) -> PurePosixPath:
    """One erasure's request record in the PHI zone."""
    return ERASURE_REQUESTS / f"{erasure_id}.json.enc"


REIDENTIFICATION_LOG = PurePosixPath("audit") / "reidentifications.csv"
# On object storage, where no append is atomic, each re-identification is one object here.
REIDENTIFICATION_RECORDS = PurePosixPath("audit") / "reidentifications"


def reidentification_record_path(at: str, writer: str) -> PurePosixPath:
    """One audit record's object on a zone in object storage: its time, then who wrote it."""
    stamp = at.replace(":", "").replace("+", "Z")
    return REIDENTIFICATION_RECORDS / f"{stamp}-{writer}.csv"


# Which vault key the PHI zone's vaults are encrypted with (a fingerprint, never the key), and
# the audit log of deliberate key rotations; see screenlake.keybinding.
VAULT_KEY_BINDING = PurePosixPath("bindings") / "vault_key.json"
KEY_ROTATION_LOG = PurePosixPath("audit") / "key_rotations.csv"
# On object storage, where no append is atomic, each rotation is one object here.
KEY_ROTATION_RECORDS = PurePosixPath("audit") / "key_rotations"

DEMO_PSEUDONYM_KEY = PurePosixPath("keys") / "pseudonym.key"
DEMO_VAULT_KEY = PurePosixPath("keys") / "vault.key"
DEMO_LABELS = PurePosixPath("labels") / "ground_truth.csv"


# Research zone
# Which pseudonym key the research zone's pseudonyms are made with (a fingerprint, never the key).
PSEUDONYM_KEY_BINDING = PurePosixPath("bindings") / "pseudonym_key.json"
LAKE_DIR = PurePosixPath("lake")
LAKE_DATABASE = PurePosixPath("lake.duckdb")


def research_dicom_dir(batch: Batch, key: bytes) -> PurePosixPath:
    """De-identified files of the batch: <study>/<series>/<instance>.dcm by pseudonymous UIDs."""
    return PurePosixPath("dicom") / batch.research_prefix(key)


INFERENCE_DIR = PurePosixPath("inference")


def inference_shards_dir(batch: Batch, key: bytes, model_name: str) -> PurePosixPath:
    """Finished inference shards of a batch, kept until its predictions table is written."""
    return INFERENCE_DIR / model_name / batch.research_prefix(key)


# The kind of evidence the data-quality suites keep: their Great Expectations Data Docs.
DATA_DOCS = "data_docs"


def evidence_dir(batch: Batch, key: bytes, kind: str) -> PurePosixPath:
    """Evidence of a batch's validation (e.g. kind "data_docs"), for governance."""
    return PurePosixPath("evidence") / kind / batch.research_prefix(key)


def programme_report_path(programme: str) -> PurePosixPath:
    """The programme's self-contained HTML report (research zone), replaced every night."""
    return PurePosixPath("reports") / f"programme={programme}" / "report.html"


def audit_trail_path(batch: Batch, key: bytes, run_id: str) -> PurePosixPath:
    """One run's audit-trail rows for a batch: a file per run, never rewritten, named by the
    batch's and the run's keyed tokens (`research_run_id`), never by the run ID."""
    return (
        LAKE_DIR
        / "audit_trail"
        / f"programme={batch.programme}"
        / f"{batch.research_id(key)}-{research_run_id(key, run_id)}.parquet"
    )


# The erasure ledger's files in the lake, a file per erasure (read by the `erasure_ledger` view).
ERASURE_LEDGER_DIR = LAKE_DIR / "erasure_ledger" / "erasures"


def erasure_ledger_path(erasure_id: str) -> PurePosixPath:
    """One erasure's rows of the ledger."""
    return ERASURE_LEDGER_DIR / f"{erasure_id}.parquet"


def lake_table_path(table: TableSchema, batch: Batch, key: bytes) -> PurePosixPath:
    """One batch's Parquet file of a lake table."""
    if table.zone != "research":
        raise ValueError(f"{table.name} belongs to the {table.zone} zone, not the lake")
    return (
        LAKE_DIR / table.name / f"programme={batch.programme}" / f"{batch.research_id(key)}.parquet"
    )
