"""Assertions that an error names no patient: what Dagster records of a failed step is the
exception's message, its traceback and its chain, so all three are searched."""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from urllib.parse import quote


def leaks(text: str, identifiers: Iterable[str]) -> list[str]:
    """The identifiers `text` holds, as written or URL-encoded (botocore and requests put
    object keys and UIDs into URLs)."""
    return [i for i in identifiers if i in text or quote(i, safe="") in text]


def assert_names_none(error: BaseException, identifiers: Iterable[str]) -> None:
    """Neither `str`, `repr` nor the formatted traceback with its whole chain of `error`
    holds any of `identifiers`."""
    wanted = list(identifiers)
    texts = {
        "str": str(error),
        "repr": repr(error),
        "traceback": "".join(traceback.format_exception(error)),
    }
    found = {where: leaks(text, wanted) for where, text in texts.items()}
    assert not any(found.values()), f"identifiers in the error: {found}\n{texts['traceback']}"
