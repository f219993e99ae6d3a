"""Tests for screenlake.deid.writing: the fast writer says what pydicom's writer says."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from screenlake.deid import (
    Profile,
    deidentify_dataset,
    deidentify_file,
    engine,
    load_default_profile,
)
from screenlake.deid.reading import read_instance
from screenlake.deid.writing import write_file
from screenlake.errors import UnreadableInstanceError
from tests.screenlake.test_deid_corpus import BUILDERS, KEY, make_ct, save


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_default_profile()


def _both(ds: Dataset) -> tuple[Dataset, Dataset, bytes]:
    fast = io.BytesIO()
    write_file(ds, fast)
    slow = io.BytesIO()
    ds.save_as(slow, enforce_file_format=True)
    return (
        pydicom.dcmread(io.BytesIO(fast.getvalue())),
        pydicom.dcmread(io.BytesIO(slow.getvalue())),
        fast.getvalue(),
    )


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    ("kind", "syntax"),
    [
        (kind, syntax)
        for kind in sorted(BUILDERS)
        for syntax in (
            None,
            ImplicitVRLittleEndian,
            ExplicitVRBigEndian,
            DeflatedExplicitVRLittleEndian,
            RLELossless,
        )
        if syntax != RLELossless or kind in ("ct", "enhanced")
    ],
)
def test_each_syntax_reads_back_as_pydicom_writes_it(
    profile: Profile, tmp_path: Path, kind: str, syntax: str | None
) -> None:
    ds = BUILDERS[kind]()
    if syntax == RLELossless:
        ds.compress(RLELossless)
    elif syntax is not None:
        ds.file_meta.TransferSyntaxUID = UID(syntax)
    result = deidentify_file(save(ds, tmp_path / "in.dcm"), KEY, profile)
    fast, slow, raw = _both(result.dataset)
    assert fast == slow
    assert fast.file_meta == slow.file_meta
    assert raw[:132] == b"\x00" * 128 + b"DICM"


def test_untouched_elements_are_the_bytes_read(profile: Profile, tmp_path: Path) -> None:
    source = save(make_ct(), tmp_path / "in.dcm").read_bytes()
    result = deidentify_file(tmp_path / "in.dcm", KEY, profile)
    _, _, raw = _both(result.dataset)
    for element in (
        b"\x18\x00\x15\x00CS\x06\x00CHEST ",  # Body Part Examined
        b"\x18\x00\x60\x00DS\x04\x00120 ",  # KVP
        b"\x28\x00\x30\x00DS\x12\x000.703125\\0.703125",  # Pixel Spacing
    ):
        assert element in source and element in raw
    pixel_data = source[source.index(b"\xe0\x7f\x10\x00") :]
    assert raw.endswith(pixel_data)


def _public_files() -> Iterator[Path]:
    for name in get_testdata_files():
        path = Path(name)
        if path.is_file() and path.suffix in ("", ".dcm") and path.stat().st_size < 2_000_000:
            yield path


@pytest.mark.filterwarnings("ignore")
def test_public_test_files_read_back_as_pydicom_writes_them(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pixel identity is beside the point here: every readable file is written.
    monkeypatch.setattr(engine, "pixel_identity_risk", lambda ds: None)
    compared = 0
    for path in _public_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = read_instance(path)
                if not str(ds.get("PatientID") or "").strip():
                    ds.PatientID = "TEST"
                result = deidentify_dataset(ds, KEY, profile)
            except UnreadableInstanceError:
                continue
            fast, slow, _ = _both(result.dataset)
        assert fast == slow, path.name
        compared += 1
    assert compared > 100
