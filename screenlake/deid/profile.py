"""The de-identification profile: which action applies to which DICOM attribute.

The actions come from DICOM PS3.15 Table E.1-1 (packaged in `reference/`), not from a list
written here. A deployment profile (`profiles/default.json`) names the options switched on,
how the table's compound codes resolve, which attributes get keyed pseudonyms, the dummy value
per VR, and additional rules for identifying attributes the table lacks; `load_profile`
combines the two into one frozen `Profile` the engine reads.

Compound codes (X/Z, X/D, X/Z/D, Z/D, X/Z/U*) depend on the attribute's type in each IOD. This
version has no per-IOD type lookup: the profile's `compound_resolution` picks one of the listed
actions per code (default: Z where the attribute may be type 2, X for X/D, U* for reference
sequences), and `compound_overrides` picks D for attributes a common IOD makes type 1. U* keeps
the sequence and de-identifies its items, which replaces every UID the table marks U.

Options and how this version implements them:

- `rtnLongModifDatesOpt`: its C on DA and DT shifts the date by the patient's keyed offset;
  its C on TM keeps the time. Its C on an attribute of another VR (Timezone Offset From UTC,
  Frame Origin Timestamp) falls back to the Basic Profile action.
- `rtnLongFullDatesOpt`, `rtnUIDsOpt`, `rtnInstIdOpt`: their K keeps the attribute.
- `rtnPatCharsOpt`, `rtnDevIdOpt`: their K keeps the attribute; their C (Patient State, Station
  AE Title, ...) is not implemented yet and falls back to the stricter Basic Profile action.
- `cleanDescOpt`, `cleanStructContOpt`, `cleanGraphOpt`, `rtnSafePrivOpt`: cleaning is not
  implemented yet, so switching them on changes nothing: every attribute they cover keeps the
  stricter Basic Profile action, and they are not claimed in DeidentificationMethodCodeSequence.

When several switched-on options list one attribute, a C wins over a K (the more protective),
and an unimplemented C falls back to the Basic Profile action.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.valuerep import validate_value

from screenlake.errors import ConfigurationError

TABLE_PATH = Path(__file__).parent / "reference" / "confidentiality_profile_attributes.json"
DEFAULT_PROFILE_PATH = Path(__file__).parent / "profiles" / "default.json"

DATE_SHIFT_OPTION = "rtnLongModifDatesOpt"
FULL_DATES_OPTION = "rtnLongFullDatesOpt"
UIDS_OPTION = "rtnUIDsOpt"
TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})
# Every text VR an attribute with action D can have in the table; other VRs (sequences,
# binary values) get zero length in the engine, UIDs a keyed UID.
DUMMY_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"}
)
REPLACEMENT_GENERATORS = frozenset({"patient_pseudonym", "accession_pseudonym"})
_PRIVATE_ROW_PREFIX = "(gggg,eeee)"
_PROFILE_FIELDS = frozenset(
    {
        "name",
        "version",
        "description",
        "standard",
        "notes",
        "table_sha256",
        "options",
        "compound_resolution",
        "compound_overrides",
        "replacements",
        "dummy_values",
        "unlisted_uid_keywords_kept",
        "additional_rules",
    }
)


class Action(StrEnum):
    """A PS3.15 E.1.1 action code, after compound codes are resolved."""

    REMOVE = "X"
    ZERO = "Z"
    DUMMY = "D"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"


@dataclass(frozen=True)
class ProfileOption:
    """One PS3.15 option: its key in the table, its CID 7050 code, and whether it is implemented."""

    key: str
    code_value: str
    meaning: str
    implemented: bool


BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTIONS: dict[str, ProfileOption] = {
    o.key: o
    for o in (
        ProfileOption("cleanGraphOpt", "113103", "Clean Graphics Option", False),
        ProfileOption("cleanStructContOpt", "113104", "Clean Structured Content Option", False),
        ProfileOption("cleanDescOpt", "113105", "Clean Descriptors Option", False),
        ProfileOption(
            FULL_DATES_OPTION,
            "113106",
            "Retain Longitudinal Temporal Information Full Dates Option",
            True,
        ),
        ProfileOption(
            DATE_SHIFT_OPTION,
            "113107",
            "Retain Longitudinal Temporal Information Modified Dates Option",
            True,
        ),
        ProfileOption("rtnPatCharsOpt", "113108", "Retain Patient Characteristics Option", True),
        ProfileOption("rtnDevIdOpt", "113109", "Retain Device Identity Option", True),
        ProfileOption(UIDS_OPTION, "113110", "Retain UIDs Option", True),
        ProfileOption("rtnSafePrivOpt", "113111", "Retain Safe Private Option", False),
        ProfileOption("rtnInstIdOpt", "113112", "Retain Institution Identity Option", True),
    )
}


@dataclass(frozen=True)
class AttributeRule:
    """One row of Table E.1-1, the action this profile resolved for it, and what decided it."""

    tag: str
    name: str
    basic_profile: str
    action: Action
    decided_by: str


@dataclass(frozen=True)
class Profile:
    """A versioned de-identification profile: the table's rules under the options switched on."""

    name: str
    version: str
    options: frozenset[str]
    rules: tuple[AttributeRule, ...]
    additional_rules: tuple[AttributeRule, ...]
    exact: dict[int, Action]
    masked: tuple[tuple[int, int, Action], ...]
    private_action: Action
    replacements: dict[int, str]
    dummy_values: dict[str, str]
    unlisted_uid_tags_kept: frozenset[int]

    @property
    def attribute_count(self) -> int:
        """How many attributes of Table E.1-1 the profile was derived from (not counting the
        deployment's additional rules)."""
        return len(self.rules)

    @property
    def method(self) -> str:
        """The DeidentificationMethod value: profile name and version."""
        return f"{self.name} {self.version}"

    @property
    def shifts_dates(self) -> bool:
        """Whether dates are shifted by the patient's keyed offset (modified dates option)."""
        return DATE_SHIFT_OPTION in self.options

    @property
    def temporal_information(self) -> str:
        """The LongitudinalTemporalInformationModified value for instances under this profile."""
        if self.shifts_dates:
            return "MODIFIED"
        return "UNMODIFIED" if FULL_DATES_OPTION in self.options else "REMOVED"

    @property
    def method_codes(self) -> tuple[tuple[str, str], ...]:
        """CID 7050 (code value, meaning) pairs of the profile and the implemented options used."""
        used = sorted(
            (OPTIONS[o].code_value, OPTIONS[o].meaning)
            for o in self.options
            if OPTIONS[o].implemented
        )
        return (BASIC_PROFILE_CODE, *used)

    def action_for(self, tag: int) -> Action | None:
        """The action for `tag` (a pydicom tag or int); None when the profile does not list it."""
        found = self.exact.get(tag)
        if found is not None:
            return found
        if (tag >> 16) % 2 == 1:
            return self.private_action
        for mask, value, action in self.masked:
            if tag & mask == value:
                return action
        return None

    def replacement_for(self, tag: int) -> str | None:
        """The keyed generator that replaces `tag`'s value (e.g. "patient_pseudonym"), if any."""
        return self.replacements.get(tag)

    def unlisted_action(self, tag: int, vr: str) -> Action:
        """The action for a public attribute the table does not list, by its VR.

        Attributes unknown to the DICOM data dictionary are removed: nothing says what they
        hold. Dates the table does not list follow the temporal option (shifted, kept, or
        removed without one). UIDs it does not list are replaced unless their keyword names a
        class, transfer syntax or coding scheme; the engine also keeps registered DICOM UIDs.
        """
        if not _vr(tag):
            return Action.REMOVE
        if vr in ("DA", "DT"):
            if self.shifts_dates:
                return Action.CLEAN
            return Action.KEEP if FULL_DATES_OPTION in self.options else Action.REMOVE
        if (
            vr == "UI"
            and UIDS_OPTION not in self.options
            and tag not in self.unlisted_uid_tags_kept
        ):
            return Action.UID
        return Action.KEEP


def load_default_profile() -> Profile:
    """The packaged deployment profile, `profiles/default.json`."""
    return load_profile(DEFAULT_PROFILE_PATH)


def load_profile(path: Path, table_path: Path = TABLE_PATH) -> Profile:
    """Load a deployment profile JSON and derive every attribute's action from Table E.1-1.

    Raises ConfigurationError naming the field when the profile is malformed, names an unknown
    option, resolves a compound code to an action it does not contain, or pins another table.
    """
    config = _read_json(path, "profile")
    unknown = sorted(set(config) - _PROFILE_FIELDS)
    if unknown:
        raise ConfigurationError(
            f"profile {path}: unknown fields {unknown}; known: {', '.join(sorted(_PROFILE_FIELDS))}"
        )
    table_bytes = _read_bytes(table_path, "confidentiality profile table")
    digest = hashlib.sha256(table_bytes).hexdigest()
    if config.get("table_sha256") != digest:
        raise ConfigurationError(
            f"profile {path} pins table_sha256 {config.get('table_sha256')!r} but {table_path} "
            f"has {digest}; update the profile (and bump its version) after reviewing the table."
        )
    name = _text(config, "name", path)
    version = _text(config, "version", path)
    if len(f"{name} {version}") > 64:
        raise ConfigurationError(
            f"profile {path}: name and version together exceed the 64 characters "
            "DeidentificationMethod (LO) can hold; shorten the name"
        )
    options = _options(config.get("options"), path)
    rows = json.loads(table_bytes)
    compound_codes = {r["basicProfile"] for r in rows if "/" in r["basicProfile"]}
    resolution = _resolution(config.get("compound_resolution"), compound_codes, path)
    by_tag = {r["tag"].upper(): r for r in rows}
    overrides = _overrides(config.get("compound_overrides", {}), by_tag, path)
    replacements = _replacements(config.get("replacements", {}), by_tag, path)

    rules: list[AttributeRule] = []
    exact: dict[int, Action] = {}
    masked: list[tuple[int, int, Action]] = []
    private_action: Action | None = None
    for row in rows:
        tag_text = row["tag"].upper()
        if tag_text.lower().startswith(_PRIVATE_ROW_PREFIX):
            action, decided_by = _resolve(row, options, resolution, overrides, vr="")
            private_action = action
        elif "X" in tag_text:
            mask, value = _mask(tag_text)
            action, decided_by = _resolve(row, options, resolution, overrides, vr="")
            masked.append((mask, value, action))
        else:
            tag = _tag(tag_text)
            if tag in replacements:
                action, decided_by = Action.DUMMY, f"replacements:{replacements[tag]}"
            else:
                action, decided_by = _resolve(row, options, resolution, overrides, _vr(tag))
            exact[tag] = action
        rules.append(
            AttributeRule(row["tag"], row["name"], row["basicProfile"], action, decided_by)
        )
    additional = _additional_rules(config.get("additional_rules", {}), by_tag, path)
    for rule in additional:
        exact[_tag(rule.tag)] = rule.action
    if private_action is None:
        raise ConfigurationError(f"{table_path} has no private attributes row; is it Table E.1-1?")
    return Profile(
        name=name,
        version=version,
        options=options,
        rules=tuple(rules),
        additional_rules=additional,
        exact=exact,
        masked=tuple(masked),
        private_action=private_action,
        replacements=replacements,
        dummy_values=_dummy_values(config.get("dummy_values"), path),
        unlisted_uid_tags_kept=_keyword_tags(config.get("unlisted_uid_keywords_kept", []), path),
    )


def _resolve(
    row: dict[str, str],
    options: frozenset[str],
    resolution: dict[str, str],
    overrides: dict[str, str],
    vr: str,
) -> tuple[Action, str]:
    code = row["basicProfile"]
    decided_by = "basicProfile"
    if "/" in code:
        override = overrides.get(row["tag"].upper())
        code, decided_by = (
            (override, "compound_overrides")
            if override
            else (resolution[code], "compound_resolution")
        )
    # U* keeps the sequence; its items are de-identified by the same rules, which replace
    # every UID the table marks U (Referenced SOP Instance UID, ...).
    basic = Action.KEEP if code == "U*" else Action(code)
    chosen = {o: row[o] for o in sorted(options) if o in row}
    if not chosen:
        return basic, decided_by
    cleaning = [o for o, c in chosen.items() if c == "C"]
    if cleaning == [DATE_SHIFT_OPTION] and vr in TEMPORAL_VRS:
        return Action.CLEAN, DATE_SHIFT_OPTION
    if cleaning:
        return basic, f"{decided_by} ({', '.join(cleaning)} cleaning not implemented)"
    return Action.KEEP, ",".join(chosen)


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read the {what} {path}: {error.strerror}") from error


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_read_bytes(path, what))
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"the {what} {path} is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise ConfigurationError(f"the {what} {path} must hold a JSON object")
    return value


def _text(config: dict[str, Any], field: str, path: Path) -> str:
    value = config.get(field)
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"profile {path}: `{field}` must be a non-empty string")
    return value


def _options(value: object, path: Path) -> frozenset[str]:
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        raise ConfigurationError(
            f"profile {path}: `options` must map option names to true or false; known options: "
            f"{', '.join(sorted(OPTIONS))}"
        )
    unknown = sorted(set(value) - set(OPTIONS))
    if unknown:
        raise ConfigurationError(
            f"profile {path}: unknown options {unknown}; known: {', '.join(sorted(OPTIONS))}"
        )
    enabled = frozenset(k for k, v in value.items() if v)
    if {DATE_SHIFT_OPTION, FULL_DATES_OPTION} <= enabled:
        raise ConfigurationError(
            f"profile {path}: {DATE_SHIFT_OPTION} and {FULL_DATES_OPTION} exclude each other; "
            "switch one off"
        )
    return enabled


def _components(code: str) -> set[str]:
    return set(code.split("/"))


def _resolution(value: object, compound_codes: set[str], path: Path) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigurationError(f"profile {path}: `compound_resolution` must be an object")
    missing = sorted(compound_codes - set(value))
    if missing:
        raise ConfigurationError(f"profile {path}: `compound_resolution` lacks {missing}")
    for code, action in value.items():
        if code not in compound_codes or action not in _components(code):
            raise ConfigurationError(
                f"profile {path}: compound code {code!r} cannot resolve to {action!r}; "
                "pick one of the actions it lists"
            )
    return dict(value)


def _overrides(value: object, by_tag: dict[str, dict[str, str]], path: Path) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigurationError(f"profile {path}: `compound_overrides` must be an object")
    result: dict[str, str] = {}
    for tag_text, entry in value.items():
        row = by_tag.get(tag_text.upper())
        action = entry.get("action") if isinstance(entry, dict) else None
        if row is None or "/" not in row["basicProfile"]:
            raise ConfigurationError(
                f"profile {path}: compound override {tag_text} is not a compound-code attribute "
                "of Table E.1-1"
            )
        if action not in _components(row["basicProfile"]) or not entry.get("reason"):
            raise ConfigurationError(
                f"profile {path}: override {tag_text} needs an `action` among "
                f"{row['basicProfile']} and a `reason`"
            )
        result[tag_text.upper()] = action
    return result


def _replacements(value: object, by_tag: dict[str, dict[str, str]], path: Path) -> dict[int, str]:
    if not isinstance(value, dict):
        raise ConfigurationError(f"profile {path}: `replacements` must be an object")
    result: dict[int, str] = {}
    for tag_text, generator in value.items():
        if tag_text.upper() not in by_tag or generator not in REPLACEMENT_GENERATORS:
            raise ConfigurationError(
                f"profile {path}: replacement {tag_text} -> {generator!r} needs a tag listed in "
                f"Table E.1-1 and one of {sorted(REPLACEMENT_GENERATORS)}"
            )
        result[_tag(tag_text.upper())] = generator
    return result


def _additional_rules(
    value: object, by_tag: dict[str, dict[str, str]], path: Path
) -> tuple[AttributeRule, ...]:
    if not isinstance(value, dict):
        raise ConfigurationError(f"profile {path}: `additional_rules` must be an object")
    rules = []
    allowed = {a.value for a in Action} - {Action.CLEAN.value}
    for tag_text, entry in value.items():
        fields = entry if isinstance(entry, dict) else {}
        if (
            tag_text.upper() in by_tag
            or not re.fullmatch(r"\([0-9A-F]{4},[0-9A-F]{4}\)", tag_text.upper())
            or fields.get("action") not in allowed
            or not fields.get("name")
            or not fields.get("reason")
        ):
            raise ConfigurationError(
                f"profile {path}: additional rule {tag_text} needs a tag Table E.1-1 does not "
                f"list, a `name`, a `reason` and an `action` among {sorted(allowed)}"
            )
        rules.append(
            AttributeRule(
                tag_text.upper(), fields["name"], "", Action(fields["action"]), "additional_rules"
            )
        )
    return tuple(rules)


def _dummy_values(value: object, path: Path) -> dict[str, str]:
    if not isinstance(value, dict) or not DUMMY_VRS <= set(value):
        raise ConfigurationError(
            f"profile {path}: `dummy_values` must give a dummy for each of {sorted(DUMMY_VRS)}"
        )
    for vr, dummy in value.items():
        try:
            validate_value(vr, dummy, pydicom_config.RAISE)
        except (ValueError, KeyError) as error:
            raise ConfigurationError(
                f"profile {path}: dummy {dummy!r} is not a valid {vr}"
            ) from error
    return dict(value)


def _keyword_tags(value: object, path: Path) -> frozenset[int]:
    if not isinstance(value, list):
        raise ConfigurationError(f"profile {path}: `unlisted_uid_keywords_kept` must be a list")
    tags = {k: tag_for_keyword(k) for k in value}
    unknown = sorted(k for k, t in tags.items() if t is None or _vr(t) != "UI")
    if unknown:
        raise ConfigurationError(f"profile {path}: {unknown} are not UID attribute keywords")
    return frozenset(t for t in tags.values() if t is not None)


def _tag(text: str) -> int:
    return int(text[1:5] + text[6:10], 16)


def _mask(text: str) -> tuple[int, int]:
    # "(60XX,3000)": every X digit is free, every other digit must match.
    digits = text[1:5] + text[6:10]
    mask = int("".join("0" if d == "X" else "F" for d in digits), 16)
    value = int("".join("0" if d == "X" else d for d in digits), 16)
    return mask, value


def _vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return ""
