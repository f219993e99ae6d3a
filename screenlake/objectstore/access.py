"""Clients for one object-store location, with that location's own credentials.

Each location (the export drop, the PHI zone, the research zone) names an environment-variable
prefix, e.g. `SCREENLAKE_PHI_ZONE_S3`: `<prefix>_ACCESS_KEY_ID`, `<prefix>_SECRET_ACCESS_KEY`
and optionally `<prefix>_SESSION_TOKEN` are read at run time, so that the PHI zone and the
research zone can use different keys with different rights. Without them boto3's own chain
applies (AWS_* variables, a profile, an instance role). boto3 is imported here only, when a
client is made, so that a deployment without object storage never loads it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from screenlake.errors import ConfigurationError, ObjectStoreError
from screenlake.objectstore.location import S3Location

DEFAULT_REGION = "us-east-1"
_ATTEMPTS = 5  # botocore's "standard" retry mode: exponential backoff on throttling and 5xx
_CONNECT_TIMEOUT_S = 10
_READ_TIMEOUT_S = 60
_POOL_CONNECTIONS = 32
# What a store answers to credentials it does not know or that may not touch the bucket.
_REFUSED_CODES = frozenset(
    {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)


@dataclass(frozen=True)
class S3Credentials:
    """Static credentials for one location."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


@dataclass(frozen=True)
class S3Access:
    """How to reach a location: the endpoint (None: AWS itself), the region, and the prefix of
    the environment variables that hold its credentials."""

    endpoint_url: str | None
    region: str
    credentials_env: str

    def own_credentials(self) -> S3Credentials | None:
        """The credentials set for this location; None when neither variable is set."""
        key_id = os.environ.get(f"{self.credentials_env}_ACCESS_KEY_ID", "").strip()
        secret = os.environ.get(f"{self.credentials_env}_SECRET_ACCESS_KEY", "").strip()
        if not key_id and not secret:
            return None
        if not key_id or not secret:
            missing = "ACCESS_KEY_ID" if not key_id else "SECRET_ACCESS_KEY"
            raise ConfigurationError(
                f"{self.credentials_env}_{missing} is not set while its partner is: set both, "
                "or neither to use the default AWS credential chain"
            )
        token = os.environ.get(f"{self.credentials_env}_SESSION_TOKEN", "").strip() or None
        return S3Credentials(key_id, secret, token)

    def credentials(self) -> S3Credentials:
        """This location's credentials, or those boto3's default chain finds; raises when none."""
        own = self.own_credentials()
        if own is not None:
            return own
        import boto3

        found = boto3.Session(region_name=self.region).get_credentials()
        if found is None:
            raise ConfigurationError(
                f"no credentials for the object store: set {self.credentials_env}_ACCESS_KEY_ID "
                f"and {self.credentials_env}_SECRET_ACCESS_KEY (or the AWS_* variables)"
            )
        frozen = found.get_frozen_credentials()
        return S3Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    def client(self) -> Any:
        """A boto3 S3 client for this location (thread-safe; retries with backoff)."""
        import boto3
        from botocore.config import Config

        own = self.own_credentials()
        config = Config(
            region_name=self.region,
            retries={"mode": "standard", "total_max_attempts": _ATTEMPTS},
            connect_timeout=_CONNECT_TIMEOUT_S,
            read_timeout=_READ_TIMEOUT_S,
            # Transfers and header reads run on several threads over one client.
            max_pool_connections=_POOL_CONNECTIONS,
            # S3-compatible stores on a private endpoint rarely have per-bucket DNS names.
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url or None,
            aws_access_key_id=own.access_key_id if own else None,
            aws_secret_access_key=own.secret_access_key if own else None,
            aws_session_token=own.session_token if own else None,
            config=config,
        )

    def where(self) -> str:
        """The endpoint, for error messages (never the credentials)."""
        return self.endpoint_url or f"AWS S3 ({self.region})"


def error_code(error: Any) -> str:
    """The S3 error code of a botocore ClientError ("NoSuchKey", "403", ...); "" when none."""
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", "") or "")


@contextmanager
def store_errors(role: str, bucket: str, where: str, doing: str) -> Iterator[None]:
    """Turn botocore's errors raised inside into an ObjectStoreError that names `role`, the
    bucket, the endpoint, what was being done and the error's code or type, with the original
    left out of the chain: botocore's messages carry object keys and request URLs (an
    EndpointConnectionError names the URL of the object asked for), and export drops name
    their folders after patients."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as error:
        code = error_code(error) or "an error"
        problem = ObjectStoreError(
            f"the S3 bucket {bucket!r} for {role} at {where} answered {code} while {doing}: "
            "check that the bucket exists and that this location's credentials may list, "
            "read and write it, then run again"
        )
    except (BotoCoreError, Boto3Error) as error:
        # boto3's transfer errors (S3UploadFailedError, ...) name the file and the key too.
        problem = ObjectStoreError(
            f"the object store for {role} at {where} failed while {doing} "
            f"({type(error).__name__}): check SCREENLAKE_S3_ENDPOINT, the network and the "
            "store, then run again"
        )
    else:
        return
    raise problem from None


def require_bucket(client: Any, location: S3Location, access: S3Access, role: str) -> None:
    """Raise ObjectStoreError naming the bucket, the endpoint and `role` (e.g. "the PHI zone")
    when the bucket does not exist, cannot be reached, or refuses these credentials."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.head_bucket(Bucket=location.bucket)
    except ClientError as error:
        code = error_code(error)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise ObjectStoreError(
                f"the S3 bucket {location.bucket!r} for {role} does not exist at "
                f"{access.where()}: create it, or correct the setting"
            ) from None
        if code in _REFUSED_CODES:
            raise ObjectStoreError(
                f"the S3 bucket {location.bucket!r} for {role} at {access.where()} refuses "
                f"the credentials from {access.credentials_env}_*: check their rights"
            ) from None
        raise ObjectStoreError(
            f"the S3 bucket {location.bucket!r} for {role} at {access.where()} answered "
            f"{code or 'an error'}"
        ) from None
    except BotoCoreError as error:
        raise ObjectStoreError(
            f"the object store for {role} at {access.where()} cannot be reached "
            f"({type(error).__name__}): check SCREENLAKE_S3_ENDPOINT and the network"
        ) from None
