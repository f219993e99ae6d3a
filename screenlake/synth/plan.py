"""Seeded planning of the synthetic export: patients, programmes, labels, days and staff.

Every random draw for headers happens here, in a fixed order, before any file is written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from faker import Faker

from screenlake.synth.people import (
    Institution,
    Patient,
    Person,
    Station,
    fake_institution,
    fake_patient,
)

LUNG_LDCT = "lung_ldct"
CXR_TB = "cxr_tb"
POSITIVE_RATE = 0.35
_AGES = {LUNG_LDCT: (55, 79), CXR_TB: (18, 80)}


@dataclass(frozen=True)
class PlannedStudy:
    """Everything needed to write one study, drawn before any file is written."""

    patient: Patient
    visit: int
    programme: str
    modality: str
    positive: bool
    day: date
    start_s: int
    accession: str
    lateral: bool
    station: Station
    referrer: Person
    radiologist: Person
    operator: Person
    institution: Institution


def series_dir(out: Path, study: PlannedStudy) -> Path:
    """The study's single series folder in the export layout."""
    day = study.day.strftime("%Y%m%d")
    return out / day / study.patient.folder_name / study.accession / f"1_{study.modality}"


def _patient_days(rng: np.random.Generator, studies: int, days: int) -> list[tuple[int, ...]]:
    """Day offsets of each patient's studies; about one patient in five is seen twice."""
    longitudinal = max(1, round(studies / 6)) if days >= 2 and studies >= 3 else 0
    plans = [
        tuple(sorted(int(d) for d in rng.choice(days, size=2, replace=False)))
        for _ in range(longitudinal)
    ]
    # Single visits cycle through the days, so that every day has studies when there are enough.
    first = int(rng.integers(days))
    plans += [((first + i) % days,) for i in range(studies - 2 * longitudinal)]
    return [plans[int(i)] for i in rng.permutation(len(plans))]


def _programmes(rng: np.random.Generator, visit_counts: list[int], ldct_share: float) -> list[str]:
    """A programme per patient, keeping each programme's study count at its share of the whole
    (`ldct_share` for lung CT, the rest chest radiographs)."""
    shares = {LUNG_LDCT: ldct_share, CXR_TB: 1.0 - ldct_share}
    totals = {LUNG_LDCT: 0, CXR_TB: 0}
    chosen = []
    for count in visit_counts:
        # A programme's load is its studies so far over its share; the least loaded is next.
        load = {n: totals[n] / shares[n] for n in totals if shares[n] > 0}
        low = min(load.values())
        candidates = [name for name, value in load.items() if value == low]
        pick = candidates[int(rng.integers(len(candidates)))]
        totals[pick] += count
        chosen.append(pick)
    return chosen


def _positives(rng: np.random.Generator, programmes: list[str]) -> list[bool]:
    """About 35% positives per programme, at least one when a programme has two studies."""
    flags = [False] * len(programmes)
    for name in sorted(set(programmes)):
        members = [i for i, p in enumerate(programmes) if p == name]
        count = round(POSITIVE_RATE * len(members))
        if len(members) >= 2:
            count = max(count, 1)
        for i in rng.choice(members, size=count, replace=False):
            flags[int(i)] = True
    return flags


def _unique_number(fake: Faker, digits: int, taken: set[str]) -> str:
    while True:
        number = str(fake.random.randint(10 ** (digits - 1), 10**digits - 1))
        if number not in taken:
            taken.add(number)
            return number


def plan_studies(
    fake: Faker,
    rng: np.random.Generator,
    studies: int,
    start: date,
    days: int,
    ldct_share: float = 0.5,
) -> list[PlannedStudy]:
    """Draw patients, programmes, labels, dates and staff for every study, in export order;
    about `ldct_share` of the studies are lung CT, the rest chest radiographs."""
    institution = fake_institution(fake)
    patient_days = _patient_days(rng, studies, days)
    programmes = _programmes(rng, [len(d) for d in patient_days], ldct_share)
    visits = [(p, v, d) for p, ds in enumerate(patient_days) for v, d in enumerate(ds, start=1)]
    positives = _positives(rng, [programmes[p] for p, _, _ in visits])
    patient_ids: set[str] = set()
    patients = []
    for p, offsets in enumerate(patient_days):
        age = fake.random.randint(*_AGES[programmes[p]])
        patient_id = _unique_number(fake, 7, patient_ids)
        patients.append(fake_patient(fake, patient_id, age, start + timedelta(days=offsets[0])))
    rnd = fake.random
    accessions: set[str] = set()
    planned = [
        PlannedStudy(
            patient=patients[p],
            visit=visit,
            programme=programmes[p],
            modality="CT" if programmes[p] == LUNG_LDCT else "CR",
            positive=positive,
            day=start + timedelta(days=offset),
            start_s=rnd.randint(7 * 3600 + 1800, 16 * 3600 + 1800),
            accession=_unique_number(fake, 10, accessions),
            lateral=rnd.random() < 0.3,
            # Chest radiographs get their CR or DX device later, in export order.
            station=rnd.choice(institution.stations_for("CT")),
            referrer=rnd.choice(institution.referrers),
            radiologist=rnd.choice(institution.radiologists),
            operator=rnd.choice(institution.operators),
            institution=institution,
        )
        for (p, visit, offset), positive in zip(visits, positives)
    ]
    planned.sort(key=lambda s: (s.day, s.start_s, s.accession))
    return _alternate_cxr(planned)


def _alternate_cxr(planned: list[PlannedStudy]) -> list[PlannedStudy]:
    """Chest radiographs alternate between the CR and the DX device, in export order."""
    result: list[PlannedStudy] = []
    for study in planned:
        if study.programme == CXR_TB:
            modality = "CR" if sum(s.programme == CXR_TB for s in result) % 2 == 0 else "DX"
            station = study.institution.stations_for(modality)[0]
            study = replace(study, modality=modality, station=station)
        result.append(study)
    return result
