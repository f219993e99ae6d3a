"""The proof that an erasure left nothing behind (`screenlake verify --erasures`): every file of
both zones, decoded by its kind, searched for every value by which the erased patients were
held, as their request records (`screenlake.erasure.run`) keep them.

A file is searched as its raw bytes and, where compression or encryption could hide a value
from that, as its kind decodes it: Parquet by every column's values, DuckDB by every table's
rows and every view's SQL (and rows, where the view still reads), zip containers (XLSX) by
every member, gzip by its content, DICOM by every element at every depth (deflated files
inflated), encrypted vaults by their decrypted rows. Its path is searched too.

A value is found only as a whole token: not beside a letter or digit, and not continuing a
dotted number, so that `1.2.3.4` is not found in `1.2.3.45` nor a patient ID inside a UID. A
finding names the zone, the file, the erasure and what kind of value it is, never the value;
a file whose path holds one of the values is named by its number in the zone instead.
"""

from __future__ import annotations

import gzip
import mmap
import re
import zipfile
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import polars as pl
import pyarrow.parquet as pq
import pydicom
from cryptography.fernet import Fernet
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from screenlake import layout
from screenlake.erasure.run import ErasureRequest, erasure_requests
from screenlake.errors import ScreenlakeError
from screenlake.keybinding import Zone
from screenlake.vault import read_vault

# Each field of PatientTraces, by the kind of value a finding names.
VALUE_KINDS = (
    ("patient_ids", "patient_id"),
    ("accession_numbers", "accession_number"),
    ("original_study_uids", "original_study_uid"),
    ("patient_pseudonyms", "patient_pseudonym"),
    ("study_uids", "study_uid"),
    ("accession_pseudonyms", "accession_pseudonym"),
    ("series_uids", "series_uid"),
    ("sop_uids", "sop_uid"),
)
# Pixel data is searched as raw bytes only: no value of ours is written in it as text.
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})


class Erased(NamedTuple):
    """Whose value it is (the erasure) and what kind of value, for a finding."""

    erasure_id: str
    kind: str


def erased_values(requests: Iterable[ErasureRequest]) -> dict[str, Erased]:
    """Every value the erasures removed, PHI and pseudonymous, with its erasure and kind; a
    value held under two erasures is reported under the first."""
    wanted: dict[str, Erased] = {}
    for request in requests:
        for field, kind in VALUE_KINDS:
            for value in sorted(getattr(request.traces, field)):
                if value:
                    wanted.setdefault(value, Erased(request.erasure_id, kind))
    return wanted


# Tokens of letters and digits joined by single dots: UIDs, pseudonyms, most IDs.
_DOTTED = r"[0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*"
_BEFORE = r"(?<![0-9A-Za-z])(?<![0-9]\.)"
_AFTER = r"(?![0-9A-Za-z])(?!\.[0-9])"


class ValueMatcher:
    """Finds values as whole tokens in text and in bytes.

    Dotted values are looked up token by token in a set (one pass over the text, whatever the
    number of values); the few others (an ID with a hyphen, a space, a non-ASCII letter) by
    one regular expression with the same boundaries.
    """

    def __init__(self, values: Iterable[str]) -> None:
        every = {v for v in values if v}
        self._dotted = frozenset(v for v in every if re.fullmatch(_DOTTED, v, re.ASCII))
        self._longest = max((len(v) for v in self._dotted), default=0)
        shortest = min((len(v) for v in self._dotted), default=1)
        self._runs = re.compile(rf"[0-9A-Za-z.]{{{shortest},}}")
        self._runs_b = re.compile(rf"[0-9A-Za-z.]{{{shortest},}}".encode())
        # Longest first, so that a value is not cut short by another it begins with.
        others = sorted(every - self._dotted, key=len, reverse=True)
        self._others = _text_pattern(others)
        self._others_b = _bytes_pattern(others)

    def in_text(self, text: str) -> set[str]:
        """The values `text` holds."""
        found: set[str] = set()
        if self._dotted:
            for run in self._runs.finditer(text):
                found |= self._in_run(run.group())
        if self._others is not None:
            found |= {m.group() for m in self._others.finditer(text)}
        return found

    def in_bytes(self, data: bytes | mmap.mmap) -> set[str]:
        """The values `data` holds as ASCII or UTF-8 text."""
        found: set[str] = set()
        if self._dotted:
            for run in self._runs_b.finditer(data):
                found |= self._in_run(run.group().decode("ascii"))
        if self._others_b is not None:
            found |= {m.group().decode("utf-8") for m in self._others_b.finditer(data)}
        return found

    def _in_run(self, run: str) -> set[str]:
        found: set[str] = set()
        for token in re.finditer(_DOTTED, run):
            found |= self._in_token(token.group())
        return found

    def _in_token(self, token: str) -> set[str]:
        """The values that are a whole run of `token`'s dot-separated parts: starting where
        the part before does not end in a digit, ending where the part after does not start
        with one."""
        if "." not in token:
            return {token} & self._dotted
        parts = token.split(".")
        found = set()
        for start in range(len(parts)):
            if start and parts[start - 1][-1].isdigit():
                continue
            candidate = parts[start]
            for end in range(start, len(parts)):
                if end > start:
                    candidate = f"{candidate}.{parts[end]}"
                if len(candidate) > self._longest:
                    break
                last = end == len(parts) - 1
                if (last or not parts[end + 1][0].isdigit()) and candidate in self._dotted:
                    found.add(candidate)
        return found


def _text_pattern(values: list[str]) -> re.Pattern[str] | None:
    """One pattern for `values` as whole tokens; None for no value."""
    if not values:
        return None
    return re.compile(f"{_BEFORE}(?:{'|'.join(re.escape(v) for v in values)}){_AFTER}")


def _bytes_pattern(values: list[str]) -> re.Pattern[bytes] | None:
    """`_text_pattern` for the values' UTF-8 bytes."""
    if not values:
        return None
    body = b"|".join(re.escape(v.encode()) for v in values)
    return re.compile(_BEFORE.encode() + b"(?:" + body + b")" + _AFTER.encode())


@dataclass(frozen=True)
class ErasedTraceFinding:
    """A value of an erased patient in a file: never the value, only its kind and erasure."""

    zone: str
    # The path relative to the zone, or `<zone file #N>` when the path holds a value.
    file: str
    erasure_id: str
    kind: str
    # How the file was read where the values showed: path, bytes, parquet, dicom...
    found_in: tuple[str, ...]
    # How many distinct values of this kind and erasure the file holds.
    values: int = 1


@dataclass(frozen=True)
class ZoneScan:
    """One zone searched: how many files, what was found, and which files could be read as
    raw bytes only (their kind's decoder failed; named like findings)."""

    zone: str
    files: int
    findings: tuple[ErasedTraceFinding, ...]
    undecoded: tuple[str, ...]


Decoder = Callable[[Path, Fernet], Iterator[tuple[str, str]]]


def scan_zone(
    root: Path,
    zone: str,
    wanted: Mapping[str, Erased],
    cipher: Fernet,
    excluded: Collection[PurePosixPath] = (),
) -> ZoneScan:
    """Search every file under a zone's local folder `root` (but those under `excluded`,
    relative to it) for the `wanted` values."""
    matcher = ValueMatcher(wanted)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    relatives = [PurePosixPath(p.relative_to(root).as_posix()) for p in files]
    findings: list[ErasedTraceFinding] = []
    undecoded: list[str] = []
    scanned = 0
    for number, (path, relative) in enumerate(zip(files, relatives, strict=True), start=1):
        if any(relative.is_relative_to(folder) for folder in excluded):
            continue
        scanned += 1
        in_path = matcher.in_text(relative.as_posix())
        name = f"<{zone} file #{number}>" if in_path else relative.as_posix()
        found, decoded = scan_file(path, matcher, cipher)
        for value in in_path:
            found.setdefault(value, set()).add("path")
        if not decoded:
            undecoded.append(name)
        findings.extend(_file_findings(zone, name, found, wanted))
    return ZoneScan(zone, scanned, tuple(findings), tuple(undecoded))


def _file_findings(
    zone: str, name: str, found: Mapping[str, set[str]], wanted: Mapping[str, Erased]
) -> list[ErasedTraceFinding]:
    """One finding per erasure and kind of value among the values `found` in a file."""
    grouped: dict[Erased, tuple[set[str], int]] = {}
    for value, how in found.items():
        seen, count = grouped.get(wanted[value], (set(), 0))
        grouped[wanted[value]] = (seen | how, count + 1)
    return [
        ErasedTraceFinding(zone, name, *erased, tuple(sorted(how)), count)
        for erased, (how, count) in sorted(grouped.items())
    ]


def scan_file(
    path: Path, matcher: ValueMatcher, cipher: Fernet
) -> tuple[dict[str, set[str]], bool]:
    """The values in one file, each with how the file was read where it showed; and whether
    the file's kind decoded (False: searched as raw bytes only)."""
    found: dict[str, set[str]] = {}
    for value in _in_raw_bytes(path, matcher):
        found.setdefault(value, set()).add("bytes")
    decoder = _decoder(path)
    if decoder is None:
        return found, True
    try:
        for label, text in decoder(path, cipher):
            for value in matcher.in_text(text):
                found.setdefault(value, set()).add(label)
    except ScreenlakeError:
        raise  # a vault that does not decrypt under the key: the proof cannot be made
    except InvalidDicomError:
        pass  # named .dcm but no DICOM: its raw bytes are all it holds
    except Exception:  # noqa: BLE001
        # A damaged file of any kind breaks its reader in its own way; it is still searched
        # as raw bytes, and reported as such rather than taken for clean.
        return found, False
    return found, True


def _in_raw_bytes(path: Path, matcher: ValueMatcher) -> set[str]:
    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            return set()
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return matcher.in_bytes(data)


def _decoder(path: Path) -> Decoder | None:
    """How a file's kind is decoded, by its name or its first bytes; None: raw bytes only."""
    name = path.name.lower()
    with path.open("rb") as handle:
        head = handle.read(132)
    if name.endswith(".parquet.enc"):
        return _vault_texts
    if name.endswith(".parquet") or head[:4] == b"PAR1":
        return _parquet_texts
    if name.endswith(".duckdb") or head[8:12] == b"DUCK":
        return _duckdb_texts
    if name.endswith((".xlsx", ".zip")) or head[:4] == b"PK\x03\x04":
        return _zip_texts
    if name.endswith(".gz") or head[:2] == b"\x1f\x8b":
        return _gzip_texts
    if name.endswith(".dcm") or head[128:132] == b"DICM":
        return _dicom_texts
    return None


def _bytes_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def frame_text(frame: pl.DataFrame) -> str:
    """Every value of a frame as text, one a line, nested values flattened."""
    return "\n".join(t for series in frame.iter_columns() for t in _series_texts(series))


def _series_texts(series: pl.Series) -> Iterator[str]:
    dtype = series.dtype
    if isinstance(dtype, pl.Struct):
        for field in series.struct.unnest().iter_columns():
            yield from _series_texts(field)
    elif isinstance(dtype, pl.Array):
        yield from _series_texts(series.arr.explode())
    elif isinstance(dtype, pl.List):
        yield from _series_texts(series.explode())
    elif dtype == pl.Binary:
        yield "\n".join(_bytes_text(v) for v in series.drop_nulls())
    else:
        try:
            yield str(series.cast(pl.String).drop_nulls().str.join("\n").item())
        except pl.exceptions.PolarsError:
            yield "\n".join(str(v) for v in series.drop_nulls().to_list())


def _parquet_texts(path: Path, cipher: Fernet) -> Iterator[tuple[str, str]]:
    parquet = pq.ParquetFile(path)
    metadata = parquet.schema_arrow.metadata or {}
    yield "parquet", "\n".join(_bytes_text(k + b"\n" + v) for k, v in metadata.items())
    frame = pl.from_arrow(parquet.read())
    assert isinstance(frame, pl.DataFrame)
    yield "parquet", frame_text(frame)


def _vault_texts(path: Path, cipher: Fernet) -> Iterator[tuple[str, str]]:
    yield "vault", frame_text(read_vault(path, cipher))


_DUCKDB_TABLES = (
    "SELECT schema_name, table_name FROM duckdb_tables() "
    "WHERE database_name = current_database() AND NOT internal"
)
_DUCKDB_VIEWS = (
    "SELECT schema_name, view_name, sql FROM duckdb_views() "
    "WHERE database_name = current_database() AND NOT internal"
)


def _relation(schema: str, name: str) -> str:
    # Identifiers cannot be bound as parameters; these come from the file's own catalogue.
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, name))


def _duckdb_texts(path: Path, cipher: Fernet) -> Iterator[tuple[str, str]]:
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        for schema, table in con.execute(_DUCKDB_TABLES).fetchall():
            yield (
                "duckdb table",
                frame_text(con.execute(f"SELECT * FROM {_relation(schema, table)}").pl()),
            )
        for schema, view, sql in con.execute(_DUCKDB_VIEWS).fetchall():
            yield "duckdb view sql", sql or ""
            try:
                rows = con.execute(f"SELECT * FROM {_relation(schema, view)}").pl()
            except duckdb.Error:
                continue  # it reads files by paths relative to where the lake was opened
            yield "duckdb view", frame_text(rows)


def _zip_texts(path: Path, cipher: Fernet) -> Iterator[tuple[str, str]]:
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            yield "zip member", member.filename
            if not member.is_dir():
                yield "zip member", _bytes_text(archive.read(member))


def _gzip_texts(path: Path, cipher: Fernet) -> Iterator[tuple[str, str]]:
    with gzip.open(path, "rb") as content:
        yield "gzip", _bytes_text(content.read())


def _dicom_texts(path: Path, cipher: Fernet) -> Iterator[tuple[str, str]]:
    ds = pydicom.dcmread(path, force=False)
    meta = ds.file_meta if getattr(ds, "file_meta", None) is not None else Dataset()
    yield "dicom", "\n".join(t for d in (meta, ds) for t in dataset_texts(d))


def dataset_texts(ds: Dataset) -> Iterator[str]:
    """Every element's value at every depth of `ds` as text (pixel data left out)."""
    for element in ds.iterall():
        if element.VR == "SQ" or element.tag in _PIXEL_TAGS or element.value is None:
            continue
        value = element.value
        if isinstance(value, bytes | bytearray):
            yield _bytes_text(bytes(value))
        elif isinstance(value, MultiValue | list | tuple):
            # Not any iterable: a PersonName iterates over its characters.
            yield from (str(v) for v in value)
        else:
            yield str(value)


@dataclass(frozen=True)
class ErasureProof:
    """Both zones searched for the values of every recorded erasure."""

    erasures: int
    scans: tuple[ZoneScan, ...]

    @property
    def findings(self) -> tuple[ErasedTraceFinding, ...]:
        """Every trace found, PHI zone first."""
        return tuple(f for scan in self.scans for f in scan.findings)


def prove_erasures(phi_zone: Zone, research_zone: Zone, cipher: Fernet) -> ErasureProof:
    """Search every file of both zones (pulled whole, for zones in object storage) for the
    values of every erasure recorded in the PHI zone; the request records themselves, which
    hold those values by design, are the only files left out. No erasure recorded: nothing
    searched (`erasures` 0)."""
    requests = erasure_requests(phi_zone, cipher)
    if not requests:
        return ErasureProof(0, ())
    wanted = erased_values(requests)
    scans = []
    for zone, name, excluded in (
        (phi_zone, "phi", (layout.ERASURE_REQUESTS,)),
        (research_zone, "research", ()),
    ):
        root = zone.pull(PurePosixPath("."))
        scans.append(scan_zone(root, name, wanted, cipher, excluded))
    return ErasureProof(len(requests), tuple(scans))
