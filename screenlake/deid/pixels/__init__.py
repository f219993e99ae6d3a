"""Pixels that may carry identity (DICOM PS3.15 burned-in annotation).

`pixel_identity_risk` says from the header alone whether an instance's pixels may carry identity
(BurnedInAnnotation YES, ultrasound, secondary capture, scanned document, DERIVED\\SECONDARY).
Such an instance is either masked by a rule that knows where the text is, or quarantined; the
default, with no rules, is quarantine. Rules are deid recipe `%filter` sections
(`load_pixel_rules`, see `rules` for how deid is used and where it is not); `clean_pixels` masks
the rectangles of the rules that match, in every frame and sample. The pixel data of every other
instance is not this package's business: the engine copies it byte for byte.
"""

from __future__ import annotations

from screenlake.deid.pixels.clean import clean_pixels
from screenlake.deid.pixels.risk import pixel_identity_risk
from screenlake.deid.pixels.rules import (
    SCREENING_PIXEL_RULES,
    Criterion,
    PixelRule,
    PixelRules,
    Region,
    load_pixel_rules,
)

__all__ = [
    "SCREENING_PIXEL_RULES",
    "Criterion",
    "PixelRule",
    "PixelRules",
    "Region",
    "clean_pixels",
    "load_pixel_rules",
    "pixel_identity_risk",
]
