"""Tests for screenlake.deid.profile and profile_file: actions derived from PS3.15 Table E.1-1."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from pydicom.tag import Tag

from screenlake.deid.pixels import PixelRules
from screenlake.deid.profile import (
    DEFAULT_PROFILE_PATH,
    TABLE_PATH,
    Action,
    Profile,
    load_default_profile,
    load_profile,
)
from screenlake.errors import ConfigurationError

PIXEL_RULES = Path(DEFAULT_PROFILE_PATH).parents[1] / "pixel_rules" / "screening.dicom"


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_default_profile()


def _write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config))
    return path


def _config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads(DEFAULT_PROFILE_PATH.read_text())
    return config


def _with_options(tmp_path: Path, **options: bool) -> Profile:
    config = _config()
    config["options"] = {**config["options"], **options}
    return load_profile(_write(tmp_path / "profile.json", config))


def test_profile_is_derived_from_the_table(profile: Profile) -> None:
    rows = json.loads(TABLE_PATH.read_text())
    assert profile.attribute_count == len(rows) == 621
    assert profile.name == "screenlake-research"
    assert profile.version == "2024b-3"
    assert profile.options == {"rtnLongModifDatesOpt", "rtnPatCharsOpt"}
    assert (profile.pixel_policy, profile.pixel_rules) == ("quarantine", None)
    assert profile.kept_text_sweep is True
    assert profile.safe_private == {}  # the allow-list applies only with rtnSafePrivOpt
    # Every simple code the switched-on options leave alone is taken over as the table says.
    for row, rule in zip(rows, profile.rules, strict=True):
        touched = any(option in row for option in profile.options)
        if "/" not in row["basicProfile"] and not touched and rule.decided_by == "basicProfile":
            assert rule.action == Action(row["basicProfile"]), row["name"]
    assert sum(rule.action is Action.UID for rule in profile.rules) == 54
    assert len(profile.additional_rules) == 14


@pytest.mark.parametrize(
    ("keyword_or_tag", "action"),
    [
        ("PatientName", Action.DUMMY),  # replaced by the patient pseudonym
        ("PatientID", Action.DUMMY),
        ("AccessionNumber", Action.DUMMY),
        ("PatientBirthDate", Action.ZERO),
        ("PatientAddress", Action.REMOVE),
        ("OtherPatientIDsSequence", Action.REMOVE),
        ("StudyInstanceUID", Action.UID),
        ("ReferencedSOPInstanceUID", Action.UID),
        ("StudyDate", Action.CLEAN),
        ("StudyTime", Action.CLEAN),
        ("PatientSex", Action.KEEP),
        ("PatientAge", Action.KEEP),
        ("PatientWeight", Action.KEEP),
        ("Allergies", Action.CLEAN),  # rtnPatCharsOpt's C on text: kept without identifiers
        ("InstitutionName", Action.ZERO),  # X/Z/D
        ("SeriesDescription", Action.REMOVE),
        ("StudyDescription", Action.REMOVE),
        ("DeviceSerialNumber", Action.DUMMY),  # X/Z/D, type 1 override
        ("SourceImageSequence", Action.KEEP),  # X/Z/U*
        ("ContentSequence", Action.DUMMY),  # kept, items de-identified
        ("GraphicAnnotationSequence", Action.DUMMY),
        ("VerifyingObserverSequence", Action.DUMMY),
        ("PersonIdentificationCodeSequence", Action.DUMMY),
        ("OriginalAttributesSequence", Action.REMOVE),
        ("ContentDate", Action.CLEAN),
        ("TimezoneOffsetFromUTC", Action.REMOVE),  # C of another VR falls back
        ("TextValue", Action.REMOVE),  # additional rule; C only with cleanStructContOpt
        ("UnformattedTextValue", Action.REMOVE),  # additional rule; C only with cleanGraphOpt
        ("ContentLabel", Action.DUMMY),
        ("ContentDescription", Action.ZERO),
        ("ContentCreatorName", Action.ZERO),
        (0x60023000, Action.REMOVE),  # Overlay Data, repeating group
        (0x601E4000, Action.REMOVE),  # Overlay Comments
        (0x60040022, Action.REMOVE),  # Overlay Description, an additional masked rule
        (0x60001500, Action.REMOVE),  # Overlay Label
        (0x50101234, Action.REMOVE),  # Curve Data
        (0x00291001, Action.REMOVE),  # private
        (0x00290010, Action.REMOVE),  # private creator
        ("Modality", None),
        (0x60000010, None),  # Overlay Rows is not listed
    ],
)
def test_profile_actions(
    profile: Profile, keyword_or_tag: str | int, action: Action | None
) -> None:
    assert profile.action_for(Tag(keyword_or_tag)) is action


def test_unlisted_attributes_follow_their_vr(profile: Profile) -> None:
    assert profile.resolve(Tag("FrameAcquisitionDateTime")) is Action.CLEAN  # listed, D or C
    assert profile.resolve(Tag("StudyUpdateDateTime")) is Action.CLEAN  # DT, unlisted
    assert profile.resolve(Tag("Manufacturer")) is Action.KEEP
    assert profile.resolve(Tag("ReferencedFrameOfReferenceUID")) is Action.UID
    assert profile.resolve(Tag("SOPClassUID")) is Action.KEEP  # named as kept
    assert profile.resolve(0x44441002) is Action.REMOVE  # no dictionary knows it


def test_profile_options_are_switchable(tmp_path: Path) -> None:
    config = _config()
    config["options"] = {name: False for name in config["options"]}
    basic = load_profile(_write(tmp_path / "basic.json", config))
    assert basic.action_for(Tag("PatientSex")) is Action.ZERO
    assert basic.action_for(Tag("PatientAge")) is Action.REMOVE
    assert basic.action_for(Tag("StudyDate")) is Action.ZERO
    assert basic.action_for(Tag("AcquisitionDateTime")) is Action.ZERO  # X/Z/D
    assert basic.action_for(Tag("SeriesDate")) is Action.REMOVE  # X/D
    assert basic.resolve(Tag("FrameAcquisitionDateTime")) is Action.DUMMY
    assert basic.resolve(Tag("StudyUpdateDateTime")) is Action.REMOVE  # unlisted, no option
    assert basic.temporal_information == "REMOVED"
    assert [code for code, _ in basic.method_codes] == ["113100"]

    device = _with_options(
        tmp_path, rtnDevIdOpt=True, cleanDescOpt=True, rtnSafePrivOpt=True, rtnInstIdOpt=True
    )
    assert device.action_for(Tag("StationName")) is Action.KEEP
    assert device.action_for(Tag("DeviceSerialNumber")) is Action.KEEP
    assert device.action_for(Tag("InstitutionName")) is Action.KEEP
    assert device.action_for(Tag("StationAETitle")) is Action.REMOVE  # AE: nothing to clean
    assert device.action_for(Tag("StudyDescription")) is Action.CLEAN
    assert device.action_for(Tag("ImageComments")) is Action.CLEAN
    assert device.action_for(Tag("ContentDescription")) is Action.CLEAN
    assert device.action_for(Tag("RequestAttributesSequence")) is Action.CLEAN
    assert device.action_for(Tag("DeviceSettingDescription")) is Action.REMOVE  # OB falls back
    assert device.action_for(0x00291001) is Action.CLEAN  # private: the allow-list decides
    assert device.safe_private[(0x0029, "SIEMENS CSA HEADER", 0x08)] == "CS"
    codes = [code for code, _ in device.method_codes]
    assert codes == ["113100", "113105", "113107", "113108", "113109", "113111", "113112"]

    content = _with_options(tmp_path, cleanStructContOpt=True, cleanGraphOpt=True)
    assert content.action_for(Tag("ContentSequence")) is Action.CLEAN
    assert content.action_for(Tag("TextValue")) is Action.CLEAN
    assert content.action_for(Tag("GraphicAnnotationSequence")) is Action.CLEAN
    assert content.action_for(Tag("UnformattedTextValue")) is Action.CLEAN
    assert content.action_for(0x60003000) is Action.REMOVE  # an overlay bitmap cannot be cleaned
    assert content.action_for(0x60000022) is Action.CLEAN


def test_a_profile_names_files_beside_it_or_shipped(tmp_path: Path) -> None:
    config = _config()
    config["options"]["rtnSafePrivOpt"] = True
    shipped = load_profile(_write(tmp_path / "shipped.json", config))
    assert len(shipped.safe_private) == 11
    (tmp_path / "own.json").write_text(
        json.dumps(
            {
                "attributes": [
                    {
                        "group": "0x0029",
                        "creator": "SIEMENS CSA HEADER",
                        "offset": "0x08",
                        "vr": "CS",
                        "name": "CSA Image Header Type",
                        "reason": "a defined term",
                    }
                ]
            }
        )
    )
    config["safe_private"] = "own.json"
    own = load_profile(_write(tmp_path / "mine.json", config))
    assert own.safe_private == {(0x0029, "SIEMENS CSA HEADER", 0x08): "CS"}


def test_the_pixel_policy_and_rules_come_from_the_profile(tmp_path: Path) -> None:
    config = _config()
    (tmp_path / "rules.dicom").write_bytes(PIXEL_RULES.read_bytes())
    config["pixels"] = {"policy": "clean", "rules": "rules.dicom"}
    cleaning = load_profile(_write(tmp_path / "clean.json", config))
    assert cleaning.pixel_policy == "clean"
    assert cleaning.pixel_rules == tmp_path / "rules.dicom"
    assert isinstance(PixelRules(), PixelRules)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"options": {"rtnEverythingOpt": True}}, "unknown options"),
        ({"options": {"rtnLongModifDatesOpt": True, "rtnLongFullDatesOpt": True}}, "exclude"),
        ({"compound_resolution": {"X/Z": "K"}}, "cannot resolve"),
        ({"table_sha256": "0" * 64}, "table_sha256"),
        ({"replacements": {"(0008,0060)": "patient_pseudonym"}}, "replacement"),
        ({"dummy_values": {"CS": "lower case"}}, "dummy"),
        ({"option": {}}, "unknown fields"),
        (
            {"additional_rules": {"(0010,0010)": {"name": "n", "action": "K", "reason": "r"}}},
            "additional rule",
        ),
        (
            {"additional_rules": {"(0071,0010)": {"name": "n", "action": "X", "reason": "r",
                                                  "cleanDescOpt": "X"}}},
            "additional rule",
        ),
        ({"safe_private": "absent.json"}, "safe private allow-list 'absent.json'"),
        ({"pixels": {"policy": "blur", "rules": None}}, "`pixels` must be"),
        ({"pixels": {"policy": "clean", "rules": None}}, "needs a `rules` file"),
        ({"pixels": {"policy": "clean", "rules": "absent.dicom"}}, "pixel rules file"),
        ({"kept_text_sweep": "yes"}, "kept_text_sweep"),
    ],
)  # fmt: skip
def test_profile_rejects_invalid_configuration(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    config = _config()
    for field, value in change.items():
        current = config.get(field)
        if (
            isinstance(value, dict)
            and isinstance(current, dict)
            and field
            not in (
                "options",
                "pixels",
            )
        ):
            config[field] = {**current, **value}
        else:
            config[field] = value
    with pytest.raises(ConfigurationError, match=message):
        load_profile(_write(tmp_path / "profile.json", config))


@pytest.mark.parametrize(
    "entry",
    [
        {"group": "0x0028", "creator": "X", "offset": "0x08", "vr": "CS"},  # even group
        {"group": "0x0029", "creator": "", "offset": "0x08", "vr": "CS"},
        {"group": "0x0029", "creator": "X", "offset": "0x108", "vr": "CS"},
        {"group": "0x0029", "creator": "X", "offset": "0x08", "vr": "SQ"},  # items unchecked
        {"group": "0x0029", "creator": "X", "offset": "0x08", "vr": "CS", "name": "n"},
    ],
)
def test_safe_private_entries_are_validated(tmp_path: Path, entry: dict[str, str]) -> None:
    full = {"name": "n", "reason": "r", **entry} if "name" not in entry else entry
    (tmp_path / "list.json").write_text(json.dumps({"attributes": [full]}))
    config = _config()
    config["safe_private"] = "list.json"
    with pytest.raises(ConfigurationError, match="list.json entry 0"):
        load_profile(_write(tmp_path / "profile.json", config))


def test_safe_private_option_needs_a_list(tmp_path: Path) -> None:
    config = _config()
    config["options"]["rtnSafePrivOpt"] = True
    del config["safe_private"]
    with pytest.raises(ConfigurationError, match="names no allow-list"):
        load_profile(_write(tmp_path / "profile.json", config))


def test_profile_survives_pickling_for_worker_processes(profile: Profile) -> None:
    profile.resolve(Tag("Manufacturer"))  # fills the per-process cache
    assert pickle.loads(pickle.dumps(profile)) == profile
