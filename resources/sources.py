"""Where studies come from. Assets depend on `StudySource`; configuration picks the kind
(an export drop folder now; DICOMweb, DIMSE and object-store drops implement the same three
methods), so adding a source never touches an asset."""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from datetime import date, datetime
from pathlib import Path

import dagster as dg

from screenlake.ingest import DayListing, SourceFile, scan_drop_day

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

    def fetch(self, file: SourceFile, destination: Path) -> None:
        """Copy one file of the drop."""
        root = self._root()
        source = (root / file.ref).resolve()
        if root not in source.parents:
            raise ValueError("a drop file reference points outside the export drop")
        if not source.is_file():
            raise FileNotFoundError("a file listed in the export drop disappeared before landing")
        shutil.copyfile(source, destination)
