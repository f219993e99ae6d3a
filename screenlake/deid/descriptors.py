"""Clean Descriptors: keep free text, remove every known identifier of the instance from it.

`Identifiers` gathers what identifies the people of one instance, from the values the profile
removes or replaces: name parts of every person name (patient and staff), the patient's IDs,
other IDs and BSN, accession and request numbers, the birth date, address parts, phone
numbers, and institution and station names where the profile does not keep them. `clean`
removes each of them from a text, together with the birth date written in any common format
and every match of the identifier patterns of `screenlake.verify` (a valid BSN, a Dutch phone
number or postcode), whoever they belong to. The same cleaning serves descriptor attributes
under the Clean Descriptors option, SR text under Clean Structured Content, text annotations
under Clean Graphics, and the sweep of kept free text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The scanner's own patterns, so that cleaning removes exactly what the residual scan flags.
from screenlake.identifiers import (
    DUTCH_PHONE,
    DUTCH_POSTCODE,
    NAME_PARTICLES,
    NINE_DIGITS,
    is_valid_bsn,
)

_WORD = re.compile(r"[^\W_]+")
_DIGIT = re.compile(r"\d")
_BLANKS = re.compile(r"[ \t]{2,}")
_NAME_SEPARATORS = re.compile(r"\^+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"[ \t]+([,.;:)])")
_REPEATED_PUNCTUATION = re.compile(r"([,;:/])(?:[ \t]*[,;:/])+")
_EMPTY_BRACKETS = re.compile(r"\([ \t]*\)")
_PN_PARTS = re.compile(r"[\^=]")
_ADDRESS_PARTS = re.compile(r"[,;\n\r^]")
_NOT_NAMES = NAME_PARTICLES
_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "january", "januari"),
            ("feb", "february", "februari"),
            ("mar", "march", "maart", "mrt"),
            ("apr", "april"),
            ("may", "mei"),
            ("jun", "june", "juni"),
            ("jul", "july", "juli"),
            ("aug", "august", "augustus"),
            ("sep", "sept", "september"),
            ("oct", "october", "okt", "oktober"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = "|".join(sorted((re.escape(m) for m in _MONTHS), key=len, reverse=True))
_NUMERIC_DATE = re.compile(
    r"(?<!\d)(?:(\d{4})[-/. ]?(\d{1,2})[-/. ]?(\d{1,2})"
    r"|(\d{1,2})[-/. ](\d{1,2})[-/. ](\d{4}|\d{2}))(?!\d)"
)
_NAMED_DATE = re.compile(
    rf"(?<!\d)(\d{{1,2}})\.?\s*({_MONTH})\.?,?\s*(\d{{4}}|\d{{2}})(?!\d)"
    rf"|(?<![^\W\d_])({_MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s*(\d{{4}})(?!\d)",
    re.IGNORECASE,
)
_PHONE_LIKE = re.compile(r"(?<![\w+])\+?\d[\d \-.()/]{5,}\d(?!\w)")
_SIGNIFICANT_PHONE_DIGITS = 9
_MIN_PHONE_DIGITS = 6
_MIN_PHRASE = 3
_MIN_ID_TOKEN = 4

# Kinds of identifying attributes, by keyword; every PN attribute counts as a name.
KINDS_BY_KEYWORD = {
    "PatientID": "id",
    "OtherPatientIDs": "id",
    "AccessionNumber": "id",
    "MedicalRecordLocator": "id",
    "StudyID": "id",
    "AdmissionID": "id",
    "ServiceEpisodeID": "id",
    "RequestedProcedureID": "id",
    "PerformedProcedureStepID": "id",
    "ScheduledProcedureStepID": "id",
    "PlacerOrderNumberImagingServiceRequest": "id",
    "FillerOrderNumberImagingServiceRequest": "id",
    "DeviceSerialNumber": "id",
    "PatientBirthDate": "birth_date",
    "PatientAddress": "address",
    "InstitutionAddress": "address",
    "PatientTelephoneNumbers": "phone",
    "PatientTelecomInformation": "telecom",
    "InstitutionName": "phrase",
    "InstitutionalDepartmentName": "phrase",
    "StationName": "phrase",
    "IssuerOfPatientID": "phrase",
    "RegionOfResidence": "phrase",
}


@dataclass
class Identifiers:
    """The identifying values of one instance, in the forms text can hold them in."""

    words: set[str] = field(default_factory=set)
    phrases: set[str] = field(default_factory=set)
    birth_dates: set[tuple[int, int, int]] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)

    def add(self, kind: str, values: list[str]) -> None:
        """Remember the values of one attribute of `kind` ("name", "id", "birth_date",
        "address", "phone", "telecom" or "phrase")."""
        for value in values:
            value = value.strip("\x00 ")
            if value:
                _ADDERS[kind](self, value)

    def _add_name(self, value: str) -> None:
        for part in _PN_PARTS.split(value):
            tokens = [t for t in _WORD.findall(part.lower()) if t not in _NOT_NAMES]
            self.words.update(t for t in tokens if len(t) >= 2)
            if " " in part.strip() and len(part.strip()) >= _MIN_PHRASE + 1:
                self.phrases.add(part.strip().lower())

    def _add_id(self, value: str) -> None:
        lowered = value.lower()
        if len(lowered) >= _MIN_PHRASE:
            self.phrases.add(lowered)
        compact = "".join(_WORD.findall(lowered))
        if len(compact) >= _MIN_ID_TOKEN:
            self.words.add(compact)
        self.words.update(
            t for t in _WORD.findall(lowered) if len(t) >= _MIN_ID_TOKEN and _DIGIT.search(t)
        )

    def _add_birth_date(self, value: str) -> None:
        digits = value.replace(".", "").replace("-", "")
        if len(digits) == 8 and digits.isdigit():
            self.birth_dates.add((int(digits[:4]), int(digits[4:6]), int(digits[6:])))

    def _add_address(self, value: str) -> None:
        for part in _ADDRESS_PARTS.split(value):
            part = part.strip().lower()
            if len(part) >= _MIN_PHRASE:
                self.phrases.add(part)
            self.words.update(
                t for t in _WORD.findall(part) if len(t) >= _MIN_PHRASE and not t.isdigit()
            )

    def _add_phone(self, value: str) -> None:
        digits = _significant_digits(value)
        if len(digits) >= _MIN_PHONE_DIGITS:
            self.phones.add(digits)
            self.phrases.add(value.lower())

    def _add_telecom(self, value: str) -> None:
        for run in _PHONE_LIKE.findall(value):
            self._add_phone(run)
        self.phrases.update(t.lower() for t in value.split() if "@" in t)

    def _add_phrase(self, value: str) -> None:
        # Institution, department and station names: the whole name, and each of its words as
        # the residual scan tokenises them (so "Philips" goes from the Manufacturer too when the
        # institution is "Philips Medical Systems Hamburg").
        lowered = value.lower()
        if len(lowered) >= _MIN_PHRASE:
            self.phrases.add(lowered)
        self.words.update(
            t
            for t in _WORD.findall(lowered)
            if len(t) >= _MIN_PHRASE and t not in _NOT_NAMES and (not t.isdigit() or len(t) >= 6)
        )

    def mentioned_in(self, text: str) -> bool:
        """Whether `text` may hold an identifier (cheap, may over-report; `clean` decides)."""
        lowered = text.lower()
        if self.words and not self.words.isdisjoint(_WORD.findall(lowered)):
            return True
        if any(p in lowered for p in self.phrases):
            return True
        return _DIGIT.search(text) is not None and self.clean(text) != text

    def clean(self, text: str) -> str:
        """`text` without any of the identifiers or identifier patterns in it."""
        out = self._without_phrases(text) if self.phrases else text
        if self.words:
            out = _WORD.sub(self._word, out)
        if _DIGIT.search(out):
            if self.birth_dates:
                out = _NUMERIC_DATE.sub(self._numeric_date, out)
                out = _NAMED_DATE.sub(self._named_date, out)
            if self.phones:
                out = _PHONE_LIKE.sub(self._phone, out)
            out = NINE_DIGITS.sub(lambda m: "" if is_valid_bsn(m.group()) else m.group(), out)
            out = DUTCH_PHONE.sub("", out)
            out = DUTCH_POSTCODE.sub("", out)
        return out if out == text else _tidy(out)

    def _without_phrases(self, text: str) -> str:
        for phrase in sorted(self.phrases, key=len, reverse=True):
            if phrase in text.lower():
                text = re.sub(
                    rf"(?<![^\W_]){re.escape(phrase)}(?![^\W_])", "", text, flags=re.IGNORECASE
                )
        return text

    def _word(self, match: re.Match[str]) -> str:
        return "" if match.group().lower() in self.words else match.group()

    def _numeric_date(self, match: re.Match[str]) -> str:
        year, month, day, first, second, last = match.groups()
        if year:
            candidates = [(year, month, day)]
        else:
            candidates = [(last, second, first), (last, first, second)]
        return "" if any(self._is_birth_date(*c) for c in candidates) else match.group()

    def _named_date(self, match: re.Match[str]) -> str:
        day, month, year, month_first, day_second, year_second = match.groups()
        if month_first:
            day, month, year = day_second, month_first, year_second
        number = _MONTHS.get(month.lower().rstrip("."), 0)
        return "" if self._is_birth_date(year, str(number), day) else match.group()

    def _is_birth_date(self, year: str, month: str, day: str) -> bool:
        y, m, d = int(year), int(month), int(day)
        return any(
            (y == by or (len(year) == 2 and y == by % 100)) and m == bm and d == bd
            for by, bm, bd in self.birth_dates
        )

    def _phone(self, match: re.Match[str]) -> str:
        digits = "".join(_DIGIT.findall(match.group()))
        return "" if any(p in digits for p in self.phones) else match.group()


def _tidy(text: str) -> str:
    """What is left once identifiers are cut out, without the separators that held them."""
    text = _NAME_SEPARATORS.sub(" ", text)
    text = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
    text = _REPEATED_PUNCTUATION.sub(r"\1", text)
    text = _EMPTY_BRACKETS.sub("", text)
    return _BLANKS.sub(" ", text).strip(" ,;:/-")


def _significant_digits(value: str) -> str:
    """A phone number's digits without the trunk prefix or country code, at most the last 9."""
    digits = "".join(_DIGIT.findall(value))
    if len(digits) > _SIGNIFICANT_PHONE_DIGITS:
        return digits[-_SIGNIFICANT_PHONE_DIGITS:]
    return digits.lstrip("0")


_ADDERS = {
    "name": Identifiers._add_name,
    "id": Identifiers._add_id,
    "birth_date": Identifiers._add_birth_date,
    "address": Identifiers._add_address,
    "phone": Identifiers._add_phone,
    "telecom": Identifiers._add_telecom,
    "phrase": Identifiers._add_phrase,
}
