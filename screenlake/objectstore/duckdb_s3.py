"""DuckDB over Parquet in an object store: the httpfs extension and a secret scoped to one
location, made from that location's own credentials.

The extension comes from the pinned `duckdb-extension-httpfs` wheel, the binary that matches
the pinned DuckDB, so nothing is downloaded at run time (hospital networks rarely allow it);
DuckDB checks the binary's signature when it loads it. The secret is TEMPORARY: credentials
live in the connection only and are never written into the database file.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import duckdb

from screenlake.errors import ConfigurationError
from screenlake.objectstore.access import S3Access
from screenlake.objectstore.location import S3Location


def httpfs_binary() -> Path:
    """The httpfs extension shipped by the `duckdb-extension-httpfs` package."""
    import duckdb_extension_httpfs

    package = Path(duckdb_extension_httpfs.__file__).parent
    found = sorted(package.rglob(f"v{duckdb.__version__}/httpfs.duckdb_extension"))
    if not found:
        raise ConfigurationError(
            f"no httpfs extension for DuckDB {duckdb.__version__} in {package}: install "
            f"duckdb-extension-httpfs=={duckdb.__version__}"
        )
    return found[0]


def load_httpfs(con: duckdb.DuckDBPyConnection) -> None:
    """Load httpfs into `con` from the shipped binary."""
    con.execute(f"LOAD '{_quoted(str(httpfs_binary()))}'")


def _quoted(value: str) -> str:
    return value.replace("'", "''")


def create_s3_secret(
    con: duckdb.DuckDBPyConnection, access: S3Access, location: S3Location, name: str
) -> None:
    """A temporary S3 secret on `con` for `location`, from `access`'s credentials."""
    credentials = access.credentials()
    options = {
        "TYPE": "s3",
        "KEY_ID": credentials.access_key_id,
        "SECRET": credentials.secret_access_key,
        "REGION": access.region,
        "SCOPE": location.uri(),
    }
    if credentials.session_token:
        options["SESSION_TOKEN"] = credentials.session_token
    if access.endpoint_url:
        endpoint = urlsplit(access.endpoint_url)
        options["ENDPOINT"] = endpoint.netloc
        options["URL_STYLE"] = "path"
        options["USE_SSL"] = "true" if endpoint.scheme == "https" else "false"
    # CREATE SECRET takes no bound parameters; values are quoted as SQL string literals.
    body = ", ".join(
        f"{k} {v}" if v in ("true", "false") or k == "TYPE" else f"{k} '{_quoted(v)}'"
        for k, v in options.items()
    )
    con.execute(f'CREATE OR REPLACE TEMPORARY SECRET "{name}" ({body})')
