"""Crash safety: the loading process is killed (SIGKILL) at 20 points of a load — while
reading, inserting, committing, publishing. After each kill the warehouse and the published
copy open and hold either the state before or the state after that file, and the next run
finishes the work."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.load.reference import SAMPLE_REFERENCE

CLI = [str(Path(sys.executable).parent / "cdv-etl")]
KILLS = 20


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


def big_al_export(folder: Path, rows: int) -> Path:
    """An Action Logement export of ``rows`` lines, built from the demo export's lines."""
    demo = next(p for p in generate_demo_exports(folder / "demo") if p.name.startswith("AL_"))
    header, *lines = demo.read_bytes().decode("cp1252").split("\r\n")
    lines = [ln for ln in lines if ln]
    out = [header]
    for i in range(rows):
        fields = lines[i % len(lines)].split(";")
        fields[0] = f"ALX{i:08d}"
        out.append(";".join(fields))
    path = folder / demo.name.replace(demo.name[14:21], "2026-11")
    path.write_bytes(("\r\n".join(out) + "\r\n").encode("cp1252"))
    return path


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=300)


def test_kill_minus_nine_at_twenty_points_of_a_load(tmp_path: Path) -> None:
    env = {**os.environ, "DO_NOT_TRACK": "1", "CDV_LOCK_TIMEOUT": "30"}
    base = tmp_path / "base"
    base_wh = base / "cdv.duckdb"
    first = next(p for p in generate_demo_exports(tmp_path / "first") if p.name.startswith("AL_"))
    assert run(["reference", "load", str(SAMPLE_REFERENCE), "-w", str(base_wh)], env).returncode == 0
    assert run(["ingest", str(first), "-w", str(base_wh)], env).returncode == 0
    export = big_al_export(tmp_path, 40_000)
    before = state(base_wh)

    # One undisturbed run: the state after, and how long a load takes here.
    ref = tmp_path / "ref"
    shutil.copytree(base, ref)
    started = time.monotonic()
    done = run(["ingest", str(export), "-w", str(ref / "cdv.duckdb")], env)
    duration = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    after = state(ref / "cdv.duckdb")
    assert after != before and state(ref / "cdv.published.duckdb") == after

    rng = random.Random(20261126)
    seen = {"before": 0, "after": 0}
    for i in range(KILLS):
        work = tmp_path / f"kill{i:02d}"
        shutil.copytree(base, work)
        wh = work / "cdv.duckdb"
        # Spread the kills over the whole run: start-up and reading, inserting, committing, publishing.
        delay = duration * (0.25 + 0.85 * (i + rng.random()) / KILLS)
        proc = subprocess.Popen(
            CLI + ["ingest", str(export), "-w", str(wh)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        got = state(wh)
        assert got in (before, after), f"kill {i} at {delay:.2f}s left a third state: {got[0]}"
        seen["before" if got == before else "after"] += 1
        published = state(work / "cdv.published.duckdb")
        assert published in (before, after), f"kill {i}: published copy in a third state"

        again = run(["ingest", str(export), "-w", str(wh)], env)
        assert again.returncode == 0, again.stderr
        assert state(wh) == after, f"kill {i}: the next run did not finish the work"
        assert state(work / "cdv.published.duckdb") == after, f"kill {i}: published copy not brought up to date"
        assert not list(work.glob(".*.tmp")), "a killed publication's temporary file was not cleaned up"
        shutil.rmtree(work)
    if seen["before"] == 0 or seen["after"] == 0:
        pytest.fail(f"the kills did not land both before and after the commit: {seen}")
