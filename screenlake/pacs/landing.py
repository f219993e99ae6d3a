"""What a batch's landing has already done, so that a re-run fetches only the rest.

A landing builds the batch's raw folder in a staging folder beside it and swaps it in whole when
every file is there. While it works, each file it finishes is appended to a journal in the
staging folder; a landing that fails (a PACS that goes down, an instance that cannot be
retrieved) leaves the staging folder and its journal behind, and the next landing picks them up.
Files of the previous complete landing (the raw folder and its manifest) are taken over by hard
link. A file is reused only when it is present and its SHA-256 is the one recorded for it.

Files in staging are named L<n>.dcm while the landing works, and get their ordinal names only at
the end, so that reused files never collide with the ordinals of a changed listing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from screenlake.fsutil import sha256_of

JOURNAL_NAME = "landing-journal.jsonl"
_WORK_PREFIX = "L"

# A landed file is known by where the source holds it and the SOPInstanceUID listed for it.
FileKey = tuple[str, str | None]


@dataclass(frozen=True)
class JournalEntry:
    """One landed file in the staging folder (ref and UID: PHI, kept in the PHI zone)."""

    ref: str
    sop_instance_uid: str | None
    name: str
    sha256: str
    size: int

    @property
    def key(self) -> FileKey:
        """The file's identity across landings."""
        return (self.ref, self.sop_instance_uid)


@dataclass(frozen=True)
class PreviousFile:
    """A file of the previous complete landing, as its manifest recorded it."""

    ref: str
    sop_instance_uid: str | None
    path: Path
    sha256: str


class LandingJournal:
    """The staging folder of one batch's landing and the files already in it."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self._entries: dict[FileKey, JournalEntry] = {}
        self._next = 1

    @classmethod
    def open(cls, staging: Path) -> LandingJournal:
        """The journal of `staging`, created if absent. Entries whose file is missing or differs
        from its checksum are dropped, and so is every file no entry names."""
        staging.mkdir(parents=True, exist_ok=True)
        journal = cls(staging)
        path = staging / JOURNAL_NAME
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                entry = _parse(line)
                if entry is not None and _intact(staging / entry.name, entry.sha256, entry.size):
                    journal._entries[entry.key] = entry
        keep = {e.name for e in journal._entries.values()} | {JOURNAL_NAME}
        for child in staging.iterdir():
            if child.name not in keep:
                _remove(child)
        journal._next = 1 + max(
            (_work_number(e.name) for e in journal._entries.values()), default=0
        )
        journal._rewrite()
        return journal

    def get(self, key: FileKey) -> JournalEntry | None:
        """The landed file for `key`, if there is one."""
        return self._entries.get(key)

    def __len__(self) -> int:
        return len(self._entries)

    def new_path(self) -> Path:
        """A fresh path in staging for a file about to be fetched."""
        name = f"{_WORK_PREFIX}{self._next:07d}.dcm"
        self._next += 1
        return self.staging / name

    def record(self, ref: str, sop_instance_uid: str | None, path: Path) -> JournalEntry:
        """Note that `path` in staging now holds the file for (ref, SOPInstanceUID)."""
        if path.parent != self.staging:
            raise ValueError("a landed file must be written into the landing's staging folder")
        entry = JournalEntry(ref, sop_instance_uid, path.name, sha256_of(path), path.stat().st_size)
        self._append(entry)
        return entry

    def _append(self, entry: JournalEntry) -> None:
        self._entries[entry.key] = entry
        with (self.staging / JOURNAL_NAME).open("a", encoding="utf-8") as handle:
            handle.write(_line(entry))

    def adopt(self, previous: Iterable[PreviousFile], wanted: set[FileKey]) -> int:
        """Link the previous landing's intact files that are still wanted into staging; returns
        how many were taken over."""
        adopted = 0
        for file in previous:
            key = (file.ref, file.sop_instance_uid)
            if key not in wanted or key in self._entries:
                continue
            if not file.path.is_file() or sha256_of(file.path) != file.sha256:
                continue
            target = self.new_path()
            try:
                os.link(file.path, target)
            except OSError:
                shutil.copyfile(file.path, target)  # a store without hard links
            size = target.stat().st_size
            self._append(
                JournalEntry(file.ref, file.sop_instance_uid, target.name, file.sha256, size)
            )
            adopted += 1
        return adopted

    def finish(self, ordered: list[tuple[FileKey, str]]) -> list[JournalEntry]:
        """Give each wanted file its final name in staging and remove everything else (other
        landings' leftovers and the journal); returns the entries with their final names."""
        final = []
        for key, name in ordered:
            entry = self._entries[key]
            os.replace(self.staging / entry.name, self.staging / name)
            final.append(
                JournalEntry(entry.ref, entry.sop_instance_uid, name, entry.sha256, entry.size)
            )
        keep = {name for _, name in ordered}
        for child in self.staging.iterdir():
            if child.name not in keep:
                _remove(child)
        self._entries = {}
        return final

    def placeholder(self, key: FileKey, name: str) -> JournalEntry:
        """An empty file named `name` in staging for a file that could not be had, so that it is
        quarantined and counted like any other; it is not journalled, so it is asked for again."""
        path = self.staging / name
        path.write_bytes(b"")
        return JournalEntry(key[0], key[1], name, sha256_of(path), 0)

    def _rewrite(self) -> None:
        # Compacts the journal to the entries that survived opening.
        text = "".join(_line(e) for e in self._entries.values())
        temporary = self.staging / (JOURNAL_NAME + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, self.staging / JOURNAL_NAME)


def _line(entry: JournalEntry) -> str:
    return (
        json.dumps(
            {
                "ref": entry.ref,
                "sop": entry.sop_instance_uid,
                "name": entry.name,
                "sha256": entry.sha256,
                "size": entry.size,
            }
        )
        + "\n"
    )


def _parse(line: str) -> JournalEntry | None:
    # A landing killed while appending leaves a partial last line: it is ignored.
    try:
        data = json.loads(line)
        entry = JournalEntry(
            str(data["ref"]),
            None if data["sop"] is None else str(data["sop"]),
            str(data["name"]),
            str(data["sha256"]),
            int(data["size"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    if "/" in entry.name or not entry.name.startswith(_WORK_PREFIX):
        return None
    return entry


def _intact(path: Path, sha256: str, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size and sha256_of(path) == sha256


def _work_number(name: str) -> int:
    try:
        return int(name[len(_WORK_PREFIX) :].split(".")[0])
    except ValueError:
        return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
