"""The residual-PHI gate of one batch: every de-identified file of the batch, as read back from
the research zone, scanned for the identifying values of the batch's landed originals.

The blocking check in `deidentified_instances` and `screenlake verify` both call `scan_batch`
with the deployment's profile options and zones, so that the two cannot disagree: same layout,
same originals, same retained options.

A finding names its file by the ordinal it landed under ("landed file #12"), which the
de-identification audit links to the research file, never by the file's path: the path is made
of pseudonymous UIDs, and a check's findings stay in the orchestrator's event log, which an
erasure does not reach.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from screenlake import layout
from screenlake.keybinding import Zone
from screenlake.tables import DEIDENTIFICATION_AUDIT, LANDED_INSTANCES, read_parquet
from screenlake.verify import Finding, index_originals, scan_files


@dataclass(frozen=True)
class BatchScan:
    """What the gate saw of one batch: research files scanned, originals indexed, findings
    (each naming a file by its landed ordinal)."""

    files_scanned: int
    originals: int
    findings: list[Finding]

    @property
    def passed(self) -> bool:
        """No identifier of the originals in any research file of the batch."""
        return not self.findings


def scan_batch(
    phi_zone: Zone,
    research_zone: Zone,
    batch: layout.Batch,
    key: bytes,
    retained_options: Iterable[str],
    workers: int,
) -> BatchScan:
    """Scan the research files of `batch` (under the pseudonym `key`'s folder) for the
    identifiers of its landed originals, less the kinds the profile's `retained_options` keep
    on purpose; `workers` processes share the work (0: every core)."""
    manifest = read_parquet(LANDED_INSTANCES, phi_zone.pull(layout.raw_manifest_path(batch)))
    raw_dir = phi_zone.pull(layout.raw_dir(batch))
    research_dir = research_zone.pull(layout.research_dicom_dir(batch, key))
    index = index_originals(
        (raw_dir / path for path in manifest["landed_path"]), retained_options, workers=workers
    )
    files = sorted(research_dir.rglob("*.dcm")) if research_dir.exists() else []
    # Files are named inside the batch's folder: its token must not sit beside the real date.
    findings = scan_files(
        ((f, f.relative_to(research_dir).as_posix()) for f in files), index, workers=workers
    )
    names = _names_by_ordinal(research_zone, batch, key, files, research_dir)
    return BatchScan(
        len(files), manifest.height, [replace(f, file=names[f.file]) for f in findings]
    )


def _names_by_ordinal(
    research_zone: Zone,
    batch: layout.Batch,
    key: bytes,
    files: list[Path],
    research_dir: Path,
) -> dict[str, str]:
    """Each research file's name in a finding, by its path inside the batch's folder: the
    ordinal its original landed under, from the batch's de-identification audit; a file the
    audit does not list (none should exist) by its number in the folder."""
    audit_path = research_zone.pull(layout.lake_table_path(DEIDENTIFICATION_AUDIT, batch, key))
    audit = read_parquet(DEIDENTIFICATION_AUDIT, audit_path) if audit_path.exists() else None
    prefix = PurePosixPath(layout.research_dicom_dir(batch, key))
    ordinals = {}
    if audit is not None:
        for ordinal, path in audit.select("ordinal", "research_path").iter_rows():
            if path:
                ordinals[PurePosixPath(path).relative_to(prefix).as_posix()] = ordinal
    names = {}
    for number, file in enumerate(files, start=1):
        relative = file.relative_to(research_dir).as_posix()
        ordinal = ordinals.get(relative)
        names[relative] = (
            f"landed file #{ordinal}"
            if ordinal is not None
            else f"unaudited research file #{number}"
        )
    return names


def landed_batches(phi_root: Path) -> list[layout.Batch]:
    """Every batch with a landed manifest under the PHI zone's local folder `phi_root`, in date
    and programme order."""
    return layout.batches_in(phi_root / layout.RAW_DIR, layout.RAW_MANIFEST)
