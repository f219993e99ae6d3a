"""Tests for screenlake.deid.reading: bad input is quarantined with a reason, never a crash."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom.uid import UID, RLELossless

from screenlake.deid import Profile, deidentify_dataset, deidentify_file, load_default_profile
from screenlake.deid.reading import DEFER_SIZE
from screenlake.errors import UnreadableInstanceError
from tests.screenlake.test_deid_corpus import IDENTIFYING, KEY, NAME, make_ct, save


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_default_profile()


def _reason(path: Path, profile: Profile) -> str:
    with pytest.raises(UnreadableInstanceError) as raised:
        deidentify_file(path, KEY, profile)
    reason = str(raised.value)
    # A reason goes to logs and the audit table: it names no identifying value.
    assert not [v for v in IDENTIFYING if v.lower() in reason.lower()], reason
    return reason


def test_empty_and_absent_files(profile: Profile, tmp_path: Path) -> None:
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert _reason(empty, profile).startswith("empty file: 0 bytes;")
    assert _reason(tmp_path / "absent.dcm", profile).startswith("unreadable file:")


def test_not_dicom(profile: Profile, tmp_path: Path) -> None:
    text = tmp_path / "notes.dcm"
    text.write_text("Patient Jansen, see attached\n" * 20)
    assert _reason(text, profile).startswith("not DICOM: no valid DICOM file header")


def test_missing_preamble_is_quarantined(profile: Profile, tmp_path: Path) -> None:
    """A file without the 128-byte preamble is not a PS3.10 file; it goes to quarantine with
    a reason that says so, rather than being read by guesswork."""
    full = save(make_ct(), tmp_path / "full.dcm").read_bytes()
    prefix_only = tmp_path / "no-preamble.dcm"
    prefix_only.write_bytes(full[128:])  # "DICM" and the meta, no preamble
    meta_length = struct.unpack_from("<L", full, 132 + 8)[0]
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(full[132 + 12 + meta_length :])  # the data set alone
    assert bare.read_bytes()[:2] == b"\x08\x00"
    for path in (prefix_only, bare):
        assert _reason(path, profile).startswith("no DICOM preamble: the file starts with")


def test_unknown_transfer_syntax(profile: Profile, tmp_path: Path) -> None:
    ds = make_ct()
    ds.file_meta.TransferSyntaxUID = UID("1.2.826.0.1.3680043.8.498.99")
    path = tmp_path / "odd.dcm"
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    assert _reason(path, profile).startswith("unknown transfer syntax: the file meta names")


def test_missing_transfer_syntax(profile: Profile, tmp_path: Path) -> None:
    ds = make_ct()
    del ds.file_meta.TransferSyntaxUID
    path = tmp_path / "none.dcm"
    ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)
    full = path.read_bytes()
    # enforce_file_format=False leaves the preamble out; put one back.
    path.write_bytes(b"\x00" * 128 + b"DICM" + full[full.index(b"\x02\x00") :])
    assert _reason(path, profile).startswith("missing transfer syntax:")


@pytest.mark.parametrize(
    "keyword",
    ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID"],
)
def test_missing_identifiers(profile: Profile, tmp_path: Path, keyword: str) -> None:
    ds = make_ct()
    delattr(ds, keyword)
    if keyword == "SOPClassUID":
        ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
    path = tmp_path / "missing.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert _reason(path, profile).startswith(f"missing {keyword}: ")
    ds = make_ct()
    setattr(ds, keyword, "")
    with pytest.raises(UnreadableInstanceError, match=f"^missing {keyword}: "):
        deidentify_dataset(ds, KEY, profile)


def test_truncated_files(profile: Profile, tmp_path: Path) -> None:
    full = save(make_ct(), tmp_path / "full.dcm").read_bytes()
    half = tmp_path / "half.dcm"
    half.write_bytes(full[: len(full) // 2])
    assert _reason(half, profile).startswith("truncated file: pixel data runs 5")


def test_truncated_deferred_pixel_data(profile: Profile, tmp_path: Path) -> None:
    ds = make_ct()
    ds.Rows = ds.Columns = 256  # pixel data over the defer size: read only when written
    ds.PixelData = b"\x00\x01" * (256 * 256)
    assert len(ds.PixelData) > DEFER_SIZE
    full = save(ds, tmp_path / "big.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(full[:-1000])
    assert _reason(cut, profile).startswith("truncated file: pixel data runs 1000 bytes past")


@pytest.mark.filterwarnings("ignore")
def test_no_prefix_of_a_file_passes(profile: Profile, tmp_path: Path) -> None:
    full = save(make_ct(), tmp_path / "full.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    for length in range(0, len(full), 53):
        cut.write_bytes(full[:length])
        with pytest.raises(UnreadableInstanceError):
            deidentify_file(cut, KEY, profile)


@pytest.mark.filterwarnings("ignore")
def test_truncated_encapsulated_pixel_data_is_quarantined(profile: Profile, tmp_path: Path) -> None:
    ds = make_ct()
    ds.compress(RLELossless)
    full = save(ds, tmp_path / "rle.dcm").read_bytes()
    assert deidentify_file(tmp_path / "rle.dcm", KEY, profile).dataset.PixelData == ds.PixelData
    cut = tmp_path / "cut.dcm"
    # The last 8 bytes are the sequence delimiter; every fragment is whole before them.
    for length in range(len(full) - len(ds.PixelData), len(full) - 8, 29):
        cut.write_bytes(full[:length])
        reason = _reason(cut, profile)
        assert reason.startswith(("truncated file:", "malformed DICOM:")), reason


def test_an_image_without_pixel_data(profile: Profile, tmp_path: Path) -> None:
    ds = make_ct()
    del ds.PixelData
    path = save(ds, tmp_path / "header.dcm")
    assert _reason(path, profile).startswith("truncated file: an image instance without")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_damaged_values_are_quarantined(profile: Profile, tmp_path: Path) -> None:
    ds = make_ct()
    ds.PatientSex = NAME  # what a damaged length or tag byte leaves behind
    path = save(ds, tmp_path / "damaged.dcm")
    assert _reason(path, profile).startswith("malformed DICOM: PatientSex holds a value")
    # High Bit's length damaged so that it swallows Pixel Representation, the next element.
    full = bytearray(save(make_ct(), tmp_path / "full.dcm").read_bytes())
    high_bit = full.index(b"\x28\x00\x02\x01US\x02\x00")
    struct.pack_into("<H", full, high_bit + 6, 12)
    swallowed = tmp_path / "swallowed.dcm"
    swallowed.write_bytes(bytes(full))
    assert _reason(swallowed, profile).startswith("malformed DICOM: HighBit holds a value")


def test_a_damaged_sequence_is_quarantined(profile: Profile, tmp_path: Path) -> None:
    # A VR byte flipped inside a Source Image Sequence item: pydicom meets it only when the
    # sequence is decoded, in the middle of de-identification.
    full = bytearray(save(make_ct(), tmp_path / "full.dcm").read_bytes())
    code_value = full.index(b"SH\x06\x00121320")
    full[code_value : code_value + 2] = b"Z\x01"
    damaged = tmp_path / "damaged.dcm"
    damaged.write_bytes(bytes(full))
    assert _reason(damaged, profile).startswith("malformed DICOM: CodeValue holds a value")
