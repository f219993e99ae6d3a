"""Erasure with both zones in versioned buckets (moto on loopback): once the patient is erased,
no version of any object in either bucket, current or earlier, holds a value of theirs, and the
ledger counts the earlier versions it deleted."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from orchestration.partitions import partition_key
from orchestration.resources import resources_for
from screenlake.erasure.scan import erased_values, scan_zone
from screenlake.erasure.traces import batch_vaults
from screenlake.objections import SCOPE_ALL
from screenlake.objectstore.access import S3Access
from tests.conftest import Export
from tests.objections import carry_out_erasures, record_objection
from tests.s3.test_zones_on_s3 import _graph, _settings

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def _every_version(client: Any, bucket: str, into: Path) -> int:
    """Every version of every object in `bucket`, written under `into` (one folder a version);
    how many."""
    count = 0
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        for version in page.get("Versions", []):
            count += 1
            body = client.get_object(
                Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"]
            )["Body"].read()
            target = into / f"v{count}" / version["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
    return count


def test_no_version_in_either_bucket_keeps_the_erased_patient(
    synthetic_export: Export,
    session_keys: dict[str, str],
    new_bucket: Callable[[], str],
    s3_access: Callable[[str], S3Access],
    tmp_path: Path,
) -> None:
    drop, phi, research = new_bucket(), new_bucket(), new_bucket()
    uploader = s3_access("SCREENLAKE_DROP_S3").client()
    for path in sorted(p for p in synthetic_export.drop.rglob("*") if p.is_file()):
        uploader.upload_file(
            str(path), drop, f"exports/{path.relative_to(synthetic_export.drop).as_posix()}"
        )
    clients = {
        phi: s3_access("SCREENLAKE_PHI_ZONE_S3").client(),
        research: s3_access("SCREENLAKE_RESEARCH_ZONE_S3").client(),
    }
    for bucket, client in clients.items():
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    resources = resources_for("local", _settings(drop, phi, research, tmp_path / "work"))
    key = partition_key(synthetic_export.days[0], "cxr_tb")
    assert dg.materialize(_graph(), resources=resources, partition_key=key).success
    # Run the night again: every rewritten object now has an earlier version too.
    assert dg.materialize(_graph(), resources=resources, partition_key=key).success
    vaults = list(batch_vaults(tmp_path / "work" / "phi", resources["vault_key"].cipher()))
    patient = min(p for _, v in vaults for p in v["patient_id"])
    record_objection(resources, patient, SCOPE_ALL, date(2024, 5, 2))

    [request] = carry_out_erasures(resources)

    wanted = erased_values([request])
    assert patient in wanted
    cipher = resources["vault_key"].cipher()
    for bucket, client in clients.items():
        versions = tmp_path / "versions" / bucket
        assert _every_version(client, bucket, versions) > 0
        # The request record is the one place that keeps the values, by design.
        excluded = [p.relative_to(versions) for p in versions.rglob("erasures") if p.is_dir()]
        scan = scan_zone(versions, bucket, wanted, cipher, excluded)
        assert scan.files > 0 and not scan.findings, scan.findings
        assert not scan.undecoded
    ledger = pl.concat(
        pl.read_parquet(p)
        for p in (tmp_path / "work" / "research").rglob("erasure_ledger/**/*.parquet")
    )
    versions_deleted = ledger.filter(pl.col("artefact") == "bucket versions")
    assert set(versions_deleted["zone"]) == {"phi", "research"}
    assert (versions_deleted["rows_before"] > 0).all()
