"""The filter that keeps UIDs and request URLs out of the network libraries' logs."""

from __future__ import annotations

import logging
import sys

import pytest

from screenlake.pacs.redaction import RedactingFilter, redact, redact_library_logs

UID = "1.2.826.0.1.3680043.8.498.7730911.1.09"


def test_uids_and_url_paths_are_taken_out() -> None:
    text = (
        f"Non-conformant 'Affected SOP Instance UID' value '{UID}'; "
        f"url=https://pacs.example.org:8443/dicom-web/studies/{UID}/series?x=1 failed"
    )
    redacted = redact(text)
    assert "7730911" not in redacted
    assert "dicom-web" not in redacted
    assert "https://pacs.example.org:8443/..." in redacted
    assert "'<UID>'" in redacted


@pytest.mark.parametrize("kept", ["127.0.0.1:4242", "pynetdicom 3.0.4", "0x0122", "2024-03-11"])
def test_addresses_versions_and_statuses_are_kept(kept: str) -> None:
    assert redact(f"association to {kept} failed") == f"association to {kept} failed"


def test_a_record_loses_its_arguments_and_its_traceback() -> None:
    try:
        raise ValueError(f"Invalid 'SOP Instance UID' value '{UID}'")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "pynetdicom.events", logging.ERROR, "x.py", 1, "%s", (UID,), exc_info
    )

    assert RedactingFilter().filter(record)

    assert record.getMessage() == "<UID> (ValueError)"
    assert record.exc_info is None
    assert "7730911" not in logging.Formatter().format(record)


def test_the_libraries_module_loggers_carry_the_filter(caplog: pytest.LogCaptureFixture) -> None:
    import pynetdicom.utils  # noqa: F401  (its logger exists once it is imported)

    import resources.dimse  # noqa: F401  (installs the filter)

    redact_library_logs()  # again: harmless
    logger = logging.getLogger("pynetdicom.utils")
    assert sum(isinstance(f, RedactingFilter) for f in logger.filters) == 1
    with caplog.at_level(logging.WARNING):
        logger.warning("Non-conformant 'Affected SOP Instance UID' value '%s'", UID)
    assert "7730911" not in caplog.text
    assert "<UID>" in caplog.text
