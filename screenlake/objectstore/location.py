"""`s3://bucket/prefix` locations and the object keys inside them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from screenlake.errors import ConfigurationError

S3_SCHEME = "s3://"
# S3's rules for bucket names (3-63 characters, lower case, digits, dots, hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_s3_uri(text: str) -> bool:
    """Whether a setting names an object-store location rather than a folder."""
    return text.strip().lower().startswith(S3_SCHEME)


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix inside it (no leading or trailing slash; may be empty)."""

    bucket: str
    prefix: str = ""

    def key(self, relative: PurePosixPath | str = "") -> str:
        """The object key of `relative` under the prefix; refuses paths that leave it."""
        parts = PurePosixPath(str(relative)).parts
        if any(part in ("..", "/") for part in parts):
            # The path is left out: drop references name folders after patients.
            raise ValueError(f"a path leaves the location s3://{self.bucket}/{self.prefix}")
        return "/".join(p for p in (self.prefix, *parts) if p and p != ".")

    def uri(self, relative: PurePosixPath | str = "") -> str:
        """`s3://bucket/key` of `relative`."""
        return f"{S3_SCHEME}{self.bucket}/{self.key(relative)}".rstrip("/")

    def relative(self, key: str) -> PurePosixPath:
        """The path of object `key` relative to the prefix."""
        if not self.prefix:
            return PurePosixPath(key)
        return PurePosixPath(key).relative_to(self.prefix)


def parse_s3_uri(text: str, setting: str) -> S3Location:
    """The location `s3://bucket[/prefix]` that setting `setting` holds; a clear error otherwise."""
    value = text.strip()
    if not is_s3_uri(value):
        raise ConfigurationError(f"{setting}={value!r} is not an s3://bucket/prefix location")
    bucket, _, prefix = value[len(S3_SCHEME) :].partition("/")
    if not _BUCKET.match(bucket):
        raise ConfigurationError(
            f"{setting} names the bucket {bucket!r}, which is not a valid S3 bucket name "
            "(3-63 characters: lower-case letters, digits, dots and hyphens)"
        )
    prefix = prefix.strip("/")
    if any(part in ("..", ".") for part in prefix.split("/")):
        raise ConfigurationError(f"{setting} has '.' or '..' in its prefix: {value!r}")
    if any(c in prefix for c in "'\\\"") or "//" in prefix:
        raise ConfigurationError(
            f"{setting} has quotes, backslashes or '//' in its prefix: {value!r}"
        )
    return S3Location(bucket, prefix)
