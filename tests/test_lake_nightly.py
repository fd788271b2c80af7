"""The inbox run on a DuckLake (issue 12): several partners' exports load at once, each file in its
own transaction, and the lake ends as a serial run on a DuckDB file ends.

The run is a real ``cdv-etl nightly`` process (no Prefect server: the core runs it). Its loads are
held by the fault hook's pause (``CDV_FAULT_PAUSE``) at their last step before COMMIT: the test
goes on only once two of them wait there at the same moment, which a run loading one file at a
time never reaches. No sleep decides anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from test_lake_writers import CLI, committed_state, finished, wait_for

from cdv_etl.config import Settings
from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.load.reference import SAMPLE_REFERENCE
from cdv_etl.load.warehouse import connect
from cdv_etl.pipeline import ingest_files, open_pipeline

PARTNERS = ("al", "anah", "epf")
"""Three partners' text exports of the demo (quick to read): two load at once, then the third."""
LEDGER = (
    "SELECT file_name, partner, status, rows_read, rows_loaded, rows_quarantined, loaded_amount_eur, "
    "engaged_amount_eur FROM files ORDER BY file_name"
)


def test_a_lake_nightly_loads_two_partners_at_once_and_ends_as_a_serial_run(
    fresh_lake: Settings, tmp_path: Path
) -> None:
    exports = {p.name.split("_")[0].lower(): p for p in generate_demo_exports(tmp_path / "demo")}
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for partner in PARTNERS:
        shutil.copy(exports[partner], inbox)
    shutil.copy(SAMPLE_REFERENCE, inbox)
    with open_pipeline(fresh_lake, need_reference=False):  # the lake made (as `cdv-etl init` does)
        pass
    assert fresh_lake.lake is not None
    pause = tmp_path / "pause"
    pause.mkdir()
    env = {**os.environ, "DO_NOT_TRACK": "1", "TMPDIR": str(tmp_path)}
    env.pop("PREFECT_API_URL", None)  # the core's run, no Prefect server
    env |= {
        "CDV_WAREHOUSE": fresh_lake.lake.attach_target,
        "CDV_INBOX": str(inbox),
        "CDV_PARALLEL_FILES": "2",
        "CDV_FAULT_POINT": "load.ledger",
        "CDV_FAULT_PAUSE": str(pause),
    }
    run = subprocess.Popen(
        CLI + ["nightly"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
    )
    reached = pause / "load.ledger.reached"

    def two_waiting() -> bool:
        return reached.exists() and len(reached.read_text(encoding="utf-8").splitlines()) >= 2

    wait_for("two loads inside their transactions at the same moment", two_waiting, run)
    with connect(fresh_lake.backend, read_only=True) as con:  # neither is committed yet
        assert committed_state(con) == ([], [])
    (pause / "load.ledger.go").touch()
    rc, out = finished(run)
    assert rc == 0, out
    assert "3 export(s), 2 partners at a time" in out, out
    assert len(reached.read_text(encoding="utf-8").splitlines()) == 3  # the third file came after
    assert not list(inbox.iterdir())  # the reference and every export archived

    serial = Settings(warehouse=tmp_path / "serial" / "cdv.duckdb", inbox=tmp_path / "none")
    with open_pipeline(serial, need_reference=False) as pipe:
        pipe.load_reference(SAMPLE_REFERENCE)
    ingest_files(serial, [exports[p] for p in PARTNERS])
    with connect(serial.backend, read_only=True) as con:
        expected = con.execute(LEDGER).fetchall()
    with connect(fresh_lake.backend, read_only=True) as con:
        assert con.execute(LEDGER).fetchall() == expected
        files, wrong = committed_state(con)
        assert wrong == [] and len(files) == len(PARTNERS)
        ids = sorted(r[0] for r in con.execute("SELECT file_id FROM files").fetchall())
        assert len(set(ids)) == len(PARTNERS)  # one id each, whatever order they were claimed in
