"""Reconciling a partition across the chain: every file that landed is followed to a row of
every later table, so that a file lost between two steps is found before publication. Each
comparison is checked in the step of the asset that completes it, on what that step wrote:

    landed = de-identified + quarantined    `deidentified_instances` (quality.py's rule)
    de-identified = catalogued              `instance_catalog` (here)
    catalogued = predicted (ok) + failed    `instance_predictions` (the predictions suite)
    flagged validated findings = worklist   `coordinator_worklist` (here)

Each step's difference is reported with where it is and a few keys (ordinals and pseudonymous
UIDs only), so a person knows which step to look at.
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


def _difference(name: str, expected: pl.Series, found: pl.Series) -> Step:
    want, have = set(expected.drop_nulls().to_list()), set(found.drop_nulls().to_list())
    return Step(
        name=name,
        expected=expected.len(),
        found=found.len(),
        missing=sorted(str(v) for v in want - have),
        extra=sorted(str(v) for v in have - want),
    )


def _file_names(paths: pl.Series) -> pl.Series:
    return paths.str.split("/").list.last()


def deidentified_catalogued(audit: pl.DataFrame, catalog: pl.DataFrame) -> Step:
    """De-identified = catalogued: every file the audit says was written has one catalogue row,
    and no catalogue row names another file."""
    deidentified = audit.filter(pl.col("outcome") == "deidentified")
    # Files are compared by name (the pseudonymous SOPInstanceUID): a research path names the
    # batch's token, which must not reach the check's metadata beside the real date.
    return _difference(
        "de-identified = catalogued",
        _file_names(deidentified["research_path"]),
        _file_names(catalog["research_path"]),
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
