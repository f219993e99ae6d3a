"""Labels for the performance audit, read on the PHI side: the ground-truth file and the
clinicians' review decisions, joined to findings through the vault, with each study's device
model and a keyed site token. Only what may cross into the research zone leaves here: labels by
pseudonymous study UID, and site tokens, never an accession number or an institution name."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import polars as pl

from screenlake.errors import ConfigurationError
from screenlake.keys import keyed_token
from screenlake.performance import LABELLED_SCHEMA, UNKNOWN
from screenlake.tables import REVIEW_DECISIONS, read_parquet


def _label_values(column: pl.Series, source: str) -> pl.Series:
    text = column.cast(pl.String).str.strip_chars().str.to_lowercase()
    bad = text.filter(~text.is_in(["0", "1", "true", "false"]) | text.is_null()).unique()
    if bad.len():
        raise ConfigurationError(
            f"{source}: label must be 0 or 1 (or true/false); found {bad.head(3).to_list()}. "
            "Fix the labels file or leave the study out"
        )
    return text.is_in(["1", "true"])


def read_labels(
    ground_truth: Path | None, decisions: Iterable[Path], programme: str
) -> tuple[pl.DataFrame, int, int]:
    """`programme`'s labels by accession number (columns accession_number, label), from a
    ground-truth CSV (accession_number, programme, label 0/1) and clinicians' review decisions
    (REVIEW_DECISIONS Parquet files), and how many came from each. A decision with a label
    overrides the ground truth for its accession; of several decisions the latest counts."""
    frames = []
    if ground_truth is not None and ground_truth.is_file():
        csv = pl.read_csv(ground_truth, infer_schema_length=0)
        missing = {"accession_number", "programme", "label"} - set(csv.columns)
        if missing:
            raise ConfigurationError(
                f"{ground_truth.name} lacks the columns {sorted(missing)}; it needs "
                "accession_number, programme and label (0/1)"
            )
        csv = csv.filter(pl.col("programme") == programme)
        frames.append(
            csv.select(
                pl.col("accession_number").str.strip_chars(),
                _label_values(csv["label"], ground_truth.name).alias("label"),
                pl.lit(0).alias("source"),
            )
        )
    reviewed = [read_parquet(REVIEW_DECISIONS, path) for path in sorted(decisions)]
    if reviewed:
        latest = (
            pl.concat(reviewed)
            .filter((pl.col("programme") == programme) & pl.col("label").is_not_null())
            .sort("reviewed_at", "imported_at", nulls_last=False)
            .unique("accession_number", keep="last", maintain_order=True)
        )
        frames.append(latest.select("accession_number", "label", pl.lit(1).alias("source")))
    if not frames:
        return pl.DataFrame(schema={"accession_number": pl.String, "label": pl.Boolean}), 0, 0
    labels = (
        pl.concat(frames)
        .filter(pl.col("accession_number").is_not_null() & (pl.col("accession_number") != ""))
        .sort("source")
        .unique("accession_number", keep="last", maintain_order=True)
    )
    from_review = labels.filter(pl.col("source") == 1).height
    return labels.drop("source"), labels.height - from_review, from_review


def device_models(catalog: pl.DataFrame) -> pl.DataFrame:
    """Per study (pseudonymous UID), the manufacturer and model name most of its instances
    carry, "unknown" where neither is recorded; ties go to the alphabetically first."""
    device = pl.concat_str(
        pl.col("manufacturer").fill_null("").str.strip_chars(),
        pl.col("manufacturer_model_name").fill_null("").str.strip_chars(),
        separator=" ",
    ).str.strip_chars()
    counted = (
        catalog.select("study_instance_uid", device.alias("device_model"))
        .with_columns(
            pl.when(pl.col("device_model") == "")
            .then(pl.lit(UNKNOWN))
            .otherwise(pl.col("device_model"))
            .alias("device_model")
        )
        .group_by("study_instance_uid", "device_model")
        .len()
    )
    return (
        counted.sort(["study_instance_uid", "len", "device_model"], descending=[False, True, False])
        .unique("study_instance_uid", keep="first", maintain_order=True)
        .drop("len")
    )


def site_token(key: bytes, institution_name: str | None) -> str:
    """The research zone's name for a site: a keyed token of its institution name (spacing
    and case ignored), or "unknown"; the name itself never leaves the PHI zone."""
    name = " ".join((institution_name or "").split()).upper()
    return "S" + keyed_token(key, "site", name, 12) if name else UNKNOWN


def site_tokens(manifest: pl.DataFrame, fetch: Callable[[str], Path], key: bytes) -> dict[str, str]:
    """Site token per original study UID, from the InstitutionName of the first readable
    landed file of each study in the raw manifest (`fetch` gives a landed file's local path)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    sites: dict[str, str] = {}
    rows = manifest.filter(pl.col("problem").is_null() & pl.col("study_instance_uid").is_not_null())
    for study_uid, landed in rows.select("study_instance_uid", "landed_path").iter_rows():
        if study_uid in sites:
            continue
        try:
            ds = pydicom.dcmread(
                fetch(landed), stop_before_pixels=True, specific_tags=["InstitutionName"]
            )
        except (InvalidDicomError, OSError):
            continue
        sites[study_uid] = site_token(key, str(ds.get("InstitutionName") or ""))
    return sites


def labelled_studies(
    findings: pl.DataFrame,
    vault: pl.DataFrame,
    labels: pl.DataFrame,
    devices: pl.DataFrame,
    sites: Mapping[str, str],
) -> pl.DataFrame:
    """Scored findings that have a label (`LABELLED_SCHEMA`): findings joined to accession
    numbers through the vault, then to labels; the accession number and original UID are
    dropped again, so what comes out names studies only by pseudonymous UID."""
    scored = findings.filter(pl.col("score").is_not_null())
    identities = vault.select(
        "study_instance_uid", "accession_number", "original_study_instance_uid"
    )
    joined = (
        scored.join(identities, on="study_instance_uid", how="inner")
        .join(labels, on="accession_number", how="inner")
        .join(devices, on="study_instance_uid", how="left")
    )
    site = pl.col("original_study_instance_uid").replace_strict(
        dict(sites), default=UNKNOWN, return_dtype=pl.String
    )
    return joined.with_columns(
        site.alias("site"), pl.col("device_model").fill_null(UNKNOWN)
    ).select(LABELLED_SCHEMA.names())


# Judging the audit against the programme's declared minimums.
