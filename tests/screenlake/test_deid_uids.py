"""Tests for screenlake.deid.uids: keyed UIDs and pseudonyms, consistent across files and runs."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage

from screenlake.deid import Profile, deidentify_dataset, load_default_profile
from screenlake.deid.batch import LandedFile, deidentify_batch
from screenlake.keys import keyed_uid
from tests.screenlake.test_deid_corpus import (
    BUILDERS,
    CONCATENATION_UID,
    FRAME_UID,
    KEY,
    OTHER_KEY,
    SERIES_UID,
    SOP_UID,
    SOURCE_SOP_UID,
    STUDY_UID,
    make_ct,
    make_enhanced,
    make_gsps,
    make_sr,
    save,
)


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_default_profile()


def test_uids_are_remapped_consistently(profile: Profile) -> None:
    result = deidentify_dataset(make_ct(), KEY, profile)
    out = result.dataset
    assert out.StudyInstanceUID == keyed_uid(KEY, STUDY_UID) == result.study_instance_uid
    assert out.SeriesInstanceUID == keyed_uid(KEY, SERIES_UID)
    assert out.SOPInstanceUID == keyed_uid(KEY, SOP_UID) == result.sop_instance_uid
    assert out.FrameOfReferenceUID == keyed_uid(KEY, FRAME_UID)
    assert out.SOPInstanceUIDOfConcatenationSource == keyed_uid(KEY, CONCATENATION_UID)
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPClassUID == out.file_meta.MediaStorageSOPClassUID == CTImageStorage
    for element in [*out.iterall(), *out.file_meta]:
        if element.VR == "UI" and element.value:
            assert UID(element.value).is_valid and len(element.value) <= 64, element


def test_a_reference_follows_its_target_across_files(profile: Profile) -> None:
    source = deidentify_dataset(make_ct(sop_uid=SOURCE_SOP_UID), KEY, profile).dataset
    ct = deidentify_dataset(make_ct(), KEY, profile).dataset
    evidence = ct.ReferencedImageEvidenceSequence[0]
    series = evidence.ReferencedSeriesSequence[0]
    assert evidence.StudyInstanceUID == ct.StudyInstanceUID
    assert series.SeriesInstanceUID == ct.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ct.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ct.SourceImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    gsps = deidentify_dataset(make_gsps(), KEY, profile).dataset
    image = gsps.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    assert image.ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert gsps.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
    enhanced = deidentify_dataset(make_enhanced(), KEY, profile).dataset
    for frame in enhanced.PerFrameFunctionalGroupsSequence:
        reference = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert enhanced.FrameOfReferenceUID == ct.FrameOfReferenceUID
    sr = deidentify_dataset(make_sr(), KEY, profile).dataset
    uidref = sr.ContentSequence[2].ContentSequence[0].ContentSequence[0]
    assert uidref.UID == source.SOPInstanceUID


def test_registered_uids_stay(profile: Profile) -> None:
    ds = make_ct()
    talairach = "1.2.840.10008.1.4.1.1"
    ds.FrameOfReferenceUID = talairach
    ds.CodingSchemeUID = "1.2.826.0.1.3680043.8.498.7"
    out = deidentify_dataset(ds, KEY, profile).dataset
    assert out.FrameOfReferenceUID == talairach
    assert out.CodingSchemeUID == ds.CodingSchemeUID


def _batch(originals: list[Path], key: bytes, profile: Profile, root: Path) -> list[Dataset]:
    deidentify_batch(
        [LandedFile(i, p, None) for i, p in enumerate(originals)],
        key=key,
        profile=profile,
        batch_id=root.name,
        programme="lung_ldct",
        output_dir=root / "research",
        output_prefix=PurePosixPath("research"),
        quarantine_dir=root / "quarantine",
    )
    outputs = sorted((root / "research").rglob("*.dcm"))
    return sorted((pydicom.dcmread(p) for p in outputs), key=lambda d: str(d.Modality))


def _identity(ds: Dataset) -> tuple[str, ...]:
    return (
        str(ds.PatientID),
        str(ds.PatientName),
        str(ds.AccessionNumber),
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
        str(ds.StudyDate),
    )


def test_a_second_batch_and_a_second_key(profile: Profile, tmp_path: Path) -> None:
    originals = [save(build(), tmp_path / f"{kind}.dcm") for kind, build in BUILDERS.items()]
    first = _batch(originals, KEY, profile, tmp_path / "first")
    again = _batch(originals, KEY, profile, tmp_path / "again")
    other = _batch(originals, OTHER_KEY, profile, tmp_path / "other")
    assert len(first) == len(again) == len(other) == len(BUILDERS)
    # Same key: the same pseudonyms, UIDs and dates, and the same files byte for byte.
    assert [_identity(d) for d in first] == [_identity(d) for d in again]
    assert [d for d in first] == [d for d in again]
    # Another key: every pseudonym, UID and shifted date differs.
    for one, two in zip(first, other, strict=True):
        assert [a != b for a, b in zip(_identity(one), _identity(two), strict=True)] == [True] * 7
