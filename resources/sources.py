"""Where studies come from. Assets depend on `StudySource`; configuration picks the kind (an
export drop folder, DICOMweb in `resources/dicomweb.py`, DIMSE in `resources/dimse.py`), so
adding a source never touches an asset.

Three methods make a source: `available_days`, `list_day`, `fetch`. Two more have defaults a
source overrides when it can do better: `fetch_many` (a batch over a few connections, which
`land_files` uses when the source offers it) and `source_checksum` (what an incremental landing
compares a landed file with). `day_summaries` tells a sensor which days gained studies.
`store` sends instances (our findings reports) back; a source that cannot store raises
NotImplementedError, and the caller keeps the instances elsewhere.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import pydicom

from screenlake.errors import UnreadableInstanceError
from screenlake.fsutil import sha256_of
from screenlake.ingest import (
    LINK_NOWHERE,
    LINK_OUT_OF_DROP,
    NOT_A_FILE,
    DayListing,
    SourceFile,
    drop_day_summary,
    fetch_each,
    scan_drop_day,
    unreadable_reason,
)
from screenlake.pacs.store import StoreOutcome

DAY_FOLDER_FORMAT = "%Y%m%d"
# Long enough for a PACS export writing one file at a time to show progress in its size.
DEFAULT_SETTLE_SECONDS = 30.0


class StudySource(dg.ConfigurableResource, ABC):
    """A source of studies: which days it holds, what each day holds, and how to fetch a file."""

    @abstractmethod
    def available_days(self) -> list[date]:
        """Days for which the source holds studies, oldest first."""

    @abstractmethod
    def list_day(self, day: date) -> DayListing:
        """Every file of `day`, grouped into routed studies and unclaimed files."""

    @abstractmethod
    def fetch(self, file: SourceFile, destination: Path) -> None:
        """Write the bytes of `file` to `destination`."""

    def fetch_many(
        self,
        files: Sequence[tuple[SourceFile, Path]],
        on_file: Callable[[SourceFile, Path], None],
        on_problem: Callable[[SourceFile, str], None],
    ) -> None:
        """Write each file to its path, calling `on_file` (in the calling thread) as each one
        completes, or `on_problem` with a reason that names no path when that one file cannot
        be had (gone since listing, unreadable, a link out of the source). The default fetches
        one at a time; PACS sources spread the work over a few connections and raise when some
        files could not be retrieved."""
        fetch_each(self.fetch, files, on_file, on_problem)

    def source_checksum(self, file: SourceFile) -> str | None:
        """SHA-256 of `file` as the source holds it, where that is cheap; None otherwise (a PACS
        cannot say without sending the file, so an instance landed intact is trusted)."""
        return None

    def day_summaries(self) -> dict[date, str]:
        """For each available day, a short text that changes when the day gains, loses or
        changes files: a sensor compares it with what the day's last run saw. Counts and
        digests only, never identifiers."""
        return {day: "" for day in self.available_days()}

    def day_summary(self, day: date) -> str:
        """`day_summaries()[day]` for one day ("" for a day the source does not hold); a source
        overrides it where one day is cheaper to summarise than all of them."""
        return self.day_summaries().get(day, "")

    def store(self, datasets: Sequence[pydicom.Dataset]) -> list[StoreOutcome]:
        """Send `datasets` to the source, one outcome per instance in the same order. The default
        cannot: a folder export has no way back into the PACS, so it raises NotImplementedError
        and the caller writes the instances somewhere a person can import them from."""
        raise NotImplementedError(f"{type(self).__name__} cannot store instances")


class ExportDropSource(StudySource):
    """A folder that a PACS export drops into, one sub-folder per day named YYYYMMDD.

    A file is taken only once it has stopped changing: listing a day waits out
    `settle_seconds` when some file was modified within it, and a file whose size or
    modification time changed meanwhile is listed as still arriving and not landed.
    """

    root: str
    settle_seconds: float = DEFAULT_SETTLE_SECONDS

    def _root(self) -> Path:
        root = Path(self.root).resolve()
        if not root.is_dir():
            raise FileNotFoundError(
                "the export drop folder configured as SCREENLAKE_DROP does not exist; "
                "create it or point the setting at the PACS export folder"
            )
        return root

    def available_days(self) -> list[date]:
        """Day folders present in the drop."""
        days = []
        for entry in self._root().iterdir():
            try:
                days.append(datetime.strptime(entry.name, DAY_FOLDER_FORMAT).date())
            except ValueError:
                continue
        return sorted(days)

    def list_day(self, day: date) -> DayListing:
        """Read the headers of the day folder's files and route their studies."""
        return scan_drop_day(
            self._root() / day.strftime(DAY_FOLDER_FORMAT), day, self.settle_seconds
        )

    def _resolve(self, file: SourceFile) -> Path:
        """The drop's regular file behind `file`; UnreadableInstanceError (naming no path)
        when it is gone, a link that leads out of the drop or nowhere, or not a file."""
        root = self._root()
        try:
            source = (root / file.ref).resolve(strict=True)
        except FileNotFoundError:
            raise UnreadableInstanceError(
                "gone from the export drop between listing and landing"
            ) from None
        except (OSError, RuntimeError):  # RuntimeError: a link loop, in Python before 3.13
            raise UnreadableInstanceError(LINK_NOWHERE) from None
        if root not in source.parents:
            raise UnreadableInstanceError(LINK_OUT_OF_DROP)
        if not source.is_file():
            raise UnreadableInstanceError(NOT_A_FILE)
        return source

    def fetch(self, file: SourceFile, destination: Path) -> None:
        """Copy one file of the drop; UnreadableInstanceError (naming no path) when that file
        cannot be had."""
        source = self._resolve(file)
        try:
            shutil.copyfile(source, destination)
        except OSError as error:
            raise UnreadableInstanceError(unreadable_reason(error)) from None

    def source_checksum(self, file: SourceFile) -> str | None:
        """SHA-256 of the drop's file: a local read, so a file re-exported with other bytes is
        landed again. None when the file cannot be read: fetching it then says why."""
        try:
            return sha256_of(self._resolve(file))
        except (UnreadableInstanceError, OSError):
            return None

    def day_summaries(self) -> dict[date, str]:
        """Each day folder's file count and a digest of its files' sizes and times."""
        return {day: self.day_summary(day) for day in self.available_days()}

    def day_summary(self, day: date) -> str:
        """One day folder's file count and a digest of its files' sizes and times."""
        folder = self._root() / day.strftime(DAY_FOLDER_FORMAT)
        return drop_day_summary(folder) if folder.is_dir() else ""
