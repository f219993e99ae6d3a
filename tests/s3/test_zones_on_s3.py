"""The whole graph with the export drop and both zones in object storage, in separate buckets
with separate credentials, against a real S3-compatible server (moto on loopback) and real
DuckDB httpfs."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from orchestration.definitions import defs
from orchestration.partitions import partition_key
from orchestration.resources import resources_for
from resources.s3drop import S3DropSource
from resources.zones import ZoneStore
from screenlake.devservers.s3 import S3Server
from screenlake.errors import ConfigurationError, ObjectStoreError
from screenlake.objectstore.access import S3Access
from tests.conftest import Export

pytestmark = [pytest.mark.s3, pytest.mark.slow]
PHI_ONLY_AREAS = ("ingest/", "raw/", "quarantine/", "vault/", "worklists/", "audit/", "outbox/")


def _graph() -> list[Any]:
    return [*defs.assets, *defs.asset_checks]  # type: ignore[list-item]


def _keys(access: S3Access, bucket: str) -> list[str]:
    paginator = access.client().get_paginator("list_objects_v2")
    return [
        o["Key"] for page in paginator.paginate(Bucket=bucket) for o in page.get("Contents", [])
    ]


@dataclass(frozen=True)
class S3Run:
    phi_bucket: str
    research_bucket: str
    work: Path
    resources: dict[str, Any]
    result: dg.ExecuteInProcessResult
    partition: dg.MultiPartitionKey
    instance: dg.DagsterInstance


def _settings(drop: str, phi: str, research: str, work: Path) -> dict[str, str]:
    import os

    return {
        "SCREENLAKE_DROP": f"s3://{drop}/exports",
        "SCREENLAKE_PHI_ZONE": f"s3://{phi}/hospital/phi",
        "SCREENLAKE_RESEARCH_ZONE": f"s3://{research}/lake",
        "SCREENLAKE_PHI_ZONE_WORKING_COPY": str(work / "phi"),
        "SCREENLAKE_RESEARCH_ZONE_WORKING_COPY": str(work / "research"),
        "SCREENLAKE_S3_ENDPOINT": os.environ["SCREENLAKE_S3_ENDPOINT"],
        "SCREENLAKE_DEID_WORKERS": "1",
    }


@pytest.fixture
def s3_run(
    synthetic_export: Export,
    session_keys: dict[str, str],
    new_bucket: Callable[[], str],
    s3_access: Callable[[str], S3Access],
    tmp_path: Path,
) -> S3Run:
    drop, phi, research = new_bucket(), new_bucket(), new_bucket()
    uploader = s3_access("SCREENLAKE_DROP_S3").client()
    for path in sorted(p for p in synthetic_export.drop.rglob("*") if p.is_file()):
        key = f"exports/{path.relative_to(synthetic_export.drop).as_posix()}"
        uploader.upload_file(str(path), drop, key)
    resources = resources_for("local", _settings(drop, phi, research, tmp_path))
    key = partition_key(synthetic_export.days[0], "cxr_tb")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(_graph(), resources=resources, partition_key=key, instance=instance)
    return S3Run(phi, research, tmp_path, resources, result, key, instance)


def test_the_graph_runs_with_both_zones_in_object_storage(
    s3_run: S3Run, s3_access: Callable[[str], S3Access]
) -> None:
    assert isinstance(s3_run.resources["source"], S3DropSource)
    assert s3_run.resources["phi_zone"].is_remote and s3_run.resources["research_zone"].is_remote
    assert s3_run.result.success
    assert all(e.passed for e in s3_run.result.get_asset_check_evaluations())
    phi = _keys(s3_access("SCREENLAKE_PHI_ZONE_S3"), s3_run.phi_bucket)
    research = _keys(s3_access("SCREENLAKE_RESEARCH_ZONE_S3"), s3_run.research_bucket)
    for area in ("ingest/", "raw/", "vault/", "worklists/", "audit/reidentifications/", "outbox/"):
        assert any(k.startswith(f"hospital/phi/{area}") for k in phi), area
    assert any(k.startswith("lake/dicom/") for k in research)
    assert any(k.startswith("lake/lake/study_findings/") for k in research)
    # Nothing of the PHI zone ever reaches the research bucket, and nothing is left outside it.
    assert not [k for k in research if k.removeprefix("lake/").startswith(PHI_ONLY_AREAS)]
    assert all(k.startswith("hospital/phi/") for k in phi)


def test_every_landed_file_is_in_the_phi_bucket(
    s3_run: S3Run, s3_access: Callable[[str], S3Access]
) -> None:
    manifest = pl.read_parquet(next((s3_run.work / "phi" / "raw").rglob("manifest.parquet")))
    stored = set(_keys(s3_access("SCREENLAKE_PHI_ZONE_S3"), s3_run.phi_bucket))
    raw = {k.rsplit("/", 1)[1] for k in stored if k.startswith("hospital/phi/raw/")}
    assert set(manifest["landed_path"]) <= raw
    assert manifest.height > 0


def test_the_lake_is_read_by_duckdb_over_httpfs(s3_run: S3Run) -> None:
    lake = s3_run.resources["lake"]
    lake.refresh_views()
    with lake.lake_connection() as con:
        rows = con.execute("SELECT count(*) FROM study_findings").fetchone()
        source = con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = 'study_findings' "
            "AND sql LIKE '%s3://%'"
        ).fetchone()
    findings = s3_run.result.asset_materializations_for_node("study_findings")[0]
    assert rows == (findings.metadata["studies"].value,)
    assert source == (1,)


def test_analysts_query_the_lake_in_object_storage(
    s3_run: S3Run, capsys: pytest.CaptureFixture[str]
) -> None:
    from screenlake.cli import main

    zone = f"s3://{s3_run.research_bucket}/lake"
    sql = "SELECT count(*) AS studies_in_lake FROM study_findings"
    assert main(["query", "--research-zone", zone, sql]) == 0
    findings = s3_run.result.asset_materializations_for_node("study_findings")[0]
    printed = capsys.readouterr().out
    assert "studies_in_lake" in printed
    assert f"│ {findings.metadata['studies'].value} " in printed


def test_the_database_file_holds_no_credentials(s3_run: S3Run) -> None:
    s3_run.resources["lake"].refresh_views()
    database = Path(s3_run.resources["lake"].database).read_bytes()
    assert b"test-secret-2" not in database and b"TESTKEY2" not in database


def test_a_fresh_worker_continues_from_the_store(
    s3_run: S3Run, session_keys: dict[str, str]
) -> None:
    """With the working copies gone (another machine of the same site, with the same Dagster
    instance), downstream assets pull what they read, and publication finds the files its
    guards judged byte for byte in the store."""
    shutil.rmtree(s3_run.work / "phi")
    shutil.rmtree(s3_run.work / "research")
    downstream = dg.AssetSelection.assets(
        "instance_catalog",
        "instance_predictions",
        "study_findings",
        "validated_findings",
        "coordinator_worklist",
    )
    result = dg.materialize(
        _graph(),
        resources=s3_run.resources,
        partition_key=s3_run.partition,
        selection=downstream,
        instance=s3_run.instance,
    )
    assert result.success
    assert list((s3_run.work / "phi" / "worklists").rglob("*.csv"))


def test_a_zone_bucket_that_does_not_exist_names_itself(s3_env: S3Server, tmp_path: Path) -> None:
    zone = ZoneStore(
        name="PHI",
        root="s3://no-such-bucket-here/phi",
        working_copy=str(tmp_path),
        endpoint_url=s3_env.endpoint,
        credentials_env="SCREENLAKE_PHI_ZONE_S3",
    )
    with pytest.raises(
        ObjectStoreError, match="'no-such-bucket-here' for the PHI zone does not exist"
    ):
        zone.pull("raw")


def test_a_zone_in_object_storage_needs_a_working_copy() -> None:
    zone = ZoneStore(name="research", root="s3://bucket-name/lake")
    with pytest.raises(ConfigurationError, match="no local working copy"):
        zone.path("lake")


def test_a_zone_uri_must_be_a_valid_location(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a valid S3 bucket name"):
        resources_for("local", {"SCREENLAKE_PHI_ZONE": "s3://Bad_Bucket/phi"})


def test_paths_that_leave_a_zone_in_object_storage_are_refused(tmp_path: Path) -> None:
    zone = ZoneStore(name="PHI", root="s3://bucket-name/phi", working_copy=str(tmp_path))
    with pytest.raises(ValueError, match="leaves the PHI zone") as refused:
        zone.uri("../research/lake")
    assert "research" not in str(refused.value)  # the path asked for is not quoted
    assert zone.uri("raw/x.dcm") == "s3://bucket-name/phi/raw/x.dcm"


def test_counting_landed_files_does_not_download_them(s3_run: S3Run) -> None:
    """The reconciliation checks read the landed manifest only, not the PHI files it lists."""
    from assets._shared import landed_manifest
    from screenlake.layout import Batch

    shutil.rmtree(s3_run.work / "phi")
    phi_zone = s3_run.resources["phi_zone"]
    day = date.fromisoformat(s3_run.partition.keys_by_dimension["date"])
    batch = Batch(day, s3_run.partition.keys_by_dimension["programme"])

    manifest, raw = landed_manifest(phi_zone, batch, with_files=False)
    assert manifest.height > 0
    assert [p.name for p in raw.iterdir()] == ["manifest.parquet"]

    _, raw = landed_manifest(phi_zone, batch)
    assert sorted(p.name for p in raw.iterdir() if p.suffix == ".dcm") == sorted(
        manifest["landed_path"]
    )
