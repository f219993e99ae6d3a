"""Keeping UIDs and request URLs out of what the network libraries log.

pynetdicom logs a non-conformant UID it was sent ("Non-conformant 'Affected SOP Instance UID'
value '1.2...'"), urllib3 a request URL when it cannot parse an answer's headers (a WADO-RS
URL names the study, series and instance). Their WARNING and ERROR records reach the compute
logs that Dagster keeps outside the PHI zone. A filter on their loggers rewrites each record
before any handler sees it: UIDs become "<UID>", a URL keeps only its scheme and host, and a
traceback attached to the record is replaced by its exception's type. (pydicom's checks of the
values it reads, which quote them, are off for the whole package: see `screenlake/__init__.py`.)
"""

from __future__ import annotations

import logging
import re

# Five or more dot-separated numbers: a UID, never an IPv4 address or a version.
_UID = re.compile(r"\d+(?:\.\d+){4,}")
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s'\"<>]+)[^\s'\"<>]*")
LIBRARIES = ("pynetdicom", "dicomweb_client", "urllib3", "requests", "botocore")


def redact(text: str) -> str:
    """`text` with UIDs and the paths and queries of URLs taken out."""
    return _UID.sub("<UID>", _URL.sub(r"\1/...", text))


class RedactingFilter(logging.Filter):
    """Rewrites a record's message through `redact` and drops its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            message = f"{message} ({record.exc_info[0].__name__})"
        record.msg, record.args = redact(message), None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


_FILTER = RedactingFilter()


def redact_library_logs(libraries: tuple[str, ...] = LIBRARIES) -> None:
    """Put the filter on each library's logger and on every logger below it that exists now
    (a filter on a logger does not see its children's records). Call it after importing the
    libraries; calling it again is harmless."""
    loggers = [logging.getLogger(name) for name in libraries] + [
        logger
        for name, logger in list(logging.root.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and name.split(".")[0] in libraries
    ]
    for logger in loggers:
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
