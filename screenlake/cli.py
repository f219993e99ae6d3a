"""The `screenlake` command: the same functions the assets call, for people and scripts.

Nothing here prints an identifier: counts, pseudonymous names and folder names only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from screenlake.errors import ScreenlakeError
from screenlake.settings import PHI_ZONE, RESEARCH_ZONE, location

if TYPE_CHECKING:
    import duckdb
    import polars as pl

    from screenlake.keybinding import KeyInUse

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _synth(args: argparse.Namespace) -> int:
    from screenlake.synth.export import generate_export
    from screenlake.synth.presets import image_preset

    labels = args.labels or args.out.with_name(args.out.name + "-labels.csv")
    preset = image_preset(args.size, ct_slices=args.ct_slices)
    summary = generate_export(
        args.out,
        studies=args.studies,
        seed=args.seed,
        labels_path=labels,
        start_date=args.start_date,
        days=args.days,
        preset=preset,
        ldct_share=args.ldct_share,
    )
    print(
        f"synthetic export ({preset.name} sizes): {summary.studies} studies of "
        f"{summary.patients} patients, {summary.instances} DICOM files and {summary.bad_files} "
        f"bad files over {len(summary.days)} days in {args.out}; labels in {summary.labels_path}"
    )
    return EXIT_OK


def _empty_or_absent(folder: Path, what: str) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise ScreenlakeError(f"the {what} folder is not empty; give an empty or new folder")


def _deidentify(args: argparse.Namespace) -> int:
    from screenlake.deid.batch import LandedFile, deidentify_batch
    from screenlake.deid.profile import load_default_profile, load_profile
    from screenlake.keys import PSEUDONYM_KEY_ENV, validate_pseudonym_key

    key = validate_pseudonym_key(os.environ.get(PSEUDONYM_KEY_ENV))
    if not args.input.is_dir():
        raise ScreenlakeError("the input folder does not exist or is not a folder")
    _empty_or_absent(args.output, "output")
    _empty_or_absent(args.quarantine, "quarantine")
    profile = load_profile(args.profile) if args.profile else load_default_profile()
    inputs = sorted(p for p in args.input.rglob("*") if p.is_file())
    files = [LandedFile(i, path, None) for i, path in enumerate(inputs, start=1)]
    result = deidentify_batch(
        files,
        key=key,
        profile=profile,
        batch_id="cli",
        programme="",
        output_dir=args.output,
        output_prefix=PurePosixPath("."),
        quarantine_dir=args.quarantine,
        workers=args.workers or (os.cpu_count() or 1),
    )
    print(
        f"{len(files)} files in: {result.deidentified} de-identified, "
        f"{result.quarantined} quarantined (profile {profile.version})"
    )
    for reason, count in sorted(result.quarantine_reasons.items()):
        print(f"  quarantined, {reason}: {count}")
    return EXIT_OK


def _query(args: argparse.Namespace) -> int:
    import duckdb
    import polars as pl

    from screenlake.lake import refresh_views
    from screenlake.objectstore.location import is_s3_uri

    if is_s3_uri(args.research_zone):
        with duckdb.connect() as con:
            _connect_to_s3_lake(con, args.research_zone)
            frame = _run_sql(con, args.sql)
    else:
        research = Path(args.research_zone)
        if not (research / "lake").is_dir():
            raise ScreenlakeError(
                "the research zone has no lake yet; run `make demo` or materialise the "
                "catalogue first"
            )
        with duckdb.connect(str(research / "lake.duckdb")) as con:
            refresh_views(con, (research / "lake").resolve())
            frame = _run_sql(con, args.sql)
    with pl.Config(tbl_rows=args.limit, tbl_cols=-1, fmt_str_lengths=64, tbl_width_chars=200):
        print(frame)
    return EXIT_OK


def _run_sql(con: duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    """The rows of the person's `sql`; a mistake in it is a one-line error, not a traceback."""
    import duckdb

    from screenlake.lake import query

    try:
        return query(con, sql)
    except duckdb.Error as error:
        # DuckDB's message names the SQL's problem; the lines that quote the SQL with a caret
        # under it do not fit on one line.
        lines = [line.strip() for line in str(error).splitlines()]
        said = " ".join(line for line in lines if line and not line.startswith(("LINE ", "^")))
        raise ScreenlakeError(f"the query failed: {said}") from None


def _connect_to_s3_lake(con: duckdb.DuckDBPyConnection, zone: str) -> None:
    """Views over a research zone in object storage, read with the zone's own credentials."""
    from screenlake.lake import refresh_views
    from screenlake.objectstore.access import DEFAULT_REGION, S3Access
    from screenlake.objectstore.duckdb_s3 import create_s3_secret, load_httpfs
    from screenlake.objectstore.location import parse_s3_uri

    location = parse_s3_uri(zone, "--research-zone")
    access = S3Access(
        os.environ.get("SCREENLAKE_S3_ENDPOINT") or None,
        os.environ.get("SCREENLAKE_S3_REGION") or DEFAULT_REGION,
        "SCREENLAKE_RESEARCH_ZONE_S3",
    )
    load_httpfs(con)
    create_s3_secret(con, access, location, "screenlake_research_zone")
    refresh_views(con, location.uri("lake"))


def _zone_settings(args: argparse.Namespace) -> dict[str, str]:
    """The environment's settings, with the zones `--phi-zone` and `--research-zone` name."""
    settings = dict(os.environ)
    for setting, value in ((PHI_ZONE, args.phi_zone), (RESEARCH_ZONE, args.research_zone)):
        if value:
            settings[setting] = value
    return settings


def _verify(args: argparse.Namespace) -> int:
    """The residual-PHI gate over every landed batch (or those asked for), exactly as the
    blocking check runs it: `scan_batch` with the zones, pseudonym key, profile options and
    worker count the deployment's settings give the pipeline."""
    from orchestration.resources import resources_for
    from screenlake import layout
    from screenlake.residual import landed_batches, scan_batch

    settings = _zone_settings(args)
    resources = resources_for(settings.get("SCREENLAKE_ENV") or "local", settings)
    if args.erasures:
        if args.partition:
            raise ScreenlakeError(
                "--partition does not go with --erasures: the erasure proof reads every file "
                "of both zones"
            )
        return _verify_erasures(resources)
    phi, research = resources["phi_zone"], resources["research_zone"]
    deidentification = resources["deidentification"]
    phi.pull(layout.RAW_DIR)
    batches = landed_batches(phi.path())
    if args.partition:
        wanted = set(args.partition)
        batches = [b for b in batches if f"{b.day.isoformat()}|{b.programme}" in wanted]
    if not batches:
        print("nothing to verify: no landed batch in the PHI zone matches")
        return EXIT_FAILED
    key = resources["pseudonym_key"].key()
    options = deidentification.profile().options
    workers = deidentification.worker_count()
    failed = 0
    for batch in batches:
        scan = scan_batch(phi, research, batch, key, options, workers)
        state = "no identifiers" if scan.passed else f"{len(scan.findings)} identifiers found"
        print(
            f"{batch.day.isoformat()}|{batch.programme}: {scan.files_scanned} research files "
            f"scanned against {scan.originals} originals: {state}"
        )
        for finding in scan.findings:
            print(f"  {finding.kind}: {finding.file} [{finding.element}]")
        failed += not scan.passed
    print(
        f"{len(batches)} batches verified, none with identifiers"
        if not failed
        else f"{failed} of {len(batches)} batches hold identifiers"
    )
    return EXIT_OK if not failed else EXIT_FAILED


def _verify_erasures(resources: dict[str, Any]) -> int:
    """The proof that every recorded erasure left nothing: both zones, every file decoded by its
    kind, searched for the erased patients' values (`screenlake.erasure.scan`). Prints where
    and what kind of value, never the value."""
    from screenlake.erasure.scan import prove_erasures

    proof = prove_erasures(
        resources["phi_zone"], resources["research_zone"], resources["vault_key"].cipher()
    )
    if not proof.erasures:
        print("nothing to verify: the PHI zone records no erasure carried out")
        return EXIT_FAILED
    for scan in proof.scans:
        print(f"{scan.zone} zone: {scan.files} files searched, {len(scan.findings)} traces found")
        for finding in scan.findings:
            print(
                f"  {finding.zone}: {finding.file} [erasure {finding.erasure_id}] "
                f"{finding.kind} x{finding.values} (in {', '.join(finding.found_in)})"
            )
        for name in scan.undecoded:
            print(f"  {scan.zone}: {name} could not be decoded; searched as raw bytes only")
    found = len(proof.findings)
    # A file its kind's reader could not open may hide a value from the raw search: the proof
    # is not made until a person has looked at it.
    undecoded = sum(len(scan.undecoded) for scan in proof.scans)
    if found:
        print(f"{found} traces of erased patients found")
    elif undecoded:
        print(f"no trace found, but {undecoded} files could not be decoded: not proven")
    else:
        print(f"{proof.erasures} erasures verified: no trace in either zone")
    return EXIT_OK if not found and not undecoded else EXIT_FAILED


def _reidentify(args: argparse.Namespace) -> int:
    from screenlake import layout
    from screenlake.reidentify import (
        append_audit,
        audit_record,
        inside,
        load_all_vaults,
        read_findings,
        reidentify,
    )
    from screenlake.vault import VAULT_KEY_ENV, vault_cipher
    from screenlake.worklist import write_csv

    if not inside(args.output, args.phi_zone):
        raise ScreenlakeError("re-identified rows stay in the PHI zone: --output must be inside it")
    requested_by = args.requested_by or os.environ.get("USER", "")
    cipher = vault_cipher(os.environ.get(VAULT_KEY_ENV))
    findings = read_findings(args.findings)
    rows, unmatched = reidentify(findings, load_all_vaults(args.phi_zone / "vault", cipher))
    record = audit_record(
        requested_by, args.purpose, args.findings.name, findings.height, rows.height
    )
    write_csv(rows, args.output)
    append_audit(args.phi_zone / layout.REIDENTIFICATION_LOG, record)
    print(
        f"{findings.height} rows in: {rows.height} re-identified, {unmatched} unknown to the vault;"
        f" audited in the PHI zone ({layout.REIDENTIFICATION_LOG})"
    )
    return EXIT_OK if unmatched == 0 else EXIT_FAILED


def _keys(args: argparse.Namespace) -> int:
    """`keys status` and `keys rotate`: the bindings the ingest assets check, through the same
    functions (`screenlake.keybinding`) and the same zones (`zone_for`, local or S3)."""
    from orchestration.resources import zone_for
    from screenlake.keybinding import (
        PSEUDONYM_KEY,
        ROTATION_PROCEDURE,
        VAULT_KEY,
        key_status,
        pseudonym_key_in_use,
        rotate_keys,
        shown,
        vault_key_in_use,
    )
    from screenlake.keys import PSEUDONYM_KEY_ENV
    from screenlake.vault import VAULT_KEY_ENV

    settings = _zone_settings(args)
    phi = zone_for(settings, "PHI", PHI_ZONE)
    research = zone_for(settings, "research", RESEARCH_ZONE)

    def pseudonym() -> KeyInUse:
        return pseudonym_key_in_use(os.environ.get(PSEUDONYM_KEY_ENV), PSEUDONYM_KEY_ENV, research)

    def vault() -> KeyInUse:
        return vault_key_in_use(os.environ.get(VAULT_KEY_ENV), VAULT_KEY_ENV, phi)

    if args.keys_command == "status":
        states = [
            key_status(PSEUDONYM_KEY, PSEUDONYM_KEY_ENV, research, pseudonym),
            key_status(VAULT_KEY, VAULT_KEY_ENV, phi, vault),
        ]
        for state in states:
            print(f"{state.kind.name} ({state.env_var}): {state.state}")
            print(f"  in the environment: fingerprint {shown(state.in_environment)}")
            print(f"  {state.zone} zone bound to: fingerprint {shown(state.bound)}")
            if state.problem:
                print(f"  {state.problem}")
            elif not state.ok:
                print(
                    f"  a run would stop before landing anything: set {state.env_var} back to "
                    f"the bound key, or change keys on purpose with {ROTATION_PROCEDURE}"
                )
        return EXIT_OK if all(state.ok for state in states) else EXIT_FAILED
    record, where = rotate_keys(pseudonym(), vault(), phi, args.reason)
    for name, old, new, zone in (
        ("pseudonym key", record.old_pseudonym_key, record.new_pseudonym_key, "research"),
        ("vault key", record.old_vault_key, record.new_vault_key, "PHI"),
    ):
        change = "unchanged" if old == new else f"{shown(old)} -> {shown(new)}"
        print(f"{name} ({zone} zone): {change}")
    print(
        f"audited in the PHI zone ({where}). Batches written before keep their old pseudonyms "
        "and vaults; see README, Rotating keys, for what to do with the research zone."
    )
    return EXIT_OK


def _objection(args: argparse.Namespace) -> int:
    """`objection add|withdraw|list|import`: the register in the deployment's PHI zone, under
    its pseudonym key (through the same resources the pipeline uses). Prints tokens, never IDs."""
    from orchestration.resources import resources_for
    from screenlake.keybinding import os_user
    from screenlake.objections import (
        ADD,
        WITHDRAW,
        ObjectionRegister,
        ObjectionRequest,
        read_import,
    )

    settings = _zone_settings(args)
    resources = resources_for(settings.get("SCREENLAKE_ENV") or "local", settings)
    register = ObjectionRegister(resources["phi_zone"], resources["pseudonym_key"].key())
    today = date.today()
    if args.objection_command == "list":
        changes = register.changes()
        in_force = register.in_force()
        print(f"{len(in_force)} objections in force, from {len(changes)} recorded changes")
        for objection in sorted(in_force.values(), key=lambda o: (o.asked_on, o.token)):
            print(f"  {objection.token}  scope {objection.scope}  asked on {objection.asked_on}")
        if args.changes:
            for c in register.history():
                print(
                    f"  {c.recorded_at.isoformat(timespec='seconds')} {c.action} {c.scope} "
                    f"{c.token} asked on {c.asked_on} by {c.requested_by} ({c.reason_code}); "
                    f"recorded by {c.recorded_by} via {c.source}"
                )
        return EXIT_OK
    if args.objection_command == "import":
        requests = read_import(args.file, today)
        source = "import"
        if args.after_key_rotation:
            register.start_under_this_key(os_user())
            print("the register is held under the key now in the environment from here on")
    else:
        patient_id = sys.stdin.readline().strip() if args.patient_id == "-" else args.patient_id
        requests = [
            ObjectionRequest(
                patient_id=patient_id,
                issuer=args.issuer,
                action=ADD if args.objection_command == "add" else WITHDRAW,
                scope=getattr(args, "scope", None) or "research",
                requested_by=args.requested_by,
                reason_code=args.reason,
                asked_on=args.asked_on or today,
            )
        ]
        source = "cli"
    made = register.record(requests, source)
    for change in made:
        print(f"recorded: {change.action} {change.scope} {change.token}")
    print(
        f"{len(requests)} requests: {len(made)} recorded, {len(requests) - len(made)} already "
        "in force (nothing recorded for them)"
    )
    return EXIT_OK


def _import_reviews(args: argparse.Namespace) -> int:
    from screenlake.reviews import import_reviews

    if not args.file.is_file():
        raise ScreenlakeError(f"{args.file.name}: no such file; give the filled-in worklist")
    if not args.phi_zone.is_dir():
        raise ScreenlakeError("the PHI zone folder does not exist; check --phi-zone")
    done = import_reviews(args.file, args.phi_zone)
    print(
        f"{done.decisions} review decisions recorded, {done.labels} of them labels "
        f"({done.positive} positive, {done.negative} negative); {done.not_reviewed} rows not "
        f"reviewed yet; in the PHI zone ({done.path})"
    )
    if done.kept:
        print(f"  {done.kept} earlier decisions for studies this file does not list were kept")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="screenlake", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a synthetic PACS export with fake PHI")
    synth.add_argument("--out", type=Path, required=True, help="new or empty folder")
    synth.add_argument("--studies", type=int, default=16)
    synth.add_argument("--seed", type=int, default=7)
    synth.add_argument("--labels", type=Path, help="ground-truth CSV (default: beside --out)")
    synth.add_argument("--start-date", type=date.fromisoformat, default=date(2024, 3, 11))
    synth.add_argument("--days", type=int, default=2)
    synth.add_argument(
        "--size",
        choices=("real", "demo"),
        default="real",
        help="real: 300-slice 512x512 CT, detector-size radiographs, device transfer syntaxes "
        "(default, for benchmarks); demo: the demo's small uncompressed images",
    )
    synth.add_argument(
        "--ct-slices", type=int, help="CT slices a study (default: 300 real, 24 demo)"
    )
    synth.add_argument(
        "--ldct-share",
        type=float,
        default=0.5,
        help="share of the studies that are lung CT, the rest chest radiographs (default 0.5)",
    )
    synth.set_defaults(run=_synth)

    deid = commands.add_parser("deidentify", help="de-identify every file under a folder")
    deid.add_argument("input", type=Path)
    deid.add_argument("--output", type=Path, required=True)
    deid.add_argument("--quarantine", type=Path, required=True)
    deid.add_argument("--profile", type=Path, help="profile file (default: the shipped profile)")
    deid.add_argument("--workers", type=int, default=0, help="processes (default: every core)")
    deid.set_defaults(run=_deidentify)

    sql = commands.add_parser("query", help="run SQL on the lake and print the result")
    sql.add_argument("sql")
    sql.add_argument(
        "--research-zone",
        default=location(os.environ, RESEARCH_ZONE),
        help="a folder or s3://bucket/prefix (default: SCREENLAKE_RESEARCH_ZONE, else "
        "research/ under SCREENLAKE_HOME, else var/research)",
    )
    sql.add_argument("--limit", type=int, default=50, help="rows to print")
    sql.set_defaults(run=_query)

    verify = commands.add_parser(
        "verify",
        help="the residual-PHI gate over the landed batches, as the pipeline's blocking check "
        "runs it (the deployment's zones, key and profile)",
    )
    verify.add_argument("--phi-zone", help="a folder or s3://... (default: SCREENLAKE_PHI_ZONE)")
    verify.add_argument(
        "--research-zone", help="a folder or s3://... (default: SCREENLAKE_RESEARCH_ZONE)"
    )
    verify.add_argument(
        "--partition",
        action="append",
        metavar="DATE|PROGRAMME",
        help="only this partition (e.g. 2024-03-11|cxr_tb); repeat for more (default: all)",
    )
    verify.add_argument(
        "--erasures",
        action="store_true",
        help="instead, prove that every erasure recorded in the PHI zone left nothing: every "
        "file of both zones, decoded by its kind, searched for the erased patients' values "
        "(prints where and what kind of value, never the value; needs SCREENLAKE_VAULT_KEY)",
    )
    verify.set_defaults(run=_verify)

    reid = commands.add_parser(
        "reidentify", help="map a findings table back to patients (PHI zone only, audited)"
    )
    reid.add_argument("findings", type=Path, help=".parquet or .csv with study_instance_uid")
    reid.add_argument("--output", type=Path, required=True, help="CSV inside the PHI zone")
    reid.add_argument("--purpose", required=True, help="why, for the audit log")
    reid.add_argument("--requested-by", help="who, for the audit log (default: $USER)")
    reid.add_argument("--phi-zone", type=Path, default=Path(location(os.environ, PHI_ZONE)))
    reid.set_defaults(run=_reidentify)

    reviews = commands.add_parser(
        "import-reviews",
        help="record the clinicians' decisions from a filled-in worklist (PHI zone)",
    )
    reviews.add_argument("file", type=Path, help="the worklist's .xlsx or .csv, filled in")
    reviews.add_argument("--phi-zone", type=Path, default=Path(location(os.environ, PHI_ZONE)))
    reviews.set_defaults(run=_import_reviews)

    objection = commands.add_parser(
        "objection",
        help="the objection register (PHI zone): participants whose data screenlake must not use",
    )
    objection_commands = objection.add_subparsers(dest="objection_command", required=True)
    add = objection_commands.add_parser(
        "add", help="record an objection (scope research) or an erasure request (scope all)"
    )
    withdraw = objection_commands.add_parser("withdraw", help="record that an objection ends")
    for command in (add, withdraw):
        command.add_argument(
            "--patient-id",
            required=True,
            help="the patient ID as the PACS holds it; '-' reads it from standard input, out of "
            "the shell's history",
        )
        command.add_argument("--issuer", help="IssuerOfPatientID (default: none: any issuer)")
        command.add_argument("--requested-by", required=True, help="who asked")
        command.add_argument("--reason", required=True, help="a reason code, e.g. ART21, ART17")
        command.add_argument(
            "--asked-on", type=date.fromisoformat, help="when they asked (default: today)"
        )
    add.add_argument("--scope", required=True, choices=("research", "all"))
    listing = objection_commands.add_parser("list", help="the objections in force (tokens)")
    listing.add_argument("--changes", action="store_true", help="every recorded change too")
    imported = objection_commands.add_parser(
        "import", help="record the changes of a CSV from the programme's own register"
    )
    imported.add_argument(
        "--after-key-rotation",
        action="store_true",
        help="the pseudonym key was rotated: hold the register under the new key from now on "
        "(earlier records stay as history) and record this file's changes under it",
    )
    imported.add_argument(
        "file",
        type=Path,
        help="columns patient_id, scope, requested_by, reason; optional issuer, asked_on, action",
    )
    for command in (add, withdraw, listing, imported):
        command.add_argument(
            "--phi-zone", help="a folder or s3://... (default: SCREENLAKE_PHI_ZONE)"
        )
        command.add_argument(
            "--research-zone", help="a folder or s3://... (default: SCREENLAKE_RESEARCH_ZONE)"
        )
        command.set_defaults(run=_objection)

    keys = commands.add_parser(
        "keys", help="which keys the zones are bound to; rotate them (audited, PHI zone)"
    )
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    status = keys_commands.add_parser(
        "status", help="fingerprints of the keys in the environment against the zones' bindings"
    )
    rotate = keys_commands.add_parser(
        "rotate", help="rebind the zones to the keys now in the environment (README: Rotating keys)"
    )
    rotate.add_argument("--reason", required=True, help="why, for the audit log")
    for command in (status, rotate):
        command.add_argument(
            "--phi-zone", help="a folder or s3://... (default: SCREENLAKE_PHI_ZONE)"
        )
        command.add_argument(
            "--research-zone", help="a folder or s3://... (default: SCREENLAKE_RESEARCH_ZONE)"
        )
        command.set_defaults(run=_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; domain errors print their message and exit non-zero."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ScreenlakeError as error:
        print(f"screenlake {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
