"""A real Prefect server: `cdv-etl serve` serves the deployments, runs are started through the API.

The session's one server (``conftest.prefect_served``: a free port, its own PREFECT_HOME on the
embedded SQLite); the deployments are served by the project's own command, as in production.
Each test passes its own inbox and warehouse to the runs it starts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from analyst_helpers import al_export, fresh_settings, run_cli
from conftest import ANCT_REFERENCE, SPECIMENS, expected, needs_shared
from prefect_server import BIN, PrefectServer

from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.pipeline import open_pipeline
from flows.artifacts import FILE_PARTNER, LOADED, QUARANTINED, READ, STATUS, STATUS_COL


def number(shown: str) -> int:
    """A count as the artifacts show it (French thousands separator) back to an int."""
    return int(shown.replace("\u202f", ""))


@pytest.fixture
def served(prefect_served: tuple[PrefectServer, Path], request: pytest.FixtureRequest) -> tuple[PrefectServer, Path]:
    """The session's server, and a folder of this test's own for its inboxes and warehouses."""
    server, work = prefect_served
    own = work / request.node.name
    own.mkdir()
    return server, own


def test_deployments_are_served_with_schedule_and_limits(served: tuple[PrefectServer, Path]) -> None:
    server, _ = served
    dep = server.request("GET", "/deployments/name/nightly/nightly")
    schedules = [s["schedule"] for s in dep["schedules"]]
    assert schedules == [{"cron": "0 2 * * *", "timezone": "Europe/Paris", "day_or": True}]
    assert dep["concurrency_limit"] == 1 or dep.get("global_concurrency_limit", {}).get("limit") == 1
    limit = server.request("GET", "/v2/concurrency_limits/cdv-warehouse-writer")
    assert limit["limit"] == 1
    form = server.request("GET", "/deployments/name/ingest-export/ingest-export")["parameter_openapi_schema"]
    assert form["required"] == ["path"] and form["properties"]["force"]["type"] == "boolean"


@needs_shared
def test_nightly_deployment_over_the_specimens(served: tuple[PrefectServer, Path]) -> None:
    server, work = served
    inbox = work / "night1" / "inbox"
    inbox.mkdir(parents=True)
    for name in expected():
        shutil.copy(SPECIMENS / name, inbox)
    shutil.copy(ANCT_REFERENCE, inbox)
    (inbox / "virus.csv").write_bytes(b"MZ\x90\x00\x03" * 50)
    wh = work / "night1" / "cdv.duckdb"
    run_id = server.run_deployment("nightly/nightly", {"inbox": str(inbox), "warehouse": str(wh)})
    run = server.wait(run_id)
    assert run["state_type"] == "COMPLETED", (work.parent / "serve.log").read_text(errors="replace")[-4000:]

    assert list(inbox.iterdir()) == []
    for name, exp in expected().items():
        assert (work / "night1" / "archive" / exp["partner"] / Path(name).name).exists()
    assert (work / "night1" / "rejected" / "virus.csv").exists()
    assert (work / "night1" / "rejected" / "virus.csv.reason.txt").read_text().startswith("virus.csv: ")

    con = duckdb.connect(str(wh.with_name("cdv.published.duckdb")), read_only=True)
    for name, exp in expected().items():
        got = con.execute(
            "SELECT rows_read, rows_loaded, rows_quarantined, engaged_amount_eur FROM file_loads WHERE file_name = ?",
            [Path(name).name],
        ).fetchone()
        assert got == (
            exp["data_rows"],
            exp["loaded_rows"],
            exp["quarantined_rows"],
            Decimal(exp["engaged_amount_eur"]),
        )
        by_axis_year = dict(
            con.execute(
                "SELECT axis || '|' || year, sum(amount_eur) FROM financing f JOIN file_loads l USING (file_id) "
                "WHERE l.file_name = ? AND counts_as_engaged GROUP BY ALL",
                [Path(name).name],
            ).fetchall()
        )
        assert by_axis_year == {k: Decimal(v) for k, v in exp["by_axis_year"].items()}

    arts = {a["key"]: a for a in server.artifacts(run_id) if a.get("key")}
    assert {"nightly-files", "nightly-quarantine", "nightly-summary"} <= set(arts)
    files = json.loads(arts["nightly-files"]["data"])
    row = next(r for r in files if r[FILE_PARTNER].startswith("anah_acv_2026.csv"))
    anah = expected()["anah/anah_acv_2026.csv"]
    assert (number(row[READ]), number(row[LOADED]), number(row[QUARANTINED])) == (
        anah["data_rows"],
        anah["loaded_rows"],
        anah["quarantined_rows"],
    )
    quarantine = json.loads(arts["nightly-quarantine"]["data"])
    total_rejected = sum(number(r[QUARANTINED]) for r in quarantine)
    assert total_rejected == sum(e["quarantined_rows"] for e in expected().values())
    assert any(a["type"] == "progress" for a in server.artifacts(run_id))


def test_two_nightly_runs_at_once(served: tuple[PrefectServer, Path]) -> None:
    server, work = served
    inbox = work / "night2" / "inbox"
    shutil.copy(
        Path(__file__).resolve().parent.parent / "cdv_etl" / "sample" / "acv_communes_sample.csv",
        generate_demo_exports(inbox)[0].parent / "acv_communes_sample.csv",
    )
    wh = work / "night2" / "cdv.duckdb"
    params = {"inbox": str(inbox), "warehouse": str(wh)}
    runs = [server.run_deployment("nightly/nightly", params) for _ in range(2)]
    finished = [server.wait(r) for r in runs]
    assert [f["state_type"] for f in finished] == ["COMPLETED", "COMPLETED"]
    con = duckdb.connect(str(wh.with_name("cdv.published.duckdb")), read_only=True)
    ledger = con.execute("SELECT file_name, status FROM file_loads ORDER BY file_name").fetchall()
    assert len(ledger) == 5 and {s for _, s in ledger} == {"loaded"}  # each file loaded once
    assert (
        con.execute(
            "SELECT count(*) FROM (SELECT file_id, row_key FROM engagement_rows GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()[0]
        == 0
    )
    assert list(inbox.iterdir()) == []
    per_run = [
        json.loads(next(a for a in server.artifacts(r) if a.get("key") == "nightly-files")["data"]) for r in runs
    ]
    processed = sorted(len([f for f in files if f.get(STATUS_COL) == STATUS["loaded"]]) for files in per_run)
    assert processed == [0, 5], per_run  # one waited for the other, then found nothing new


# An analyst asking `cdv-etl sql` again and again (a breath between questions, so as not to take
# a core from the runs), one line per answer in ``progress``, until told to stop (and at least
# five answers): started before the runs, stopped after them.
ANALYST = """
import os, subprocess, sys, time
wh, cli, progress, stop = sys.argv[1:5]
ok = fail = 0
while not os.path.exists(stop) or ok + fail < 5:
    r = subprocess.run([cli, "sql", "-w", wh, "--format", "csv", "SELECT count(*) FROM financing"],
                       capture_output=True, text=True)
    ok, fail = (ok + 1, fail) if r.returncode == 0 else (ok, fail + 1)
    if r.returncode:
        print(r.stderr, file=sys.stderr)
    with open(progress, "a") as fh:
        fh.write(f"{r.returncode}\\n")
    time.sleep(0.5)
print(ok, fail)
"""


def test_nightly_ui_ingest_and_adhoc_sql_at_the_same_time(served: tuple[PrefectServer, Path]) -> None:
    """One writer at a time, readers served, nothing loaded twice."""
    server, work = served
    base = work / "night3"
    wh = base / "cdv.duckdb"
    run_cli(["reference", "load", "--sample", "-w", str(wh)], work)
    inbox = base / "inbox"
    exports = generate_demo_exports(inbox)
    late = base / "late" / exports[2].name  # the Anah export arrives by hand
    late.parent.mkdir()
    exports[2].rename(late)

    progress, stop = base / "answers.txt", base / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", ANALYST, str(wh), str(BIN / "cdv-etl"), str(progress), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def answered() -> int:
        return len(progress.read_text().splitlines()) if progress.exists() else 0

    try:
        wait_for(lambda: answered() >= 1, "the analyst's first answer")
        runs = [
            server.run_deployment("nightly/nightly", {"inbox": str(inbox), "warehouse": str(wh)}),
            server.run_deployment("ingest-export/ingest-export", {"path": str(late), "warehouse": str(wh)}),
        ]
        finished = [server.wait(r) for r in runs]
        seen = answered()
        wait_for(lambda: answered() > seen, "an answer after the runs")
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=600)
    assert [f["state_type"] for f in finished] == ["COMPLETED", "COMPLETED"]
    ok, fail = map(int, out.split())
    assert fail == 0 and ok >= 5, err
    con = duckdb.connect(str(wh.with_name("cdv.published.duckdb")), read_only=True)
    ledger = con.execute("SELECT file_name, status FROM file_loads ORDER BY file_name").fetchall()
    assert sorted(n for n, _ in ledger) == sorted(p.name for p in exports)
    assert {s for _, s in ledger} == {"loaded"}
    assert (
        con.execute("SELECT count(*) FROM financing").fetchone()[0]
        == con.execute("SELECT sum(rows_loaded) FROM file_loads").fetchone()[0]
    )


def test_accept_export_from_the_ui(served: tuple[PrefectServer, Path]) -> None:
    """The form's one field, the file id; a file that is not held fails the run and says why."""
    server, work = served
    form = server.request("GET", "/deployments/name/accept-export/accept-export")["parameter_openapi_schema"]
    assert form["required"] == ["file_id"] and "held" in form["properties"]["file_id"]["description"]
    s = fresh_settings(work)
    rows = [{"ref": f"AL{i}", "insee": "47001", "amount": "100,00", "day": "01/02/2021"} for i in range(10)]
    (work / "oct").mkdir()
    with open_pipeline(s) as pipe:
        assert pipe.ingest(al_export(work, "2024-09", rows)).status == "loaded"
        held = pipe.ingest(al_export(work / "oct", "2024-10", rows[:5]))
    assert held.status == "held"
    params = {"file_id": held.file_id, "warehouse": str(s.warehouse)}
    accepted = server.wait(server.run_deployment("accept-export/accept-export", params))
    again = server.wait(server.run_deployment("accept-export/accept-export", params))
    assert accepted["state_type"] == "COMPLETED"
    assert again["state_type"] == "FAILED" and "is loaded, not held" in again["state"]["message"]
    con = duckdb.connect(str(s.published_path), read_only=True)
    assert con.execute("SELECT file_id, operations FROM v_financing_by_partner WHERE operations > 0").fetchall() == [
        (held.file_id, 5)
    ]
    con.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 600) -> None:
    """Until ``condition()`` holds (polled); a generous limit only against a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.1)
