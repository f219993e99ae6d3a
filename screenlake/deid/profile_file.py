"""Reading and validating a deployment profile file and the files it names.

Every check raises `ConfigurationError` naming the file and the field, so that a wrong profile
fails when it is loaded, before any instance is touched. `profile.load_profile` combines what
these functions return with Table E.1-1.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.valuerep import validate_value

from screenlake.errors import ConfigurationError

PACKAGED_PROFILES = Path(__file__).parent / "profiles"
PACKAGED_PIXEL_RULES = Path(__file__).parent / "pixel_rules"
PROFILE_FIELDS = frozenset(
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
        "safe_private",
        "pixels",
        "kept_text_sweep",
    }
)
# Every text VR an attribute with action D can have in the table; other VRs (sequences,
# binary values) are handled apart in the engine, UIDs get a keyed UID.
DUMMY_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"}
)
REPLACEMENT_GENERATORS = frozenset({"patient_pseudonym", "accession_pseudonym"})
PIXEL_POLICIES = frozenset({"quarantine", "clean"})
_TAG = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)")
_MASKED_TAG = re.compile(r"\(([0-9A-FX]{4}),([0-9A-FX]{4})\)")
_ACTION_CODES = frozenset({"X", "Z", "D", "K", "U"})
_SAFE_PRIVATE_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "SH", "SL", "SS", "TM", "UL", "US"}
)


def read_bytes(path: Path, what: str) -> bytes:
    """The bytes of `path`; ConfigurationError when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read the {what} {path}: {error.strerror}") from error


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from `path`; ConfigurationError when it is not one."""
    try:
        value = json.loads(read_bytes(path, what))
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"the {what} {path} is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise ConfigurationError(f"the {what} {path} must hold a JSON object")
    return value


def check_fields(config: dict[str, Any], path: Path) -> None:
    """Reject fields a profile does not know (a typo would otherwise switch nothing)."""
    unknown = sorted(set(config) - PROFILE_FIELDS)
    if unknown:
        raise ConfigurationError(
            f"profile {path}: unknown fields {unknown}; known: {', '.join(sorted(PROFILE_FIELDS))}"
        )


def text(config: dict[str, Any], field: str, path: Path) -> str:
    """A required non-empty string field."""
    value = config.get(field)
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"profile {path}: `{field}` must be a non-empty string")
    return value


def options(
    value: object, known: frozenset[str], exclusive: tuple[str, str], path: Path
) -> frozenset[str]:
    """The options switched on; `exclusive` names two that cannot both be on."""
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        raise ConfigurationError(
            f"profile {path}: `options` must map option names to true or false; known options: "
            f"{', '.join(sorted(known))}"
        )
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigurationError(
            f"profile {path}: unknown options {unknown}; known: {', '.join(sorted(known))}"
        )
    enabled = frozenset(k for k, v in value.items() if v)
    if set(exclusive) <= enabled:
        raise ConfigurationError(
            f"profile {path}: {exclusive[0]} and {exclusive[1]} exclude each other; switch one off"
        )
    return enabled


def _components(code: str) -> set[str]:
    return set(code.split("/"))


def resolution(value: object, compound_codes: set[str], path: Path) -> dict[str, str]:
    """How each compound code of the table resolves to one of its actions."""
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


def overrides(value: object, by_tag: dict[str, dict[str, str]], path: Path) -> dict[str, str]:
    """Per-attribute picks among a compound code's actions, each with a reason."""
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


def replacements(value: object, by_tag: dict[str, dict[str, str]], path: Path) -> dict[int, str]:
    """Attributes replaced by a keyed generator (the patient or accession pseudonym)."""
    if not isinstance(value, dict):
        raise ConfigurationError(f"profile {path}: `replacements` must be an object")
    result: dict[int, str] = {}
    for tag_text, generator in value.items():
        if tag_text.upper() not in by_tag or generator not in REPLACEMENT_GENERATORS:
            raise ConfigurationError(
                f"profile {path}: replacement {tag_text} -> {generator!r} needs a tag listed in "
                f"Table E.1-1 and one of {sorted(REPLACEMENT_GENERATORS)}"
            )
        result[parse_tag(tag_text.upper())] = generator
    return result


def additional_rows(
    value: object, by_tag: dict[str, dict[str, str]], known_options: frozenset[str], path: Path
) -> list[dict[str, str]]:
    """Rules for attributes the table lacks, as table rows: `action` is the Basic Profile code
    and option names may add their K or C, exactly as the table's columns do."""
    if not isinstance(value, dict):
        raise ConfigurationError(f"profile {path}: `additional_rules` must be an object")
    rows = []
    for tag_text, entry in value.items():
        fields = entry if isinstance(entry, dict) else {}
        option_codes = {k: v for k, v in fields.items() if k in known_options}
        extra = set(fields) - {"name", "action", "reason"} - set(option_codes)
        if (
            tag_text.upper() in by_tag
            or not _MASKED_TAG.fullmatch(tag_text.upper())
            or fields.get("action") not in _ACTION_CODES
            or not fields.get("name")
            or not fields.get("reason")
            or extra
            or not all(code in ("K", "C") for code in option_codes.values())
        ):
            raise ConfigurationError(
                f"profile {path}: additional rule {tag_text} needs a tag (or a mask such as "
                "(60XX,0022)) Table E.1-1 does not list, a `name`, a `reason`, an `action` among "
                f"{sorted(_ACTION_CODES)}, and may give options K or C; nothing else"
            )
        rows.append(
            {"tag": tag_text.upper(), "name": fields["name"], "basicProfile": fields["action"]}
            | option_codes
        )
    return rows


def dummy_values(value: object, path: Path) -> dict[str, str]:
    """The dummy value per VR, each valid for its VR."""
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


def keyword_tags(value: object, path: Path) -> frozenset[int]:
    """Tags of UID keywords that stay when the table does not list them."""
    if not isinstance(value, list):
        raise ConfigurationError(f"profile {path}: `unlisted_uid_keywords_kept` must be a list")
    tags = {k: tag_for_keyword(k) for k in value}
    unknown = sorted(k for k, t in tags.items() if t is None or dictionary_vr(t) != "UI")
    if unknown:
        raise ConfigurationError(f"profile {path}: {unknown} are not UID attribute keywords")
    return frozenset(t for t in tags.values() if t is not None)


def pixels(value: object, path: Path) -> tuple[str, Path | None]:
    """The pixel policy ("quarantine" or "clean") and the rules file it names, if any."""
    if value is None:
        return "quarantine", None
    policy = value.get("policy") if isinstance(value, dict) else None
    rules = value.get("rules") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or set(value) - {"policy", "rules"}
        or policy not in PIXEL_POLICIES
        or not (rules is None or (isinstance(rules, str) and rules.strip()))
    ):
        raise ConfigurationError(
            f'profile {path}: `pixels` must be {{"policy": "quarantine" | "clean", '
            '"rules": <file name beside the profile, or null>}'
        )
    rules_path = beside(path, rules, "pixel rules file", PACKAGED_PIXEL_RULES) if rules else None
    if policy == "clean" and rules_path is None:
        raise ConfigurationError(
            f'profile {path}: pixel policy "clean" needs a `rules` file; without rules every '
            "instance whose pixels may carry identity would fail"
        )
    return policy, rules_path


def safe_private(value: object, path: Path) -> dict[tuple[int, str, int], str]:
    """The Retain Safe Private allow-list the profile names: (group, private creator, element
    offset) -> VR."""
    if value is None:
        return {}
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            f"profile {path}: `safe_private` must name an allow-list file beside the profile"
        )
    list_path = beside(path, value, "safe private allow-list")
    entries = read_json(list_path, "safe private allow-list").get("attributes")
    if not isinstance(entries, list):
        raise ConfigurationError(
            f"safe private allow-list {list_path}: `attributes` must be a list"
        )
    allowed: dict[tuple[int, str, int], str] = {}
    for number, entry in enumerate(entries):
        allowed[_safe_private_key(entry, f"{list_path} entry {number}")] = entry["vr"]
    return allowed


def _safe_private_key(entry: object, where: str) -> tuple[int, str, int]:
    fields = entry if isinstance(entry, dict) else {}
    try:
        group = int(str(fields.get("group")), 16)
        offset = int(str(fields.get("offset")), 16)
    except ValueError:
        group = offset = -1
    creator = fields.get("creator")
    if (
        not (0x0009 <= group <= 0xFFFF and group % 2 == 1)
        or not 0x00 <= offset <= 0xFF
        or not isinstance(creator, str)
        or not creator.strip()
        or fields.get("vr") not in _SAFE_PRIVATE_VRS
        or not fields.get("name")
        or not fields.get("reason")
    ):
        raise ConfigurationError(
            f"{where}: needs an odd `group` from 0x0009 (hexadecimal text), a `creator`, an "
            f"`offset` 0x00-0xFF, a `vr` among {sorted(_SAFE_PRIVATE_VRS)}, a `name` and a "
            "`reason`"
        )
    return group, creator.strip(), offset


def beside(profile_path: Path, name: str, what: str, packaged: Path = PACKAGED_PROFILES) -> Path:
    """A file a profile names: beside the profile, or else in the `packaged` folder, so that a
    deployment's own profile can use a shipped file by its name."""
    for folder in (profile_path.parent, packaged):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise ConfigurationError(
        f"profile {profile_path}: {what} {name!r} is neither beside the profile nor among the "
        f"packaged files in {packaged.name}/"
    )


def kept_text_sweep(value: object, path: Path) -> bool:
    """Whether kept free text is searched for the instance's identifiers (default: yes)."""
    if value is None:
        return True
    if not isinstance(value, bool):
        raise ConfigurationError(f"profile {path}: `kept_text_sweep` must be true or false")
    return value


def parse_tag(text_: str) -> int:
    """The integer tag of "(GGGG,EEEE)"."""
    match = _TAG.fullmatch(text_.upper())
    if match is None:
        raise ValueError(f"not a tag: {text_!r}")
    return int(match.group(1) + match.group(2), 16)


def parse_mask(text_: str) -> tuple[int, int]:
    """(mask, value) of "(60XX,3000)": every X digit is free, every other digit must match."""
    digits = text_[1:5] + text_[6:10]
    mask = int("".join("0" if d == "X" else "F" for d in digits), 16)
    value = int("".join("0" if d == "X" else d for d in digits), 16)
    return mask, value


@lru_cache(maxsize=16384)
def dictionary_vr(tag: int) -> str:
    """The data dictionary's VR for a public tag, or "" when the dictionary does not know it."""
    try:
        return dictionary_VR(tag)
    except KeyError:
        return ""
