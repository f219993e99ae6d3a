"""Whether an instance's pixels may carry identity, decided from its header alone.

The categories follow DICOM PS3.15 (burned-in annotation, E.1.2 and the Clean Pixel Data option)
and what CTP and deid treat as suspect: ultrasound, secondary capture and scanned documents, and
DERIVED\\SECONDARY images (screen saves, dose reports). Only header attributes are read, so the
decision is made without loading or decoding pixel data.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset

# Ultrasound Image, Ultrasound Multi-frame Image (and their retired forms), Enhanced US Volume.
_ULTRASOUND_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.1",
        "1.2.840.10008.5.1.4.1.1.3.1",
        "1.2.840.10008.5.1.4.1.1.6",
        "1.2.840.10008.5.1.4.1.1.3",
        "1.2.840.10008.5.1.4.1.1.6.2",
    }
)
# Secondary Capture, and the four multi-frame Secondary Capture classes.
_SECONDARY_CAPTURE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)
_ULTRASOUND_MODALITIES = frozenset({"US", "IVUS"})
# ConversionType (0008,0064) SD is a scanned document; modality DOC is a document.
_DOCUMENT_CONVERSION_TYPES = frozenset({"SD"})
_DOCUMENT_MODALITIES = frozenset({"DOC"})


def pixel_identity_risk(ds: Dataset) -> str | None:
    """The reason `ds`'s pixels may carry identity, or None for an ordinary image.

    Reasons, most specific first: "BurnedInAnnotation is YES", "scanned document", "ultrasound",
    "secondary capture", "DERIVED\\SECONDARY image". They name a category, never a value of the
    instance. Pixel data is neither read nor decoded: a dataset read without it (or with it
    deferred) gets the same decision.
    """
    if _text(ds, "BurnedInAnnotation") == "YES":
        return "BurnedInAnnotation is YES"
    sop_class = _sop_class(ds)
    conversion = _text(ds, "ConversionType")
    modality = _text(ds, "Modality")
    if conversion in _DOCUMENT_CONVERSION_TYPES or modality in _DOCUMENT_MODALITIES:
        return "scanned document"
    if (
        modality in _ULTRASOUND_MODALITIES
        or sop_class in _ULTRASOUND_SOP_CLASSES
        or "SequenceOfUltrasoundRegions" in ds
    ):
        return "ultrasound"
    # ConversionType belongs to the SC Equipment module: its presence marks a secondary capture
    # whatever SOP class the exporter chose.
    if sop_class in _SECONDARY_CAPTURE_SOP_CLASSES or conversion:
        return "secondary capture"
    image_type = _values(ds, "ImageType")
    if "DERIVED" in image_type and "SECONDARY" in image_type:
        return "DERIVED\\SECONDARY image"
    return None


def _sop_class(ds: Dataset) -> str:
    value = _text(ds, "SOPClassUID")
    if not value:
        meta = getattr(ds, "file_meta", None)
        value = str(meta.get("MediaStorageSOPClassUID") or "").strip() if meta else ""
    return value


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword) or "").strip().upper()


def _values(ds: Dataset, keyword: str) -> frozenset[str]:
    value = ds.get(keyword)
    if value is None:
        return frozenset()
    # Multi-valued elements arrive as a MultiValue; a damaged one may arrive as one string.
    items: Iterable[object] = (
        value
        if isinstance(value, Iterable) and not isinstance(value, str | bytes)
        else str(value).split("\\")
    )
    return frozenset(str(item).strip().upper() for item in items)
