"""Nothing identifying leaves the PHI zone through errors from the export drop on S3 and from
zones on S3, against a real moto server on loopback: object keys that name a patient, an ID and
an accession, DICOM holding them too, and a store that loses an object, its bucket, its
credentials or itself. Every error is searched for them in its message, repr and traceback with
its whole chain (what Dagster records of a failed step)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests

from resources.s3drop import S3DropSource
from resources.zones import ZoneStore
from screenlake.devservers.s3 import S3Server
from screenlake.errors import ObjectStoreError, UnreadableInstanceError
from screenlake.ingest import SourceFile, batch_files, land_files, source_files_of
from screenlake.layout import Batch
from screenlake.objectstore.access import S3Access
from tests.dicom_factory import ct_slice
from tests.leaks import assert_names_none, leaks

pytestmark = pytest.mark.s3

DAY = date(2024, 3, 11)
PATIENT_NAME, PATIENT_ID, ACCESSION = "Jansen^Pieter", "PID7730911", "ACC99120417"
STUDY_UID = "1.2.826.0.1.3680043.8.498.7730911"
SERIES_UID = f"{STUDY_UID}.2"
# Each part on its own too: a message may hold a folder name cut at another character.
IDENTIFIERS = (PATIENT_NAME, "Jansen", "Pieter", PATIENT_ID, ACCESSION, STUDY_UID, "7730911")
FOLDER = f"{DAY:%Y%m%d}/{PATIENT_NAME}_{PATIENT_ID}/{ACCESSION}/1_CT"
SLICES = 4
PREFIX = "exports"
PROGRAMME = "lung_ldct"


def _dicom(n: int) -> bytes:
    from io import BytesIO

    ds = ct_slice(
        patient_id=PATIENT_ID,
        patient_name=PATIENT_NAME,
        study_uid=STUDY_UID,
        series_uid=SERIES_UID,
        sop_uid=f"{SERIES_UID}.{n}",
        accession=ACCESSION,
        study_date=f"{DAY:%Y%m%d}",
        z=float(n),
    )
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass
class Store:
    """A bucket holding the drop on a server of the test's own, which it may break."""

    server: S3Server
    bucket: str
    client: Any

    def source(self) -> S3DropSource:
        return S3DropSource(uri=f"s3://{self.bucket}/{PREFIX}", endpoint_url=self.server.endpoint)

    def key(self, n: int) -> str:
        return f"{PREFIX}/{FOLDER}/IM{n:05d}.dcm"

    def delete_bucket(self) -> None:
        for n in range(1, SLICES + 1):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(n))
        self.client.delete_bucket(Bucket=self.bucket)

    def require_credentials(self, after: int = 0) -> None:
        """After `after` more requests the server checks credentials, and knows none of ours
        (moto's own switch: the first `after` requests go unchecked)."""
        answer = requests.post(
            f"{self.server.endpoint}/moto-api/reset-auth", data=str(after).encode(), timeout=10
        )
        answer.raise_for_status()


@pytest.fixture
def store(s3_env: S3Server, tmp_path: Path) -> Iterator[Store]:
    """Its own moto server (a test may stop it or make it check credentials), with a bucket
    holding one study whose keys and headers name the patient."""
    server = S3Server(tmp_path / "moto").start()
    try:
        client = S3Access(server.endpoint, "us-east-1", "SCREENLAKE_DROP_S3").client()
        bucket = f"drop-{uuid.uuid4().hex[:10]}"
        client.create_bucket(Bucket=bucket)
        made = Store(server, bucket, client)
        for n in range(1, SLICES + 1):
            client.put_object(Bucket=bucket, Key=made.key(n), Body=_dicom(n))
        yield made
    finally:
        server.stop()


def _files(source: S3DropSource) -> tuple[Batch, list[SourceFile]]:
    batch = Batch(DAY, PROGRAMME)
    files = source_files_of(batch_files(source.list_day(DAY), batch))
    assert len(files) == SLICES
    assert all(PATIENT_NAME in f.ref for f in files)  # the planted identifiers are there
    return batch, files


# One object gone: that file's problem


def test_an_object_gone_since_listing_is_quarantined_and_the_rest_land(
    store: Store, tmp_path: Path
) -> None:
    source = store.source()
    batch, files = _files(source)
    store.client.delete_object(Bucket=store.bucket, Key=store.key(2))
    raw = tmp_path / "raw"

    manifest = land_files(files, batch, source, raw)

    assert manifest.height == SLICES
    rows = {r["source_path"]: r for r in manifest.iter_rows(named=True)}
    gone = rows[f"{FOLDER}/IM00002.dcm"]
    assert gone["size_bytes"] == 0
    assert "gone from the export drop" in gone["problem"]
    assert not leaks(gone["problem"], IDENTIFIERS)
    landed = [r for r in rows.values() if r is not gone]
    assert all(r["problem"] is None and r["size_bytes"] > 0 for r in landed)
    assert all((raw / r["landed_path"]).stat().st_size == r["size_bytes"] for r in landed)

    # Back in the drop: the next run asks for it, and for it alone.
    store.client.put_object(Bucket=store.bucket, Key=store.key(2), Body=_dicom(2))
    again = land_files(files, batch, store.source(), raw)
    assert again.filter(again["problem"].is_not_null()).height == 0
    assert again.filter(again["size_bytes"] == 0).height == 0


def test_fetch_of_an_object_gone_since_listing_raises_a_quarantine_reason(
    store: Store, tmp_path: Path
) -> None:
    source = store.source()
    _, files = _files(source)
    store.client.delete_object(Bucket=store.bucket, Key=store.key(1))
    with pytest.raises(UnreadableInstanceError) as raised:
        source.fetch(files[0], tmp_path / "one.dcm")
    assert_names_none(raised.value, IDENTIFIERS)
    assert not (tmp_path / "one.dcm").exists()


def test_fetch_many_reports_a_gone_object_to_on_problem(store: Store, tmp_path: Path) -> None:
    source = store.source()
    _, files = _files(source)
    store.client.delete_object(Bucket=store.bucket, Key=store.key(3))
    landed: list[SourceFile] = []
    problems: list[tuple[SourceFile, str]] = []

    source.fetch_many(
        [(f, tmp_path / f"{n}.dcm") for n, f in enumerate(files)],
        lambda file, path: landed.append(file),
        lambda file, reason: problems.append((file, reason)),
    )

    assert [f.ref for f, _ in problems] == [f"{FOLDER}/IM00003.dcm"]
    assert not leaks(problems[0][1], IDENTIFIERS)
    assert len(landed) == SLICES - 1
    assert not (tmp_path / f"{files.index(problems[0][0])}.dcm").exists()


# The bucket, the credentials or the store: the partition's failure


def _land(source: S3DropSource, files: list[SourceFile], tmp_path: Path) -> None:
    land_files(files, Batch(DAY, PROGRAMME), source, tmp_path / "raw")


_OPERATIONS: dict[str, Callable[[S3DropSource, list[SourceFile], Path], object]] = {
    "available_days": lambda s, f, t: s.available_days(),
    "day_summaries": lambda s, f, t: s.day_summaries(),
    "day_summary": lambda s, f, t: s.day_summary(DAY),
    "list_day": lambda s, f, t: s.list_day(DAY),
    "fetch": lambda s, f, t: s.fetch(f[0], t / "one.dcm"),
    "land_files": _land,
}


@pytest.mark.parametrize("operation", sorted(_OPERATIONS))
@pytest.mark.parametrize("fault", ["bucket deleted", "credentials refused", "store stopped"])
def test_a_failing_store_fails_the_partition_without_naming_a_patient(
    store: Store, tmp_path: Path, operation: str, fault: str
) -> None:
    source = store.source()
    _, files = _files(source)  # connected and listed: the fault comes after
    if fault == "bucket deleted":
        store.delete_bucket()
    elif fault == "credentials refused":
        store.require_credentials()
    else:
        store.server.stop()

    with pytest.raises(ObjectStoreError) as raised:
        _OPERATIONS[operation](source, files, tmp_path)

    assert_names_none(raised.value, IDENTIFIERS)
    assert store.server.endpoint in str(raised.value)
    assert "export drop" in str(raised.value)
    assert not list((tmp_path).rglob("*.dcm"))  # nothing half-written is left


@pytest.mark.parametrize("fault", ["bucket deleted", "credentials refused", "store stopped"])
def test_a_new_source_on_a_failing_store_names_no_patient(store: Store, fault: str) -> None:
    if fault == "bucket deleted":
        store.delete_bucket()
    elif fault == "credentials refused":
        store.require_credentials()
    else:
        store.server.stop()
    with pytest.raises(ObjectStoreError) as raised:
        store.source().list_day(DAY)
    assert_names_none(raised.value, IDENTIFIERS)


def test_summaries_change_when_an_object_changes_and_name_nothing(store: Store) -> None:
    source = store.source()
    before = source.day_summaries()
    assert set(before) == {DAY}
    assert before[DAY].startswith(f"files={SLICES};state=")
    assert source.day_summary(DAY) == before[DAY]
    assert source.day_summary(date(2024, 3, 12)) == ""
    assert not leaks(repr(before), IDENTIFIERS)

    # The same count, other bytes under the same key: a re-export the sensor must notice.
    store.client.put_object(Bucket=store.bucket, Key=store.key(1), Body=_dicom(1) + b"\0\0")
    after = source.day_summaries()
    assert after[DAY].startswith(f"files={SLICES};state=")
    assert after[DAY] != before[DAY]
    assert source.day_summary(DAY) == after[DAY]
    assert source.day_summaries() == after  # stable while nothing changes


# Zones on S3


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("fault", ["bucket deleted", "credentials refused", "store stopped"])
def test_a_failing_zone_store_names_no_key(
    store: Store, tmp_path: Path, direction: str, fault: str
) -> None:
    zone = ZoneStore(
        name="PHI",
        root=f"s3://{store.bucket}/phi",
        working_copy=str(tmp_path / "work"),
        endpoint_url=store.server.endpoint,
        credentials_env="SCREENLAKE_PHI_ZONE_S3",
    )
    # Zone keys name no patient by design; one that did must not reach a message either.
    folder = f"raw/{PATIENT_NAME}_{PATIENT_ID}"
    local = zone.path(f"{folder}/{ACCESSION}.dcm")
    local.parent.mkdir(parents=True)
    local.write_bytes(_dicom(1))
    zone.push(folder)  # connected, and the store holds the file
    local.write_bytes(_dicom(2))  # a change to push, or to undo by pulling
    if fault == "bucket deleted":
        store.client.delete_object(Bucket=store.bucket, Key=f"phi/{folder}/{ACCESSION}.dcm")
        store.delete_bucket()
    elif fault == "credentials refused":
        store.require_credentials()
    else:
        store.server.stop()

    with pytest.raises(ObjectStoreError) as raised:
        getattr(zone, direction)(folder)

    assert_names_none(raised.value, IDENTIFIERS)
    assert "the PHI zone" in str(raised.value)


# End to end: what a Dagster instance keeps of the ingest assets' runs


def test_ingest_runs_over_a_failing_drop_leave_no_identifier_in_the_instance(
    store: Store, session_keys: dict[str, str], tmp_path: Path
) -> None:
    import dagster as dg

    from assets.ingest import pacs_studies, raw_instances
    from orchestration.partitions import partition_key
    from orchestration.resources import resources_for

    resources = resources_for(
        "local",
        {
            "SCREENLAKE_DROP": f"s3://{store.bucket}/{PREFIX}",
            "SCREENLAKE_S3_ENDPOINT": store.server.endpoint,
            "SCREENLAKE_PHI_ZONE": str(tmp_path / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(tmp_path / "research"),
        },
    )
    key = partition_key(DAY, PROGRAMME)
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:

        def run(assets: list[Any]) -> dg.ExecuteInProcessResult:
            return dg.materialize(
                assets,
                resources=resources,
                partition_key=key,
                instance=instance,
                raise_on_error=False,
            )

        assert run([pacs_studies]).success
        store.client.delete_object(Bucket=store.bucket, Key=store.key(2))
        landed = run([raw_instances])
        assert landed.success
        quarantined = landed.asset_materializations_for_node("raw_instances")[0].metadata
        # The bucket check passes; asking again for the vanished object is refused.
        store.require_credentials(after=1)
        refused = run([raw_instances])
        store.server.stop()
        down = run([pacs_studies, raw_instances])
        for failed, doing in ((refused, "while landing files"), (down, "cannot be reached")):
            assert not failed.success
            (failure,) = [e for e in failed.all_events if e.is_step_failure]
            assert "ObjectStoreError" in str(failure.step_failure_data.error)
            assert doing in str(failure.step_failure_data.error)

    assert quarantined  # the landing's metadata was recorded, and is searched below
    files = [p for p in home.rglob("*") if p.is_file()]
    texts = {p: p.read_bytes().decode("utf-8", errors="replace") for p in files}
    # The failure and its traceback are recorded where the search looks.
    assert any("ObjectStoreError" in text and 'File "' in text for text in texts.values())
    found = {
        str(p.relative_to(home)): said for p, t in texts.items() if (said := leaks(t, IDENTIFIERS))
    }
    assert not found
