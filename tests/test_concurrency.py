"""One writer at a time, in the core: runs started from the command line at the same moment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
from conftest import sample_warehouse

from cdv_etl.config import Settings
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


def waiting_for(log: Path) -> bool:
    """Whether the run writing ``log`` has said it waits for the warehouse's lock."""
    return "waiting up to" in log.read_text(encoding="utf-8", errors="replace")


def test_two_command_line_nightly_runs_at_once(tmp_path: Path) -> None:
    """Both runs start while the test holds the lock, so they surely overlap; once it is
    released, one runs the inbox and the other waits for it (no time limit in play: the lock
    timeout is far longer than any run), then finds nothing new."""
    inbox = tmp_path / "inbox"
    exports = []
    for p in generate_demo_exports(inbox):  # the three text exports: the workbooks' reading is not the point here
        if p.suffix == ".xlsx":
            p.unlink()
        else:
            exports.append(p)
    (inbox / SAMPLE_REFERENCE.name).write_bytes(SAMPLE_REFERENCE.read_bytes())
    wh = tmp_path / "wh" / "cdv.duckdb"
    logs = [tmp_path / f"p{i}.log" for i in range(2)]
    args = [*CLI, "nightly", "--inbox", str(inbox), "-w", str(wh)]
    with writer_lock(wh, timeout_s=5):
        procs = []
        for i, log in enumerate(logs):
            with log.open("w", encoding="utf-8") as out:
                procs.append(
                    subprocess.Popen(
                        args,
                        env=env(tmp_path / f"p{i}", CDV_LOCK_TIMEOUT="3600"),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                )
        while not all(waiting_for(log) for log in logs):
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            time.sleep(0.05)
        assert list(inbox.iterdir()) and not wh.exists()  # neither could start before the lock was free
    for p in procs:
        p.wait(timeout=3600)
    outputs = [log.read_text(encoding="utf-8") for log in logs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum("nothing new" in o for o in outputs) == 1, outputs  # the second waited, then found nothing
    assert not any("temporary server" in o for o in outputs), outputs  # the core alone, no Prefect server
    assert list(inbox.iterdir()) == []
    con = duckdb.connect(str(wh.with_name("cdv.published.duckdb")), read_only=True)
    assert len(exports) == 3
    assert con.execute("SELECT count(*), count(DISTINCT sha256) FROM file_loads").fetchone() == (3, 3)
    assert con.execute("SELECT count(*) FROM reference_loads").fetchone()[0] == 1


def test_a_writer_that_cannot_get_the_lock_fails_clearly_and_changes_nothing(tmp_path: Path) -> None:
    wh = sample_warehouse(Settings(warehouse=tmp_path / "cdv.duckdb")).warehouse  # the session's, copied
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
