"""An objection recorded as a privacy officer would, in the register of a test's PHI zone."""

from __future__ import annotations

from datetime import date
from typing import Any

from screenlake.objections import ADD, ObjectionRegister, ObjectionRequest


def record_objection(
    resources: dict[str, Any], patient_id: str, scope: str, asked_on: date
) -> None:
    """Record that `patient_id` (any issuer) objects with `scope`, in the register of the PHI
    zone of `resources`, under their pseudonym key."""
    ObjectionRegister(resources["phi_zone"], resources["pseudonym_key"].key()).record(
        [
            ObjectionRequest(
                patient_id=patient_id,
                issuer=None,
                action=ADD,
                scope=scope,
                requested_by="participant",
                reason_code="ART21",
                asked_on=asked_on,
            )
        ],
        "test",
    )
