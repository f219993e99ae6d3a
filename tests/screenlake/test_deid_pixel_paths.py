"""Both pixel paths end to end, through the real engine and batch: quarantine by default, and
masking by the shipped rules when a profile says so, on multi-frame RGB images."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MultiFrameTrueColorSecondaryCaptureImageStorage

from screenlake.deid.batch import LandedFile, deidentify_batch
from screenlake.deid.profile import Profile, load_default_profile, load_profile

KEY = b"pixel-paths-test-key-0123456789abcdefghij"
PROFILES = Path(__file__).resolve().parents[2] / "screenlake" / "deid" / "profiles"
FRAMES, ROWS, COLUMNS = 3, 768, 1024


def _screenshot(path: Path, planar: int) -> np.ndarray:
    """A 3-frame RGB secondary capture from the rule file's example vendor, with text pixels
    in the header band the rule masks."""
    rng = np.random.default_rng(planar)
    pixels = rng.integers(1, 255, size=(FRAMES, ROWS, COLUMNS, 3), dtype=np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MultiFrameTrueColorSecondaryCaptureImageStorage
    ds.SOPClassUID = MultiFrameTrueColorSecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = (
        pydicom.uid.generate_uid(),
        pydicom.uid.generate_uid(),
    )
    ds.PatientName, ds.PatientID, ds.StudyDate = "Visser^Anna", "5551234", "20240312"
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "OT", "Example Imaging", "ScreenView"
    ds.BurnedInAnnotation = "YES"
    ds.NumberOfFrames, ds.Rows, ds.Columns = FRAMES, ROWS, COLUMNS
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", planar
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    stored = pixels.transpose(0, 3, 1, 2) if planar else pixels
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return pixels


def _clean_profile(tmp_path: Path) -> Profile:
    config = json.loads((PROFILES / "default.json").read_text())
    config["pixels"] = {"policy": "clean", "rules": "screening.dicom"}
    config["version"] += "-pixels"
    (tmp_path / "profile.json").write_text(json.dumps(config))
    return load_profile(tmp_path / "profile.json")


def _run(tmp_path: Path, profile: Profile, source: Path) -> tuple[object, Path]:
    result = deidentify_batch(
        [LandedFile(1, source, None)],
        key=KEY,
        profile=profile,
        batch_id="B1",
        programme="cxr_tb",
        output_dir=tmp_path / "out",
        output_prefix=PurePosixPath("out"),
        quarantine_dir=tmp_path / "quarantine",
        workers=1,
    )
    return result, tmp_path


@pytest.mark.parametrize("planar", [0, 1])
def test_default_profile_quarantines_burned_in_multiframe_rgb(tmp_path: Path, planar: int) -> None:
    source = tmp_path / "in.dcm"
    _screenshot(source, planar)
    result, _ = _run(tmp_path, load_default_profile(), source)
    assert (result.deidentified, result.quarantined) == (0, 1)  # type: ignore[attr-defined]
    reason = (tmp_path / "quarantine" / "000001.reason.txt").read_text().strip()
    assert reason == "pixels may carry identity: BurnedInAnnotation is YES"
    assert not list((tmp_path / "out").rglob("*.dcm"))


@pytest.mark.parametrize("planar", [0, 1])
def test_clean_profile_masks_the_rule_band_in_every_frame_and_channel(
    tmp_path: Path, planar: int
) -> None:
    source = tmp_path / "in.dcm"
    original = _screenshot(source, planar)
    result, _ = _run(tmp_path, _clean_profile(tmp_path), source)
    assert (result.deidentified, result.quarantined) == (1, 0)  # type: ignore[attr-defined]
    [output] = list((tmp_path / "out").rglob("*.dcm"))
    ds = pydicom.dcmread(output)
    masked = ds.pixel_array
    assert masked.shape == (FRAMES, ROWS, COLUMNS, 3)
    assert not masked[:, :64, :, :].any()  # coordinates 0,0,1024,64: rows 0-63, every column
    assert np.array_equal(masked[:, 64:, :, :], original[:, 64:, :, :])
    assert ds.BurnedInAnnotation == "NO"
    assert "113101" in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    assert ds.PatientName != "Visser^Anna" and ds.PatientIdentityRemoved == "YES"


def test_clean_profile_quarantines_an_image_no_rule_fits(tmp_path: Path) -> None:
    source = tmp_path / "in.dcm"
    _screenshot(source, 0)
    ds = pydicom.dcmread(source)
    ds.ManufacturerModelName = "OtherView"
    ds.save_as(source, enforce_file_format=True)
    result, _ = _run(tmp_path, _clean_profile(tmp_path), source)
    assert result.quarantined == 1  # type: ignore[attr-defined]
    reason = (tmp_path / "quarantine" / "000001.reason.txt").read_text()
    assert reason.startswith("pixels may carry identity")
