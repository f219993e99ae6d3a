"""Storage roots of the two zones. Each zone is its own resource, so each can have its own
credentials; asset code asks a zone for paths and never builds one from the environment."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import dagster as dg


class ZoneStore(dg.ConfigurableResource):
    """A zone's storage root: a local folder (object storage arrives with the PACS issue)."""

    name: str
    root: str

    def path(self, relative: PurePosixPath | str = "") -> Path:
        """The absolute local path of `relative` inside the zone; refuses paths that leave it."""
        base = Path(self.root).resolve()
        target = (base / str(relative)).resolve()
        if target != base and base not in target.parents:
            raise ValueError(f"path {relative!s} leaves the {self.name} zone")
        return target
