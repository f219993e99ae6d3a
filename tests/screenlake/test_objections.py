"""The objection register: tokens, what is in force, append-only records, imports, and the
filter ingest applies between listing and retrieval."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from resources.zones import ZoneStore
from screenlake import layout
from screenlake.errors import ObjectionRegisterError
from screenlake.ingest import DayListing, FoundStudy, SourceFile
from screenlake.objections import (
    ADD,
    SCOPE_ALL,
    SCOPE_RESEARCH,
    WITHDRAW,
    ObjectionChange,
    ObjectionRegister,
    ObjectionRequest,
    objection_token,
    objections_in_force,
    read_import,
    without_objecting_patients,
)

KEY = b"objection-test-key-0123456789abcdef0123"
OTHER_KEY = b"another-deployment-key-0123456789abcdef"
PATIENT = "7654321"
DAY = date(2024, 3, 12)


def _request(action: str = ADD, scope: str = SCOPE_RESEARCH, **fields: object) -> ObjectionRequest:
    values: dict[str, object] = {
        "patient_id": PATIENT,
        "issuer": None,
        "action": action,
        "scope": scope,
        "requested_by": "participant",
        "reason_code": "ART21",
        "asked_on": DAY,
        **fields,
    }
    return ObjectionRequest(**values)  # type: ignore[arg-type]


@pytest.fixture
def zone(tmp_path: Path) -> ZoneStore:
    return ZoneStore(name="PHI", root=str(tmp_path / "phi"))


def _change(token: str, action: str, scope: str, second: int) -> ObjectionChange:
    return ObjectionChange(
        token=token,
        action=action,
        scope=scope,
        asked_on=DAY,
        requested_by="participant",
        reason_code="ART21",
        recorded_at=datetime(2024, 3, 12, 9, 0, second, tzinfo=UTC),
        recorded_by="officer",
        key_fingerprint="f",
        source="cli",
    )


def test_a_token_is_keyed_and_tells_issuers_apart() -> None:
    token = objection_token(KEY, None, PATIENT)
    assert token.startswith("OB") and PATIENT not in token
    assert token == objection_token(KEY, "", f" {PATIENT} ")
    assert token != objection_token(OTHER_KEY, None, PATIENT)
    assert token != objection_token(KEY, "HOSPITAL-A", PATIENT)
    assert objection_token(KEY, "HOSPITAL-A", PATIENT) != objection_token(KEY, "B", PATIENT)


def test_all_widens_research_never_the_reverse_and_withdrawal_ends() -> None:
    changes = [
        _change("A", ADD, SCOPE_RESEARCH, 1),
        _change("A", ADD, SCOPE_ALL, 2),
        _change("A", ADD, SCOPE_RESEARCH, 3),
        _change("B", ADD, SCOPE_RESEARCH, 1),
        _change("B", WITHDRAW, SCOPE_RESEARCH, 2),
    ]
    in_force = objections_in_force(reversed(changes))  # taken in recorded order, not list order
    assert {t: o.scope for t, o in in_force.items()} == {"A": SCOPE_ALL}


def test_changes_are_records_written_once_and_name_nobody(zone: ZoneStore) -> None:
    register = ObjectionRegister(zone, KEY)
    [added] = register.record([_request()], "cli")
    assert register.record([_request()], "cli") == []  # already in force: nothing recorded
    [widened] = register.record([_request(scope=SCOPE_ALL, reason_code="ART17")], "cli")
    [withdrawn] = register.record([_request(WITHDRAW)], "cli")

    records = sorted(zone.path(layout.OBJECTION_RECORDS).glob("*.json"))
    assert len(records) == 3
    texts = [r.read_text() for r in records]
    assert all(PATIENT not in t for t in texts)
    assert [json.loads(t)["action"] for t in texts] == [ADD, ADD, WITHDRAW]
    assert register.changes() == [added, widened, withdrawn]
    assert register.in_force() == {}


def test_a_register_made_under_another_key_stops_everything_until_imported_again(
    zone: ZoneStore,
) -> None:
    ObjectionRegister(zone, OTHER_KEY).record([_request()], "cli")
    register = ObjectionRegister(zone, KEY)
    with pytest.raises(ObjectionRegisterError, match="another pseudonym key") as raised:
        register.in_force()
    assert PATIENT not in str(raised.value)
    with pytest.raises(ObjectionRegisterError, match="another pseudonym key"):
        register.record([_request()], "import")  # nothing is recorded on top of it either

    register.start_under_this_key("privacy officer")
    assert register.in_force() == {}  # the old records are history now
    register.record([_request()], "import")
    assert set(register.in_force()) == {objection_token(KEY, None, PATIENT)}
    assert len(register.history()) == 3
    # A record under the old key written after the marker is again a stop.
    ObjectionRegister(zone, OTHER_KEY).start_under_this_key("someone with the old key")
    with pytest.raises(ObjectionRegisterError, match="another pseudonym key"):
        register.in_force()


def test_a_damaged_record_is_an_error_not_a_lost_objection(zone: ZoneStore) -> None:
    ObjectionRegister(zone, KEY).record([_request()], "cli")
    [record] = zone.path(layout.OBJECTION_RECORDS).glob("*.json")
    record.write_text(record.read_text()[:20])
    with pytest.raises(ObjectionRegisterError, match="damaged"):
        ObjectionRegister(zone, KEY).changes()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("reason_code", "asked by phone, Jansen", "reason is a code"),
        ("scope", "everything", "scope must be"),
        ("requested_by", " ", "requested_by"),
        ("patient_id", "", "patient ID is required"),
    ],
)
def test_a_request_is_checked_before_it_is_recorded(field: str, value: str, message: str) -> None:
    with pytest.raises(ObjectionRegisterError, match=message):
        _request(**{field: value})


def test_an_import_is_checked_whole_and_never_names_a_patient(tmp_path: Path) -> None:
    good = tmp_path / "register.csv"
    good.write_text(
        "patient_id,issuer,scope,requested_by,reason,asked_on,action\n"
        f"{PATIENT},,research,programme register,BVO-OPTOUT,2024-03-01,\n"
        "1234567,HOSPITAL-A,all,participant,ART17,,add\n"
        "5555555,,research,participant,ART21,2024-03-02,withdraw\n"
    )
    requests = read_import(good, DAY)
    assert [(r.action, r.scope, r.issuer, r.asked_on) for r in requests] == [
        (ADD, SCOPE_RESEARCH, None, date(2024, 3, 1)),
        (ADD, SCOPE_ALL, "HOSPITAL-A", DAY),
        (WITHDRAW, SCOPE_RESEARCH, None, date(2024, 3, 2)),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "patient_id,scope,requested_by,reason\n"
        f"{PATIENT},research,participant,ART21\n"
        "9876543,sometimes,participant,ART21\n"
    )
    with pytest.raises(ObjectionRegisterError, match="row 3: scope must be") as raised:
        read_import(bad, DAY)
    assert "9876543" not in str(raised.value)
    missing = tmp_path / "missing.csv"
    missing.write_text("patient_id,scope\n1,research\n")
    with pytest.raises(ObjectionRegisterError, match="requested_by, reason"):
        read_import(missing, DAY)


def _study(
    uid: str, patient: str, programme: str, files: int, issuer: str | None = None
) -> FoundStudy:
    return FoundStudy(
        study_instance_uid=uid,
        patient_id=patient,
        accession_number=None,
        study_date=DAY,
        modality="CT",
        body_part="CHEST",
        programme=programme,
        files=tuple(SourceFile(f"{uid}/{n}", uid, f"{uid}.{n}") for n in range(files)),
        issuer_of_patient_id=issuer,
    )


def test_ingest_leaves_out_every_study_of_an_objecting_patient_before_retrieval() -> None:
    listing = DayListing(
        day=DAY,
        studies=(
            _study("1", PATIENT, "lung_ldct", 3, issuer="HOSPITAL-A"),
            _study("2", PATIENT, "cxr_tb", 1),
            _study("3", "1234567", "lung_ldct", 2),
        ),
        orphans=(),
    )
    # Recorded without an issuer: covers the ID under every issuer.
    in_force = {objection_token(KEY, None, PATIENT): None}
    kept, excluded = without_objecting_patients(listing, KEY, in_force, "lung_ldct")  # type: ignore[arg-type]
    assert [s.study_instance_uid for s in kept.studies] == ["3"]
    assert (excluded.studies, excluded.files) == (1, 3)

    # Recorded with another issuer than the study's: not the same patient.
    other = {objection_token(KEY, "HOSPITAL-B", PATIENT): None}
    kept, excluded = without_objecting_patients(listing, KEY, other, "lung_ldct")  # type: ignore[arg-type]
    assert len(kept.studies) == 3 and excluded.studies == 0
