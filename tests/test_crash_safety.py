"""Crash safety: the loading process is killed (SIGKILL) at every named point of a load and
its publication (``cdv_etl.faults.POINTS``: after reading, after validating, inside the load's
transaction, after its commit, while publishing). After each kill the warehouse and the
published copy open and hold either the state before or the state after that file, and the
next run finishes the work.

The kill is a real ``kill -9`` of a real ``cdv-etl ingest`` process, delivered by the process
itself when it reaches the point named in ``CDV_FAULT_POINT``: every run covers every step,
whatever the machine's speed. A point added to the core is covered here without a change.
"""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import ROOT

from cdv_etl.config import Settings
from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.faults import POINTS
from cdv_etl.load.reference import SAMPLE_REFERENCE
from cdv_etl.pipeline import ingest_files, open_pipeline

CLI = [str(Path(sys.executable).parent / "cdv-etl")]

# POINTS come in the order a load passes them: a kill before the commit leaves the warehouse
# as it was, a kill once the copy is renamed leaves the published copy up to date.
BEFORE_COMMIT = set(POINTS[: POINTS.index("load.committed")])
PUBLISHED_AFTER = set(POINTS[POINTS.index("publish.renamed") :])


def state(path: Path) -> tuple:
    """What a load changes, without timestamps."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        files = con.execute(
            "SELECT file_name, status, rows_read, rows_loaded, rows_quarantined, engaged_amount_eur "
            "FROM files ORDER BY file_id"
        ).fetchall()
        rows = con.execute("SELECT count(*), sum(amount_eur) FROM engagement_rows").fetchone()
        quarantine = con.execute("SELECT count(*) FROM quarantine_rows").fetchone()
        failures = con.execute("SELECT count(*) FROM quarantine_failures").fetchone()
        current = con.execute("SELECT count(*), sum(amount_eur) FROM financing").fetchone()
        return (tuple(files), rows, quarantine, failures, current)
    finally:
        con.close()


def al_export(folder: Path, rows: int) -> Path:
    """An Action Logement export of ``rows`` lines (some quarantined), built from the demo export's lines:
    the demo's own, then copies under new ids (the demo's stock grown, not withdrawn: not held)."""
    demo = next(p for p in generate_demo_exports(folder / "demo") if p.name.startswith("AL_"))
    header, *lines = demo.read_bytes().decode("cp1252").split("\r\n")
    lines = [ln for ln in lines if ln]
    out = [header]
    for i in range(rows):
        fields = lines[i % len(lines)].split(";")
        if i >= len(lines):
            fields[0] = f"ALX{i:08d}"
        out.append(";".join(fields))
    path = folder / demo.name.replace(demo.name[14:21], "2026-11")
    path.write_bytes(("\r\n".join(out) + "\r\n").encode("cp1252"))
    return path


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, tuple, tuple]:
    """A published warehouse holding one load, a new export, and the states before and after it."""
    tmp = tmp_path_factory.mktemp("crash")
    base = Settings(warehouse=tmp / "base" / "cdv.duckdb", lock_timeout_s=30)
    first = next(p for p in generate_demo_exports(tmp / "first") if p.name.startswith("AL_"))
    with open_pipeline(base, need_reference=False) as pipe:
        pipe.load_reference(SAMPLE_REFERENCE)
        assert pipe.ingest(first).status == "loaded"
    export = al_export(tmp, 600)
    before = state(base.warehouse)
    assert state(base.published_path) == before

    ref = Settings(warehouse=tmp / "ref" / "cdv.duckdb", lock_timeout_s=30)
    shutil.copytree(base.warehouse.parent, ref.warehouse.parent)
    [done] = ingest_files(ref, [export])
    assert done.status == "loaded" and done.rows_quarantined > 0, done.message
    after = state(ref.warehouse)
    assert after != before and state(ref.published_path) == after
    return base.warehouse.parent, export, before, after


@pytest.mark.parametrize("point", POINTS)
def test_kill_minus_nine_at_each_point_of_a_load(
    point: str, load: tuple[Path, Path, tuple, tuple], tmp_path: Path
) -> None:
    base, export, before, after = load
    work = tmp_path / "wh"
    shutil.copytree(base, work)
    wh = work / "cdv.duckdb"
    tmp = tmp_path / "tmp"  # what a killed run leaves of its work folder stays in this test's folder
    tmp.mkdir()
    env = {**os.environ, "DO_NOT_TRACK": "1", "CDV_LOCK_TIMEOUT": "30", "CDV_FAULT_POINT": point, "TMPDIR": str(tmp)}
    killed = subprocess.run(CLI + ["ingest", str(export), "-w", str(wh)], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, f"not killed at {point}: {killed.returncode} {killed.stderr}"

    assert state(wh) == (before if point in BEFORE_COMMIT else after), f"killed at {point}: the warehouse"
    published = state(work / "cdv.published.duckdb")
    if point == "publish.copied":
        assert list(work.glob(".*.tmp")), "killed between copy and rename, yet no copy beside the published file"
    assert published == (after if point in PUBLISHED_AFTER else before), f"killed at {point}: the published copy"

    [again] = ingest_files(Settings(warehouse=wh, lock_timeout_s=30), [export])
    assert again.status == ("duplicate" if point not in BEFORE_COMMIT else "loaded"), again.message
    assert state(wh) == after, f"killed at {point}: the next run did not finish the work"
    assert state(work / "cdv.published.duckdb") == after, f"killed at {point}: published copy not brought up to date"
    assert not list(work.glob(".*.tmp")), "a killed publication's temporary file was not cleaned up"


def test_every_fault_point_is_reached_somewhere_in_the_core() -> None:
    """``POINTS`` and the ``checkpoint(...)`` calls name the same points, each called once."""
    called = []
    for source in (ROOT / "cdv_etl").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "checkpoint":
                assert isinstance(node.args[0], ast.Constant), f"{source}: checkpoint() takes a literal name"
                called.append(node.args[0].value)
    assert sorted(called) == sorted(POINTS)


def test_an_unknown_fault_point_is_refused() -> None:
    env = {**os.environ, "CDV_FAULT_POINT": "no.such.point"}
    proc = subprocess.run([sys.executable, "-c", "import cdv_etl.faults"], env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "names no fault point" in proc.stderr and "load.rows" in proc.stderr
