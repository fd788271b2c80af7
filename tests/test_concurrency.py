"""One writer at a time, in the core: runs started from the command line at the same moment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb

from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.load.reference import SAMPLE_REFERENCE
from cdv_etl.load.warehouse import writer_lock

CLI = [str(Path(sys.executable).parent / "cdv-etl")]


def env(tmp: Path, **extra: str) -> dict[str, str]:
    (tmp / "prefect-home").mkdir(parents=True, exist_ok=True)
    e = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    e.update(
        {
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **extra,
        }
    )
    return e


def test_two_command_line_nightly_runs_at_once(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    generate_demo_exports(inbox)
    (inbox / SAMPLE_REFERENCE.name).write_bytes(SAMPLE_REFERENCE.read_bytes())
    wh = tmp_path / "wh" / "cdv.duckdb"
    args = [*CLI, "nightly", "--inbox", str(inbox), "-w", str(wh)]
    procs = [
        subprocess.Popen(
            args,
            env=env(tmp_path / f"p{i}", CDV_LOCK_TIMEOUT="300"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum("nothing new" in o for o in outputs) == 1, outputs  # the second waited, then found nothing
    con = duckdb.connect(str(wh.with_name("cdv.published.duckdb")), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT sha256) FROM file_loads").fetchone() == (5, 5)
    assert con.execute("SELECT count(*) FROM reference_loads").fetchone()[0] == 1


def test_a_writer_that_cannot_get_the_lock_fails_clearly_and_changes_nothing(tmp_path: Path) -> None:
    wh = tmp_path / "cdv.duckdb"
    subprocess.run(
        [*CLI, "reference", "load", "--sample", "-w", str(wh)], env=env(tmp_path), check=True, capture_output=True
    )
    before = wh.read_bytes()
    export = generate_demo_exports(tmp_path / "exports")[1]
    with writer_lock(wh, timeout_s=5):
        proc = subprocess.run(
            [*CLI, "ingest", str(export), "-w", str(wh)],
            env=env(tmp_path, CDV_LOCK_TIMEOUT="1"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 2
    assert "being written by pid" in proc.stderr and "nothing was changed" in proc.stderr
    assert "CDV_LOCK_TIMEOUT" in proc.stderr
    assert wh.read_bytes() == before
