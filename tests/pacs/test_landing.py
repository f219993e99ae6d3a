"""Incremental landing (`land_files` with `screenlake.pacs.landing`): what landed intact is not
fetched again, a landing that failed part way is completed, nothing lands twice."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import pytest

from resources.sources import ExportDropSource
from screenlake.errors import IncompleteLandingError
from screenlake.fsutil import sha256_of
from screenlake.ingest import SourceFile, land_files
from screenlake.layout import Batch
from screenlake.pacs.landing import JOURNAL_NAME

BATCH = Batch(date(2024, 3, 11), "lung_ldct")


class Source:
    """Files by name with contents, a fetch counter, and a fault after `fail_after` fetches."""

    def __init__(self, contents: dict[str, bytes]) -> None:
        self.contents = dict(contents)
        self.fetched: list[str] = []
        self.fail_after: int | None = None

    def files(self) -> list[SourceFile]:
        return [SourceFile(ref, "1.2", f"1.2.{ref}") for ref in self.contents]

    def fetch(self, file: SourceFile, destination: Path) -> None:
        if self.fail_after is not None and len(self.fetched) >= self.fail_after:
            raise ConnectionError("PACS down")
        self.fetched.append(file.ref)
        destination.write_bytes(self.contents[file.ref])


def _land(source: Source, raw: Path, files: list[SourceFile] | None = None):  # type: ignore[no-untyped-def]
    manifest = land_files(files or source.files(), BATCH, source.fetch, raw)
    manifest.write_parquet(raw / "manifest.parquet")  # as raw_instances does
    return manifest


def _contents_by_ref(manifest, raw: Path) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    return {
        r["source_path"]: (raw / r["landed_path"]).read_bytes()
        for r in manifest.iter_rows(named=True)
    }


def test_a_landing_that_failed_part_way_is_completed_by_the_next(tmp_path: Path) -> None:
    source = Source({f"f{i}": f"content {i}".encode() for i in range(6)})
    raw = tmp_path / "raw"
    source.fail_after = 4
    with pytest.raises(ConnectionError):
        land_files(source.files(), BATCH, source.fetch, raw)
    assert not raw.exists()
    source.fail_after, source.fetched = None, []
    manifest = _land(source, raw)
    assert source.fetched == ["f4", "f5"]
    assert _contents_by_ref(manifest, raw) == source.contents
    assert manifest["ordinal"].to_list() == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_what_landed_intact_is_kept_and_what_was_damaged_is_fetched_again(tmp_path: Path) -> None:
    source = Source({"a": b"A", "b": b"B", "c": b"C"})
    raw = tmp_path / "raw"
    first = _land(source, raw)
    source.fetched = []
    second = _land(source, raw)
    assert source.fetched == []
    assert second.equals(first)

    (raw / "000002.dcm").write_bytes(b"damaged")
    third = _land(source, raw)
    assert source.fetched == ["b"]
    assert _contents_by_ref(third, raw) == source.contents


def test_a_changed_listing_keeps_files_with_their_references(tmp_path: Path) -> None:
    source = Source({"b": b"B", "d": b"D"})
    raw = tmp_path / "raw"
    _land(source, raw)
    source.contents = {"a": b"A", "b": b"B", "c": b"C", "d": b"D"}
    source.fetched = []
    manifest = _land(source, raw)
    assert source.fetched == ["a", "c"]
    assert _contents_by_ref(manifest, raw) == source.contents
    assert manifest["landed_path"].to_list() == [f"{i:06d}.dcm" for i in range(1, 5)]
    assert manifest["sop_instance_uid"].n_unique() == 4


def test_a_file_re_exported_with_other_bytes_is_landed_again(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    (drop / "20240311").mkdir(parents=True)
    for name in ("a", "b"):
        (drop / "20240311" / name).write_bytes(name.encode())
    source = ExportDropSource(root=str(drop), settle_seconds=0)
    files = [SourceFile(f"20240311/{n}", "1.2", f"1.2.{n}") for n in ("a", "b")]
    raw = tmp_path / "raw"
    land_files(files, BATCH, source, raw).write_parquet(raw / "manifest.parquet")
    (drop / "20240311" / "b").write_bytes(b"b, corrected")
    manifest = land_files(files, BATCH, source, raw)
    assert (raw / "000002.dcm").read_bytes() == b"b, corrected"
    assert manifest["sha256"][1] == sha256_of(drop / "20240311" / "b")


def test_a_source_that_skips_a_file_leaves_the_landing_incomplete(tmp_path: Path) -> None:
    source = Source({"a": b"A", "b": b"B"})

    class Skipping:
        def fetch_many(
            self,
            files: Sequence[tuple[SourceFile, Path]],
            on_file: Callable[[SourceFile, Path], None],
            on_problem: Callable[[SourceFile, str], None],
        ) -> None:
            file, path = files[0]
            source.fetch(file, path)
            on_file(file, path)

        def source_checksum(self, file: SourceFile) -> str | None:
            return None

    with pytest.raises(IncompleteLandingError, match="1 of 2 files"):
        land_files(source.files(), BATCH, Skipping(), tmp_path / "raw")
    source.fetched = []
    land_files(source.files(), BATCH, source.fetch, tmp_path / "raw")
    assert source.fetched == ["b"]


def test_a_torn_journal_line_and_an_unreadable_manifest_cost_only_refetches(tmp_path: Path) -> None:
    source = Source({"a": b"A", "b": b"B"})
    raw = tmp_path / "raw"
    source.fail_after = 1
    with pytest.raises(ConnectionError):
        land_files(source.files(), BATCH, source.fetch, raw)
    journal = tmp_path / "raw.staging" / JOURNAL_NAME
    journal.write_text(journal.read_text() + '{"ref": "b", "so')  # killed while writing
    source.fail_after, source.fetched = None, []
    _land(source, raw)
    assert source.fetched == ["b"]

    (raw / "manifest.parquet").write_bytes(b"not parquet")
    source.fetched = []
    land_files(source.files(), BATCH, source.fetch, raw)
    assert source.fetched == ["a", "b"]
