"""Which keys the zones are bound to, checked before anything is written under a key.

Data made under one key cannot be joined with data made under another: a research zone whose
batches carry pseudonyms of two keys holds the same patients twice, unlinkably, and a vault
written under another vault key cannot be opened with the rest. So each zone records a
fingerprint of the key its data depends on (the pseudonym key in the research zone, the vault
key in the PHI zone). A deployment's first run binds the zones; every use of a key after that is
checked against its zone's fingerprint, and only a deliberate rotation, audited in the PHI zone
(`screenlake keys rotate`), changes it.

A fingerprint is an HMAC-SHA256 of a fixed label under the key: the same key always gives the
same fingerprint, and the fingerprint reveals nothing about the key.
"""

from __future__ import annotations

import csv
import fcntl
import getpass
import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Protocol

from screenlake import layout
from screenlake.errors import KeyBindingError, KeyMismatchError, ScreenlakeError
from screenlake.fsutil import write_atomic
from screenlake.keys import validate_pseudonym_key
from screenlake.vault import vault_key_material

ROTATION_PROCEDURE = "`screenlake keys rotate --reason TEXT` (README: Rotating keys)"
ROTATION_COLUMNS = (
    "at",
    "rotated_by",
    "reason",
    "old_pseudonym_key",
    "new_pseudonym_key",
    "old_vault_key",
    "new_vault_key",
)
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_SHOWN = 16  # hexadecimal characters people see: plenty to tell two keys apart
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")


class Zone(Protocol):
    """What the bindings need of a zone (a `ZoneStore`): local paths, and transfers that keep
    a zone in object storage in step with its working copy."""

    name: str

    @property
    def is_remote(self) -> bool: ...

    def path(self, relative: PurePosixPath | str = "") -> Path: ...

    def pull(self, relative: PurePosixPath | str) -> Path: ...

    def push(self, relative: PurePosixPath | str) -> None: ...

    def forget_history(self, relative: PurePosixPath | str) -> list[tuple[str, str]]: ...


@dataclass(frozen=True)
class KeyKind:
    """One of the deployment's two keys: its name, where its zone keeps the binding, and what a
    run under another key would do."""

    name: str
    binding: PurePosixPath
    consequence: str


PSEUDONYM_KEY = KeyKind(
    "pseudonym key",
    layout.PSEUDONYM_KEY_BINDING,
    "would write the same studies again under new pseudonyms, beside and unlinkable to the "
    "batches already in the research zone",
)
VAULT_KEY = KeyKind(
    "vault key",
    layout.VAULT_KEY_BINDING,
    "would write re-identification vaults that the key of every other batch cannot open",
)


def fingerprint(secret: bytes, kind: KeyKind) -> str:
    """The key's fingerprint: HMAC-SHA256 of a fixed label under the key, in hexadecimal."""
    label = f"screenlake key fingerprint v1\x1f{kind.name}".encode()
    return hmac.new(secret, label, hashlib.sha256).hexdigest()


def shown(value: str | None) -> str:
    """A fingerprint as people see it in messages: its first characters, or `none`."""
    return value[:_SHOWN] if value else "none"


@dataclass(frozen=True)
class KeyInUse:
    """A key read from the environment and found well-formed, and the zone that depends on it."""

    kind: KeyKind
    env_var: str
    secret: bytes = field(repr=False)  # never in a log, a traceback or the UI
    zone: Zone

    @property
    def fingerprint(self) -> str:
        """This key's fingerprint."""
        return fingerprint(self.secret, self.kind)


def pseudonym_key_in_use(value: str | None, env_var: str, research_zone: Zone) -> KeyInUse:
    """The pseudonym key `value` (read from `env_var`) for the research zone; raises
    PseudonymKeyError when it is missing or short."""
    return KeyInUse(PSEUDONYM_KEY, env_var, validate_pseudonym_key(value, env_var), research_zone)


def vault_key_in_use(value: str | None, env_var: str, phi_zone: Zone) -> KeyInUse:
    """The vault key `value` (read from `env_var`) for the PHI zone; raises VaultError when it
    is missing or not a Fernet key."""
    return KeyInUse(VAULT_KEY, env_var, vault_key_material(value, env_var), phi_zone)


def bound_fingerprint(zone: Zone, kind: KeyKind) -> str | None:
    """The fingerprint `zone` is bound to for `kind`; None until a first run binds it."""
    path = zone.pull(kind.binding)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["fingerprint"]
    except (ValueError, KeyError, TypeError):
        value = None
    if not isinstance(value, str) or not _FINGERPRINT.match(value):
        raise KeyBindingError(
            f"the {zone.name} zone's {kind.name} binding ({kind.binding}) is not one screenlake "
            "wrote: restore it from the zone's backup, or rebind the zones deliberately with "
            f"{ROTATION_PROCEDURE}"
        )
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _bind(key: KeyInUse, how: str) -> None:
    record = {
        "key": key.kind.name,
        "fingerprint": key.fingerprint,
        "fingerprint_of": "HMAC-SHA256 of a fixed label under the key",
        "bound_at": _now(),
        "bound_by": how,
    }
    write_atomic(key.zone.path(key.kind.binding), json.dumps(record, indent=2) + "\n")
    key.zone.push(key.kind.binding)


def _mismatch(key: KeyInUse, bound: str) -> str:
    return (
        f"{key.env_var} holds a valid {key.kind.name} (fingerprint {shown(key.fingerprint)}) "
        f"that is not the key the {key.zone.name} zone is bound to (fingerprint "
        f"{shown(bound)}): a run under it {key.kind.consequence}."
    )


def require_bound(keys: Sequence[KeyInUse]) -> list[KeyKind]:
    """Check every key against its zone's binding, then bind the zones not bound yet (a
    deployment's first run); returns the kinds just bound. When a key is not the one its zone
    is bound to, raises KeyMismatchError naming each such key, and writes nothing."""
    found = [(key, bound_fingerprint(key.zone, key.kind)) for key in keys]
    wrong = [(key, bound) for key, bound in found if bound is not None and bound != key.fingerprint]
    if wrong:
        names = " and ".join(key.env_var for key, _ in wrong)
        raise KeyMismatchError(
            " ".join(_mismatch(key, bound) for key, bound in wrong)
            + f" Nothing was written under it. Set {names} back to the bound key; to change keys "
            f"on purpose, follow the rotation procedure: {ROTATION_PROCEDURE}."
        )
    unbound = [key for key, bound in found if bound is None]
    for key in unbound:
        _bind(key, "first run")
    return [key.kind for key in unbound]


@dataclass(frozen=True)
class KeyStatus:
    """Where one key stands: the environment's fingerprint against its zone's."""

    kind: KeyKind
    env_var: str
    zone: str
    in_environment: str | None
    bound: str | None
    problem: str | None

    @property
    def state(self) -> str:
        """`matches`, `not bound yet`, `DIFFERS` or `unusable`, for people."""
        if self.problem:
            return "unusable"
        if self.bound is None:
            return "not bound yet (the next run binds it)"
        return "matches" if self.bound == self.in_environment else "DIFFERS"

    @property
    def ok(self) -> bool:
        """Whether a run could use the key: well-formed, and bound to it or not bound yet."""
        return self.problem is None and self.bound in (None, self.in_environment)


def key_status(
    kind: KeyKind, env_var: str, zone: Zone, in_use: Callable[[], KeyInUse]
) -> KeyStatus:
    """The status of `kind`: `in_use` reads the key from the environment (and may raise)."""
    current: str | None = None
    bound: str | None = None
    problem: str | None = None
    try:
        current = in_use().fingerprint
    except ScreenlakeError as error:  # the validators' messages never hold the key
        problem = str(error)
    try:
        bound = bound_fingerprint(zone, kind)
    except KeyBindingError as error:
        problem = f"{problem} {error}" if problem else str(error)
    return KeyStatus(kind, env_var, zone.name, current, bound, problem)


@dataclass(frozen=True)
class RotationRecord:
    """One audited rotation: when, who, why, and the fingerprints before and after (empty
    where a zone was not bound, `unreadable` where its binding was damaged)."""

    at: str
    rotated_by: str
    reason: str
    old_pseudonym_key: str
    new_pseudonym_key: str
    old_vault_key: str
    new_vault_key: str


def os_user() -> str:
    """The operating-system user running this process, for the audit log."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def _old(key: KeyInUse) -> str:
    try:
        return bound_fingerprint(key.zone, key.kind) or ""
    except KeyBindingError:
        return "unreadable"  # a rotation is how a damaged binding is replaced


def _append_rotation(phi_zone: Zone, record: RotationRecord) -> PurePosixPath:
    if phi_zone.is_remote:
        stamp = record.at.replace(":", "").replace("+", "Z")
        path = layout.KEY_ROTATION_RECORDS / (
            f"{stamp}-{_UNSAFE_IN_NAME.sub('_', record.rotated_by)}.csv"
        )
        local = phi_zone.path(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        with local.open("x", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=ROTATION_COLUMNS)
            writer.writeheader()
            writer.writerow(asdict(record))
        phi_zone.push(path)
        return path
    log = phi_zone.path(layout.KEY_ROTATION_LOG)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", newline="", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        writer = csv.DictWriter(handle, fieldnames=ROTATION_COLUMNS)
        if handle.tell() == 0:
            writer.writeheader()
        writer.writerow(asdict(record))
    return layout.KEY_ROTATION_LOG


def rotate_keys(
    pseudonym: KeyInUse,
    vault: KeyInUse,
    phi_zone: Zone,
    reason: str,
    rotated_by: str | None = None,
) -> tuple[RotationRecord, PurePosixPath]:
    """Rebind the zones to the keys now in the environment: the research zone to `pseudonym`,
    the PHI zone to `vault`. The rotation is audited first, in `phi_zone` (UTC time, OS user,
    reason, old and new fingerprints); returns the record and where it was written. Raises
    KeyBindingError without a reason, or when both zones are bound to these keys already."""
    if pseudonym.kind != PSEUDONYM_KEY or vault.kind != VAULT_KEY:
        raise ValueError("rotate_keys takes the pseudonym key, then the vault key")
    if not reason.strip():
        raise KeyBindingError("a key rotation needs a reason for the audit log: --reason TEXT")
    old = {key.kind.name: _old(key) for key in (pseudonym, vault)}
    changed = [key for key in (pseudonym, vault) if old[key.kind.name] != key.fingerprint]
    if not changed:
        raise KeyBindingError(
            "both zones are bound to the keys in the environment already: nothing to rotate"
        )
    record = RotationRecord(
        at=_now(),
        rotated_by=rotated_by or os_user(),
        reason=reason.strip(),
        old_pseudonym_key=old[PSEUDONYM_KEY.name],
        new_pseudonym_key=pseudonym.fingerprint,
        old_vault_key=old[VAULT_KEY.name],
        new_vault_key=vault.fingerprint,
    )
    # Audited before anything changes: a rebinding nobody can account for is worse than none.
    where = _append_rotation(phi_zone, record)
    for key in changed:
        _bind(key, "rotation")
    return record, where
