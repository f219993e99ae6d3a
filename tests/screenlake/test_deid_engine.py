"""Tests for screenlake.deid.engine: the public API, the pixel policy, writing the result."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from screenlake.deid import (
    Profile,
    deidentify_dataset,
    deidentify_file,
    engine,
    load_default_profile,
    load_profile,
    write_deidentified,
)
from screenlake.deid.pixels import PixelRules
from screenlake.deid.profile import DEFAULT_PROFILE_PATH
from screenlake.errors import UnreadableInstanceError
from screenlake.keys import keyed_uid
from tests.screenlake.test_deid_corpus import KEY, NAME, PIXELS, SOP_UID, make_ct, make_sr, save

PIXEL_RULES = DEFAULT_PROFILE_PATH.parents[1] / "pixel_rules" / "screening.dicom"


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_default_profile()


def test_deidentify_dataset_leaves_its_input_alone(profile: Profile) -> None:
    for build in (make_ct, make_sr):
        original = build()
        before = copy.deepcopy(original)
        result = deidentify_dataset(original, KEY, profile)
        assert original == before
        assert original.file_meta == before.file_meta
        assert result.dataset is not original
        assert result.dataset.PatientName != original.PatientName


def test_deidentify_file_returns_what_the_audit_needs(profile: Profile, tmp_path: Path) -> None:
    result = deidentify_file(save(make_ct(), tmp_path / "in.dcm"), KEY, profile)
    assert result.sop_instance_uid == keyed_uid(KEY, SOP_UID) == result.dataset.SOPInstanceUID
    assert result.study_instance_uid == result.dataset.StudyInstanceUID
    assert result.patient_pseudonym == result.dataset.PatientID
    assert result.profile_version == "2024b-3"
    assert result.actions_applied > 40


def test_the_same_input_gives_the_same_output(profile: Profile, tmp_path: Path) -> None:
    source = save(make_ct(), tmp_path / "in.dcm")
    for name in ("a.dcm", "b.dcm"):
        write_deidentified(deidentify_file(source, KEY, profile), tmp_path / name)
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()
    from_dataset = deidentify_dataset(pydicom.dcmread(source), KEY, profile)
    write_deidentified(from_dataset, tmp_path / "c.dcm")
    assert pydicom.dcmread(tmp_path / "c.dcm") == pydicom.dcmread(tmp_path / "a.dcm")


def test_written_file_rereads_and_replaces_atomically(profile: Profile, tmp_path: Path) -> None:
    source = save(make_ct(), tmp_path / "in.dcm")
    result = deidentify_file(source, KEY, profile)
    dest = tmp_path / "research" / "out.dcm"
    dest.parent.mkdir()
    dest.write_bytes(b"an earlier run")
    write_deidentified(result, dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.dcm"]
    again = pydicom.dcmread(dest)
    assert again.preamble == b"\x00" * 128
    assert again.SOPInstanceUID == result.sop_instance_uid
    assert again.PatientID == result.patient_pseudonym
    assert again.PixelData == PIXELS
    assert pydicom.dcmread(source).PatientName == NAME


def test_a_dataset_without_file_meta_gets_one(profile: Profile, tmp_path: Path) -> None:
    ds = make_ct()
    del ds.file_meta
    result = deidentify_dataset(ds, KEY, profile)
    assert result.dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    write_deidentified(result, tmp_path / "out.dcm")
    assert pydicom.dcmread(tmp_path / "out.dcm").SOPInstanceUID == result.sop_instance_uid


def test_pixels_that_may_carry_identity_are_quarantined(profile: Profile, tmp_path: Path) -> None:
    ds = make_ct()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(UnreadableInstanceError) as raised:
        deidentify_file(save(ds, tmp_path / "burned.dcm"), KEY, profile)
    assert str(raised.value) == "pixels may carry identity: BurnedInAnnotation is YES"
    ds.BurnedInAnnotation = "NO"
    assert deidentify_dataset(ds, KEY, profile).dataset.BurnedInAnnotation == "NO"


def _cleaning_profile(tmp_path: Path) -> Profile:
    config = json.loads(DEFAULT_PROFILE_PATH.read_text())
    (tmp_path / "rules.dicom").write_bytes(PIXEL_RULES.read_bytes())
    config["pixels"] = {"policy": "clean", "rules": "rules.dicom"}
    (tmp_path / "clean.json").write_text(json.dumps(config))
    return load_profile(tmp_path / "clean.json")


def test_the_clean_policy_masks_with_the_profile_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = _cleaning_profile(tmp_path)
    calls: list[PixelRules] = []

    def masked(ds: Dataset, rules: PixelRules) -> int:
        calls.append(rules)
        ds.PixelData = b"\x00" * len(PIXELS)
        ds.BurnedInAnnotation = "NO"
        return 2

    monkeypatch.setattr(engine, "clean_pixels", masked)
    original = make_ct()
    original.BurnedInAnnotation = "YES"
    result = deidentify_dataset(original, KEY, profile)
    assert len(calls) == 1 and calls[0].source == "rules.dicom" and calls[0].rules
    out = result.dataset
    assert out.PixelData == b"\x00" * len(PIXELS) and out.BurnedInAnnotation == "NO"
    codes = [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113101", "113107", "113108"]
    # The caller's data set keeps its pixels: masking changed copies of its elements.
    assert original.PixelData == PIXELS and original.BurnedInAnnotation == "YES"
    plain = deidentify_dataset(make_ct(), KEY, profile).dataset
    assert len(calls) == 1 and plain.PixelData == PIXELS
    assert "113101" not in [c.CodeValue for c in plain.DeidentificationMethodCodeSequence]


def test_the_clean_policy_quarantines_what_no_rule_fits(tmp_path: Path) -> None:
    profile = _cleaning_profile(tmp_path)
    ds = make_ct()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(UnreadableInstanceError, match="^pixels may carry identity: "):
        deidentify_file(save(ds, tmp_path / "burned.dcm"), KEY, profile)
