"""`make demo`: a synthetic export through every asset on embedded defaults, then a summary.

Runs go through the Dagster instance in var/dagster, so `make ui` shows them afterwards. The
demo is the only place that makes keys: it writes random ones into the PHI zone on its first
run and says so; a deployment sets them in the environment or a secret store.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

import polars as pl

from orchestration.resources import resources_for
from orchestration.ui import SHIPPED_INSTANCE_CONFIG, install_instance_config, instance_home
from screenlake import layout
from screenlake.keys import PSEUDONYM_KEY_ENV
from screenlake.programmes import PROGRAMME_NAMES
from screenlake.settings import local_home
from screenlake.vault import VAULT_KEY_ENV

VAR = local_home(os.environ)
# The demo runs from a checkout (`make demo`), whose top-level dagster.yaml configures the
# embedded instance: SQLite in var/dagster, the run queue and the pools.
INSTANCE_CONFIG = SHIPPED_INSTANCE_CONFIG
DROP, PHI, RESEARCH = VAR / "drop", VAR / "phi", VAR / "research"
DAGSTER_HOME = instance_home(os.environ)
DEMO_STUDIES, DEMO_SEED = 16, 7
# Step-by-step events stay in the instance for the UI; the terminal shows warnings and up.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _demo_secret(env_var: str, path: Path, make: str) -> None:
    if os.environ.get(env_var):
        return
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make + "\n", encoding="ascii")
        path.chmod(0o600)
        print(f"created a random {env_var} for the demo in the PHI zone: {os.path.relpath(path)}")
    os.environ[env_var] = path.read_text(encoding="ascii").strip()


def prepare() -> None:
    """The synthetic export in var/drop (once), the demo keys, and the Dagster instance."""
    from cryptography.fernet import Fernet

    from screenlake.synth.export import generate_export

    if not DROP.exists() or not any(DROP.iterdir()):
        summary = generate_export(
            DROP, studies=DEMO_STUDIES, seed=DEMO_SEED, labels_path=PHI / layout.DEMO_LABELS
        )
        print(
            f"synthetic PACS export: {summary.studies} studies, {summary.instances} DICOM files "
            f"and {summary.bad_files} bad files in var/drop"
        )
    _demo_secret(PSEUDONYM_KEY_ENV, PHI / layout.DEMO_PSEUDONYM_KEY, secrets.token_hex(32))
    _demo_secret(VAULT_KEY_ENV, PHI / layout.DEMO_VAULT_KEY, Fernet.generate_key().decode())
    if not INSTANCE_CONFIG.is_file():
        raise SystemExit(
            "run the demo from the checkout's top folder (it reads dagster.yaml there)"
        )
    # Made once, as for `make ui`: an operator's edits to the instance's copy are kept.
    note = install_instance_config(INSTANCE_CONFIG, DAGSTER_HOME)
    if note:
        print(note)
    os.environ["DAGSTER_HOME"] = str(DAGSTER_HOME)


def run_partitions() -> list[str]:
    """Run the pipeline job for every day the source holds x programme; the failed keys."""
    import dagster as dg

    from orchestration.definitions import defs
    from orchestration.partitions import partition_key

    job = defs.resolve_job_def("screening_pipeline")
    source = resources_for("local", os.environ)["source"]
    instance = dg.DagsterInstance.get()
    failed = []
    for day in source.available_days():
        for programme in PROGRAMME_NAMES:
            key = partition_key(day, programme)
            started = time.perf_counter()
            result = job.execute_in_process(
                partition_key=key,
                instance=instance,
                raise_on_error=False,
                tags={"screenlake/demo": "1"},
                run_config=_QUIET,
            )
            status = "ok" if result.success else "FAILED"
            print(f"  run {key}: {status} in {time.perf_counter() - started:.1f} s")
            if not result.success:
                failed.append(str(key))
    return failed


def summary() -> None:
    """Print what went in, what came out and where it lies."""
    studies = pl.read_parquet(str(PHI / "ingest" / "**" / "studies.parquet"))
    landed = pl.read_parquet(str(PHI / "raw" / "**" / "manifest.parquet"))
    lake = RESEARCH / layout.LAKE_DIR
    audit = pl.read_parquet(str(lake / "deidentification_audit" / "**" / "*.parquet"))
    findings_files = list((lake / "validated_findings").glob("*/*.parquet"))
    findings = pl.read_parquet(findings_files) if findings_files else pl.DataFrame()
    worklists = sorted((PHI / "worklists").rglob("*.csv"))
    quarantined = audit.filter(pl.col("outcome") == "quarantined")
    print("\nscreenlake demo summary")
    print(
        f"  studies in:                {studies.height} (programmes: {', '.join(PROGRAMME_NAMES)})"
    )
    print(f"  files landed:              {landed.height}")
    print(
        f"  instances de-identified:   {audit.filter(pl.col('outcome') == 'deidentified').height}"
    )
    print(f"  files quarantined:         {quarantined.height}")
    for reason, count in (
        quarantined.group_by(pl.col("reason").str.split(":").list.first()).len().rows()
    ):
        print(f"      {count} x {reason}")
    flagged = findings.filter(pl.col("flag").fill_null(False)).height if findings.height else 0
    print(f"  studies scored:            {findings.height}")
    print(f"  studies flagged for review:{flagged:>3}")
    print("  outputs:")
    print("    research zone (pseudonymised): var/research/dicom, lake: var/research/lake")
    print("    DuckDB views:                 var/research/lake.duckdb")
    print("    quarantine (PHI zone):        var/phi/quarantine")
    for path in worklists:
        print(f"    worklist (PHI zone):          {os.path.relpath(path)}")
    for path in sorted((PHI / "worklists").rglob("*.xlsx")):
        print(f"    worklist XLSX (PHI zone):     {os.path.relpath(path)}")
    for path in sorted((RESEARCH / "reports").rglob("report.html")):
        print(f"    programme report:             {os.path.relpath(path)}")
    docs = sorted((RESEARCH / "evidence" / "data_docs").rglob("index.html"))
    if docs:
        print(
            f"    data-quality evidence:        {len(docs)} Data Docs sites under "
            f"{os.path.relpath(RESEARCH / 'evidence' / 'data_docs')}"
        )
    print('  query:  .venv/bin/screenlake query "SELECT * FROM programme_batch_summary"')
    print("  UI:     make ui, then open http://127.0.0.1:3000 (runs, lineage, partitions)")
    print("  Scores are flags for a clinician to review, from reference models trained on")
    print("  synthetic images: not a diagnosis and not a clinical model.")


def main() -> int:
    """Prepare the demo, run every partition, print the summary; non-zero if a run failed."""
    started = time.perf_counter()
    prepare()
    print("running every asset for each day x programme partition:")
    failed = run_partitions()
    summary()
    return finish("demo", started, failed)


def finish(what: str, started: float, failed: list[str]) -> int:
    """Say how long `what` took and which runs failed; the exit status."""
    print(f"\n{what} finished in {time.perf_counter() - started:.0f} s")
    if failed:
        print(f"runs that failed: {', '.join(failed)}; open `make ui` to see why", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
