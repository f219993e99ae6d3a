"""Key bindings and the rotation audit with both zones in object storage: what one process binds,
another process (a fresh working copy) sees."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from orchestration.resources import zone_for
from resources.zones import ZoneStore
from screenlake import layout
from screenlake.errors import KeyMismatchError
from screenlake.keybinding import (
    PSEUDONYM_KEY,
    bound_fingerprint,
    pseudonym_key_in_use,
    require_bound,
    rotate_keys,
    vault_key_in_use,
)
from screenlake.objectstore.access import S3Access

pytestmark = pytest.mark.s3
KEY_A = "s3-pseudonym-key-A-0123456789abcdef0123456789"
KEY_B = "s3-pseudonym-key-B-0123456789abcdef0123456789"
VAULT = Fernet.generate_key().decode()


def _zones(phi: str, research: str, work: Path) -> tuple[ZoneStore, ZoneStore]:
    import os

    settings = {
        "SCREENLAKE_PHI_ZONE": f"s3://{phi}/hospital/phi",
        "SCREENLAKE_RESEARCH_ZONE": f"s3://{research}/lake",
        "SCREENLAKE_PHI_ZONE_WORKING_COPY": str(work / "phi"),
        "SCREENLAKE_RESEARCH_ZONE_WORKING_COPY": str(work / "research"),
        "SCREENLAKE_S3_ENDPOINT": os.environ["SCREENLAKE_S3_ENDPOINT"],
    }
    return (
        zone_for(settings, "PHI", "SCREENLAKE_PHI_ZONE"),
        zone_for(settings, "research", "SCREENLAKE_RESEARCH_ZONE"),
    )


def _objects(access: S3Access, bucket: str) -> dict[str, bytes]:
    client: Any = access.client()
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def test_bindings_and_rotations_live_in_the_stores(
    new_bucket: Callable[[], str], s3_access: Callable[[str], S3Access], tmp_path: Path
) -> None:
    phi_bucket, research_bucket = new_bucket(), new_bucket()
    phi, research = _zones(phi_bucket, research_bucket, tmp_path / "one")
    key_a = pseudonym_key_in_use(KEY_A, "SCREENLAKE_PSEUDONYM_KEY", research)
    vault = vault_key_in_use(VAULT, "SCREENLAKE_VAULT_KEY", phi)
    require_bound([key_a, vault])

    # Another process, with working copies of its own, sees the bindings in the stores.
    phi2, research2 = _zones(phi_bucket, research_bucket, tmp_path / "two")
    assert bound_fingerprint(research2, PSEUDONYM_KEY) == key_a.fingerprint
    key_b = pseudonym_key_in_use(KEY_B, "SCREENLAKE_PSEUDONYM_KEY", research2)
    vault2 = vault_key_in_use(VAULT, "SCREENLAKE_VAULT_KEY", phi2)
    with pytest.raises(KeyMismatchError, match="research zone is bound to"):
        require_bound([key_b, vault2])

    record, where = rotate_keys(key_b, vault2, phi2, "test rotation", "alice")
    assert where.parent == layout.KEY_ROTATION_RECORDS
    phi_objects = _objects(s3_access("SCREENLAKE_PHI_ZONE_S3"), phi_bucket)
    [audit] = [v for k, v in phi_objects.items() if k.startswith("hospital/phi/audit/key_rot")]
    [row] = list(csv.DictReader(io.StringIO(audit.decode())))
    assert row["old_pseudonym_key"] == key_a.fingerprint == record.old_pseudonym_key
    assert row["new_pseudonym_key"] == key_b.fingerprint and row["rotated_by"] == "alice"
    assert f"hospital/phi/{layout.VAULT_KEY_BINDING}" in phi_objects
    research_objects = _objects(s3_access("SCREENLAKE_RESEARCH_ZONE_S3"), research_bucket)
    assert set(research_objects) == {f"lake/{layout.PSEUDONYM_KEY_BINDING}"}
    for body in (*phi_objects.values(), *research_objects.values()):
        assert KEY_A.encode() not in body and KEY_B.encode() not in body
        assert VAULT.encode() not in body

    # The first process's stale working copy is brought up to date before it is trusted.
    with pytest.raises(KeyMismatchError):
        require_bound([key_a])
    assert require_bound([pseudonym_key_in_use(KEY_B, "SCREENLAKE_PSEUDONYM_KEY", research)]) == []
