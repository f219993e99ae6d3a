"""Time the de-identification engine alone, one process, on pydicom's public test files.

Every file `pydicom.data.get_testdata_files()` lists (pydicom's own and pydicom-data's) goes
through the engine as `deidentify_batch` calls it: `deidentify_file`, then
`write_deidentified` into a temporary folder. Two figures:

- as shipped: the default profile; files it quarantines (pixels that may carry identity,
  missing PatientID, header-only fixtures) count at the speed they are rejected.
- every readable file: each file `read_instance` accepts is de-identified and written, with
  the pixel-identity check off and a stand-in PatientID where the file has none, so that the
  figure measures header de-identification on every readable file rather than rejections.

Profile loading and process start-up are excluded; each figure is the best of `rounds`.

Usage: .venv/bin/python benchmarks/deid_engine_profile.py [rounds] [--profile]
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from pydicom.data import get_testdata_files

from screenlake.deid import engine
from screenlake.deid.engine import DeidentifiedResult
from screenlake.deid.profile import Profile, load_default_profile
from screenlake.deid.reading import read_instance
from screenlake.errors import UnreadableInstanceError

KEY = b"benchmark-key-benchmark-key-benchmark-key"
Deidentify = Callable[[Path, bytes, Profile], DeidentifiedResult]


def _every_readable(path: Path, key: bytes, profile: Profile) -> DeidentifiedResult:
    ds = read_instance(path)
    if not str(ds.get("PatientID") or "").strip():
        ds.PatientID = "BENCH-PATIENT"
    return engine._deidentify(ds, key, profile)


def run_once(
    files: list[Path], out: Path, deidentify: Deidentify, profile: Profile
) -> tuple[int, float, float]:
    """(files written, seconds over all files, seconds spent on the written ones)."""
    written = 0
    written_s = 0.0
    started = time.perf_counter()
    for ordinal, path in enumerate(files):
        before = time.perf_counter()
        try:
            result = deidentify(path, KEY, profile)
        except UnreadableInstanceError:
            continue
        engine.write_deidentified(result, out / f"{ordinal:06d}.dcm")
        written += 1
        written_s += time.perf_counter() - before
    return written, time.perf_counter() - started, written_s


def main() -> None:
    rounds = int(next((a for a in sys.argv[1:] if a.isdigit()), "5"))
    files = [Path(f) for f in get_testdata_files() if Path(f).is_file()]
    profile = load_default_profile()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        run_once(files, out, engine.deidentify_file, profile)  # warm caches and imports
        if "--profile" in sys.argv:
            engine.pixel_identity_risk = lambda ds: None  # type: ignore[assignment]
            profiler = cProfile.Profile()
            profiler.enable()
            run_once(files, out, _every_readable, profile)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
            return
        shipped = min(
            (run_once(files, out, engine.deidentify_file, profile) for _ in range(rounds)),
            key=lambda r: r[1],
        )
        engine.pixel_identity_risk = lambda ds: None  # type: ignore[assignment]
        readable = min(
            (run_once(files, out, _every_readable, profile) for _ in range(rounds)),
            key=lambda r: r[1],
        )
    written, total_s, _ = shipped
    print(
        f"as shipped: {len(files)} files in {total_s:.3f} s = {len(files) / total_s:.0f} files/s "
        f"({written} de-identified and written, {len(files) - written} quarantined)"
    )
    written, total_s, written_s = readable
    print(
        f"every readable file: {written} de-identified and written in {written_s:.3f} s = "
        f"{written / written_s:.0f} files/s ({len(files) - written} unreadable, rejected; "
        f"{len(files)} files in {total_s:.3f} s = {len(files) / total_s:.0f} files/s)"
    )


if __name__ == "__main__":
    main()
