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

from screenlake.fsutil import sha256_of
from screenlake.ingest import DayListing, SourceFile, scan_drop_day
from screenlake.pacs.store import StoreOutcome

DAY_FOLDER_FORMAT = "%Y%m%d"


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
    ) -> None:
        """Write each file to its path, calling `on_file` (in the calling thread) as each one
        completes. The default fetches one at a time; PACS sources spread the work over a few
        connections and raise when some files could not be retrieved."""
        for file, path in files:
            self.fetch(file, path)
            on_file(file, path)

    def source_checksum(self, file: SourceFile) -> str | None:
        """SHA-256 of `file` as the source holds it, where that is cheap; None otherwise (a PACS
        cannot say without sending the file, so an instance landed intact is trusted)."""
        return None

    def day_summaries(self) -> dict[date, str]:
        """For each available day, a short text that changes when the day gains studies or
        files: a sensor compares it with its cursor. Counts only, never identifiers."""
        return {day: "" for day in self.available_days()}

    def store(self, datasets: Sequence[pydicom.Dataset]) -> list[StoreOutcome]:
        """Send `datasets` to the source, one outcome per instance in the same order. The default
        cannot: a folder export has no way back into the PACS, so it raises NotImplementedError
        and the caller writes the instances somewhere a person can import them from."""
        raise NotImplementedError(f"{type(self).__name__} cannot store instances")


class ExportDropSource(StudySource):
    """A folder that a PACS export drops into, one sub-folder per day named YYYYMMDD."""

    root: str

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
        return scan_drop_day(self._root() / day.strftime(DAY_FOLDER_FORMAT), day)

    def _resolve(self, file: SourceFile) -> Path:
        root = self._root()
        source = (root / file.ref).resolve()
        if root not in source.parents:
            raise ValueError("a drop file reference points outside the export drop")
        return source

    def fetch(self, file: SourceFile, destination: Path) -> None:
        """Copy one file of the drop."""
        source = self._resolve(file)
        if not source.is_file():
            raise FileNotFoundError("a file listed in the export drop disappeared before landing")
        shutil.copyfile(source, destination)

    def source_checksum(self, file: SourceFile) -> str | None:
        """SHA-256 of the drop's file: a local read, so a file re-exported with other bytes is
        landed again."""
        source = self._resolve(file)
        return sha256_of(source) if source.is_file() else None

    def day_summaries(self) -> dict[date, str]:
        """Files per day folder."""
        root = self._root()
        summaries = {}
        for day in self.available_days():
            folder = root / day.strftime(DAY_FOLDER_FORMAT)
            summaries[day] = f"files={sum(1 for p in folder.rglob('*') if p.is_file())}"
        return summaries
