"""Local resources for a graph materialised in a test: the export drop and both zones in `root`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestration.resources import resources_for


def local_resources(drop: Path, root: Path, **extra: str) -> dict[str, Any]:
    """The `local` environment's resources with the drop at `drop` and the zones under `root`."""
    return resources_for(
        "local",
        {
            "SCREENLAKE_DROP": str(drop),
            "SCREENLAKE_PHI_ZONE": str(root / "phi"),
            "SCREENLAKE_RESEARCH_ZONE": str(root / "research"),
            "SCREENLAKE_DEID_WORKERS": "2",
            **extra,
        },
    )
