"""Reconciling a partition across the chain: every file that landed is followed to a row of
every later table, so that a file lost between two steps is found before publication. Each
comparison is checked in the step of the asset that completes it, on what that step wrote:

    listed = landed + excluded by objection `raw_instances` (here)
    landed = de-identified + quarantined    `deidentified_instances` (quality.py's rule)
    de-identified = catalogued              `instance_catalog` (here)
    catalogued = predicted (ok) + failed    `instance_predictions` (the predictions suite)
    flagged validated findings = worklist   `coordinator_worklist` (here)

Each step's difference is reported with where it is and a few keys (landed ordinals, or a
row's number), so a person knows which step to look at; never a path or a UID.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from screenlake.quality import MAX_EXAMPLES, RuleOutcome


@dataclass(frozen=True)
class Step:
    """One comparison between two stages of the chain."""

    name: str
    expected: int
    found: int
    missing: list[str]
    extra: list[str]

    @property
    def holds(self) -> bool:
        return self.expected == self.found and not self.missing and not self.extra

    def describe(self) -> str:
        if self.holds:
            return f"{self.name}: {self.found}"
        parts = [f"{self.name}: expected {self.expected}, found {self.found}"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {', '.join(self.missing[:3])})")
        if self.extra:
            parts.append(f"{len(self.extra)} unexpected (e.g. {', '.join(self.extra[:3])})")
        return "; ".join(parts)


def _file_names(paths: pl.Series) -> pl.Series:
    return paths.str.split("/").list.last()


def listed_landed(files: pl.DataFrame, manifest: pl.DataFrame, excluded: int) -> Step:
    """Listed = landed + excluded by objection: every file the day's listing kept for
    retrieval (`files`, the SOURCE_FILES rows) has one manifest row, and the files of objecting
    patients (`excluded`, left out before retrieval) were not fetched. A file is named by its
    number in the list: its source path may name the patient."""
    numbers = {ref: f"listed file #{n}" for n, ref in enumerate(files["ref"], start=1)}
    landed = set(manifest["source_path"])
    return Step(
        name="listed = landed + excluded by objection",
        expected=files.height + excluded,
        found=manifest.height + excluded,
        missing=[number for ref, number in numbers.items() if ref not in landed],
        extra=[f"{len(landed - numbers.keys())} landed files not listed"]
        if landed - numbers.keys()
        else [],
    )


def deidentified_catalogued(audit: pl.DataFrame, catalog: pl.DataFrame) -> Step:
    """De-identified = catalogued: every file the audit says was written has one catalogue row,
    and no catalogue row names another file."""
    deidentified = audit.filter(pl.col("outcome") == "deidentified")
    # Files are compared by name (the pseudonymous SOPInstanceUID) and reported by the ordinal
    # they landed under, or a catalogue row by its number: a research path names the batch's
    # token, which must not reach the check's metadata beside the real date, and a
    # pseudonymous UID would stay in the event log after the patient's erasure.
    written = dict(
        zip(_file_names(deidentified["research_path"]), deidentified["ordinal"], strict=True)
    )
    catalogued = _file_names(catalog["research_path"])
    listed = set(catalogued.drop_nulls())
    return Step(
        name="de-identified = catalogued",
        expected=deidentified.height,
        found=catalog.height,
        missing=[
            f"landed file #{o}"
            for name, o in sorted(written.items(), key=lambda i: i[1])
            if name not in listed
        ],
        extra=[
            f"catalogue row #{n}"
            for n, name in enumerate(catalogued, start=1)
            if name not in written
        ],
    )


def worklist_step(findings: pl.DataFrame, worklist_rows: int, worklist_flagged: int) -> Step:
    """Flagged validated findings = worklist rows (the worklist lists the flagged studies)."""
    flagged = findings.filter(pl.col("flag").fill_null(False)).height
    return Step(
        name="flagged findings = worklist rows",
        expected=flagged,
        found=worklist_rows,
        missing=[] if worklist_flagged == worklist_rows else ["unflagged rows in the worklist"],
        extra=[],
    )


def outcome_of(steps: list[Step]) -> RuleOutcome:
    """One data-quality outcome from the steps: passes when every step holds."""
    failed = [s for s in steps if not s.holds]
    summary = "; ".join(s.describe() for s in (failed or steps))
    counts = {f"{s.name} (expected)": s.expected for s in steps} | {
        f"{s.name} (found)": s.found for s in steps
    }
    examples: list[dict[str, object]] = [
        {"step": s.name, "missing": s.missing[:MAX_EXAMPLES], "unexpected": s.extra[:MAX_EXAMPLES]}
        for s in failed
    ]
    return RuleOutcome(not failed, summary, counts, examples)
