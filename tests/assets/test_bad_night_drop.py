"""A bad night in an export drop, run as an operator runs it: `dagster asset materialize` in its
own processes, without the capability to read what the drop's permissions forbid (the tests
run as root). Every identifying value of the drop (names, IDs, accession numbers, UIDs, the
folder names after patients) is then looked for in everything Dagster kept: the event log, the
run and index databases, the compute logs, and what the command printed. None may be there,
and every file of the day must end landed or quarantined with its reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path

import polars as pl
import pydicom
import pytest

from screenlake import layout
from screenlake.layout import Batch
from screenlake.synth.export import generate_export
from tests.dicom_factory import ct_slice, write

DAY = date(2024, 3, 11)
BATCH = Batch(DAY, "lung_ldct")
PARTITION = f"{DAY.isoformat()}|{BATCH.programme}"
NAME, PATIENT_ID, ACCESSION = "Verschuuren^Hendrika", "PID7730911", "ACC99120"
PLANTED_STUDY = "1.2.826.0.1.3680043.8.498.7730911"
EXPLICIT_LITTLE, UNKNOWN_SYNTAX = b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2.9\0"
# Without these the tests' root could read any file, whatever its permissions say.
WITHOUT_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
# Identifying words shorter than this are too common to search for without false hits.
MIN_NEEDLE = 5


def _plant_bad_night(drop: Path, outside: Path) -> dict[str, Path]:
    """A study in a folder named after its patient, and next to it every kind of bad file."""
    folder = drop / DAY.strftime("%Y%m%d") / f"{NAME.replace('^', '_')}_{PATIENT_ID}" / ACCESSION
    for i in range(3):
        slice_ = ct_slice(
            patient_name=NAME,
            patient_id=PATIENT_ID,
            accession=ACCESSION,
            study_uid=PLANTED_STUDY,
            study_date=DAY.strftime("%Y%m%d"),
            z=float(i),
        )
        write(slice_, folder / f"{PATIENT_ID}_IM{i}.dcm")
    whole = (folder / f"{PATIENT_ID}_IM0.dcm").read_bytes()
    bad = {
        "unreadable": folder / f"{PATIENT_ID}_unreadable.dcm",
        "unlistable": folder / f"{PATIENT_ID}_private",
        "truncated": folder / f"{PATIENT_ID}_truncated.dcm",
        "wrong_syntax": folder / f"{PATIENT_ID}_syntax.dcm",
        "not_dicom": folder / f"{PATIENT_ID}_notes.txt",
        "link_out": folder / f"{PATIENT_ID}_out.dcm",
        "link_loop": folder / f"{PATIENT_ID}_loop.dcm",
        "pipe": folder / f"{PATIENT_ID}_pipe.dcm",
        "vanishes": folder / f"{PATIENT_ID}_vanishes.dcm",
    }
    bad["unreadable"].write_bytes(whole)
    bad["unreadable"].chmod(0)
    bad["unlistable"].mkdir()
    (bad["unlistable"] / f"{PATIENT_ID}_hidden.dcm").write_bytes(whole)
    bad["unlistable"].chmod(0)
    bad["truncated"].write_bytes(whole[: len(whole) - 300])
    odd = ct_slice(patient_name=NAME, patient_id=PATIENT_ID, study_uid=PLANTED_STUDY, z=7.0)
    written = write(odd, bad["wrong_syntax"]).read_bytes()
    # A transfer syntax no one defines, in the file meta of an otherwise good file.
    assert written.count(EXPLICIT_LITTLE) == 1
    bad["wrong_syntax"].write_bytes(written.replace(EXPLICIT_LITTLE, UNKNOWN_SYNTAX))
    bad["not_dicom"].write_text(f"patient {NAME} {PATIENT_ID} accession {ACCESSION}\n")
    outside.write_bytes(whole)
    bad["link_out"].symlink_to(outside)
    bad["link_loop"].symlink_to(bad["link_loop"])
    os.mkfifo(bad["pipe"])
    write(ct_slice(patient_id=PATIENT_ID, study_uid=PLANTED_STUDY, z=9.0), bad["vanishes"])
    return bad


def _identifying_values(drop: Path) -> set[str]:
    """Every identifying value the drop holds, in its headers and in its folder names."""
    values = {NAME, PATIENT_ID, ACCESSION, PLANTED_STUDY}
    for path in drop.rglob("*"):
        values.update(part for part in path.relative_to(drop).parts[1:])
        if not path.is_file() or path.is_symlink() or not os.access(path, os.R_OK):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
            continue
        for keyword in ("PatientID", "AccessionNumber", "StudyInstanceUID", "SOPInstanceUID"):
            values.add(str(ds.get(keyword, "")))
        values.update(str(ds.get("PatientName", "")).split("^"))
    words = {w for v in values for w in (v, *v.replace("^", "_").split("_"))}
    return {w for w in words if (len(w) >= MIN_NEEDLE and not w.isdigit()) or len(w) >= 7}


def _hits(folder: Path, texts: Iterable[str], needles: set[str]) -> list[str]:
    """'needle in where' for every identifying value found in the files and texts."""
    found = []
    blobs = [(str(p.relative_to(folder)), p.read_bytes()) for p in folder.rglob("*") if p.is_file()]
    blobs += [(f"output {n}", t.encode()) for n, t in enumerate(texts)]
    for where, blob in blobs:
        found += [f"{n!r} in {where}" for n in needles if n.encode() in blob]
    return found


def _materialize(selection: str, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*WITHOUT_DAC, sys.executable, "-m", "dagster", "asset", "materialize"]
        + ["-m", "orchestration.definitions", "--select", selection, "--partition", PARTITION],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
def test_a_bad_night_leaves_no_identifier_in_dagster_and_loses_no_file(
    tmp_path: Path, session_keys: dict[str, str]
) -> None:
    site = tmp_path / "site"
    drop = site / "drop"
    generate_export(drop, studies=2, seed=23, labels_path=site / "labels.csv", days=1)
    bad = _plant_bad_night(drop, tmp_path / "outside.dcm")
    needles = _identifying_values(drop)
    assert {PATIENT_ID, ACCESSION, PLANTED_STUDY} <= needles
    home = tmp_path / "dagster"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCREENLAKE_", "DAGSTER_"))}
    env.update(session_keys)
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "SCREENLAKE_HOME": str(site / "var"),
            "SCREENLAKE_DROP": str(drop),
            "SCREENLAKE_DROP_SETTLE_SECONDS": "0",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
    )
    outputs = []
    try:
        listed = _materialize("pacs_studies", env, site)
        outputs += [listed.stdout, listed.stderr]
        assert listed.returncode == 0, listed.stderr[-3000:]
        bad["vanishes"].unlink()
        rest = _materialize("raw_instances*", env, site)
        outputs += [rest.stdout, rest.stderr]
        assert rest.returncode == 0, rest.stderr[-3000:]
    finally:
        for folder in (bad["unlistable"], bad["unreadable"]):
            folder.chmod(0o700)

    phi = site / "var" / "phi"
    manifest = pl.read_parquet(phi / layout.raw_manifest_path(BATCH))
    planted = manifest.filter(manifest["source_path"].str.contains(PATIENT_ID))
    problems = dict(zip(planted["source_path"], planted["problem"], strict=True))
    assert len(problems) == 3 + len(bad), problems
    reasons = {Path(path).name: reason for path, reason in problems.items()}
    # Bad pixels show only when de-identifying: these two are quarantined there.
    readable = {bad["truncated"].name, bad["wrong_syntax"].name}
    assert {n for n, r in reasons.items() if r is None} == readable | {
        f"{PATIENT_ID}_IM{i}.dcm" for i in range(3)
    }
    assert reasons[bad["unreadable"].name] == "cannot be read: permission denied"
    assert reasons[bad["vanishes"].name].startswith("gone from the export drop")
    assert reasons[bad["link_out"].name].startswith("a symbolic link to outside")
    assert reasons[bad["link_loop"].name].startswith("a symbolic link that leads nowhere")
    assert reasons[bad["pipe"].name].startswith("not a regular file")
    assert reasons[bad["unlistable"].name].startswith("a folder of the drop that cannot be listed")
    # Every landed file of the batch is de-identified or quarantined: quarantine holds the rest.
    quarantine = phi / layout.quarantine_dir(BATCH)
    quarantined = {p.name for p in quarantine.glob("*.reason.txt")}
    assert len(quarantined) >= len(bad) - 1

    # The search finds what is there (the notes file in the drop holds the ID) ...
    assert _hits(drop, [], {PATIENT_ID}), "the search for identifiers finds nothing at all"
    # ... and nothing of the drop is in what Dagster kept or printed.
    leaks = _hits(home, outputs, needles)
    assert leaks == [], leaks[:20]
