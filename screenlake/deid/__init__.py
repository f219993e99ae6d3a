"""De-identification of DICOM instances for the research zone (DICOM PS3.15 Annex E).

`profile` derives the action per attribute from the packaged PS3.15 Table E.1-1 under a
versioned deployment profile (`profile_file` reads and validates it); `engine` applies it to
one instance: `reading` (read, file-level quarantine reasons), `elements` (per-element actions
at every depth), `dates`, `uids`, `private` (safe private allow-list), `descriptors` (cleaning
text of identifiers), `content` (SR and presentation-state structure), `filemeta`, and
`pixels` for pixels that may carry identity. No Dagster here: the `deidentified_instances`
asset and the `screenlake deidentify` CLI both call these functions through `batch`.
"""

from __future__ import annotations

from screenlake.deid.engine import (
    DeidentifiedResult,
    deidentify_dataset,
    deidentify_file,
    write_deidentified,
)
from screenlake.deid.profile import Action, Profile, load_default_profile, load_profile
from screenlake.deid.reading import read_instance

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
