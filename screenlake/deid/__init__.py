"""De-identification of DICOM instances for the research zone (DICOM PS3.15 Annex E).

`profile` derives the action per attribute from the packaged PS3.15 Table E.1-1 under a
versioned deployment profile; `engine` applies it to one instance. No Dagster here: the
`deidentified_instances` asset and the `screenlake deidentify` CLI both call these functions.
"""

from __future__ import annotations

from screenlake.deid.engine import (
    DeidentifiedResult,
    deidentify_dataset,
    deidentify_file,
    read_instance,
    write_deidentified,
)
from screenlake.deid.profile import Action, Profile, load_default_profile, load_profile

__all__ = [
    "Action",
    "DeidentifiedResult",
    "Profile",
    "deidentify_dataset",
    "deidentify_file",
    "load_default_profile",
    "load_profile",
    "read_instance",
    "write_deidentified",
]
