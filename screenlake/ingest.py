"""Finding a day's studies in an export drop, routing them to programmes, and landing their files.

Everything here handles identifying data and runs in the PHI zone. Files that cannot be read or
routed are not dropped: they travel as `SourceFile`s with a `problem` and end in quarantine.
"""

from __future__ import annotations

import io
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal, Protocol, cast, overload

import polars as pl
import pydicom
from pydicom.errors import InvalidDicomError

from screenlake.errors import IncompleteLandingError
from screenlake.fsutil import (
    sha256_of,  # noqa: F401  (re-exported: the manifest's checksum)
    swap_in_folder,
)
from screenlake.layout import Batch, raw_manifest_path
from screenlake.pacs.landing import FileKey, LandingJournal, PreviousFile
from screenlake.programmes import PROGRAMME_NAMES, route_study
from screenlake.tables import LANDED_INSTANCES, SOURCE_FILES, STUDY_INDEX, frame_of

_ROUTING_TAGS = [
    "StudyInstanceUID",
    "SOPInstanceUID",
    "PatientID",
    "AccessionNumber",
    "StudyDate",
    "Modality",
    "BodyPartExamined",
]


@dataclass(frozen=True)
class SourceFile:
    """One file offered by a source. `ref` locates it in the source and may hold names: PHI."""

    ref: str
    study_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class FoundStudy:
    """A study in a source, with the identifying header values that route it."""

    study_instance_uid: str
    patient_id: str | None
    accession_number: str | None
    study_date: date | None
    modality: str | None
    body_part: str | None
    programme: str | None
    files: tuple[SourceFile, ...]


@dataclass(frozen=True)
class DayListing:
    """Every file a source holds for one day: routed studies and the files no study claims."""

    day: date
    studies: tuple[FoundStudy, ...]
    orphans: tuple[SourceFile, ...]

    def batch_studies(self, programme: str) -> tuple[FoundStudy, ...]:
        """The studies routed to `programme`."""
        return tuple(s for s in self.studies if s.programme == programme)

    def batch_orphans(self, programme: str) -> tuple[SourceFile, ...]:
        """Unclaimed files: the day's first programme takes them, so each is counted once."""
        return self.orphans if programme == PROGRAMME_NAMES[0] else ()

    @property
    def file_count(self) -> int:
        """All files of the day, claimed or not."""
        return sum(len(s.files) for s in self.studies) + len(self.orphans)


def _text(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        return None
    return str(value).strip()


def _dicom_date(value: str | None) -> date | None:
    if value is None or len(value) < 8 or not value[:8].isdigit():
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None


@dataclass(frozen=True)
class _Header:
    file: SourceFile
    patient_id: str | None = None
    accession_number: str | None = None
    study_date: date | None = None
    modality: str | None = None
    body_part: str | None = None


_EMPTY_FILE = "empty file (0 bytes)"


def read_routing_header(path: Path, ref: str) -> _Header:
    """The routing attributes of one file, read without its pixels; unreadable files carry why."""
    if path.stat().st_size == 0:
        return _Header(SourceFile(ref, problem=_EMPTY_FILE))
    return _parse_routing_header(path, ref)


class _Prefix(io.BytesIO):
    """The first bytes of a longer file, noting whether a reader asked for bytes past them."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._size = len(data)
        self.overran = False

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0 or self.tell() + size > self._size:
            self.overran = True
        return super().read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        position = super().seek(offset, whence)
        if position > self._size:
            self.overran = True
        return position


@overload
def read_routing_header_from_bytes(data: bytes, ref: str, whole: Literal[True]) -> _Header: ...


@overload
def read_routing_header_from_bytes(data: bytes, ref: str, whole: bool) -> _Header | None: ...


def read_routing_header_from_bytes(data: bytes, ref: str, whole: bool) -> _Header | None:
    """`read_routing_header` for a file held as bytes: all of it when `whole`, else its first
    bytes. From first bytes, None means the header runs past them and more must be read; any
    answer given is the one the whole file gives, since the reader never looked further."""
    if whole:
        if not data:
            return _Header(SourceFile(ref, problem=_EMPTY_FILE))
        return _parse_routing_header(io.BytesIO(data), ref)
    prefix = _Prefix(data)
    try:
        header = _parse_routing_header(prefix, ref)
    except (struct.error, EOFError, ValueError, KeyError, TypeError, IndexError):
        # Past the end of the prefix the reader saw no bytes at all (pydicom fails on short
        # reads with struct.error, among others): the whole file decides, and raises if it must.
        if prefix.overran:
            return None
        raise
    return None if prefix.overran else header


def _parse_routing_header(source: Path | BinaryIO, ref: str) -> _Header:
    try:
        ds = pydicom.dcmread(source, stop_before_pixels=True, specific_tags=_ROUTING_TAGS)
    except InvalidDicomError:
        return _Header(SourceFile(ref, problem="not a DICOM file (no DICM prefix or file meta)"))
    except (EOFError, OSError, ValueError, KeyError, TypeError) as error:
        return _Header(SourceFile(ref, problem=f"unreadable DICOM header: {type(error).__name__}"))
    study_uid = _text(ds, "StudyInstanceUID")
    problem = None if study_uid else "no StudyInstanceUID in the header"
    return _Header(
        file=SourceFile(ref, study_uid, _text(ds, "SOPInstanceUID"), problem),
        patient_id=_text(ds, "PatientID"),
        accession_number=_text(ds, "AccessionNumber"),
        study_date=_dicom_date(_text(ds, "StudyDate")),
        modality=_text(ds, "Modality"),
        body_part=_text(ds, "BodyPartExamined"),
    )


def _claims_by_folder(headers: Iterable[_Header]) -> dict[PurePosixPath, str | None]:
    """Which study each folder belongs to; None where two studies share it."""
    claims: dict[PurePosixPath, str | None] = {}
    for header in headers:
        uid = header.file.study_instance_uid
        if uid is None or header.file.problem:
            continue
        for folder in PurePosixPath(header.file.ref).parents:
            if folder == PurePosixPath("."):
                break
            if folder in claims and claims[folder] != uid:
                claims[folder] = None
            else:
                claims.setdefault(folder, uid)
    return claims


def _owning_study(ref: str, claims: dict[PurePosixPath, str | None]) -> str | None:
    for folder in PurePosixPath(ref).parents:
        if folder in claims:
            return claims[folder]
    return None


def list_day(day: date, headers: list[_Header]) -> DayListing:
    """Group a day's file headers into studies, route each study, and collect the orphans.

    A file whose header cannot be read joins the study whose folder holds it (a truncated
    slice inside a series folder belongs to that study); one in no study's folder is an orphan.
    """
    claims = _claims_by_folder(headers)
    by_study: dict[str, list[_Header]] = defaultdict(list)
    orphans: list[SourceFile] = []
    for header in headers:
        uid = header.file.study_instance_uid if not header.file.problem else None
        uid = uid or _owning_study(header.file.ref, claims)
        if uid is None:
            orphans.append(header.file)
        else:
            by_study[uid].append(header)

    studies: list[FoundStudy] = []
    for uid, members in sorted(by_study.items()):
        readable = [h for h in members if not h.file.problem] or members
        first = readable[0]
        modality, body_part = first.modality or "", first.body_part or ""
        programme = route_study(modality, body_part)
        files = tuple(sorted((h.file for h in members), key=lambda f: f.ref))
        if programme is None:
            reason = (
                f"no screening programme takes this study (modality {modality or 'missing'}, "
                f"body part {body_part or 'missing'})"
            )
            orphans.extend(f if f.problem else replace(f, problem=reason) for f in files)
            continue
        studies.append(
            FoundStudy(
                study_instance_uid=uid,
                patient_id=first.patient_id,
                accession_number=first.accession_number,
                study_date=first.study_date,
                modality=first.modality,
                body_part=first.body_part,
                programme=programme,
                files=files,
            )
        )
    return DayListing(
        day=day, studies=tuple(studies), orphans=tuple(sorted(orphans, key=lambda f: f.ref))
    )


def scan_drop_day(day_dir: Path, day: date) -> DayListing:
    """List one day folder of an export drop; an absent folder is a day without studies."""
    if not day_dir.exists():
        return DayListing(day=day, studies=(), orphans=())
    if not day_dir.is_dir():
        raise NotADirectoryError(f"the export drop's day entry {day.isoformat()} is not a folder")
    # References are relative to the drop's root, so that the drop alone can fetch them.
    headers = [
        read_routing_header(path, path.relative_to(day_dir.parent).as_posix())
        for path in sorted(p for p in day_dir.rglob("*") if p.is_file())
    ]
    return list_day(day, headers)


def study_index(listing: DayListing, batch: Batch) -> pl.DataFrame:
    """The batch's studies as a `pacs_studies` table (PHI)."""
    rows = [
        {
            "partition_date": batch.day,
            "programme": batch.programme,
            "study_instance_uid": s.study_instance_uid,
            "patient_id": s.patient_id,
            "accession_number": s.accession_number,
            "study_date": s.study_date,
            "modality": s.modality,
            "source_files": len(s.files),
        }
        for s in listing.batch_studies(batch.programme)
    ]
    return frame_of(rows, STUDY_INDEX)


def batch_files(listing: DayListing, batch: Batch) -> pl.DataFrame:
    """Every file the batch must land: its studies' files and the unclaimed files it takes."""
    files = [f for s in listing.batch_studies(batch.programme) for f in s.files]
    files.extend(listing.batch_orphans(batch.programme))
    rows = [
        {
            "partition_date": batch.day,
            "programme": batch.programme,
            "ref": f.ref,
            "study_instance_uid": f.study_instance_uid,
            "sop_instance_uid": f.sop_instance_uid,
            "problem": f.problem,
        }
        for f in files
    ]
    return frame_of(rows, SOURCE_FILES)


def source_files_of(frame: pl.DataFrame) -> list[SourceFile]:
    """`SourceFile`s back from a `batch_files` table."""
    return [
        SourceFile(r["ref"], r["study_instance_uid"], r["sop_instance_uid"], r["problem"])
        for r in frame.iter_rows(named=True)
    ]


class BatchFetcher(Protocol):
    """What a source offers beyond fetching one file: a batch path and a cheap checksum."""

    def fetch_many(
        self,
        files: Sequence[tuple[SourceFile, Path]],
        on_file: Callable[[SourceFile, Path], None],
    ) -> None:
        """Write each file to its path; call `on_file` once a file is complete."""

    def source_checksum(self, file: SourceFile) -> str | None:
        """SHA-256 of the file as the source holds it, when that is cheap to know; else None."""


class _OneByOne:
    """A plain fetch function as a `BatchFetcher`."""

    def __init__(self, fetch: Callable[[SourceFile, Path], None]) -> None:
        self._fetch = fetch

    def fetch_many(
        self,
        files: Sequence[tuple[SourceFile, Path]],
        on_file: Callable[[SourceFile, Path], None],
    ) -> None:
        for file, path in files:
            self._fetch(file, path)
            on_file(file, path)

    def source_checksum(self, file: SourceFile) -> str | None:
        return None


def batch_fetcher(fetch: Callable[[SourceFile, Path], None] | BatchFetcher) -> BatchFetcher:
    """A source's own batch path when `fetch` is a source, else one file at a time."""
    if _is_batch_fetcher(fetch):
        return cast(BatchFetcher, fetch)
    return _OneByOne(cast(Callable[[SourceFile, Path], None], fetch))


def _is_batch_fetcher(candidate: object) -> bool:
    return callable(getattr(candidate, "fetch_many", None)) and callable(
        getattr(candidate, "source_checksum", None)
    )


def _key(file: SourceFile) -> FileKey:
    return (file.ref, file.sop_instance_uid)


def _previous_landing(raw_dir: Path, manifest: Path) -> list[PreviousFile]:
    """The files of the last complete landing, as its manifest lists them; none without one."""
    if not manifest.is_file():
        return []
    try:
        frame = pl.read_parquet(manifest, columns=_MANIFEST_COLUMNS)
    except (OSError, pl.exceptions.PolarsError):
        return []  # an unreadable manifest: everything is fetched again
    return [
        PreviousFile(
            r["source_path"], r["sop_instance_uid"], raw_dir / r["landed_path"], r["sha256"]
        )
        for r in frame.iter_rows(named=True)
        if "/" not in r["landed_path"]
    ]


_MANIFEST_COLUMNS = ["source_path", "sop_instance_uid", "landed_path", "sha256"]


def land_files(
    files: Iterable[SourceFile],
    batch: Batch,
    fetch: Callable[[SourceFile, Path], None] | BatchFetcher,
    raw_dir: Path,
) -> pl.DataFrame:
    """Land the batch's files in `raw_dir` as <ordinal>.dcm and return their manifest.

    Incremental: a file already landed (same source reference and SOPInstanceUID, its landed
    copy intact by SHA-256, and, where the source can tell cheaply, the same checksum at the
    source) is taken over instead of fetched again, from the last complete landing or from a
    landing that failed part way. The folder is built beside the old one and swapped in whole,
    so readers never see a mix of two landings and nothing lands twice. When some files could
    not be fetched, raises (IncompleteLandingError, or the source's own error) and keeps what
    did land for the next run.
    """
    files = list(files)
    fetcher = batch_fetcher(fetch)
    journal = LandingJournal.open(raw_dir.with_name(raw_dir.name + ".staging"))
    previous = _previous_landing(raw_dir, raw_dir / raw_manifest_path(batch).name)
    journal.adopt(previous, {_key(f) for f in files})
    todo = []
    for file in files:
        entry = journal.get(_key(file))
        if entry is not None and fetcher.source_checksum(file) in (None, entry.sha256):
            continue
        todo.append((file, journal.new_path()))
    if todo:

        def record(file: SourceFile, path: Path) -> None:
            journal.record(file.ref, file.sop_instance_uid, path)

        fetcher.fetch_many(todo, record)
    missing = sum(1 for f in files if journal.get(_key(f)) is None)
    if missing:
        raise IncompleteLandingError(
            f"{missing} of {len(files)} files of the partition did not land; the "
            f"{len(files) - missing} that did are kept, and re-running the partition fetches "
            "only the rest"
        )
    landed = journal.finish([(_key(f), f"{i:06d}.dcm") for i, f in enumerate(files, start=1)])
    swap_in_folder(journal.staging, raw_dir)
    rows = [
        {
            "partition_date": batch.day,
            "programme": batch.programme,
            "ordinal": ordinal,
            "source_path": file.ref,
            "landed_path": entry.name,
            "size_bytes": entry.size,
            "sha256": entry.sha256,
            "study_instance_uid": file.study_instance_uid,
            "sop_instance_uid": file.sop_instance_uid,
            "problem": file.problem,
        }
        for ordinal, (file, entry) in enumerate(zip(files, landed, strict=True), start=1)
    ]
    return frame_of(rows, LANDED_INSTANCES)
