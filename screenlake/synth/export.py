"""A synthetic PACS export: DICOM studies with realistic fake PHI, laid out as hospitals export.

Layout: ``out/<YYYYMMDD>/<FAMILY>_<GIVEN>_<PATIENTID>/<ACCESSION>/<Series>_<Modality>/IM00001.dcm``.
Each day also gets a few bad files inside study series folders, so that quarantine has work to do.
Same arguments, same bytes: every random draw comes from the seed, nothing from the clock.

The work is split by job: `plan` draws every study up front, `dicom` and `modalities` build the
datasets, `bad_files` spoils a few folders; this module checks arguments and writes.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
from faker import Faker
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from screenlake.errors import ConfigurationError
from screenlake.synth.bad_files import write_bad_files
from screenlake.synth.modalities import ct_datasets, cxr_datasets
from screenlake.synth.plan import PlannedStudy, plan_studies, series_dir
from screenlake.synth.presets import DEMO, ImagePreset, encode, transfer_syntax


@dataclass(frozen=True)
class ExportSummary:
    """What `generate_export` wrote: good studies and files, bad files, patients and days."""

    studies: int
    instances: int
    bad_files: int
    patients: int
    days: tuple[date, ...]
    labels_path: Path


def generate_export(
    out: Path,
    studies: int,
    seed: int,
    labels_path: Path,
    start_date: date = date(2024, 3, 11),
    days: int = 2,
    ct_slices: int = 24,
    ct_size: int = 96,
    cxr_size: int = 256,
    preset: ImagePreset | None = None,
    ldct_share: float = 0.5,
) -> ExportSummary:
    """Write a synthetic PACS export of `studies` studies into the empty folder `out`.

    Studies are spread over `days` days from `start_date`, `ldct_share` of them low-dose chest
    CT (half by default) and the rest chest radiographs, about 35% positive. Ground truth goes to the CSV `labels_path`, outside `out`.
    Each day gets four bad files inside study folders. Same arguments give the same bytes.
    Images are the demo's small ones, sized by `ct_slices`, `ct_size` and `cxr_size`, unless
    `preset` (see `screenlake.synth.presets`) is given: then it alone sets sizes and storage.
    """
    out, labels_path = Path(out), Path(labels_path)
    _check_arguments(out, studies, seed, days, labels_path)
    if not 0.0 <= ldct_share <= 1.0:
        raise ConfigurationError(f"ldct_share must be between 0 and 1; got {ldct_share}")
    if preset is None:
        preset = replace(
            DEMO, ct_slices=ct_slices, ct_size=ct_size, cxr_rows=cxr_size, cxr_columns=cxr_size
        )
    elif (ct_slices, ct_size, cxr_size) != (DEMO.ct_slices, DEMO.ct_size, DEMO.cxr_rows):
        raise ConfigurationError(
            "give either a preset or ct_slices, ct_size and cxr_size, not both: the preset "
            "sets the image sizes"
        )
    fake = Faker("nl_NL")
    fake.seed_instance(seed)
    planned = plan_studies(fake, np.random.default_rng(seed), studies, start_date, days, ldct_share)
    instances = 0
    for study in planned:
        datasets = _study_datasets(study, seed, preset)
        syntax = transfer_syntax(preset, study)
        for number, ds in enumerate(datasets, start=1):
            write_dataset(ds, series_dir(out, study) / f"IM{number:05d}.dcm", syntax)
            instances += 1
    study_days = tuple(sorted({s.day for s in planned}))
    bad_files = 0
    for day in study_days:
        day_index = (day - start_date).days
        rng = np.random.default_rng([seed, day_index])
        bad_files += write_bad_files(out, [s for s in planned if s.day == day], day_index, rng)
    _write_labels(labels_path, planned)
    return ExportSummary(
        studies=len(planned),
        instances=instances,
        bad_files=bad_files,
        patients=len({s.patient.patient_id for s in planned}),
        days=study_days,
        labels_path=labels_path,
    )


def _study_datasets(study: PlannedStudy, seed: int, preset: ImagePreset) -> Iterator[Dataset]:
    if study.modality == "CT":
        return ct_datasets(study, seed, preset.ct_slices, preset.ct_size, preset.device_storage)
    return cxr_datasets(study, seed, preset.cxr_rows, preset.cxr_columns, preset.dx_bits_stored)


def _check_arguments(out: Path, studies: int, seed: int, days: int, labels_path: Path) -> None:
    if studies < 1:
        raise ConfigurationError(f"studies must be at least 1; got {studies}")
    if days < 1:
        raise ConfigurationError(f"days must be at least 1; got {days}")
    if seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer; got {seed}")
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"export folder {out} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigurationError(
            f"export folder {out} is not empty; give an empty or new folder so that two "
            "exports are never mixed"
        )
    if labels_path.resolve().is_relative_to(out.resolve()):
        raise ConfigurationError(
            f"labels file {labels_path} is inside the export folder {out}; ground truth must "
            "not travel with the export, write it elsewhere"
        )


def write_dataset(ds: Dataset, path: Path, syntax: UID = ExplicitVRLittleEndian) -> None:
    """Write `ds` as a DICOM file with the file meta a PACS export gives it, its uncompressed
    pixel data encoded losslessly to `syntax` when that is a compressed syntax."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "PACSEXPORT"
    ds.file_meta = meta
    if syntax.is_compressed:
        encode(ds, syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _write_labels(path: Path, planned: list[PlannedStudy]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["accession_number", "programme", "label"])
        for study in planned:
            writer.writerow([study.accession, study.programme, int(study.positive)])
