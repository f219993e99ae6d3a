"""The benchmark corpus: public DICOM test files, copied with fresh UIDs up to a file count.

Sources are every file of pydicom's test files (`pydicom.data.get_testdata_files()`, which
covers the `pydicom-data` package too; folders among them are walked) and every `.dcm` file of
`deid-data`. A source is used when pydicom reads it without `force`, it has a SOPInstanceUID
and a StudyInstanceUID, and it is not an image instance stripped of its pixel data.

Decisions, so that the figures mean what they say:
- A source without a PatientID gets a synthetic one (`BENCHPID<n>`, the same in all its
  copies; one token, so that the leak scan cannot match it to ordinary words). Without it screenlake quarantines the file, which would measure the quarantine path
  rather than de-identification; the other tools would de-identify it all the same.
- Header-only image instances (pydicom's `dicomdirtests` fixtures: an image SOP class, no
  Rows, no pixel data) are left out: they are some 300 of the readable files, no export holds
  them, and each tool would only copy a header.
- deid-data's two zipped cines are left out: the 104 MB RGB cine copied eight times would be
  most of the corpus's bytes. The real-file test runs them.
- Copies go round-robin over the sources in a seeded shuffle, so `--files 200` is a sample of
  sources rather than the first 200 in name order, and every source has copies in proportion.
Each copy gets a fresh StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID (and
MediaStorageSOPInstanceUID): a copy is another study, never a duplicate that screenlake would
quarantine. The UIDs derive from the source and copy number, so a corpus is reproducible.
"""

from __future__ import annotations

import io
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, generate_uid

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

SHUFFLE_SEED = 20240117
_REQUIRED = ("SOPInstanceUID", "StudyInstanceUID")


@dataclass(frozen=True)
class Source:
    """One usable public test file, and whether its PatientID is synthetic."""

    path: Path
    name: str
    synthetic_patient_id: str | None


@dataclass(frozen=True)
class CorpusFile:
    """One file of the corpus and the source it is a copy of."""

    path: Path
    source: str


def candidate_files() -> list[Path]:
    """Every file of pydicom's test files (with pydicom-data) and deid-data's `.dcm` files."""
    files: dict[Path, None] = {}
    for entry in map(Path, pydicom.data.get_testdata_files()):
        # The list names folders and their subfolders alike: each file once, in list order.
        found = sorted(p for p in entry.rglob("*") if p.is_file()) if entry.is_dir() else [entry]
        files.update(dict.fromkeys(found))
    files.update(dict.fromkeys(sorted(_deid_data_folder().rglob("*.dcm"))))
    return list(files)


def _deid_data_folder() -> Path:
    import deid_data

    return Path(deid_data.__file__).parent / "data"


def source_name(path: Path) -> str:
    """A readable, unique name for a source: its path below the package's data folder."""
    parts = path.parts
    for anchor in ("test_files", "data"):
        if anchor in parts:
            index = len(parts) - 1 - parts[::-1].index(anchor)
            return "/".join(parts[index + 1 :])
    return path.name


def usable_sources() -> tuple[list[Source], dict[str, int]]:
    """The sources the corpus copies, and a count of the candidates left out, by why."""
    sources: list[Source] = []
    skipped: dict[str, int] = {}
    for path in candidate_files():
        why = _unusable(path)
        if why is not None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        synthetic = None
        if not str(ds.get("PatientID") or "").strip():
            synthetic = f"BENCHPID{len(sources):04d}"
        sources.append(Source(path, source_name(path), synthetic))
    return sources, skipped


def _unusable(path: Path) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            for _ in ds.iterall():
                pass
    except _READ_ERRORS:  # a file pydicom cannot read is no source; it is counted
        return "not readable by pydicom"
    if not all(str(ds.get(k) or "").strip() for k in _REQUIRED):
        return "no SOPInstanceUID or StudyInstanceUID"
    sop_class = UID(str(ds.get("SOPClassUID") or ""))
    if "Image Storage" in sop_class.name and "Rows" not in ds and "PixelData" not in ds:
        return "header-only image instance"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(io.BytesIO())
    except _READ_ERRORS:  # a file pydicom cannot write back cannot be copied
        return "not writable by pydicom"
    return None


def build_corpus(sources: list[Source], files: int, dest: Path) -> list[CorpusFile]:
    """Write `files` copies with fresh UIDs into `dest`, round-robin over shuffled `sources`.

    File `i` is copy `i // len(sources)` of the `i % len(sources)`-th source; they are written
    source by source, so each source is read once.
    """
    order = list(sources)
    random.Random(SHUFFLE_SEED).shuffle(order)
    dest.mkdir(parents=True, exist_ok=True)
    corpus: list[CorpusFile] = []
    for position, source in enumerate(order[:files]):
        ds = _read_source(source)
        for index in range(position, files, len(order)):
            path = dest / f"{index:06d}.dcm"
            _stamp(ds, source.name, index // len(order))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.save_as(path)
            corpus.append(CorpusFile(path, source.name))
    return sorted(corpus, key=lambda f: f.path.name)


def _read_source(source: Source) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(source.path)
        # Parse every element, as the usability check did: a raw element whose VR the file
        # leaves implicit cannot be written back as it was read.
        for _ in ds.iterall():
            pass
    if source.synthetic_patient_id is not None:
        ds.PatientID = source.synthetic_patient_id
    return ds


def _stamp(ds: Dataset, name: str, copy: int) -> None:
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, generate_uid(entropy_srcs=[name, str(copy), keyword]))
    if getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
