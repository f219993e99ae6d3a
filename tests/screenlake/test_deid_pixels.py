"""Tests for screenlake.deid.pixels: which pixels may carry identity, the deid-format rules,
and masking in every frame and sample, or quarantine with a reason."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from deid.config import DeidRecipe
from numpy.typing import NDArray
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, RLELossless, generate_uid

from screenlake.deid.pixels import (
    SCREENING_PIXEL_RULES,
    PixelRules,
    clean_pixels,
    load_pixel_rules,
    pixel_identity_risk,
)
from screenlake.errors import ConfigurationError, UnreadableInstanceError
from tests.dicom_factory import ct_slice, write

SC = "1.2.840.10008.5.1.4.1.1.7"
SC_MULTIFRAME_COLOUR = "1.2.840.10008.5.1.4.1.1.7.4"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
# A band across the top and a box at the right: rows 0-2 and rows 4-6 x columns 7-9.
RULE_BOXES = ((0, 0, 12, 3), (7, 4, 10, 7))
RECIPE = """FORMAT dicom

%filter graylist

LABEL Test vendor screen save
  equals Manufacturer Test Vendor
  + contains ImageType SECONDARY
  coordinates 0,0,12,3
  ctpcoordinates 7,4,3,3
"""


def image(
    *,
    frames: int | None = None,
    samples: int = 1,
    planar: int = 0,
    rows: int = 10,
    columns: int = 12,
    bits: int = 16,
    sop_class: str = SC,
    manufacturer: str = "Test Vendor",
    seed: int = 0,
) -> Dataset:
    """A small instance with random, never-zero pixels, flagged as a secondary capture."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "7654321", "Jansen^Pieter", "OT"
    ds.Manufacturer = manufacturer
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = planar
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    shape: tuple[int, ...] = (rows, columns) if samples == 1 else (rows, columns, samples)
    if frames is not None:
        ds.NumberOfFrames = frames
        shape = (frames, *shape)
    dtype = np.uint8 if bits == 8 else np.uint16
    values = np.random.default_rng(seed).integers(1, 200, size=shape, dtype=dtype)
    if samples == 3 and planar == 1:
        values = np.moveaxis(values, -1, -3)  # colour-by-plane: R plane, G plane, B plane
    ds.PixelData = np.ascontiguousarray(values).tobytes()
    return ds


def rules_file(tmp_path: Path, text: str = RECIPE) -> Path:
    path = tmp_path / "rules.dicom"
    path.write_text(text)
    return path


def reread(ds: Dataset, tmp_path: Path) -> Dataset:
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def frames_of(ds: Dataset) -> NDArray[np.generic]:
    """Decoded pixels as (frames, rows, columns, samples), whatever the planar configuration."""
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames") or 1)
    return pixels.reshape(frames, int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel))


def box_mask(rows: int, columns: int, boxes: tuple[tuple[int, int, int, int], ...]) -> NDArray:
    mask = np.zeros((rows, columns), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def assert_masked(before: NDArray, after: NDArray, mask: NDArray) -> None:
    """Every cell under the mask is 0 in every frame and sample; every other cell unchanged."""
    assert after.shape == before.shape
    assert mask.any() and (~mask).any()
    assert (after[:, mask, :] == 0).all()
    np.testing.assert_array_equal(after[:, ~mask, :], before[:, ~mask, :])


# ---------------------------------------------------------------- which pixels may carry identity


def risky(**attributes: object) -> Dataset:
    ds = ct_slice()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("ds", "reason"),
    [
        (risky(BurnedInAnnotation="YES"), "BurnedInAnnotation is YES"),
        (risky(Modality="US"), "ultrasound"),
        (risky(SOPClassUID=US_MULTIFRAME), "ultrasound"),
        (risky(SequenceOfUltrasoundRegions=[Dataset()]), "ultrasound"),
        (risky(SOPClassUID=SC), "secondary capture"),
        (risky(SOPClassUID=SC_MULTIFRAME_COLOUR), "secondary capture"),
        (risky(ConversionType="WSD"), "secondary capture"),
        (risky(SOPClassUID=SC, ConversionType="SD"), "scanned document"),
        (risky(Modality="DOC"), "scanned document"),
        (risky(ImageType=["DERIVED", "SECONDARY", "SCREEN SAVE"]), "DERIVED\\SECONDARY image"),
    ],
)
def test_risk_names_each_category(ds: Dataset, reason: str) -> None:
    assert pixel_identity_risk(ds) == reason


@pytest.mark.parametrize("modality", ["CT", "CR"])
def test_ordinary_images_carry_no_pixel_risk(modality: str) -> None:
    ds = ct_slice(modality=modality)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BurnedInAnnotation = "NO"
    assert pixel_identity_risk(ds) is None
    ds.ImageType = ["DERIVED", "PRIMARY"]
    assert pixel_identity_risk(ds) is None


def test_risk_is_decided_without_pixel_data(tmp_path: Path) -> None:
    ct, sc = ct_slice(), image()
    del ct.PixelData
    assert pixel_identity_risk(ct) is None
    # Read with the pixel data deferred, then remove the file: touching PixelData would fail.
    path = write(sc, tmp_path / "sc.dcm")
    deferred = pydicom.dcmread(path, defer_size=64)
    path.unlink()
    assert pixel_identity_risk(deferred) == "secondary capture"
    headers_only = pydicom.dcmread(write(image(), tmp_path / "b.dcm"), stop_before_pixels=True)
    assert pixel_identity_risk(headers_only) == "secondary capture"


# ---------------------------------------------------------------------------- masking


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param({}, id="MONOCHROME2 single frame"),
        pytest.param({"frames": 3}, id="MONOCHROME2 3 frames"),
        pytest.param({"samples": 3, "bits": 8}, id="RGB single frame"),
        pytest.param({"samples": 3, "bits": 8, "frames": 3}, id="RGB 3 frames planar 0"),
        pytest.param(
            {"samples": 3, "bits": 8, "frames": 3, "planar": 1}, id="RGB 3 frames planar 1"
        ),
    ],
)
def test_rule_rectangles_are_zero_in_every_frame_and_sample(
    shape: dict[str, Any], tmp_path: Path
) -> None:
    ds = image(**shape)
    before = frames_of(ds)
    raw_before = bytes(ds.PixelData)

    assert clean_pixels(ds, load_pixel_rules(rules_file(tmp_path))) == 2

    assert ds.BurnedInAnnotation == "NO"
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.get("NumberOfFrames") == shape.get("frames")
    assert ds.get("PlanarConfiguration") == (shape.get("planar", 0) if "samples" in shape else None)
    assert len(ds.PixelData) == len(raw_before)
    mask = box_mask(10, 12, RULE_BOXES)
    assert_masked(before, frames_of(ds), mask)
    assert_masked(before, frames_of(reread(ds, tmp_path)), mask)


def test_bit_packed_pixels_are_masked_bit_by_bit(tmp_path: Path) -> None:
    # 7 x 13 one-bit frames do not end on a byte boundary, so frames share bytes.
    ds = image(frames=2, rows=7, columns=13, bits=8)
    bits = np.random.default_rng(1).integers(0, 2, size=(2, 7, 13), dtype=np.uint8)
    bits[:, 3:, :] = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelData = np.packbits(bits.ravel(), bitorder="little").tobytes()
    rules = load_pixel_rules(rules_file(tmp_path, RECIPE.replace("0,0,12,3", "0,0,13,3")))
    before = frames_of(ds)

    clean_pixels(ds, rules)

    mask = box_mask(7, 13, ((0, 0, 13, 3), (7, 4, 10, 7)))
    assert_masked(before, frames_of(reread(ds, tmp_path)), mask)


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_rle_2frame.dcm",  # RLE Lossless, RGB, 2 frames
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline, YBR_FULL
        "US1_J2KR.dcm",  # JPEG 2000 Lossless, YBR_RCT, ultrasound
        "SC_ybr_full_422_uncompressed.dcm",  # uncompressed, but YBR_FULL_422
    ],
)
def test_compressed_pixels_are_decoded_masked_and_written_uncompressed(
    name: str, tmp_path: Path
) -> None:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom's test file {name} is missing"
    ds = pydicom.dcmread(path)
    frames = ds.get("NumberOfFrames")
    before = frames_of(ds)  # pydicom's own decoding, converted to RGB
    rules = load_pixel_rules(
        rules_file(
            tmp_path,
            "FORMAT dicom\n%filter graylist\nLABEL band\n  present SOPClassUID\n"
            "  coordinates 0,0,64,20\n  coordinates 50,60,90,80\n",
        )
    )

    assert clean_pixels(ds, rules) == 2

    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.PhotometricInterpretation == "RGB"
    assert ds.PlanarConfiguration == 0
    assert ds.get("NumberOfFrames") == frames
    assert not ds["PixelData"].is_undefined_length
    mask = box_mask(int(ds.Rows), int(ds.Columns), ((0, 0, 64, 20), (50, 60, 90, 80)))
    assert_masked(before, frames_of(ds), mask)
    assert_masked(before, frames_of(reread(ds, tmp_path)), mask)


def test_big_endian_pixels_are_masked_in_place(tmp_path: Path) -> None:
    # Explicit VR Big Endian OW swaps 8-bit samples in pairs: the pairs must be swapped back.
    path = get_testdata_file("SC_rgb_small_odd_big_endian.dcm")
    assert path is not None
    ds = pydicom.dcmread(path)
    before = frames_of(ds)
    recipe = RECIPE.replace("0,0,12,3", "0,0,1,1").replace("7,4,3,3", "1,1,2,2")
    rules = load_pixel_rules(
        rules_file(
            tmp_path,
            recipe.replace("Test Vendor", "").replace("equals Manufacturer", "present SOPClassUID"),
        )
    )
    clean_pixels(ds, rules)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    mask = box_mask(3, 3, ((0, 0, 1, 1), (1, 1, 3, 3)))
    assert_masked(before, frames_of(ds), mask)
    assert_masked(before, frames_of(reread(ds, tmp_path)), mask)


def test_screening_rules_mask_the_example_screen_capture_header(tmp_path: Path) -> None:
    ds = image(rows=768, columns=1024, bits=8)
    ds.Manufacturer, ds.ManufacturerModelName = "Example Imaging", "ScreenView"
    before = frames_of(ds)
    assert clean_pixels(ds, load_pixel_rules(SCREENING_PIXEL_RULES)) == 1
    assert_masked(before, frames_of(ds), box_mask(768, 1024, ((0, 0, 1024, 64),)))


# --------------------------------------------------------------------------- ultrasound regions


def ultrasound(regions: list[tuple[int, int, int, int]], *, manufacturer: str = "Acme") -> Dataset:
    ds = image(
        frames=2,
        samples=3,
        bits=8,
        rows=60,
        columns=80,
        sop_class=US_MULTIFRAME,
        manufacturer=manufacturer,
    )
    ds.Modality = "US"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    items = []
    for x0, y0, x1, y1 in regions:
        item = Dataset()
        item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
        item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
        items.append(item)
    ds.SequenceOfUltrasoundRegions = items
    return ds


def test_ultrasound_keeps_only_its_regions(tmp_path: Path) -> None:
    ds = ultrasound([(10, 8, 39, 47), (45, 8, 74, 30)])
    before = frames_of(ds)

    assert clean_pixels(ds, load_pixel_rules(SCREENING_PIXEL_RULES)) == 1

    # RegionLocationMax is the regions' last pixel: kept.
    kept = box_mask(60, 80, ((10, 8, 40, 48), (45, 8, 75, 31)))
    assert_masked(before, frames_of(reread(ds, tmp_path)), ~kept)


def test_ultrasound_rule_masks_inside_the_regions_too() -> None:
    ds = ultrasound([(0, 0, 79, 59)], manufacturer="Example Imaging")
    ds.Rows, ds.Columns = 600, 800  # the example rule's size, with pixels to match
    ds.PixelData = np.full((2, 600, 800, 3), 9, dtype=np.uint8).tobytes()
    ds.SequenceOfUltrasoundRegions[0].RegionLocationMaxX1 = 799
    ds.SequenceOfUltrasoundRegions[0].RegionLocationMaxY1 = 599
    before = frames_of(ds)

    assert clean_pixels(ds, load_pixel_rules(SCREENING_PIXEL_RULES)) == 3

    assert_masked(
        before, frames_of(ds), box_mask(600, 800, ((0, 0, 800, 48), (600, 560, 800, 600)))
    )


def test_each_ultrasound_instance_gets_its_own_regions(tmp_path: Path) -> None:
    # deid's has_burned_pixels writes the first instance's regions into the loaded recipe;
    # here a recipe's from: coordinates are resolved per instance.
    recipe = (
        "FORMAT dicom\n%filter graylist\nLABEL US\n  equals Modality US\n  coordinates all\n"
        "  keepcoordinates from:SequenceOfUltrasoundRegions\n"
    )
    rules = load_pixel_rules(rules_file(tmp_path, recipe))
    for regions in ([(0, 0, 9, 9)], [(40, 20, 79, 59)]):
        ds = ultrasound(regions)
        before = frames_of(ds)
        clean_pixels(ds, rules)
        x0, y0, x1, y1 = regions[0]
        assert_masked(before, frames_of(ds), ~box_mask(60, 80, ((x0, y0, x1 + 1, y1 + 1),)))


def test_ultrasound_is_quarantined_without_rules() -> None:
    ds = ultrasound([(10, 8, 39, 47)])
    pixels = bytes(ds.PixelData)
    with pytest.raises(
        UnreadableInstanceError,
        match=r"^pixels may carry identity: ultrasound; "
        r"no pixel cleaning rule matches \(no pixel rules are configured\)",
    ):
        clean_pixels(ds, load_pixel_rules(None))
    assert ds.PixelData == pixels and "BurnedInAnnotation" not in ds


def test_ultrasound_region_outside_the_image_does_not_fit() -> None:
    ds = ultrasound([(10, 8, 39, 47), (70, 8, 95, 30)])
    with pytest.raises(
        UnreadableInstanceError,
        match=r"^pixel cleaning rule does not fit: "
        r"ultrasound region 2 \(70,8,95,30\) lies outside the 80x60 image",
    ):
        clean_pixels(ds, load_pixel_rules(SCREENING_PIXEL_RULES))


# ------------------------------------------------------------------------- quarantine reasons


def test_rule_rectangle_outside_the_image_does_not_fit(tmp_path: Path) -> None:
    ds = image(frames=3, rows=6)  # the ctpcoordinates box 7,4,3,3 ends at row 7
    pixels = bytes(ds.PixelData)
    with pytest.raises(UnreadableInstanceError) as caught:
        clean_pixels(ds, load_pixel_rules(rules_file(tmp_path)))
    assert str(caught.value) == (
        "pixel cleaning rule does not fit: rule 'Test vendor screen save' rectangle 7,4,10,7 "
        "(x0,y0,x1,y1) reaches outside the 12x6 image (columns x rows); narrow the rule's "
        "criteria (equals Rows / equals Columns) or fix its coordinates"
    )
    assert ds.PixelData == pixels and "BurnedInAnnotation" not in ds


def test_no_matching_rule_quarantines(tmp_path: Path) -> None:
    ds = image(manufacturer="Other Vendor")
    with pytest.raises(UnreadableInstanceError) as caught:
        clean_pixels(ds, load_pixel_rules(rules_file(tmp_path)))
    reason = str(caught.value)
    assert reason.startswith(
        "pixels may carry identity: secondary capture; no pixel cleaning rule matches in rules.dicom"
    )
    assert "Other Vendor" not in reason and "7654321" not in reason and "Jansen" not in reason


def test_blacklist_rule_keeps_scanned_documents_in_quarantine() -> None:
    ds = image(rows=768, columns=1024, bits=8)
    ds.Manufacturer, ds.ManufacturerModelName = "Example Imaging", "ScreenView"
    ds.ConversionType = "SD"
    with pytest.raises(
        UnreadableInstanceError,
        match=r"^pixels may carry identity: scanned "
        r"document; rule 'Scanned documents stay in quarantine'",
    ):
        clean_pixels(ds, load_pixel_rules(SCREENING_PIXEL_RULES))


def test_pixels_that_do_not_decode_are_quarantined(tmp_path: Path) -> None:
    ds = image(samples=3, bits=8)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + b"\x00" * 60 + b"not rle at all"])
    with pytest.raises(
        UnreadableInstanceError,
        match=r"^pixels may carry identity: secondary "
        r"capture; the RLE Lossless pixel data does not decode \(\w+\)$",
    ):
        clean_pixels(ds, load_pixel_rules(rules_file(tmp_path)))


# ------------------------------------------------------------------------------- rule files


def test_screening_rules_load() -> None:
    rules = load_pixel_rules(SCREENING_PIXEL_RULES)
    assert [rule.group for rule in rules.rules] == ["graylist"] * 3 + ["blacklist"]
    assert rules.source == "screening.dicom" and len(rules.digest) == 64
    assert load_pixel_rules(None) == PixelRules() and not PixelRules().ultrasound_regions


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty; it must start with 'FORMAT dicom'"),
        ("%filter graylist\n", "line 1: the file must start with 'FORMAT dicom'"),
        ("FORMAT nifti\n", "line 1: the file starts with 'FORMAT dicom', once"),
        ("FORMAT dicom\n", "no rules"),
        ("FORMAT dicom\n%header\nREMOVE PatientName\n", "line 2: only %filter sections"),
        ("FORMAT dicom\n%filter\n", "line 2: a %filter section needs a group name"),
        ("FORMAT dicom\n%filter whitelist\n", "line 2: whitelist groups are not applied"),
        ("FORMAT dicom\nLABEL x\n", "line 2: a rule must be inside a '%filter <group>' section"),
        ("FORMAT dicom\n%filter g\n  equals Modality US\n", "line 3: criteria and coordinates"),
        (
            RECIPE.replace("equals Manufacturer", "equal Manufacturer"),
            "line 6: 'equal' is not a deid filter",
        ),
        (
            RECIPE.replace("+ contains", "|| contains"),
            "line 7: deid ANDs a line that starts with '||'",
        ),
        (
            RECIPE.replace("+ contains", "contains"),
            "line 7: a rule's first criterion has no leading '+'",
        ),
        (
            RECIPE.replace("SECONDARY", "SECONDARY # screen saves"),
            "line 7: put comments on their own line",
        ),
        (RECIPE.replace("0,0,12,3", "0,0,12"), "line 8: coordinates takes x0,y0,x1,y1"),
        (RECIPE.replace("0,0,12,3", "5,0,5,3"), "line 8: coordinates 5,0,5,3 is empty"),
        (RECIPE.replace("7,4,3,3", "7,4,0,3"), "line 9: ctpcoordinates 7,4,0,3 is empty"),
        (
            RECIPE.replace("0,0,12,3", "from:PixelData"),
            "line 8: only from:SequenceOfUltrasoundRegions",
        ),
        (
            RECIPE.replace("Manufacturer Test", "Manufactorer Test"),
            "line 6: 'Manufactorer' is not a DICOM keyword",
        ),
        (
            RECIPE.replace("equals Manufacturer Test Vendor", "equals Manufacturer"),
            "line 6: 'equals' takes FIELD VALUE",
        ),
        (
            RECIPE.replace("ImageType SECONDARY", "ImageType SECOND(ARY"),
            "line 7: 'SECOND(ARY' is not a regular expression",
        ),
        (
            RECIPE.replace("Manufacturer Test", "ImplementationVersionName Test"),
            "line 6: 'ImplementationVersionName' is in the file meta header",
        ),
        (
            RECIPE + "\nLABEL Test vendor screen save\n  present Rows\n  coordinates all\n",
            "line 11: a second rule is labelled",
        ),
        (RECIPE + "\nLABEL bare\n  coordinates all\n", "line 11: rule 'bare' has no criteria"),
        (
            RECIPE + "\nLABEL keeps\n  present Rows\n  keepcoordinates all\n",
            "line 11: rule 'keeps' masks nothing",
        ),
        (
            RECIPE + "\n%filter blacklist\nLABEL b\n  present Rows\n  coordinates all\n",
            "line 12: rule 'b' quarantines what it matches",
        ),
    ],
)
def test_bad_rule_files_are_refused(text: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="^pixel rules .*rules.dicom") as caught:
        load_pixel_rules(rules_file(tmp_path, text))
    assert problem in str(caught.value)


def test_missing_rule_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_pixel_rules(tmp_path / "absent.dicom")


def test_rules_match_what_deid_flags(tmp_path: Path) -> None:
    """The same recipe flags the same instances here and in deid's own has_burned_pixels."""
    # Imported here, after screenlake.deid.pixels has imported deid.dicom quietly.
    from deid.dicom.pixels.detect import has_burned_pixels

    recipe = rules_file(
        tmp_path,
        "FORMAT dicom\n%filter graylist\n"
        "LABEL screen saves\n  contains ImageType SCREEN SAVE\n  + equals Manufacturer test vendor\n"
        "  coordinates 0,0,12,3\n"
        "LABEL wide or tall\n  equals Columns 16 || equals Rows 16\n  + missing BurnedInAnnotation\n"
        "  coordinates all\n",
    )
    rules, deid_recipe = load_pixel_rules(recipe), DeidRecipe(str(recipe))
    cases = [
        image(),
        image(manufacturer="Other"),
        image(rows=16, manufacturer="Other"),
        image(columns=16),
        image(rows=16),
    ]
    cases[3].BurnedInAnnotation = "YES"
    for number, ds in enumerate(cases):
        on_file = pydicom.dcmread(write(ds, tmp_path / f"{number}.dcm"))
        flagged = has_burned_pixels(on_file, deid=deid_recipe)
        assert len(rules.matching(on_file)) == len(flagged["results"]), number
    assert [len(rules.matching(ds)) for ds in cases] == [1, 0, 1, 1, 2]


def test_each_test_on_a_line_gets_its_own_value(tmp_path: Path) -> None:
    # deid's has_burned_pixels pairs values with tests by position, so on this line it would
    # compare Modality with nothing; here 'equals Modality OT' is tested as written.
    recipe = RECIPE.replace(
        "+ contains ImageType SECONDARY", "+ empty Laterality || equals Modality OT"
    )
    rules = load_pixel_rules(rules_file(tmp_path, recipe))
    assert rules.rules[0].criteria[1].tests == (
        ("empty", "Laterality", None),
        ("equals", "Modality", "OT"),
    )
    assert rules.matching(image()) == rules.rules
    assert rules.matching(image(manufacturer="Other")) == ()


def test_deid_field_cache_does_not_grow(tmp_path: Path) -> None:
    # deid caches every dataset (pixels included) that passes through get_fields_with_lookup;
    # the filter evaluation used here must stay clear of it.
    from deid.dicom import fields as deid_fields

    rules = load_pixel_rules(rules_file(tmp_path))
    template = image(frames=2)
    cache = deid_fields._get_fields_inner
    size = cache.cache_info().currsize
    for _ in range(200):
        ds = copy.deepcopy(template)
        pixel_identity_risk(ds)
        clean_pixels(ds, rules)
    assert cache.cache_info().currsize == size
