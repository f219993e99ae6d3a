"""Tests for the synthetic export's size presets: real sizes, storage, transfer syntaxes."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless

import screenlake.synth.export as export_module
from screenlake.cli import main
from screenlake.errors import ConfigurationError
from screenlake.identifiers import is_valid_bsn
from screenlake.synth.dicom import PRIVATE_CREATOR, PRIVATE_GROUP
from screenlake.synth.export import ExportSummary, generate_export
from screenlake.synth.images import CT_PADDING_VALUE, chest_radiograph, detector_radiograph
from screenlake.synth.presets import DEMO, REAL, ImagePreset, image_preset

BAD_NAMES = {"IM99999.dcm", "IM99998.dcm", "IM99997.dcm", "thumbnail.jpg", "notes.txt"}
# Seed 6 puts four studies on all four devices: CT01, CT02 (JPEG-LS), CR01, DX01 (JPEG 2000).
SEED, STUDIES, SLICES = 6, 4, 10
PRESET = image_preset("real", ct_slices=SLICES)
# sha256 over (relative path, bytes) of every file of generate_export(studies=4, seed=11) with
# its defaults, taken before the presets existed: the demo's bytes must not move.
DEMO_EXPORT_SHA256 = "6c687823228ab201e18e248cedce5767a63aad3ca898987ac59f5132da3d0473"
DEMO_LABELS_SHA256 = "74b6053ab861dc66a46f91f933075f005dc7fc2145e5bdb27ca9bb184b92b427"


def _write(out: Path, seed: int = SEED, preset: ImagePreset = PRESET) -> ExportSummary:
    return generate_export(
        out, studies=STUDIES, seed=seed, labels_path=out.with_suffix(".csv"), days=1, preset=preset
    )


def _tree_sha256(out: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(out.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(out)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _good_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name not in BAD_NAMES)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportSummary]:
    out = tmp_path_factory.mktemp("real") / "drop"
    return out, _write(out)


@pytest.fixture(scope="module")
def headers(real: tuple[Path, ExportSummary]) -> dict[Path, Dataset]:
    return {p: pydicom.dcmread(p) for p in _good_files(real[0])}


def _series(headers: dict[Path, Dataset], modality: str) -> dict[str, list[Dataset]]:
    series: dict[str, list[Dataset]] = defaultdict(list)
    for ds in headers.values():
        if ds.Modality == modality:
            series[str(ds.SeriesInstanceUID)].append(ds)
    return {uid: sorted(s, key=lambda ds: int(ds.InstanceNumber)) for uid, s in series.items()}


def test_demo_bytes_are_unchanged(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    generate_export(tmp_path / "drop", studies=4, seed=11, labels_path=labels)
    assert _tree_sha256(tmp_path / "drop") == DEMO_EXPORT_SHA256
    assert hashlib.sha256(labels.read_bytes()).hexdigest() == DEMO_LABELS_SHA256
    generate_export(tmp_path / "again", studies=4, seed=11, labels_path=labels, preset=DEMO)
    assert _tree_sha256(tmp_path / "again") == DEMO_EXPORT_SHA256


def test_presets_check_their_values(tmp_path: Path) -> None:
    assert image_preset("real") == REAL and REAL.ct_slices == 300
    assert image_preset("real", ct_slices=40).ct_slices == 40
    with pytest.raises(ConfigurationError, match="unknown size preset"):
        image_preset("huge")
    with pytest.raises(ConfigurationError, match="CT slices"):
        image_preset("real", ct_slices=4)
    with pytest.raises(ConfigurationError, match="DX bits"):
        replace(REAL, dx_bits_stored=10)
    with pytest.raises(ConfigurationError, match="either a preset"):
        generate_export(
            tmp_path / "a",
            studies=2,
            seed=1,
            labels_path=tmp_path / "l.csv",
            ct_size=512,
            preset=REAL,
        )


def test_real_ct_is_signed_512_with_consistent_geometry(headers: dict[Path, Dataset]) -> None:
    series = _series(headers, "CT")
    assert len(series) == 2
    for slices in series.values():
        assert len(slices) == SLICES
        assert len({ds.FrameOfReferenceUID for ds in slices}) == 1
        thickness = float(slices[0].SliceThickness)
        z = [float(ds.ImagePositionPatient[2]) for ds in slices]
        assert np.allclose(np.diff(z), -thickness, atol=1e-3)
        for ds in slices:
            assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored) == (512, 512, 16, 16)
            assert ds.PixelRepresentation == 1 and ds["PixelPaddingValue"].VR == "SS"
            assert (float(ds.RescaleIntercept), float(ds.RescaleSlope)) == (-1024, 1)
            assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert ds.ImagePositionPatient[:2] == slices[0].ImagePositionPatient[:2]
            assert float(ds.SliceLocation) == float(ds.ImagePositionPatient[2])
            pixels = ds.pixel_array
            assert pixels.dtype == np.int16 and pixels.shape == (512, 512)
            # Padding outside the reconstruction circle, air and lung (stored + intercept) inside.
            assert pixels.min() == CT_PADDING_VALUE == ds.PixelPaddingValue
            assert pixels[256, 5] < 200 and 1800 > np.median(pixels[200:312, 200:312]) > -100


def test_real_radiographs_are_detector_sized(headers: dict[Path, Dataset]) -> None:
    images = [ds for ds in headers.values() if ds.Modality in ("CR", "DX")]
    assert {ds.Modality for ds in images} == {"CR", "DX"}
    for ds in images:
        bits = 14 if ds.Modality == "DX" else 12
        assert (ds.Rows, ds.Columns, ds.BitsStored, ds.HighBit) == (3000, 3000, bits, bits - 1)
        assert ds.PixelRepresentation == 0
        assert float(ds.PixelSpacing[0]) == pytest.approx(430 / 3000, rel=1e-4)
        pixels = ds.pixel_array
        assert pixels.dtype == np.uint16 and pixels.shape == (3000, 3000)
        assert 2 ** (bits - 1) <= pixels.max() < 2**bits


def test_transfer_syntaxes_follow_the_device(headers: dict[Path, Dataset]) -> None:
    expected = {
        "CT01": ExplicitVRLittleEndian,
        "CT02": JPEGLSLossless,
        "CR01": ExplicitVRLittleEndian,
    }
    expected["DX01"] = JPEG2000Lossless
    seen = set()
    for ds in headers.values():
        syntax = ds.file_meta.TransferSyntaxUID
        assert syntax == expected[str(ds.StationName)[-4:]], ds.StationName
        assert ds.LossyImageCompression == "00"
        seen.add(syntax)
    assert seen == {ExplicitVRLittleEndian, JPEGLSLossless, JPEG2000Lossless}


def test_compressed_files_decode_to_the_generated_pixels(
    real: tuple[Path, ExportSummary], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same export with every series left uncompressed: the pixels as generated.
    monkeypatch.setattr(
        export_module, "transfer_syntax", lambda preset, study: ExplicitVRLittleEndian
    )
    _write(tmp_path / "drop")
    compressed = 0
    for path in _good_files(real[0]):
        ds = pydicom.dcmread(path)
        generated = pydicom.dcmread(tmp_path / "drop" / path.relative_to(real[0]))
        assert generated.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            compressed += 1
            assert np.array_equal(ds.pixel_array, generated.pixel_array), path.name
        for keyword in ("SOPInstanceUID", "PatientName", "BitsStored", "PixelRepresentation"):
            assert ds[keyword].value == generated[keyword].value
    assert compressed == SLICES + 1  # the CT02 series and the DX radiograph


def test_real_export_keeps_fake_phi_and_bad_files(
    real: tuple[Path, ExportSummary], headers: dict[Path, Dataset]
) -> None:
    out, summary = real
    assert summary.instances == len(headers) == 2 * SLICES + 2
    assert summary.bad_files == 4 == len([p for p in out.rglob("*") if p.name in BAD_NAMES])
    for ds in headers.values():
        assert ds.PatientName and ds.PatientAddress and ds.ImageComments
        assert is_valid_bsn(ds.OtherPatientIDsSequence[0].PatientID)
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        assert block[0x11].value == ds.PatientID


def test_same_seed_same_bytes_other_seed_other_bytes(
    real: tuple[Path, ExportSummary], tmp_path: Path
) -> None:
    _write(tmp_path / "again")
    assert _tree_sha256(tmp_path / "again") == _tree_sha256(real[0])
    small = replace(PRESET, ct_slices=8, cxr_rows=400, cxr_columns=300)
    _write(tmp_path / "seven", seed=7, preset=small)
    _write(tmp_path / "eight", seed=8, preset=small)
    assert _tree_sha256(tmp_path / "seven") != _tree_sha256(tmp_path / "eight")


def test_cli_writes_real_sizes_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["synth", "--out", str(tmp_path / "drop"), "--studies", "2", "--seed", "6"]
    assert main([*args, "--days", "1", "--ct-slices", "8"]) == 0
    assert "(real sizes)" in capsys.readouterr().out
    ct = pydicom.dcmread(next((tmp_path / "drop").rglob("1_CT/IM00001.dcm")))
    assert (ct.Rows, ct.PixelRepresentation) == (512, 1)
    assert len(list((tmp_path / "drop").rglob("1_CT/IM000*.dcm"))) == 8
    demo = ["synth", "--out", str(tmp_path / "demo"), "--studies", "2", "--size", "demo"]
    assert main(demo) == 0
    assert "(demo sizes)" in capsys.readouterr().out
    assert pydicom.dcmread(next((tmp_path / "demo").rglob("1_CT/IM00001.dcm"))).Rows == 96
    assert main([*args[:2], str(tmp_path / "x"), "--ct-slices", "3"]) == 2


def test_detector_radiograph_crops_a_portrait_cassette_and_scales_bits() -> None:
    square = chest_radiograph(np.random.default_rng(3), True, size=300)
    portrait = detector_radiograph(np.random.default_rng(3), True, 300, 200, bits_stored=14)
    assert portrait.shape == (300, 200) and portrait.dtype == np.uint16
    assert np.array_equal(portrait, square[:, 50:250].astype(np.uint16) * 4)
    with pytest.raises(ValueError, match="12 to 16"):
        detector_radiograph(np.random.default_rng(3), True, 300, 200, bits_stored=8)
