"""De-identification settings: which profile applies and how many processes share the work."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from screenlake.deid.profile import Profile, load_default_profile, load_profile


class DeidentificationSettings(dg.ConfigurableResource):
    """The deployment's de-identification profile (a versioned file) and worker count."""

    profile_path: str | None = None
    workers: int = 0

    def profile(self) -> Profile:
        """The configured profile, or the shipped default when none is configured."""
        return (
            load_profile(Path(self.profile_path)) if self.profile_path else load_default_profile()
        )

    def worker_count(self) -> int:
        """Processes to use: the configured number, or every core when 0."""
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)
