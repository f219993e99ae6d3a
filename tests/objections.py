"""An objection recorded as a privacy officer would, in the register of a test's PHI zone, and
the erasures it asks for carried out."""

from __future__ import annotations

from datetime import date
from typing import Any

from screenlake.erasure.run import ErasureRequest, erase_patients
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


def carry_out_erasures(resources: dict[str, Any]) -> list[ErasureRequest]:
    """What the `patient_erasure` job does, with the resources of a test's zones: every
    erasure the register asks for and none has finished, carried out now."""
    key = resources["pseudonym_key"].key()
    return erase_patients(
        resources["phi_zone"],
        resources["research_zone"],
        key,
        resources["vault_key"].cipher(),
        ObjectionRegister(resources["phi_zone"], key).in_force().values(),
        "Rtest",
    )
