"""De-identify: landed originals -> pseudonymised files in the research zone, and the vault."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import json
import time

import dagster as dg
import polars as pl

from assets._shared import check_result, landed_manifest, read_batch_table, write_batch_table
from assets.ingest import raw_instances
from orchestration.partitions import batch_of, screening_partitions
from resources.deidentification import DeidentificationSettings
from resources.lake import LakeDatabase
from resources.secrets import PseudonymKey, VaultKey
from resources.zones import ZoneStore
from screenlake import layout, quality
from screenlake.deid.batch import LandedFile, deidentify_batch
from screenlake.deid.profile import DEFAULT_PROFILE_PATH
from screenlake.tables import DEIDENTIFICATION_AUDIT
from screenlake.vault import vault_entries, write_vault
from screenlake.verify import index_originals, scan_files

PROFILE_VERSION = json.loads(DEFAULT_PROFILE_PATH.read_text(encoding="utf-8"))["version"]
MAX_FINDINGS_SHOWN = 10


@dg.asset(
    group_name="deidentify",
    partitions_def=screening_partitions,
    deps=[raw_instances],
    kinds={"dicom", "parquet"},
    code_version=PROFILE_VERSION,
)
def deidentified_instances(
    context: dg.AssetExecutionContext,
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    deidentification: DeidentificationSettings,
    lake: LakeDatabase,
) -> dg.MaterializeResult:
    """De-identified copies of the landed files (PS3.15 profile, keyed pseudonyms and UIDs);
    the rest quarantined in the PHI zone with a reason. Audit rows go to the lake."""
    batch = batch_of(context)
    key = pseudonym_key.key()
    profile = deidentification.profile()
    manifest, raw_dir = landed_manifest(phi_zone, batch)
    files = [
        LandedFile(row["ordinal"], raw_dir / row["landed_path"], row["problem"])
        for row in manifest.iter_rows(named=True)
    ]
    output_prefix = layout.research_dicom_dir(batch, key)
    started = time.perf_counter()
    result = deidentify_batch(
        files,
        key=key,
        profile=profile,
        batch_id=batch.research_id(key),
        programme=batch.programme,
        output_dir=research_zone.path(output_prefix),
        output_prefix=output_prefix,
        quarantine_dir=phi_zone.path(layout.quarantine_dir(batch)),
        workers=deidentification.worker_count(),
    )
    seconds = time.perf_counter() - started
    research_zone.push(output_prefix)
    phi_zone.push(layout.quarantine_dir(batch))
    write_batch_table(research_zone, lake, result.audit, DEIDENTIFICATION_AUDIT, batch, key)
    return dg.MaterializeResult(
        metadata={
            "files_in": len(files),
            "files_deidentified": result.deidentified,
            "files_quarantined": result.quarantined,
            "quarantine_reasons": dg.MetadataValue.json(result.quarantine_reasons),
            "files_per_second": round(len(files) / seconds, 1) if seconds > 0 else 0.0,
            "profile_version": profile.version,
        }
    )


@dg.asset(
    group_name="deidentify",
    partitions_def=screening_partitions,
    deps=[raw_instances],
    kinds={"parquet"},
    code_version=PROFILE_VERSION,
)
def pseudonym_vault(
    context: dg.AssetExecutionContext,
    phi_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    vault_key: VaultKey,
) -> dg.MaterializeResult:
    """Encrypted map from pseudonyms back to patient ID, accession number and study (PHI)."""
    batch = batch_of(context)
    manifest, raw_dir = landed_manifest(phi_zone, batch)
    readable = manifest.filter(pl.col("problem").is_null())
    entries = vault_entries((raw_dir / p for p in readable["landed_path"]), pseudonym_key.key())
    write_vault(entries, phi_zone.path(layout.vault_path(batch)), vault_key.cipher())
    phi_zone.push(layout.vault_path(batch))
    return dg.MaterializeResult(
        metadata={"studies": entries.height, "patients": entries["patient_id"].n_unique()}
    )


@dg.asset_check(
    asset=deidentified_instances,
    blocking=True,
    partitions_def=screening_partitions,
    description="Landed = de-identified + quarantined: no input file is lost or counted twice.",
)
def every_landed_file_accounted_for(
    context: dg.AssetCheckExecutionContext,
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
) -> dg.AssetCheckResult:
    """Reconcile the landed manifest with the de-identification audit."""
    batch = batch_of(context)
    manifest, _ = landed_manifest(phi_zone, batch, with_files=False)
    audit = read_batch_table(research_zone, DEIDENTIFICATION_AUDIT, batch, pseudonym_key.key())
    outcome = quality.every_landed_file_accounted_for(manifest.height, audit)
    return check_result(outcome)


@dg.asset_check(
    asset=deidentified_instances,
    blocking=True,
    partitions_def=screening_partitions,
    description="No original identifying value (names, IDs, BSN, birth date, address, accession,"
    " original UIDs) and no BSN, phone or postcode pattern in any research-zone file of the batch.",
)
def no_identifiers_in_research_zone(
    context: dg.AssetCheckExecutionContext,
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    deidentification: DeidentificationSettings,
) -> dg.AssetCheckResult:
    """Scan every de-identified file of the batch for the originals' identifiers."""
    batch = batch_of(context)
    manifest, raw_dir = landed_manifest(phi_zone, batch)
    workers = deidentification.worker_count()
    index = index_originals(
        (raw_dir / p for p in manifest["landed_path"]),
        deidentification.profile().options,
        workers=workers,
    )
    batch_dir = research_zone.pull(layout.research_dicom_dir(batch, pseudonym_key.key()))
    files = sorted(batch_dir.rglob("*.dcm")) if batch_dir.exists() else []
    # Files are named inside the batch's folder: its token must not sit beside the real date.
    findings = scan_files(
        ((f, f.relative_to(batch_dir).as_posix()) for f in files), index, workers=workers
    )
    return dg.AssetCheckResult(
        passed=not findings,
        description=f"{len(files)} files scanned, {len(findings)} identifiers found",
        metadata={
            "files_scanned": len(files),
            "findings": len(findings),
            "first_findings": dg.MetadataValue.json(
                [f.__dict__ for f in findings[:MAX_FINDINGS_SHOWN]]
            ),
        },
    )
