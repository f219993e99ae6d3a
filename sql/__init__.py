"""The lake's SQL: analysts' views in `views/*.sql`, shipped as package data so that an
installed copy finds them where a checkout does."""

from __future__ import annotations

from pathlib import Path


def sql_root() -> Path:
    """The folder holding the SQL files (`views/` and queries loaded by name)."""
    return Path(__file__).resolve().parent
