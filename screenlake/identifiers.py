"""What a Dutch identifier looks like: the BSN 11-test and the patterns of BSNs, phone numbers
and postcodes in free text. The residual-PHI scan and descriptor cleaning share them, so that
what one removes is what the other looks for."""

from __future__ import annotations

import re

BSN_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)
# Name particles and titles: parts of a name that stand for nobody on their own.
NAME_PARTICLES = frozenset(
    {"van", "der", "den", "de", "het", "ten", "ter", "te", "op", "in", "la", "le", "du", "da"}
    | {"di", "von", "zu", "dr", "mr", "mrs", "ms", "jr", "sr", "md", "phd", "prof"}
    | {"the", "and", "of"}
)

# Patterns stand alone: a digit run inside a hexadecimal pseudonym is no phone number.
NINE_DIGITS = re.compile(r"(?<![0-9A-Za-z])\d{9}(?![0-9A-Za-z])")
DUTCH_PHONE = re.compile(r"(?<![0-9A-Za-z+])(?:\+31|0031|0)[1-9](?:[ -]?\d){8}(?![0-9A-Za-z])")
DUTCH_POSTCODE = re.compile(r"\b[1-9]\d{3} ?(?!SA|SD|SS)[A-Z]{2}\b")


def is_valid_bsn(value: str) -> bool:
    """True when `value` is a Dutch citizen service number (BSN) that passes the 11-test.

    A BSN has nine digits (eight-digit ones are written with a leading zero); the weighted sum
    with weights 9..2 and -1 for the last digit must be a multiple of 11, and not zero.
    """
    if not (value.isascii() and value.isdigit() and len(value) in (8, 9)):
        return False
    digits = [int(c) for c in value.zfill(9)]
    total = sum(d * w for d, w in zip(digits, BSN_WEIGHTS, strict=True))
    return total != 0 and total % 11 == 0
