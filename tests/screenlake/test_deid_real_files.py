"""Real files through `deidentify_batch`: pydicom's test files (with pydicom-data) and deid-data.

CT, MR, US, RT, SR and secondary captures in a dozen transfer syntaxes, some of them damaged on
purpose. Each must come out de-identified and re-readable, or quarantined with a reason, and no
output may hold an identifying value of its original. Tests are per file, so a failure names it.

Several test files are one image in several transfer syntaxes under one SOPInstanceUID. One
batch would quarantine all but the first as duplicates and never de-identify the others, so
the n-th file with a given SOPInstanceUID goes into the n-th batch.
"""

from __future__ import annotations

import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import deid_data  # type: ignore[import-untyped]
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import validate_file_meta
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    JPEG2000,
    UID,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
)

from screenlake.deid.batch import BatchResult, LandedFile, deidentify_batch
from screenlake.deid.engine import deidentify_file
from screenlake.deid.profile import Profile, load_default_profile
from screenlake.errors import UnreadableInstanceError
from screenlake.verify import index_originals, scan_file

# What pydicom raises on a damaged or foreign file.
_READ_ERRORS = (
    InvalidDicomError,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
)

KEY = b"real-files-test-pseudonym-key-0123456789abcdef"
# CID 7050: the output says so when its pixels were cleaned, and then they may differ.
CLEAN_PIXEL_DATA = "113101"
COMPRESSED_FAMILIES: dict[str, str] = {
    JPEGBaseline8Bit: "JPEG baseline",
    JPEGLossless: "JPEG lossless",
    JPEGLosslessSV1: "JPEG lossless SV1",
    JPEG2000Lossless: "JPEG 2000 lossless",
    JPEG2000: "JPEG 2000",
    RLELossless: "RLE",
}


def _deid_data_folder() -> Path:
    return Path(deid_data.__file__).parent / "data"


def _name(path: Path) -> str:
    """The path below the package's data folder: unique, and readable in a test id."""
    parts = path.parts
    for anchor in ("test_files", "data"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor) :])
    return path.name


def _plain_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for entry in map(Path, pydicom.data.get_testdata_files()):
        # The list names folders and their subfolders alike: each file once.
        found = sorted(p for p in entry.rglob("*") if p.is_file()) if entry.is_dir() else [entry]
        files.update((_name(p), p) for p in found)
    files.update((_name(p), p) for p in sorted(_deid_data_folder().rglob("*.dcm")))
    return files


def _zipped_members() -> dict[str, tuple[Path, str]]:
    members = {}
    for archive in sorted(_deid_data_folder().rglob("*.zip")):
        with zipfile.ZipFile(archive) as opened:
            for member in opened.namelist():
                if not member.endswith("/"):
                    members[f"{_name(archive)}:{member}"] = (archive, member)
    return members


PLAIN = _plain_files()
ZIPPED = _zipped_members()
NAMES = sorted(PLAIN) + sorted(ZIPPED)


@dataclass(frozen=True)
class Outcome:
    """Where one input ended: its research path (and label for the scan), or its reason."""

    output: Path | None
    label: str | None
    reason: str | None


@dataclass(frozen=True)
class RealRun:
    """All inputs, the batches they went through, and each input's outcome."""

    inputs: dict[str, Path]
    results: list[BatchResult]
    batch_sizes: list[int]
    outcomes: dict[str, Outcome]


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_default_profile()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every input by name; zipped ones extracted into a temporary folder."""
    unzipped = tmp_path_factory.mktemp("unzipped")
    files = dict(PLAIN)
    for number, (name, (archive, member)) in enumerate(sorted(ZIPPED.items())):
        with zipfile.ZipFile(archive) as opened:
            files[name] = Path(opened.extract(member, unzipped / str(number)))
    return files


def _sop_instance_uid(path: Path) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except _READ_ERRORS:  # an unreadable file goes to the first batch, as it lands
        return None
    return str(ds.get("SOPInstanceUID") or "").strip() or None


def _batches(inputs: dict[str, Path]) -> list[list[str]]:
    seen: Counter[str] = Counter()
    batches: list[list[str]] = []
    for name, path in inputs.items():
        uid = _sop_instance_uid(path)
        number = seen[uid] if uid else 0
        if uid:
            seen[uid] += 1
        while len(batches) <= number:
            batches.append([])
        batches[number].append(name)
    return batches


@pytest.fixture(scope="module")
def real_run(
    inputs: dict[str, Path], profile: Profile, tmp_path_factory: pytest.TempPathFactory
) -> RealRun:
    """Every input through `deidentify_batch` on two workers, in as few batches as duplicates
    allow."""
    root = tmp_path_factory.mktemp("real")
    results, sizes, outcomes = [], [], {}
    for number, names in enumerate(_batches(inputs)):
        files = [LandedFile(i, inputs[name], None) for i, name in enumerate(names)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = deidentify_batch(
                files,
                key=KEY,
                profile=profile,
                batch_id=f"real-{number}",
                programme="real_files",
                output_dir=root / "research" / str(number),
                output_prefix=PurePosixPath("research"),
                quarantine_dir=root / "quarantine" / str(number),
                workers=2,
            )
        results.append(result)
        sizes.append(len(files))
        for row in result.audit.iter_rows(named=True):
            name = names[row["ordinal"]]
            if row["research_path"] is None:
                outcomes[name] = Outcome(None, None, row["reason"])
            else:
                # The research path as the zone holds it: research/<study>/<series>/<sop>.dcm.
                label = str(row["research_path"])
                output = root / "research" / str(number) / Path(label).relative_to("research")
                outcomes[name] = Outcome(output, label, row["reason"])
    return RealRun(inputs, results, sizes, outcomes)


@pytest.mark.parametrize("name", NAMES)
def test_the_engine_de_identifies_or_gives_a_reason(
    name: str, inputs: dict[str, Path], profile: Profile
) -> None:
    # Anything but a quarantine reason would stop the whole batch the file lands in.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = deidentify_file(inputs[name], KEY, profile)
        except UnreadableInstanceError as error:
            assert str(error).strip()
            return
    assert result.dataset.PatientIdentityRemoved == "YES"


def test_every_input_ends_de_identified_or_quarantined(real_run: RealRun) -> None:
    assert set(real_run.outcomes) == set(real_run.inputs)
    for result, size in zip(real_run.results, real_run.batch_sizes, strict=True):
        assert result.deidentified + result.quarantined == size == result.audit.height
        # The batches were cut so that none holds two files with one SOPInstanceUID.
        assert "duplicate SOPInstanceUID" not in result.quarantine_reasons


@pytest.mark.parametrize("name", NAMES)
def test_each_output_is_a_valid_de_identified_copy(name: str, real_run: RealRun) -> None:
    outcome = real_run.outcomes[name]
    if outcome.output is None:
        assert outcome.reason and outcome.reason.strip(), "quarantined without a reason"
        return
    assert outcome.reason is None
    raw = outcome.output.read_bytes()
    assert raw[:128] == b"\x00" * 128 and raw[128:132] == b"DICM"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(outcome.output, force=False)
        original = pydicom.dcmread(real_run.inputs[name], force=False)
    meta = ds.file_meta
    validate_file_meta(meta, enforce_standard=True)
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert UID(meta.TransferSyntaxUID).is_transfer_syntax
    assert ds.PatientIdentityRemoved == "YES"
    methods = {item.CodeValue for item in ds.get("DeidentificationMethodCodeSequence", [])}
    if "PixelData" in original and CLEAN_PIXEL_DATA not in methods:
        assert ds.PixelData == original.PixelData, "pixel data changed without being cleaned"
    # Each output against its own original's identifying values: the engine sees one file at a
    # time, so only those can reach it. One index over all originals, as the research-zone
    # check builds it, would flag coincidences between unrelated public test files (one file's
    # AccessionNumber "2" against another's SeriesNumber 2) and say nothing about the engine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = index_originals([real_run.inputs[name]])
        findings = scan_file(outcome.output, outcome.label or "", index)
    assert not findings, [f"{f.element}: {f.kind}" for f in findings]


# Reasons a file is quarantined whatever its encoding: it says nothing about decoding.
ENCODING_INDEPENDENT = ("pixels may carry identity", "missing ")


def test_compressed_inputs_are_de_identified_not_all_quarantined(real_run: RealRun) -> None:
    def syntax(path: Path) -> str:
        try:
            meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        except _READ_ERRORS:
            return ""
        return str(meta.get("TransferSyntaxUID") or "")

    by_family: dict[str, list[Outcome]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, path in real_run.inputs.items():
            family = COMPRESSED_FAMILIES.get(syntax(path))
            if family:
                by_family.setdefault(family, []).append(real_run.outcomes[name])
    assert len(by_family) >= 4, "the real files hold too few compressed inputs: packages changed"
    for family, outcomes in sorted(by_family.items()):
        if any(o.output is not None for o in outcomes):
            continue
        # None came out: then every one was quarantined for a reason unrelated to encoding.
        reasons = [str(o.reason) for o in outcomes]
        assert all(r.startswith(ENCODING_INDEPENDENT) for r in reasons), (family, reasons)
    produced = {f for f, outcomes in by_family.items() if any(o.output for o in outcomes)}
    assert len(produced) >= 3, produced
