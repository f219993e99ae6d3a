"""Storage roots of the two zones. Each zone is its own resource, so each can have its own
credentials; asset code asks a zone for paths and never builds one from the environment.

A zone is a local folder or an object-store location (`s3://bucket/prefix`). Assets work on
local paths either way: on object storage, through a working copy that they `pull` before
reading and `push` after writing (see `screenlake.objectstore.mirror`). On a local zone both
are no-ops. The working copy of the PHI zone holds PHI: it belongs on restricted storage,
like the zone itself.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from resources.run_binding import bind_step, require_run_in_progress
from screenlake.errors import ConfigurationError
from screenlake.objectstore.access import DEFAULT_REGION, S3Access, require_bucket
from screenlake.objectstore.location import S3Location, is_s3_uri, parse_s3_uri


class ZoneStore(dg.ConfigurableResource):
    """A zone's storage: a local folder, or an S3 location worked on through a local copy."""

    name: str
    root: str
    working_copy: str | None = None
    endpoint_url: str | None = None
    region: str = DEFAULT_REGION
    credentials_env: str = ""
    _client: Any = PrivateAttr(default=None)
    _run: tuple[dg.DagsterInstance, str] | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """In a run's step: bind the step to its run (`resources.run_binding.bind_step`)."""
        if context.instance is not None and context.run is not None:
            bind_step(context.instance, context.run.run_id)
            self._run = (context.instance, context.run.run_id)

    def require_run_in_progress(self) -> None:
        """Raise RunEndedError when the run this zone was set up for has ended: a step that
        outlived its run publishes nothing."""
        if self._run is not None:
            require_run_in_progress(*self._run)

    @property
    def is_remote(self) -> bool:
        """Whether the zone lives in an object store."""
        return is_s3_uri(self.root)

    def location(self) -> S3Location:
        """The zone's bucket and prefix; only for a zone on object storage."""
        return parse_s3_uri(self.root, f"the {self.name} zone's root")

    def access(self) -> S3Access:
        """Endpoint, region and the variables holding this zone's own credentials."""
        return S3Access(self.endpoint_url, self.region, self.credentials_env)

    def _local_root(self) -> Path:
        if not self.is_remote:
            return Path(self.root).resolve()
        if not self.working_copy:
            raise ConfigurationError(
                f"the {self.name} zone is on object storage ({self.root}) but has no local "
                "working copy: set the zone's working-copy folder"
            )
        return Path(self.working_copy).resolve()

    def path(self, relative: PurePosixPath | str = "") -> Path:
        """The local path of `relative` (in the working copy, for a zone on object storage);
        refuses paths that leave the zone. Nothing is transferred: see `pull` and `push`."""
        base = self._local_root()
        target = (base / str(relative)).resolve()
        if target != base and base not in target.parents:
            # The path itself is not quoted: in the PHI zone it may come from a drop's names.
            raise ValueError(f"a path asked of the {self.name} zone leaves the {self.name} zone")
        return target

    def uri(self, relative: PurePosixPath | str = "") -> str:
        """Where `relative` lives: `s3://bucket/key`, or the local path."""
        if self.is_remote:
            self.path(relative)  # the same containment check as for local paths
            return self.location().uri(relative)
        return str(self.path(relative))

    def _connected(self) -> Any:
        if self._client is None:
            client = self.access().client()
            require_bucket(client, self.location(), self.access(), f"the {self.name} zone")
            self._client = client
        return self._client

    def pull(self, relative: PurePosixPath | str) -> Path:
        """Bring `relative` (a file or a folder) from the store into the working copy and
        return its local path; the local path of a local zone as it is."""
        target = self.path(relative)
        if self.is_remote:
            from screenlake.objectstore.mirror import pull

            pull(
                self._connected(),
                self.location(),
                self._relative(target),
                self._local_root(),
                role=f"the {self.name} zone",
            )
        return target

    def push(self, relative: PurePosixPath | str) -> None:
        """Make the store hold exactly what the working copy holds at `relative`; nothing for
        a local zone. In a run that has ended, raises RunEndedError instead: a step that
        outlived its run publishes nothing more, and records no materialisation."""
        self.require_run_in_progress()
        target = self.path(relative)
        if self.is_remote:
            from screenlake.objectstore.mirror import push

            push(
                self._connected(),
                self.location(),
                self._relative(target),
                self._local_root(),
                role=f"the {self.name} zone",
            )

    def forget_history(self, relative: PurePosixPath | str) -> list[tuple[str, str]]:
        """On a zone in a versioned bucket, delete the earlier versions and delete markers at
        `relative` once a push has made the store hold what the working copy holds, so that
        what was removed cannot be restored from the bucket; the key and version ID of each
        that went (none for a local zone, or a bucket without versioning)."""
        self.require_run_in_progress()
        if not self.is_remote:
            return []
        from screenlake.objectstore.mirror import forget_history

        return forget_history(
            self._connected(),
            self.location(),
            self._relative(self.path(relative)),
            role=f"the {self.name} zone",
        )

    def _relative(self, target: Path) -> PurePosixPath:
        return PurePosixPath(target.relative_to(self._local_root()).as_posix())
