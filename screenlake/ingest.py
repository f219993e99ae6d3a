"""Finding a day's studies in an export drop, routing them to programmes, and landing their files.

Everything here handles identifying data and runs in the PHI zone. Files that cannot be read or
routed are not dropped: they travel as `SourceFile`s with a `problem` and end in quarantine.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import struct
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal, Protocol, cast, overload

import polars as pl
import pydicom
from pydicom.errors import InvalidDicomError

from screenlake.errors import IncompleteLandingError, UnreadableInstanceError
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
    "IssuerOfPatientID",
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
    # Whose patient ID it is; objections are matched on issuer and ID (screenlake.objections).
    issuer_of_patient_id: str | None = None


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
    issuer_of_patient_id: str | None = None
    accession_number: str | None = None
    study_date: date | None = None
    modality: str | None = None
    body_part: str | None = None


_EMPTY_FILE = "empty file (0 bytes)"


def read_routing_header(path: Path, ref: str) -> _Header:
    """The routing attributes of one file, read without its pixels; unreadable files carry why."""
    try:
        if path.stat().st_size == 0:
            return _Header(SourceFile(ref, problem=_EMPTY_FILE))
        with path.open("rb") as handle:
            return _parse_routing_header(handle, ref)
    except OSError as error:
        return _Header(SourceFile(ref, problem=unreadable_reason(error)))


def unreadable_reason(error: OSError) -> str:
    """Why a file could not be read, from its OSError, naming neither the file nor its path
    (an OSError's text holds the path, and export drops name folders after patients)."""
    if isinstance(error, FileNotFoundError):
        return "gone from the source between listing and reading"
    if isinstance(error, PermissionError):
        return "cannot be read: permission denied"
    if isinstance(error, IsADirectoryError):
        return "a folder where a file was listed"
    name = errno.errorcode.get(error.errno, "unknown error") if error.errno else "unknown error"
    return f"cannot be read: {name}"


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
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
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
        # A damaged file that joined by its folder carries the study it belongs to, so that the
        # landed manifest says whose it is (an erasure must find it).
        files = tuple(
            sorted((replace(h.file, study_instance_uid=uid) for h in members), key=lambda f: f.ref)
        )
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
                issuer_of_patient_id=first.issuer_of_patient_id,
            )
        )
    return DayListing(
        day=day, studies=tuple(studies), orphans=tuple(sorted(orphans, key=lambda f: f.ref))
    )


STILL_ARRIVING = "still being written when the day was listed"
LINK_OUT_OF_DROP = "a symbolic link to outside the export drop: not followed"
LINK_TO_FOLDER = "a symbolic link to a folder: not followed (export the files themselves)"
LINK_NOWHERE = "a symbolic link that leads nowhere (dangling, or a loop)"
NOT_A_FILE = "not a regular file (a pipe, socket or device)"
FOLDER_UNLISTABLE = "a folder of the drop that cannot be listed: its files are unknown"


@dataclass(frozen=True)
class DropEntry:
    """One entry of a drop's day folder: its path (PHI), its reference relative to the drop's
    root, and why it cannot be taken as a file, if it cannot."""

    path: Path
    ref: str
    problem: str | None = None


def drop_day_entries(day_dir: Path, root: Path) -> list[DropEntry]:
    """Every entry of a drop's day folder that stands for a file, in path order.

    Symbolic links are taken only when they lead to a file inside the drop; any other link, a
    pipe or device, and a folder that cannot be listed is an entry with a problem, so that it
    is quarantined and counted rather than dropped.
    """
    entries: list[DropEntry] = []

    def ref_of(path: Path) -> str:
        return path.relative_to(day_dir.parent).as_posix()

    def unlistable(error: OSError) -> None:
        if error.filename is not None:
            entries.append(
                DropEntry(Path(error.filename), ref_of(Path(error.filename)), FOLDER_UNLISTABLE)
            )

    for folder, folders, names in os.walk(day_dir, onerror=unlistable):
        here = Path(folder)
        for name in folders:
            if (here / name).is_symlink():
                entries.append(_link_entry(here / name, ref_of(here / name), root))
        for name in names:
            path = here / name
            if path.is_symlink():
                entries.append(_link_entry(path, ref_of(path), root))
            else:
                entries.append(DropEntry(path, ref_of(path), _file_problem(path)))
    return sorted(entries, key=lambda e: e.ref)


def _file_problem(path: Path) -> str | None:
    try:
        mode = path.lstat().st_mode
    except OSError as error:
        return unreadable_reason(error)
    return None if stat.S_ISREG(mode) else NOT_A_FILE


def _link_entry(path: Path, ref: str, root: Path) -> DropEntry:
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a loop, in Python before 3.13
        return DropEntry(path, ref, LINK_NOWHERE)
    if root not in target.parents:
        return DropEntry(path, ref, LINK_OUT_OF_DROP)
    if target.is_dir():
        return DropEntry(path, ref, LINK_TO_FOLDER)
    if not target.is_file():
        return DropEntry(path, ref, NOT_A_FILE)
    return DropEntry(path, ref)


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_size, status.st_mtime_ns)


def still_arriving(
    entries: Sequence[DropEntry], settle_seconds: float, sleep: Callable[[float], None]
) -> set[str]:
    """References of the files that changed (size or modification time) over the settle
    interval, waited out only when some file was modified within it."""
    files = [e for e in entries if e.problem is None]
    before = {e.ref: _file_state(e.path) for e in files}
    newest = max((s[1] for s in before.values() if s is not None), default=0)
    wait = settle_seconds - (time.time_ns() - newest) / 1e9
    if settle_seconds <= 0 or wait <= 0:
        return set()
    sleep(min(wait, settle_seconds))
    return {e.ref for e in files if _file_state(e.path) != before[e.ref]}


def scan_drop_day(
    day_dir: Path,
    day: date,
    settle_seconds: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> DayListing:
    """List one day folder of an export drop; an absent folder is a day without studies.

    A file that changes within `settle_seconds` is still being copied in: it is listed with
    that problem, not read, and lands as a placeholder, so that the run the sensor starts once
    the copy is complete takes it whole.
    """
    if not day_dir.exists():
        return DayListing(day=day, studies=(), orphans=())
    if not day_dir.is_dir():
        raise NotADirectoryError(f"the export drop's day entry {day.isoformat()} is not a folder")
    # References are relative to the drop's root, so that the drop alone can fetch them.
    entries = drop_day_entries(day_dir, day_dir.parent.resolve())
    arriving = still_arriving(entries, settle_seconds, sleep)
    headers = [
        _Header(SourceFile(e.ref, problem=e.problem))
        if e.problem
        else _Header(
            SourceFile(
                e.ref,
                problem=f"{STILL_ARRIVING} (it changed within {settle_seconds:g} s); "
                "a later run lands it",
            )
        )
        if e.ref in arriving
        else read_routing_header(e.path, e.ref)
        for e in entries
    ]
    return list_day(day, headers)


def drop_day_summary(day_dir: Path) -> str:
    """A summary of a drop's day folder that changes when a file is added, removed, grows or is
    rewritten: the count and a digest of the files' sizes and modification times (no names)."""
    states = sorted(
        (_file_state(e.path) or (-1, -1)) if e.problem is None else (-1, -1)
        for e in drop_day_entries(day_dir, day_dir.parent.resolve())
    )
    digest = hashlib.sha256(repr(states).encode()).hexdigest()[:16]
    return f"files={len(states)};state={digest}"


def is_still_arriving(problem: str | None) -> bool:
    """Whether a listed file's problem is that it was still being copied in."""
    return problem is not None and problem.startswith(STILL_ARRIVING)


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
        on_problem: Callable[[SourceFile, str], None],
    ) -> None:
        """Write each file to its path; call `on_file` once a file is complete, or
        `on_problem` with the reason (naming no path) when one file cannot be had at all."""

    def source_checksum(self, file: SourceFile) -> str | None:
        """SHA-256 of the file as the source holds it, when that is cheap to know; else None."""


def fetch_each(
    fetch: Callable[[SourceFile, Path], None],
    files: Sequence[tuple[SourceFile, Path]],
    on_file: Callable[[SourceFile, Path], None],
    on_problem: Callable[[SourceFile, str], None],
) -> None:
    """Fetch files one at a time: a file the source says cannot be had (UnreadableInstanceError:
    gone, unreadable, a link out of the source) goes to `on_problem`, and the rest go on."""
    for file, path in files:
        try:
            fetch(file, path)
        except UnreadableInstanceError as problem:
            path.unlink(missing_ok=True)
            on_problem(file, str(problem))
            continue
        on_file(file, path)


class _OneByOne:
    """A plain fetch function as a `BatchFetcher`."""

    def __init__(self, fetch: Callable[[SourceFile, Path], None]) -> None:
        self._fetch = fetch

    def fetch_many(
        self,
        files: Sequence[tuple[SourceFile, Path]],
        on_file: Callable[[SourceFile, Path], None],
        on_problem: Callable[[SourceFile, str], None],
    ) -> None:
        fetch_each(self._fetch, files, on_file, on_problem)

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
        # An empty file that listing did not find empty stands for one that could not be had:
        # it is asked for again.
        if "/" not in r["landed_path"] and (r["size_bytes"] > 0 or r["problem"] == _EMPTY_FILE)
    ]


_MANIFEST_COLUMNS = [
    "source_path",
    "sop_instance_uid",
    "landed_path",
    "sha256",
    "size_bytes",
    "problem",
]


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
    so readers never see a mix of two landings and nothing lands twice.

    A file the source says cannot be had (gone since listing, unreadable, a link out of the
    drop), or one still being copied in when listed, is one file's problem, not the
    partition's: it lands as an empty file with the reason as its problem, so that it is quarantined and counted, and the next run
    asks for it again. When the source fails otherwise, raises (IncompleteLandingError, or the
    source's own error) and keeps what did land for the next run.
    """
    files = list(files)
    fetcher = batch_fetcher(fetch)
    journal = LandingJournal.open(raw_dir.with_name(raw_dir.name + ".staging"))
    previous = _previous_landing(raw_dir, raw_dir / raw_manifest_path(batch).name)
    journal.adopt(previous, {_key(f) for f in files})
    # A file still being copied in when listed is not taken half-written.
    unobtainable = {_key(f): f.problem for f in files if f.problem and is_still_arriving(f.problem)}
    todo = []
    for file in files:
        entry = journal.get(_key(file))
        if _key(file) in unobtainable or (
            entry is not None and fetcher.source_checksum(file) in (None, entry.sha256)
        ):
            continue
        todo.append((file, journal.new_path()))
    if todo:

        def record(file: SourceFile, path: Path) -> None:
            journal.record(file.ref, file.sop_instance_uid, path)

        def note_problem(file: SourceFile, reason: str) -> None:
            unobtainable[_key(file)] = reason

        fetcher.fetch_many(todo, record, note_problem)
    missing = sum(1 for f in files if _key(f) not in unobtainable and journal.get(_key(f)) is None)
    if missing:
        raise IncompleteLandingError(
            f"{missing} of {len(files)} files of the partition did not land; the "
            f"{len(files) - missing} that did are kept, and re-running the partition fetches "
            "only the rest"
        )
    names = {_key(f): f"{i:06d}.dcm" for i, f in enumerate(files, start=1)}
    kept = journal.finish([(k, name) for k, name in names.items() if k not in unobtainable])
    by_key = {entry.key: entry for entry in kept}
    for key in unobtainable:
        by_key[key] = journal.placeholder(key, names[key])
    swap_in_folder(journal.staging, raw_dir)
    landed = [by_key[_key(f)] for f in files]
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
            # What listing found out is the better reason; fetching only confirms it.
            "problem": file.problem or unobtainable.get(_key(file)),
        }
        for ordinal, (file, entry) in enumerate(zip(files, landed, strict=True), start=1)
    ]
    return frame_of(rows, LANDED_INSTANCES)
