"""Fake Dutch patients, staff and institutions for the synthetic PACS export.

Everything is drawn from one seeded `Faker("nl_NL")`, so the same seed gives the same people.
The values look like real PHI on purpose: the de-identification pipeline must remove them.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta

from faker import Faker

from screenlake.identifiers import BSN_WEIGHTS

BSN_ISSUER = "NLMINBIZA"


def random_bsn(rnd: random.Random) -> str:
    """A random nine-digit BSN that passes the 11-test."""
    while True:
        head = [rnd.randint(1, 9)] + [rnd.randint(0, 9) for _ in range(7)]
        check = sum(d * w for d, w in zip(head, BSN_WEIGHTS)) % 11
        # A check digit of 10 cannot be written: draw again.
        if check < 10:
            return "".join(map(str, head)) + str(check)


def sanitise(text: str) -> str:
    """`text` as a path component: accents dropped, upper case, other characters as '-'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9]+", "-", ascii_text).strip("-").upper() or "X"


def latin1(text: str) -> str:
    """`text` limited to ISO 8859-1, the character set (ISO_IR 100) the export declares."""
    if all(ord(c) < 256 for c in text):
        return text
    return unicodedata.normalize("NFKD", text).encode("latin-1", "ignore").decode("latin-1")


def age_on(birth_date: date, day: date) -> int:
    """Age in whole years on `day`."""
    had_birthday = (day.month, day.day) >= (birth_date.month, birth_date.day)
    return day.year - birth_date.year - (0 if had_birthday else 1)


@dataclass(frozen=True)
class Person:
    """A member of staff: a physician or a radiographer."""

    family_name: str
    given_name: str
    title: str = ""

    @property
    def dicom_name(self) -> str:
        """DICOM PN value: Family^Given^^Prefix."""
        return f"{self.family_name}^{self.given_name}^^{self.title}".rstrip("^")


@dataclass(frozen=True)
class Patient:
    """A fake patient with the identifiers a Dutch hospital holds."""

    family_name: str
    given_name: str
    sex: str
    birth_date: date
    patient_id: str
    bsn: str
    address: str
    telephone: str
    weight_kg: int
    height_m: float

    @property
    def dicom_name(self) -> str:
        """DICOM PN value: Family^Given (the family name keeps its tussenvoegsel)."""
        return f"{self.family_name}^{self.given_name}"

    @property
    def full_name(self) -> str:
        """The name as a person writes it: given name first."""
        return f"{self.given_name} {self.family_name}"

    @property
    def folder_name(self) -> str:
        """The export folder name: FAMILYNAME_GIVENNAME_PATIENTID."""
        return f"{sanitise(self.family_name)}_{sanitise(self.given_name)}_{self.patient_id}"

    def dicom_age(self, day: date) -> str:
        """PatientAge on `day` as DICOM AS, e.g. '063Y'."""
        return f"{age_on(self.birth_date, day):03d}Y"


@dataclass(frozen=True)
class Station:
    """One imaging device at an institution."""

    modality: str
    station_name: str
    manufacturer: str
    model: str
    serial: str
    software: str


@dataclass(frozen=True)
class Institution:
    """A hospital location with its staff and devices."""

    name: str
    address: str
    department: str
    issuer_of_patient_id: str
    stations: tuple[Station, ...]
    referrers: tuple[Person, ...]
    radiologists: tuple[Person, ...]
    operators: tuple[Person, ...]

    def stations_for(self, modality: str) -> tuple[Station, ...]:
        """The devices of one modality; raises ValueError when the institution has none."""
        found = tuple(s for s in self.stations if s.modality == modality)
        if not found:
            raise ValueError(f"institution {self.name!r} has no {modality} device")
        return found


_DEVICES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "CT": (
        ("SIEMENS", "SOMATOM go.Top", "syngo CT VA40A"),
        ("GE MEDICAL SYSTEMS", "Revolution CT", "revo_ct_22mw.22"),
        ("Philips", "Incisive CT", "5.0.1"),
    ),
    "CR": (("FUJIFILM Corporation", "FCR PROFECT CS", "A08-21"),),
    "DX": (("Philips Medical Systems", "DigitalDiagnost C90", "1.1.2"),),
}


def _family_name(fake: Faker) -> str:
    # A few Faker surnames are written inverted ("Bourgondië, van"); a PN cannot carry those.
    while True:
        name = latin1(fake.last_name())
        if "," not in name and "^" not in name:
            return name


def fake_person(fake: Faker, title: str = "") -> Person:
    """A member of staff with a Dutch name."""
    return Person(_family_name(fake), latin1(fake.first_name()), title)


def _telephone(rnd: random.Random) -> str:
    if rnd.random() < 0.6:
        return f"06-{rnd.randint(10_000_000, 99_999_999)}"
    return f"0{rnd.randint(10, 79)}-{rnd.randint(1_000_000, 9_999_999)}"


def fake_patient(fake: Faker, patient_id: str, age: int, on: date) -> Patient:
    """A patient aged `age` on `on`, with the hospital MRN `patient_id` and a valid BSN."""
    rnd: random.Random = fake.random
    sex = "F" if rnd.random() < 0.5 else "M"
    given = fake.first_name_female() if sex == "F" else fake.first_name_male()
    birth = date(on.year - age - 1, on.month, 1) + timedelta(days=rnd.randint(15, 360))
    while age_on(birth, on) != age:
        birth += timedelta(days=-1 if age_on(birth, on) < age else 1)
    address = f"{fake.street_address()}, {fake.postcode()} {fake.city()}"
    return Patient(
        family_name=_family_name(fake),
        given_name=latin1(given),
        sex=sex,
        birth_date=birth,
        patient_id=patient_id,
        bsn=random_bsn(rnd),
        address=latin1(address)[:64],
        telephone=_telephone(rnd),
        weight_kg=rnd.randint(55, 105),
        height_m=round(rnd.uniform(1.55, 1.95), 2),
    )


def fake_institution(fake: Faker) -> Institution:
    """A Dutch hospital with a radiology department, CT, CR and DX devices, and staff."""
    rnd: random.Random = fake.random
    city = latin1(fake.city())
    kind = rnd.choice(("Ziekenhuis", "Medisch Centrum", "Streekziekenhuis"))
    name = f"{kind} {city}"[:64]
    code = sanitise(city)[:4]
    stations = []
    for modality, devices in _DEVICES.items():
        count = 2 if modality == "CT" else 1
        for number in range(1, count + 1):
            manufacturer, model, software = rnd.choice(devices)
            stations.append(
                Station(
                    modality=modality,
                    station_name=f"{code}{modality}{number:02d}"[:16],
                    manufacturer=manufacturer,
                    model=model,
                    serial=str(rnd.randint(10_000, 999_999)),
                    software=software,
                )
            )
    return Institution(
        name=name,
        address=f"{latin1(fake.street_address())}, {fake.postcode()} {city}",
        department="Radiologie",
        issuer_of_patient_id=f"{code}-MRN",
        stations=tuple(stations),
        referrers=tuple(fake_person(fake, "dr.") for _ in range(4)),
        radiologists=tuple(fake_person(fake, "dr.") for _ in range(2)),
        operators=tuple(fake_person(fake) for _ in range(3)),
    )
