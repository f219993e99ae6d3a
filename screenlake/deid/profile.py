"""The de-identification profile: which action applies to which DICOM attribute.

The actions come from DICOM PS3.15 Table E.1-1 (packaged in `reference/`), not from a list
written here. A deployment profile (`profiles/default.json`, validated by `profile_file`) names
the options switched on, how the table's compound codes resolve, which attributes get keyed
pseudonyms, the dummy value per VR, rules for identifying attributes the table lacks, the safe
private allow-list, the pixel policy, and whether kept free text is swept for identifiers;
`load_profile` combines the two into one frozen `Profile` the engine reads.

Compound codes (X/Z, X/D, X/Z/D, Z/D, X/Z/U*) depend on the attribute's type in each IOD. This
version has no per-IOD type lookup: the profile's `compound_resolution` picks one of the listed
actions per code, and `compound_overrides` picks D for attributes a common IOD makes type 1.

What C (clean) means here, by the attribute's VR:

- DA and DT under `rtnLongModifDatesOpt`: shifted by the patient's keyed offset; TM is kept.
- Text (AE excepted) under `cleanDescOpt`, `cleanStructContOpt`, `cleanGraphOpt` or
  `rtnPatCharsOpt`: the text is kept with every known identifier of the instance removed
  (`descriptors`).
- Sequences: kept, and their items de-identified by the same rules, with kept text cleaned.
- Private attributes under `rtnSafePrivOpt`: kept when the allow-list names their group,
  private creator and element offset (`private`).
- Anything else (AE titles under `rtnDevIdOpt`, overlay and curve bitmaps under
  `cleanGraphOpt`, Timezone Offset From UTC): no cleaning is possible, so the stricter Basic
  Profile action applies. A stricter action still honours the option, which is therefore
  claimed in DeidentificationMethodCodeSequence.

K keeps the attribute; when several switched-on options list one attribute, a C wins over a K.
Sequences that are kept, cleaned, replaced by a dummy (D) or whose references stay (U*) keep
their items, which are de-identified by the same rules at every depth.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from screenlake.deid import profile_file
from screenlake.deid.pixels import load_pixel_rules
from screenlake.deid.profile_file import (
    DUMMY_VRS,
    REPLACEMENT_GENERATORS,
    dictionary_vr,
    parse_mask,
    parse_tag,
)
from screenlake.errors import ConfigurationError

TABLE_PATH = Path(__file__).parent / "reference" / "confidentiality_profile_attributes.json"
DEFAULT_PROFILE_PATH = Path(__file__).parent / "profiles" / "default.json"

DATE_SHIFT_OPTION = "rtnLongModifDatesOpt"
FULL_DATES_OPTION = "rtnLongFullDatesOpt"
UIDS_OPTION = "rtnUIDsOpt"
SAFE_PRIVATE_OPTION = "rtnSafePrivOpt"
TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})
# Free-text VRs whose C keeps the text without the instance's identifiers.
CLEANABLE_TEXT_VRS = frozenset({"CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_TEXT_CLEANING_OPTIONS = frozenset(
    {"cleanDescOpt", "cleanStructContOpt", "cleanGraphOpt", "rtnPatCharsOpt"}
)
_PRIVATE_ROW_PREFIX = "(gggg,eeee)"

__all__ = [
    "DUMMY_VRS",
    "REPLACEMENT_GENERATORS",
    "Action",
    "AttributeRule",
    "Profile",
    "load_default_profile",
    "load_profile",
]


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
    """One PS3.15 option: its key in the table and its CID 7050 code."""

    key: str
    code_value: str
    meaning: str


BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTIONS: dict[str, ProfileOption] = {
    o.key: o
    for o in (
        ProfileOption("cleanGraphOpt", "113103", "Clean Graphics Option"),
        ProfileOption("cleanStructContOpt", "113104", "Clean Structured Content Option"),
        ProfileOption("cleanDescOpt", "113105", "Clean Descriptors Option"),
        ProfileOption(
            FULL_DATES_OPTION,
            "113106",
            "Retain Longitudinal Temporal Information Full Dates Option",
        ),
        ProfileOption(
            DATE_SHIFT_OPTION,
            "113107",
            "Retain Longitudinal Temporal Information Modified Dates Option",
        ),
        ProfileOption("rtnPatCharsOpt", "113108", "Retain Patient Characteristics Option"),
        ProfileOption("rtnDevIdOpt", "113109", "Retain Device Identity Option"),
        ProfileOption(UIDS_OPTION, "113110", "Retain UIDs Option"),
        ProfileOption(SAFE_PRIVATE_OPTION, "113111", "Retain Safe Private Option"),
        ProfileOption("rtnInstIdOpt", "113112", "Retain Institution Identity Option"),
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
    safe_private: dict[tuple[int, str, int], str] = field(default_factory=dict)
    pixel_policy: str = "quarantine"
    pixel_rules: Path | None = None
    kept_text_sweep: bool = True
    # SHA-256 of what the profile was built from (`content_digest`): its fields, the allow-list
    # it names and its pixel rules; the table is pinned by the profile's own `table_sha256`.
    digest: str = ""
    # Actions of tags met so far that `exact` lacks; filled per process, never compared.
    _seen: dict[int, Action] = field(default_factory=dict, compare=False, repr=False)

    @property
    def attribute_count(self) -> int:
        """How many attributes of Table E.1-1 the profile was derived from (not counting the
        deployment's additional rules)."""
        return len(self.rules)

    @property
    def code_version(self) -> str:
        """What versions the assets this profile drives: name and version, and the digest of its
        content, so that an edited profile whose version was not bumped still counts as new."""
        return f"{self.name} {self.version}#{self.digest[:12]}"

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
        """CID 7050 (code value, meaning) pairs of the profile and the options used."""
        used = sorted((OPTIONS[o].code_value, OPTIONS[o].meaning) for o in self.options)
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

    def resolve(self, tag: int) -> Action:
        """The action for a public `tag`, listed or not (the engine's lookup, cached)."""
        found = self.exact.get(tag)
        if found is None:
            found = self._seen.get(tag)
            if found is None:
                found = self.action_for(tag) or self.unlisted_action(tag, dictionary_vr(tag))
                self._seen[tag] = found
        return found

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
        if not dictionary_vr(tag):
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
    option, resolves a compound code to an action it does not contain, pins another table, or
    names an allow-list or pixel rules file that is missing or invalid.
    """
    config = profile_file.read_json(path, "profile")
    profile_file.check_fields(config, path)
    table_bytes = profile_file.read_bytes(table_path, "confidentiality profile table")
    digest = hashlib.sha256(table_bytes).hexdigest()
    if config.get("table_sha256") != digest:
        raise ConfigurationError(
            f"profile {path} pins table_sha256 {config.get('table_sha256')!r} but {table_path} "
            f"has {digest}; update the profile (and bump its version) after reviewing the table."
        )
    name = profile_file.text(config, "name", path)
    version = profile_file.text(config, "version", path)
    if len(f"{name} {version}") > 64:
        raise ConfigurationError(
            f"profile {path}: name and version together exceed the 64 characters "
            "DeidentificationMethod (LO) can hold; shorten the name"
        )
    known = frozenset(OPTIONS)
    options = profile_file.options(
        config.get("options"), known, (DATE_SHIFT_OPTION, FULL_DATES_OPTION), path
    )
    rows = json.loads(table_bytes)
    compound_codes = {r["basicProfile"] for r in rows if "/" in r["basicProfile"]}
    resolution = profile_file.resolution(config.get("compound_resolution"), compound_codes, path)
    by_tag = {r["tag"].upper(): r for r in rows}
    overrides = profile_file.overrides(config.get("compound_overrides", {}), by_tag, path)
    replacements = profile_file.replacements(config.get("replacements", {}), by_tag, path)
    extra_rows = profile_file.additional_rows(
        config.get("additional_rules", {}), by_tag, known, path
    )
    safe_private = profile_file.safe_private(config.get("safe_private"), path)
    if SAFE_PRIVATE_OPTION in options and not safe_private:
        raise ConfigurationError(
            f"profile {path}: {SAFE_PRIVATE_OPTION} is on but `safe_private` names no allow-list"
        )
    pixel_policy, pixel_rules = profile_file.pixels(config.get("pixels"), path)
    if pixel_rules is not None:
        load_pixel_rules(pixel_rules)  # fail now, not on the first instance that needs them

    deriving = _Derivation(options, resolution, overrides, replacements)
    rules = tuple(deriving.add(row, "basicProfile") for row in rows)
    additional = tuple(deriving.add(row, "additional_rules") for row in extra_rows)
    if deriving.private_action is None:
        raise ConfigurationError(f"{table_path} has no private attributes row; is it Table E.1-1?")
    return Profile(
        name=name,
        version=version,
        options=options,
        rules=rules,
        additional_rules=additional,
        exact=deriving.exact,
        masked=tuple(deriving.masked),
        private_action=deriving.private_action,
        replacements=replacements,
        dummy_values=profile_file.dummy_values(config.get("dummy_values"), path),
        unlisted_uid_tags_kept=profile_file.keyword_tags(
            config.get("unlisted_uid_keywords_kept", []), path
        ),
        safe_private=safe_private if SAFE_PRIVATE_OPTION in options else {},
        pixel_policy=pixel_policy,
        pixel_rules=pixel_rules,
        kept_text_sweep=profile_file.kept_text_sweep(config.get("kept_text_sweep"), path),
        digest=content_digest(config, safe_private, pixel_rules),
    )


def content_digest(
    config: dict[str, object],
    safe_private: dict[tuple[int, str, int], str],
    pixel_rules: Path | None,
) -> str:
    """SHA-256 over a profile's fields (as JSON with sorted keys, so that layout does not count),
    its safe private allow-list and its pixel rules file."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    allowed = sorted(
        [group, creator, offset, vr] for (group, creator, offset), vr in safe_private.items()
    )
    digest.update(json.dumps(allowed).encode())
    if pixel_rules is not None:
        digest.update(profile_file.read_bytes(pixel_rules, "pixel rules file"))
    return digest.hexdigest()


@dataclass
class _Derivation:
    """Collects the action of each table row (and additional rule) as it is resolved."""

    options: frozenset[str]
    resolution: dict[str, str]
    overrides: dict[str, str]
    replacements: dict[int, str]
    exact: dict[int, Action] = field(default_factory=dict)
    masked: list[tuple[int, int, Action]] = field(default_factory=list)
    private_action: Action | None = None

    def add(self, row: dict[str, str], source: str) -> AttributeRule:
        tag_text = row["tag"].upper()
        if tag_text.lower().startswith(_PRIVATE_ROW_PREFIX):
            action, decided_by = self._resolve(row, source, vr="private")
            self.private_action = action
        elif "X" in tag_text:
            mask, value = parse_mask(tag_text)
            action, decided_by = self._resolve(row, source, dictionary_vr(value))
            self.masked.append((mask, value, action))
        else:
            tag = parse_tag(tag_text)
            if tag in self.replacements:
                action, decided_by = Action.DUMMY, f"replacements:{self.replacements[tag]}"
            else:
                action, decided_by = self._resolve(row, source, dictionary_vr(tag))
            self.exact[tag] = action
        return AttributeRule(row["tag"], row["name"], row["basicProfile"], action, decided_by)

    def _resolve(self, row: dict[str, str], source: str, vr: str) -> tuple[Action, str]:
        code = row["basicProfile"]
        decided_by = source
        if "/" in code:
            override = self.overrides.get(row["tag"].upper())
            code, decided_by = (
                (override, "compound_overrides")
                if override
                else (self.resolution[code], "compound_resolution")
            )
        # U* keeps the sequence; its items are de-identified by the same rules, which replace
        # every UID the table marks U (Referenced SOP Instance UID, ...).
        basic = Action.KEEP if code == "U*" else Action(code)
        chosen = {o: row[o] for o in sorted(self.options) if o in row}
        if not chosen:
            return basic, decided_by
        cleaning = [o for o, c in chosen.items() if c == "C"]
        if not cleaning:
            return Action.KEEP, ",".join(chosen)
        if _cleanable(cleaning, vr):
            return Action.CLEAN, ",".join(cleaning)
        return basic, f"{decided_by} ({', '.join(cleaning)} cannot clean {vr or 'this'})"


def _cleanable(cleaning: list[str], vr: str) -> bool:
    if vr in TEMPORAL_VRS:
        return DATE_SHIFT_OPTION in cleaning
    if vr == "private":
        return SAFE_PRIVATE_OPTION in cleaning
    if vr == "SQ":
        return True
    return vr in CLEANABLE_TEXT_VRS and bool(_TEXT_CLEANING_OPTIONS & set(cleaning))
