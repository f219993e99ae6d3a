"""screenlake's domain library: the logic the assets and the CLI share. It imports no Dagster."""

from __future__ import annotations

import pydicom.config

# pydicom's value-validation warnings quote the offending value, and in an original that value
# can be an identifier (a malformed UID, a name in the wrong attribute). screenlake checks the
# values it keeps itself and never logs a value, so pydicom's reading checks stay silent.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
