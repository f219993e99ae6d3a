"""De-identify: landed originals -> pseudonymised files in the research zone, and the vault."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import time

import dagster as dg
import polars as pl

from assets._shared import (
    StepChecks,
    check_result,
    landed_manifest,
    step_check,
    with_code_version,
    write_batch_table,
)
from assets.ingest import raw_instances
from orchestration.partitions import batch_of, screening_partitions
from resources.deidentification import DeidentificationSettings
from resources.lake import LakeDatabase
from resources.secrets import PseudonymKey, VaultKey
from resources.zones import ZoneStore
from screenlake import layout, quality
from screenlake.deid.batch import LandedFile, deidentify_batch
from screenlake.deid.profile import Profile
from screenlake.residual import scan_batch
from screenlake.tables import DEIDENTIFICATION_AUDIT
from screenlake.vault import vault_entries, write_vault

MAX_FINDINGS_SHOWN = 10


def deidentification_assets(settings: DeidentificationSettings) -> list[dg.AssetsDefinition]:
    """`deidentified_instances` and `pseudonym_vault` with the code version of the profile the
    deployment configures (`Profile.code_version`: name, version and content digest), so that a
    new or edited profile makes them, and everything downstream of them, stale.

    The profile is loaded, and so validated, when the code location loads: a broken profile
    stops the location loading instead of failing the night's first de-identification step.
    """
    return with_code_version(
        [deidentified_instances, pseudonym_vault], settings.profile().code_version
    )


# No code_version on the two assets here: it depends on the deployment's profile, so
# `deidentification_assets` sets it when the Definitions are built.
ACCOUNTED_FOR = "every_landed_file_accounted_for"
NO_IDENTIFIERS = "no_identifiers_in_research_zone"


@dg.asset(
    group_name="deidentify",
    partitions_def=screening_partitions,
    deps=[raw_instances],
    kinds={"dicom", "parquet"},
    check_specs=[
        step_check(
            "deidentified_instances",
            ACCOUNTED_FOR,
            "Landed = de-identified + quarantined: no input file is lost or counted twice.",
        ),
        step_check(
            "deidentified_instances",
            NO_IDENTIFIERS,
            "No original identifying value (names, IDs, BSN, birth date, address, accession,"
            " original UIDs) and no BSN, phone or postcode pattern in any research-zone file of"
            " the batch.",
        ),
    ],
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
    the rest quarantined in the PHI zone with a reason. Audit rows go to the lake.

    Its checks run in its step, on what it wrote: the audit read back from the lake reconciled
    with the landed manifest, and every written file scanned for the originals' identifiers.
    """
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
    checks = StepChecks()
    audit = checks.judge(research_zone, DEIDENTIFICATION_AUDIT, batch, key)
    checks.run(
        lambda: check_result(
            quality.every_landed_file_accounted_for(manifest.height, audit), ACCOUNTED_FOR
        )
    )
    checks.run(
        lambda: _residual_scan(phi_zone, research_zone, batch, key, profile, deidentification)
    )
    return checks.materialize_result(
        {
            "files_in": len(files),
            "files_deidentified": result.deidentified,
            "files_quarantined": result.quarantined,
            "kept_text_values_cleaned": int(result.audit["kept_text_cleaned"].sum()),
            "quarantine_reasons": dg.MetadataValue.json(result.quarantine_reasons),
            "files_per_second": round(len(files) / seconds, 1) if seconds > 0 else 0.0,
            "seconds_deidentifying": round(seconds, 3),
            "profile_version": profile.version,
        }
    )


def _residual_scan(
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    batch: layout.Batch,
    key: bytes,
    profile: Profile,
    deidentification: DeidentificationSettings,
) -> dg.AssetCheckResult:
    """The residual-PHI gate (`scan_batch`, as `screenlake verify` runs it) on what the step
    wrote, read back from the research zone."""
    scan = scan_batch(
        phi_zone, research_zone, batch, key, profile.options, deidentification.worker_count()
    )
    return dg.AssetCheckResult(
        check_name=NO_IDENTIFIERS,
        passed=scan.passed,
        description=f"{scan.files_scanned} files scanned, {len(scan.findings)} identifiers found",
        metadata={
            "files_scanned": scan.files_scanned,
            "findings": len(scan.findings),
            "first_findings": dg.MetadataValue.json(
                [f.__dict__ for f in scan.findings[:MAX_FINDINGS_SHOWN]]
            ),
        },
    )


@dg.asset(
    group_name="deidentify",
    partitions_def=screening_partitions,
    deps=[raw_instances],
    kinds={"parquet"},
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
