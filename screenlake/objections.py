"""The objection register: participants who objected to the use of their data (GDPR Art. 21) or
asked for its erasure (Art. 17), kept in the PHI zone so that the choice is honoured every night,
also after their data is gone.

A patient is held as a keyed token (HMAC-SHA256 under the pseudonym key over the issuer of the
patient ID and the ID), never as a plain ID: the register names nobody to whoever reads it
without the key. Every change is a record of its own (a file written once, never rewritten), so
the register is append-only and is its own audit log: who asked, when, why, who recorded it.

Scopes:
- `research`: no use of the participant's data beyond the screening itself; screenlake takes in
  none of their studies from then on.
- `all`: as `research`, and everything screenlake holds about them is erased.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

from screenlake import layout
from screenlake.errors import ObjectionRegisterError
from screenlake.fsutil import write_atomic
from screenlake.ingest import DayListing, FoundStudy
from screenlake.keybinding import PSEUDONYM_KEY, Zone, fingerprint, os_user
from screenlake.keys import keyed_token

SCOPE_RESEARCH, SCOPE_ALL = "research", "all"
SCOPES = (SCOPE_RESEARCH, SCOPE_ALL)
ADD, WITHDRAW = "add", "withdraw"
ACTIONS = (ADD, WITHDRAW)
# A marker, not a change to anyone's objection: from here on the register is held under the
# key that wrote it, and records under earlier keys are history (see `ObjectionRegister.changes`).
REKEY = "rekey"
# Codes, not prose: a reason in words could name the patient.
_REASON_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_MAX_TEXT = 64
IMPORT_COLUMNS = ("patient_id", "issuer", "scope", "requested_by", "reason", "asked_on", "action")
REQUIRED_COLUMNS = ("patient_id", "scope", "requested_by", "reason")


def objection_token(key: bytes, issuer: str | None, patient_id: str) -> str:
    """The register's name for a patient: a keyed token of the issuer of the patient ID (empty
    when none is given) and the ID. Nobody without the key can recompute or reverse it."""
    return "OB" + keyed_token(
        key, "objection", f"{(issuer or '').strip()}\x1f{patient_id.strip()}", 30
    )


def patient_tokens(key: bytes, issuer: str | None, patient_id: str | None) -> frozenset[str]:
    """The tokens an objection against a patient may be held under: with the issuer of their
    patient ID, and without any (an objection recorded without an issuer covers the patient ID
    under every issuer: excluding too much is the safe side)."""
    if not patient_id or not patient_id.strip():
        return frozenset()
    return frozenset(
        {objection_token(key, issuer, patient_id), objection_token(key, None, patient_id)}
    )


def study_tokens(key: bytes, study: FoundStudy) -> frozenset[str]:
    """The tokens an objection against `study`'s patient may be held under (`patient_tokens`)."""
    return patient_tokens(key, study.issuer_of_patient_id, study.patient_id)


@dataclass(frozen=True)
class ObjectionChange:
    """One change to the register: an objection added or withdrawn."""

    token: str
    action: str
    scope: str
    asked_on: date
    requested_by: str
    reason_code: str
    recorded_at: datetime
    recorded_by: str
    # The pseudonym key's fingerprint: tokens made under another key match nobody.
    key_fingerprint: str
    # "cli", or "import" with the imported file's name left out (it may name a person).
    source: str

    def as_json(self) -> str:
        """The record as it is kept."""
        fields = asdict(self)
        fields["asked_on"] = self.asked_on.isoformat()
        fields["recorded_at"] = self.recorded_at.isoformat()
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> ObjectionChange:
        """A kept record back; ObjectionRegisterError naming `where` when it is damaged."""
        try:
            fields = json.loads(text)
            return cls(
                **{
                    **fields,
                    "asked_on": date.fromisoformat(fields["asked_on"]),
                    "recorded_at": datetime.fromisoformat(fields["recorded_at"]),
                }
            )
        except (ValueError, TypeError, KeyError) as error:
            raise ObjectionRegisterError(
                f"objection record {where} is damaged ({type(error).__name__}); restore it from "
                "the PHI zone's backup: the register must not lose a change"
            ) from error


@dataclass(frozen=True)
class Objection:
    """An objection in force: its token, scope and when the participant asked."""

    token: str
    scope: str
    asked_on: date


@dataclass(frozen=True)
class ObjectionRequest:
    """A change asked for, before it is recorded: holds the plain patient ID, so it lives only
    in memory, on its way to becoming a token."""

    patient_id: str
    issuer: str | None
    action: str
    scope: str
    requested_by: str
    reason_code: str
    asked_on: date

    def __post_init__(self) -> None:
        if not self.patient_id.strip():
            raise ObjectionRegisterError("a patient ID is required")
        if self.action not in ACTIONS:
            raise ObjectionRegisterError(f"action must be one of {', '.join(ACTIONS)}")
        if self.scope not in SCOPES:
            raise ObjectionRegisterError(f"scope must be one of {', '.join(SCOPES)}")
        if not _REASON_CODE.fullmatch(self.reason_code):
            raise ObjectionRegisterError(
                "the reason is a code of letters, digits, '.', '_' or '-' (at most 32), such as "
                "ART21 or ART17: free text could name the patient"
            )
        if not self.requested_by.strip() or len(self.requested_by) > _MAX_TEXT:
            raise ObjectionRegisterError(
                f"requested_by says who asked (the participant, the programme's register...), "
                f"in at most {_MAX_TEXT} characters"
            )


def objections_in_force(changes: Iterable[ObjectionChange]) -> dict[str, Objection]:
    """The objections in force after `changes`, by token, taken in the order they were
    recorded: an addition of scope `all` widens one of scope `research` (never the reverse: an
    erasure cannot be narrowed), a withdrawal ends the objection."""
    state: dict[str, Objection] = {}
    for change in sorted(changes, key=lambda c: (c.recorded_at, c.token)):
        _apply(state, change)
    return state


def _apply(state: dict[str, Objection], change: ObjectionChange) -> None:
    current = state.get(change.token)
    if change.action == WITHDRAW:
        state.pop(change.token, None)
    elif current is None or (change.scope == SCOPE_ALL and current.scope != SCOPE_ALL):
        state[change.token] = Objection(change.token, change.scope, change.asked_on)


def _effective(request: ObjectionRequest, token: str, state: Mapping[str, Objection]) -> bool:
    """Whether recording `request` would change what is in force."""
    current = state.get(token)
    if request.action == WITHDRAW:
        return current is not None
    return current is None or (request.scope == SCOPE_ALL and current.scope != SCOPE_ALL)


def register_state(zone: Zone) -> str:
    """What the register holds, as a digest of its records' names (each change is a new
    record): it changes whenever the register does. Reads no record."""
    folder = zone.pull(layout.OBJECTION_RECORDS)
    names = sorted(p.name for p in folder.glob("*.json")) if folder.exists() else []
    return f"{len(names)}:" + hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


class ObjectionRegister:
    """The register in a PHI zone, read and appended to under the pseudonym `key`."""

    def __init__(self, zone: Zone, key: bytes) -> None:
        self.zone, self.key = zone, key
        self.key_fingerprint = fingerprint(key, PSEUDONYM_KEY)

    def history(self) -> list[ObjectionChange]:
        """Every record, under whichever key, oldest first."""
        folder = self.zone.pull(layout.OBJECTION_RECORDS)
        records = sorted(folder.glob("*.json")) if folder.exists() else []
        changes = [
            ObjectionChange.from_json(p.read_text("utf-8"), f"{n + 1} of {len(records)}")
            for n, p in enumerate(records)
        ]
        return sorted(changes, key=lambda c: (c.recorded_at, c.token))

    def changes(self) -> list[ObjectionChange]:
        """The changes that make the register under this key, oldest first: those written under
        it since the last `rekey` marker. ObjectionRegisterError when a record made under
        another key is not behind such a marker: its patients would silently match nobody."""
        history = self.history()
        mine = [c for c in history if c.key_fingerprint == self.key_fingerprint]
        markers = [c.recorded_at for c in mine if c.action == REKEY]
        since = markers[-1] if markers else None
        foreign = [
            c
            for c in history
            if c.key_fingerprint != self.key_fingerprint
            and (since is None or c.recorded_at > since)
        ]
        if foreign:
            raise ObjectionRegisterError(
                f"{len(foreign)} of the register's {len(history)} records were made under another "
                "pseudonym key, so their patients would no longer be recognised; nothing is "
                "taken in until the programme's register is imported again under this key "
                "(`screenlake objection import FILE --after-key-rotation`)"
            )
        return [c for c in mine if c.action != REKEY and (since is None or c.recorded_at > since)]

    def start_under_this_key(self, requested_by: str) -> ObjectionChange:
        """Record that the register is held under this key from now on (after a key rotation,
        before the programme's register is imported again): records under other keys become
        history, and what is in force is only what is recorded after this."""
        marker = ObjectionChange(
            token="",
            action=REKEY,
            scope="",
            asked_on=datetime.now(UTC).date(),
            requested_by=requested_by,
            reason_code="KEY-ROTATION",
            recorded_at=datetime.now(UTC),
            recorded_by=os_user(),
            key_fingerprint=self.key_fingerprint,
            source="cli",
        )
        self._write(marker)
        return marker

    def in_force(self) -> dict[str, Objection]:
        """The objections in force, by token."""
        return objections_in_force(self.changes())

    def record(self, requests: Sequence[ObjectionRequest], source: str) -> list[ObjectionChange]:
        """Append a record for each request that changes what is in force (the others are
        already honoured: importing one file twice records nothing new); the changes made."""
        state = self.in_force()
        made: list[ObjectionChange] = []
        who = os_user()
        for request in requests:
            token = objection_token(self.key, request.issuer, request.patient_id)
            if not _effective(request, token, state):
                continue
            change = ObjectionChange(
                token=token,
                action=request.action,
                scope=request.scope,
                asked_on=request.asked_on,
                requested_by=request.requested_by.strip(),
                reason_code=request.reason_code,
                recorded_at=datetime.now(UTC),
                recorded_by=who,
                key_fingerprint=self.key_fingerprint,
                source=source,
            )
            self._write(change)
            _apply(state, change)
            made.append(change)
        return made

    def _write(self, change: ObjectionChange) -> None:
        stamp = change.recorded_at.strftime("%Y%m%dT%H%M%S%fZ")
        relative = layout.OBJECTION_RECORDS / f"{stamp}-{uuid.uuid4().hex[:12]}.json"
        write_atomic(self.zone.path(relative), change.as_json())
        self.zone.push(relative)


def read_import(path: Path, today: date) -> list[ObjectionRequest]:
    """The requests of a CSV from the programme's register, all checked before any is recorded;
    ObjectionRegisterError names the row (never its patient ID) and what is wrong."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or ())
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise ObjectionRegisterError(
                    f"the file lacks the column(s) {', '.join(missing)}; columns: "
                    f"{', '.join(IMPORT_COLUMNS)} (issuer, asked_on and action optional)"
                )
            rows = list(reader)
    except OSError as error:
        raise ObjectionRegisterError(f"cannot read the file: {error.strerror}") from error
    except (UnicodeDecodeError, csv.Error) as error:
        raise ObjectionRegisterError(
            f"the file is not a UTF-8 CSV: {type(error).__name__}"
        ) from error
    requests = []
    for number, row in enumerate(rows, start=2):  # row 1 holds the column names
        try:
            asked = (row.get("asked_on") or "").strip()
            requests.append(
                ObjectionRequest(
                    patient_id=(row.get("patient_id") or "").strip(),
                    issuer=(row.get("issuer") or "").strip() or None,
                    action=(row.get("action") or ADD).strip().lower(),
                    scope=(row.get("scope") or "").strip().lower(),
                    requested_by=(row.get("requested_by") or "").strip(),
                    reason_code=(row.get("reason") or "").strip(),
                    asked_on=date.fromisoformat(asked) if asked else today,
                )
            )
        except (ValueError, ObjectionRegisterError) as error:
            raise ObjectionRegisterError(f"row {number}: {error}") from None
    return requests


@dataclass(frozen=True)
class Exclusions:
    """What ingest left out of a day's listing because of objections: counts only."""

    studies: int
    files: int


def without_objecting_patients(
    listing: DayListing, key: bytes, in_force: Mapping[str, Objection], programme: str
) -> tuple[DayListing, Exclusions]:
    """`listing` less the studies of patients with an objection in force (either scope), and how
    many of `programme`'s studies and files that left out. Done after listing and before
    anything is retrieved, so that their files are never landed."""
    kept, studies, files = [], 0, 0
    for study in listing.studies:
        if not study_tokens(key, study) & in_force.keys():
            kept.append(study)
        elif study.programme == programme:
            studies += 1
            files += len(study.files)
    return replace(listing, studies=tuple(kept)), Exclusions(studies, files)
