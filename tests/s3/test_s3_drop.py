"""The export drop on S3 against a real S3-compatible server (moto on loopback): the same files
give the same days, listings, bytes and landings as the folder drop."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from resources import s3drop
from resources.s3drop import HEADER_BYTES, S3DropSource
from resources.sources import ExportDropSource
from screenlake.devservers.s3 import S3Server
from screenlake.errors import ConfigurationError, ObjectStoreError
from screenlake.fsutil import sha256_of
from screenlake.ingest import (
    DayListing,
    SourceFile,
    land_files,
    read_routing_header,
    read_routing_header_from_bytes,
)
from screenlake.layout import Batch, raw_manifest_path
from screenlake.objectstore.access import S3Access
from screenlake.programmes import PROGRAMME_NAMES, route_study
from screenlake.tables import LANDED_INSTANCES, write_parquet
from tests.dicom_factory import ct_slice, write

pytestmark = pytest.mark.s3

STUDIES, SEED = 4, 11
PREFIX = "exports/pacs"
DROP_CREDENTIALS = "SCREENLAKE_DROP_S3"
LONG_HEADER_BYTES = 200 * 1024
NOT_ROUTED = ("MR", "HEAD")
DICOM_PREAMBLE_BYTES = 128 + 4  # preamble and "DICM"


@dataclass(frozen=True)
class LocalExport:
    """A synthetic export on disk, with an unrouted study and a stray file added."""

    drop: Path
    days: tuple[date, ...]
    files: tuple[Path, ...]


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> LocalExport:
    """Four studies over two days with the generator's bad files, plus orphans of both kinds:
    a study no programme takes and a file in no study's folder."""
    from screenlake.synth.export import generate_export

    root = tmp_path_factory.mktemp("s3-drop-export")
    drop = root / "drop"
    summary = generate_export(drop, studies=STUDIES, seed=SEED, labels_path=root / "labels.csv")
    first_day = drop / summary.days[0].strftime("%Y%m%d")
    study_uid = "1.2.826.0.1.3680043.8.498.100"
    for n in (1, 2):
        write(
            ct_slice(
                study_uid=study_uid,
                modality=NOT_ROUTED[0],
                body_part=NOT_ROUTED[1],
                z=float(n),
            ),
            first_day / "Visser_Anna_555" / "ACC555" / "1_MR" / f"IM{n:05d}.dcm",
        )
    (first_day / "stray-notes.txt").write_bytes(b"exported by hand, not DICOM\n")
    files = tuple(sorted(p for p in drop.rglob("*") if p.is_file()))
    return LocalExport(drop, summary.days, files)


@dataclass
class Requests:
    """S3 operations the code under test made, with each GetObject's range and thread."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, operation: str) -> int:
        """How many calls of `operation`."""
        return sum(1 for name, _ in self.calls if name == operation)

    def gets(self) -> list[dict[str, Any]]:
        """The parameters of each GetObject."""
        return [params for name, params in self.calls if name == "GetObject"]

    def clear(self) -> None:
        """Forget what was recorded so far."""
        with self.lock:
            self.calls.clear()
            self.threads.clear()


@pytest.fixture
def requests_made(monkeypatch: pytest.MonkeyPatch) -> Requests:
    """Every S3 operation of clients made from here on, by name and parameters."""
    made = Requests()
    original = S3Access.client

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        with made.lock:
            made.calls.append((model.name, dict(params)))
            if model.name == "GetObject":
                made.threads.append(threading.get_ident())

    def counting_client(self: S3Access) -> Any:
        client = original(self)
        client.meta.events.register("before-parameter-build.s3", record)
        return client

    monkeypatch.setattr(S3Access, "client", counting_client)
    return made


@dataclass(frozen=True)
class Drop:
    """An export uploaded to a fresh bucket under PREFIX, and how to reach it."""

    bucket: str
    endpoint: str
    client: Any

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{PREFIX}"

    def key(self, ref: str) -> str:
        return f"{PREFIX}/{ref}"

    def source(self, **settings: Any) -> S3DropSource:
        """A new source instance over this drop, as a run would make one."""
        return S3DropSource(uri=self.uri, endpoint_url=self.endpoint, **settings)


def _upload(client: Any, bucket: str, key: str, data: bytes) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=data)


@pytest.fixture
def drop(
    export: LocalExport,
    new_bucket: Callable[[], str],
    s3_access: Callable[[str], S3Access],
    s3_env: S3Server,
) -> Drop:
    """The export in a fresh bucket, with objects around it that are not the drop's files:
    folder markers, a non-day folder, an object at the drop's root, and sibling prefixes."""
    bucket = new_bucket()
    client = s3_access("SCREENLAKE_RESEARCH_ZONE_S3").client()
    uploaded = Drop(bucket, s3_env.endpoint, client)
    for path in export.files:
        _upload(
            client,
            bucket,
            uploaded.key(path.relative_to(export.drop).as_posix()),
            path.read_bytes(),
        )
    some = export.files[0]
    first_day = export.days[0].strftime("%Y%m%d")
    for key in (
        f"{PREFIX}/{first_day}/",
        f"{PREFIX}/{first_day}/Empty/Folder/",
        f"{PREFIX}/README.txt",
        f"{PREFIX}/incoming/{some.name}",
        f"{PREFIX}/2024311/{some.name}",
        f"{PREFIX}-old/{first_day}/{some.name}",
        f"elsewhere/{first_day}/{some.name}",
    ):
        _upload(client, bucket, key, b"" if key.endswith("/") else some.read_bytes())
    return uploaded


def _day_files(export: LocalExport, day: date) -> list[Path]:
    folder = export.drop / day.strftime("%Y%m%d")
    return [p for p in export.files if folder in p.parents]


def _all_files(listing: DayListing) -> list[SourceFile]:
    return [f for s in listing.studies for f in s.files] + list(listing.orphans)


# Days and listings


@pytest.mark.parametrize("page_size", [1000, 2])
def test_days_and_listings_equal_the_folder_drop(
    drop: Drop,
    export: LocalExport,
    requests_made: Requests,
    monkeypatch: pytest.MonkeyPatch,
    page_size: int,
) -> None:
    monkeypatch.setattr(s3drop, "_PAGE_SIZE", page_size)
    source, folder = drop.source(), ExportDropSource(root=str(export.drop), settle_seconds=0)

    assert source.available_days() == folder.available_days() == list(export.days)
    listings = {day: source.list_day(day) for day in export.days}
    for day, listing in listings.items():
        assert listing == folder.list_day(day)
        assert len(_all_files(listing)) == len(_day_files(export, day))

    problems = {f.problem for listing in listings.values() for f in _all_files(listing)}
    assert {
        "empty file (0 bytes)",
        "not a DICOM file (no DICM prefix or file meta)",
        (
            "no screening programme takes this study "
            f"(modality {NOT_ROUTED[0]}, body part {NOT_ROUTED[1]})"
        ),
    } <= problems
    assert listings[export.days[0]].orphans
    assert all(listing.studies for listing in listings.values())
    if page_size == 2:
        assert requests_made.count("ListObjectsV2") > len(export.days) + 1


def test_a_day_without_objects_has_no_studies(drop: Drop) -> None:
    listing = drop.source().list_day(date(2001, 1, 1))
    assert listing == DayListing(day=date(2001, 1, 1), studies=(), orphans=())


def test_each_header_is_read_with_one_ranged_get(
    drop: Drop, export: LocalExport, requests_made: Requests
) -> None:
    source = drop.source()
    day = export.days[0]
    requests_made.clear()
    source.list_day(day)

    non_empty = [p for p in _day_files(export, day) if p.stat().st_size > 0]
    gets = requests_made.gets()
    assert sorted(g["Key"] for g in gets) == sorted(
        drop.key(p.relative_to(export.drop).as_posix()) for p in non_empty
    )
    assert {g.get("Range") for g in gets} == {f"bytes=0-{HEADER_BYTES - 1}"}
    assert max(p.stat().st_size for p in non_empty) > HEADER_BYTES  # some reads were partial


def test_the_bucket_is_checked_once_per_source(
    drop: Drop, export: LocalExport, requests_made: Requests
) -> None:
    source = drop.source()
    requests_made.clear()
    source.available_days()
    source.day_summaries()
    source.list_day(export.days[0])
    assert requests_made.count("HeadBucket") == 1


def test_day_summaries_count_files(drop: Drop, export: LocalExport) -> None:
    source = drop.source()
    summaries = source.day_summaries()
    counts = {day: text.split(";")[0] for day, text in summaries.items()}
    assert counts == {day: f"files={len(_day_files(export, day))}" for day in export.days}
    folder = ExportDropSource(root=str(export.drop), settle_seconds=0).day_summaries()
    assert counts == {day: text.split(";")[0] for day, text in folder.items()}
    assert {day: source.day_summary(day) for day in export.days} == summaries


# Long headers


def _long_header_slice(study_uid: str) -> Any:
    """A routed CT slice whose routing tags lie past the first 64 KiB: a large private element
    in group 0009 comes before PatientID, BodyPartExamined and StudyInstanceUID."""
    ds = ct_slice(study_uid=study_uid, modality="CT", body_part="CHEST")
    block = ds.private_block(0x0009, "SCREENLAKE TEST", create=True)
    block.add_new(0x01, "OB", b"\x00" * LONG_HEADER_BYTES)
    return ds


def test_a_header_longer_than_the_first_read_still_routes(
    drop: Drop, tmp_path: Path, requests_made: Requests
) -> None:
    study_uid = "1.2.826.0.1.3680043.8.498.200"
    local_drop = tmp_path / "drop"
    path = write(_long_header_slice(study_uid), local_drop / "20250102" / "Big" / "IM00001.dcm")
    ref = path.relative_to(local_drop).as_posix()
    _upload(drop.client, drop.bucket, drop.key(ref), path.read_bytes())
    day = date(2025, 1, 2)

    requests_made.clear()
    listing = drop.source().list_day(day)

    assert listing == ExportDropSource(root=str(local_drop), settle_seconds=0).list_day(day)
    (study,) = listing.studies
    assert study.study_instance_uid == study_uid
    assert study.programme == route_study("CT", "CHEST") is not None
    assert study.files[0].problem is None
    ranges = [g["Range"] for g in requests_made.gets()]
    assert ranges[0] == f"bytes=0-{HEADER_BYTES - 1}"
    assert len(ranges) > 1


def test_headers_from_bytes_equal_headers_from_files(export: LocalExport, tmp_path: Path) -> None:
    long_one = write(_long_header_slice("1.2.826.0.1.3680043.8.498.300"), tmp_path / "long.dcm")
    for path in (*export.files, long_one):
        data = path.read_bytes()
        expected = read_routing_header(path, "ref")
        assert read_routing_header_from_bytes(data, "ref", whole=True) == expected
        for length in (0, 100, 132, 1024, 4096, HEADER_BYTES, len(data) // 2, len(data)):
            header = read_routing_header_from_bytes(data[:length], "ref", whole=False)
            assert header is None or header == expected
        # One read is enough unless the header is long, or the file shorter than a preamble.
        first = read_routing_header_from_bytes(data[:HEADER_BYTES], "ref", whole=False)
        assert (first is None) == (path == long_one or len(data) < DICOM_PREAMBLE_BYTES)


# Fetching and landing


def test_fetch_gives_the_same_bytes(drop: Drop, export: LocalExport, tmp_path: Path) -> None:
    source = drop.source()
    fetched = 0
    for day in export.days:
        for n, file in enumerate(_all_files(source.list_day(day))):
            destination = tmp_path / f"{day:%Y%m%d}-{n}.dcm"
            source.fetch(file, destination)
            assert destination.read_bytes() == (export.drop / file.ref).read_bytes()
            fetched += 1
    assert fetched == len(export.files)


def test_fetch_many_hands_files_on_in_the_calling_thread(
    drop: Drop, export: LocalExport, tmp_path: Path, requests_made: Requests
) -> None:
    source = drop.source(connections=4)
    files = _all_files(source.list_day(export.days[0]))
    requests_made.clear()
    handed_on: list[tuple[SourceFile, int]] = []

    source.fetch_many(
        [(f, tmp_path / f"{n}.dcm") for n, f in enumerate(files)],
        lambda file, path: handed_on.append((file, threading.get_ident())),
        lambda file, reason: None,
    )

    assert sorted(f.ref for f, _ in handed_on) == sorted(f.ref for f in files)
    assert {thread for _, thread in handed_on} == {threading.get_ident()}
    assert len(set(requests_made.threads)) > 1
    assert threading.get_ident() not in requests_made.threads
    for n, file in enumerate(files):
        assert (tmp_path / f"{n}.dcm").read_bytes() == (export.drop / file.ref).read_bytes()


def _batch_files(listing: DayListing, programme: str) -> list[SourceFile]:
    return [f for s in listing.batch_studies(programme) for f in s.files] + list(
        listing.batch_orphans(programme)
    )


def test_land_files_lands_every_file_and_fetches_nothing_twice(
    drop: Drop, export: LocalExport, tmp_path: Path, requests_made: Requests
) -> None:
    listings = {day: drop.source().list_day(day) for day in export.days}
    batches = [
        (Batch(day, p), _batch_files(listings[day], p))
        for day in export.days
        for p in PROGRAMME_NAMES
    ]
    assert sum(len(files) for _, files in batches) == len(export.files)

    def land_all() -> list[Any]:
        source = drop.source()  # a new run's source
        manifests = []
        for batch, files in batches:
            raw_dir = tmp_path / f"{batch.day}-{batch.programme}"
            manifest = land_files(files, batch, source, raw_dir)
            # As the raw_instances asset does: the next landing reads this manifest.
            write_parquet(manifest, LANDED_INSTANCES, raw_dir / raw_manifest_path(batch).name)
            manifests.append(manifest)
        return manifests

    requests_made.clear()
    first = land_all()
    assert requests_made.count("GetObject") == len(export.files)
    for manifest in first:
        for row in manifest.iter_rows(named=True):
            assert row["sha256"] == sha256_of(export.drop / row["source_path"])

    requests_made.clear()
    second = land_all()
    assert requests_made.count("GetObject") == 0
    assert [m.to_dicts() for m in second] == [m.to_dicts() for m in first]


def test_a_vanished_object_is_quarantined_and_only_it_is_fetched_again(
    drop: Drop, export: LocalExport, tmp_path: Path, requests_made: Requests
) -> None:
    day = export.days[0]
    batch = Batch(day, PROGRAMME_NAMES[0])
    files = _batch_files(drop.source().list_day(day), batch.programme)
    gone = next(f for f in files if not f.problem)
    gone_bytes = (export.drop / gone.ref).read_bytes()
    drop.client.delete_object(Bucket=drop.bucket, Key=drop.key(gone.ref))
    raw_dir = tmp_path / "raw"

    first = land_files(files, batch, drop.source(), raw_dir)
    row = first.filter(first["source_path"] == gone.ref).row(0, named=True)
    assert row["size_bytes"] == 0
    assert "gone from the export drop" in row["problem"]
    assert first.height == len(files)

    _upload(drop.client, drop.bucket, drop.key(gone.ref), gone_bytes)
    write_parquet(first, LANDED_INSTANCES, raw_dir / raw_manifest_path(batch).name)
    requests_made.clear()
    manifest = land_files(files, batch, drop.source(), raw_dir)
    # The placeholder is asked for again; a file empty at the source (listed as such) is not.
    assert any((export.drop / f.ref).stat().st_size == 0 for f in files)
    assert [g["Key"] for g in requests_made.gets()] == [drop.key(gone.ref)]
    assert manifest.height == len(files)
    row = manifest.filter(manifest["source_path"] == gone.ref).row(0, named=True)
    assert row["sha256"] == sha256_of(export.drop / gone.ref)


# Configuration and failures


def _call(name: str, source: S3DropSource, tmp_path: Path) -> None:
    file = SourceFile("20240311/x.dcm")
    calls: dict[str, Callable[[], object]] = {
        "available_days": source.available_days,
        "list_day": lambda: source.list_day(date(2024, 3, 11)),
        "day_summaries": source.day_summaries,
        "fetch": lambda: source.fetch(file, tmp_path / "x.dcm"),
        "fetch_many": lambda: source.fetch_many(
            [(file, tmp_path / "x.dcm")], lambda f, p: None, lambda f, r: None
        ),
    }
    calls[name]()


@pytest.mark.parametrize(
    "method", ["available_days", "list_day", "day_summaries", "fetch", "fetch_many"]
)
def test_a_missing_bucket_is_named(s3_env: S3Server, tmp_path: Path, method: str) -> None:
    bucket = f"screenlake-missing-{uuid.uuid4().hex[:8]}"
    source = S3DropSource(uri=f"s3://{bucket}/drop", endpoint_url=s3_env.endpoint)
    with pytest.raises(ObjectStoreError) as raised:
        _call(method, source, tmp_path)
    assert bucket in str(raised.value)
    assert "SCREENLAKE_DROP" in str(raised.value)


def test_a_missing_credentials_partner_is_a_configuration_error(
    drop: Drop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(f"{DROP_CREDENTIALS}_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigurationError, match=f"{DROP_CREDENTIALS}_SECRET_ACCESS_KEY"):
        drop.source().available_days()


def test_a_setting_that_is_not_an_s3_location_is_a_configuration_error(s3_env: S3Server) -> None:
    with pytest.raises(ConfigurationError, match="SCREENLAKE_DROP"):
        S3DropSource(uri="/srv/pacs-drop", endpoint_url=s3_env.endpoint).available_days()


def test_fewer_than_one_connection_is_a_configuration_error(drop: Drop) -> None:
    with pytest.raises(ConfigurationError, match="connections"):
        drop.source(connections=0).available_days()


def test_keys_no_reference_can_name_fail_the_listing(drop: Drop, export: LocalExport) -> None:
    day = export.days[0]
    _upload(drop.client, drop.bucket, f"{PREFIX}/{day:%Y%m%d}/Pat//IM1.dcm", b"x")
    with pytest.raises(ObjectStoreError, match="rename them"):
        drop.source().list_day(day)


def test_the_module_loads_without_boto3() -> None:
    probe = (
        "import sys, resources.s3drop; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')); "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        check=False,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
