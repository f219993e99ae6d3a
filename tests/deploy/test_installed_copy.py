"""An installed copy behaves like a checkout: the wheel, installed (not editable) into a fresh
virtual environment, loads its code location, materialises a partition and answers SQL on the
lake's views, reading nothing from the source tree and writing only under its settings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAY, PROGRAMME = "2024-03-11", "lung_ldct"


def _run(
    args: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: int = 300
) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args[:3])}... exited {done.returncode}:\n{done.stderr}")
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the screenlake wheel built from the tracked files alone; its
    dependencies come from the test run's own environment (no download), the checkout never."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"
    tracked = _run(["git", "ls-files", "-z"], cwd=REPO).split("\0")
    for name in filter(None, tracked):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["--wheel-dir", str(root / "dist"), str(source)],
        cwd=root,
    )
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    site = Path(
        _run(
            [
                str(venv / "bin/python"),
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ],
            cwd=root,
        ).strip()
    )
    # A path line (unlike the editable install's import hook) adds the dependencies only.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    wheel = next((root / "dist").glob("screenlake-*.whl"))
    _run(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
        + [str(wheel)],
        cwd=root,
    )
    shutil.rmtree(source)
    return venv


@pytest.fixture
def site_env(session_keys: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The environment of a site's process: keys, an instance folder, no source tree on the
    path and no screenlake setting but the ones a test adds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCREENLAKE_", "DAGSTER_"))}
    env.pop("PYTHONPATH", None)
    env.update(session_keys)
    env["DAGSTER_HOME"] = str(tmp_path / "dagster")
    # One process: this test is about what the wheel holds, not about step processes.
    env["SCREENLAKE_EXECUTOR"] = "in_process"
    (tmp_path / "dagster").mkdir()
    return env


def test_the_installed_packages_come_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import orchestration, sql, models; print(sql.sql_root()); "
        "print(models.bundled_models_root()); print(orchestration.__file__)"
    )
    where = _run([str(installed / "bin/python"), "-c", probe], cwd=tmp_path).split()
    for path in where:
        assert Path(path).is_relative_to(installed), path
    assert sorted(p.name for p in (Path(where[0]) / "views").glob("*.sql"))
    assert (Path(where[1]) / "lung_ldct_reference" / "weights.pt").is_file()


def test_an_installed_copy_runs_a_partition_and_answers_sql(
    installed: Path, site_env: dict[str, str], tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    python, cli = str(installed / "bin/python"), str(installed / "bin/screenlake")
    _run(
        [cli, "synth", "--out", "var/drop", "--studies", "4", "--seed", "5", "--days", "1"]
        + ["--size", "demo", "--labels", "labels.csv"],
        cwd=site,
        env=site_env,
    )
    _run(
        [python, "-m", "dagster", "asset", "materialize", "-m", "orchestration.definitions"]
        + ["--select", "*", "--partition", f"{DAY}|{PROGRAMME}"],
        cwd=site,
        env=site_env,
        timeout=600,
    )
    out = _run(
        [cli, "query", "SELECT count(*) AS studies FROM studies WHERE programme = 'lung_ldct'"],
        cwd=site,
        env=site_env,
    )
    assert int(re.findall(r"│\s*(\d+)\s*│", out)[-1]) > 0, out
    # Everything the run wrote lies under the site's settings: its var/ and its instance.
    assert (site / "var" / "research" / "lake.duckdb").is_file()
    assert not any(installed.rglob("var")), "an installed copy wrote into its own folder"


def test_production_refuses_to_load_without_its_locations(
    installed: Path, site_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**site_env, "SCREENLAKE_ENV": "production"}
    done = subprocess.run(
        [str(installed / "bin/python"), "-c", "import orchestration.definitions"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    for name in ("SCREENLAKE_PHI_ZONE", "SCREENLAKE_RESEARCH_ZONE", "SCREENLAKE_MODELS"):
        assert name in done.stderr
    assert not (tmp_path / "var").exists()
