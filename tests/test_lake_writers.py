"""Several writers on a DuckLake (issue 12): commit conflicts retried whole, claims, and the proof
with real processes — two writers at once while a third process reads, the same bytes ingested
twice at once, and kill -9 in mid-load.

Every lake here has its catalog in the session's throwaway PostgreSQL (``pg_server``). The
writers are real ``cdv-etl ingest`` processes. They are synchronised by the fault hook's pause
files (``CDV_FAULT_PAUSE``: a writer stops at a named point inside its work until the test lets
it go), never by sleeping: every interleaving asserted here is forced.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from cdv_etl.config import Settings
from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.load.reference import SAMPLE_REFERENCE
from cdv_etl.load.transactions import TRIES, CommitConflict, in_transaction
from cdv_etl.load.warehouse import connect
from cdv_etl.pipeline import ingest_files, open_pipeline

CLI = [str(Path(sys.executable).parent / "cdv-etl")]
TESTS = Path(__file__).resolve().parent
WAIT_S = 120.0
"""The longest a test waits for a process to reach a barrier: a guard against a hang, not a timing."""


# -- the retry wrapper ---------------------------------------------------------------------------
@pytest.fixture
def two_connections(fresh_lake: Settings) -> Iterator[tuple[duckdb.DuckDBPyConnection, duckdb.DuckDBPyConnection]]:
    """Two writers' connections to one new lake holding a one-row table."""
    a = connect(fresh_lake.backend)
    b = connect(fresh_lake.backend)
    a.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
    a.execute("INSERT INTO counter VALUES (0)")
    yield a, b
    a.close()
    b.close()


def test_a_commit_conflict_is_retried_whole_on_what_the_winner_wrote(
    two_connections: tuple[duckdb.DuckDBPyConnection, duckdb.DuckDBPyConnection], caplog: pytest.LogCaptureFixture
) -> None:
    """A reads the counter; B commits a write of that table between A's statements; A's COMMIT
    conflicts. The wrapper sends no ROLLBACK after it (that would raise and hide the conflict),
    logs the retry, and runs A's whole unit again, which reads B's value."""
    a, b = two_connections
    seen: list[int] = []

    def unit(con: duckdb.DuckDBPyConnection) -> int:
        n = con.execute("SELECT n FROM counter").fetchone()[0]
        seen.append(n)
        if len(seen) == 1:
            b.execute("UPDATE counter SET n = n + 10")  # B commits (autocommit) while A is in its transaction
        con.execute("UPDATE counter SET n = ?", [n + 1])
        return n + 1

    with caplog.at_level(logging.INFO, logger="cdv_etl"):
        assert in_transaction(a, unit, what="count") == 11
    assert seen == [0, 10]
    assert a.execute("SELECT n FROM counter").fetchall() == [(11,)]
    assert b.execute("SELECT n FROM counter").fetchall() == [(11,)]
    [retry] = [r.getMessage() for r in caplog.records if "conflicted" in r.getMessage()]
    assert "the count conflicted with another writer's commit (attempt 1 of" in retry
    assert "Transaction conflict" in retry


def test_conflicts_on_every_try_are_given_up_having_changed_nothing(
    two_connections: tuple[duckdb.DuckDBPyConnection, duckdb.DuckDBPyConnection],
) -> None:
    a, b = two_connections
    runs = []

    def unit(con: duckdb.DuckDBPyConnection) -> None:
        runs.append(1)
        con.execute("UPDATE counter SET n = n + 1000")
        b.execute("UPDATE counter SET n = n + 1")

    with pytest.raises(CommitConflict, match="conflicted with other writers' commits 3 times in a row; nothing of it"):
        in_transaction(a, unit, what="count", tries=3)
    assert len(runs) == 3
    assert a.execute("SELECT n FROM counter").fetchall() == [(3,)]  # B's three commits, none of A's


@pytest.mark.parametrize("backend", ["file", "lake"], indirect=True)
def test_other_errors_are_not_retried_and_leave_nothing(backend: Settings) -> None:
    con = connect(backend.backend)
    try:
        con.execute("CREATE TABLE t (n INTEGER NOT NULL)")
        runs = []

        def unit(c: duckdb.DuckDBPyConnection) -> None:
            runs.append(1)
            c.execute("INSERT INTO t VALUES (1)")
            c.execute("INSERT INTO t VALUES (NULL)")

        with pytest.raises(duckdb.ConstraintException):
            in_transaction(con, unit, what="insert", tries=TRIES)
        assert runs == [1]
        assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)
    finally:
        con.close()


# -- writer processes ----------------------------------------------------------------------------
LEDGER_CHECK = """
SELECT f.file_name, f.rows_loaded, f.rows_quarantined, f.loaded_amount_eur,
       (SELECT count(*) FROM engagement_rows AS e WHERE e.file_id = f.file_id),
       (SELECT count(*) FROM quarantine_rows AS q WHERE q.file_id = f.file_id),
       (SELECT coalesce(sum(amount_eur), 0) FROM engagement_rows AS e WHERE e.file_id = f.file_id)
FROM files AS f WHERE f.status IN ('loaded', 'held') ORDER BY f.file_name"""
ORPHANS = """
SELECT (SELECT count(*) FROM engagement_rows WHERE file_id NOT IN (SELECT file_id FROM files))
     + (SELECT count(*) FROM quarantine_rows WHERE file_id NOT IN (SELECT file_id FROM files))
     + (SELECT count(*) FROM financing_totals WHERE file_id NOT IN (SELECT file_id FROM files))"""
CURRENT = """
SELECT (SELECT count(*) FROM financing),
       (SELECT coalesce(sum(f.rows_loaded), 0) FROM files AS f JOIN current_files USING (file_id))"""


def committed_state(con: duckdb.DuckDBPyConnection) -> tuple[list[str], list[str]]:
    """One snapshot of the lake (one transaction): its loaded files, and what in it is not a
    committed state — a ledger row that does not match its rows, rows of no ledger row, or the
    views' current figures not those of the current files' ledger rows."""
    con.execute("BEGIN TRANSACTION")
    try:
        ledger = con.execute(LEDGER_CHECK).fetchall()
        orphans = con.execute(ORPHANS).fetchone()
        current = con.execute(CURRENT).fetchone()
    finally:
        con.execute("COMMIT")
    wrong = [f"{r[0]}: ledger {r[1:4]} but rows {r[4:7]}" for r in ledger if tuple(r[1:4]) != tuple(r[4:7])]
    if orphans and orphans[0]:
        wrong.append(f"{orphans[0]} rows of no ledger row")
    if current and current[0] != current[1]:
        wrong.append(f"financing has {current[0]} rows, the current files' ledger rows {current[1]}")
    return [str(r[0]) for r in ledger], wrong


def read_until(url: str, stop: str, out: str) -> None:
    """The third process: check the lake in a loop, one snapshot at a time, until ``stop`` exists;
    one JSON line per check (or per failed query) in ``out``."""
    from cdv_etl.load.backend import parse_warehouse

    con = connect(parse_warehouse(url), read_only=True)
    with open(out, "a", encoding="utf-8") as log:
        while True:
            last = Path(stop).exists()
            try:
                files, wrong = committed_state(con)
                log.write(json.dumps({"files": files, "wrong": wrong}) + "\n")
            except duckdb.Error as exc:
                log.write(json.dumps({"error": str(exc)}) + "\n")
            log.flush()
            if last:
                return


def lines(log: Path) -> list[dict]:
    text = log.read_text(encoding="utf-8") if log.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def wait_for(what: str, done: object, *procs: subprocess.Popen, within: float = WAIT_S) -> None:
    """Poll ``done()`` (a barrier file, a line in a log) until true; fail if a process it depends on ends."""
    deadline = time.monotonic() + within
    while not done():  # type: ignore[operator]
        for p in procs:
            assert p.poll() is None, f"waiting for {what}: {p.args} ended with {p.returncode}: {output(p)}"
        assert time.monotonic() < deadline, f"waited {within:.0f} s for {what}"
        time.sleep(0.02)


def output(p: subprocess.Popen) -> str:
    if p.stdout is None:
        return ""
    return p.stdout.read() if p.poll() is not None else ""


@pytest.fixture
def lake(sample_lake: Settings, tmp_path: Path) -> Iterator[tuple[Settings, str, dict[str, Path]]]:
    """A lake with the sample reference and no export yet; its URL; the demo exports by partner."""
    exports = {p.name.split("_")[0].lower(): p for p in generate_demo_exports(tmp_path / "demo")}
    assert sample_lake.lake is not None
    yield sample_lake, sample_lake.lake.attach_target, exports


def writer(url: str, path: Path, tmp: Path, point: str | None = None, pause: Path | None = None) -> subprocess.Popen:
    """A real ``cdv-etl ingest`` process writing the lake; stopped at ``point`` (killed, or paused with ``pause``)."""
    env = {**os.environ, "DO_NOT_TRACK": "1", "TMPDIR": str(tmp)}
    env.pop("CDV_FAULT_POINT", None)
    env.pop("CDV_FAULT_PAUSE", None)
    if point:
        env["CDV_FAULT_POINT"] = point
    if pause:
        pause.mkdir(parents=True, exist_ok=True)
        env["CDV_FAULT_PAUSE"] = str(pause)
    return subprocess.Popen(
        CLI + ["ingest", str(path), "-w", url], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(p: subprocess.Popen) -> tuple[int, str]:
    out, _ = p.communicate(timeout=WAIT_S)
    return p.returncode, out


def test_two_writers_at_once_while_a_third_process_reads(
    lake: tuple[Settings, str, dict[str, Path]], tmp_path: Path
) -> None:
    """Writer A stops inside its load transaction (rows inserted, not committed); writer B loads
    another partner's export and commits meanwhile; the reader sees B's file and none of A's
    rows; A then commits without a conflict (both transactions only inserted). Every check of
    the reader, all along, is a committed state."""
    settings, url, exports = lake
    al, anah = exports["al"], exports["anah"]
    stop, log, pause = tmp_path / "stop", tmp_path / "reader.jsonl", tmp_path / "pause-a"
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); from test_lake_writers import read_until; "
    code += f"read_until({url!r}, {str(stop)!r}, {str(log)!r})"
    reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for("the reader's first check", lambda: lines(log), reader)
        a = writer(url, al, tmp_path, "load.rows", pause)
        wait_for("writer A inside its load transaction", (pause / "load.rows.reached").exists, a, reader)
        rc, out = finished(writer(url, anah, tmp_path))
        assert rc == 0 and "loaded" in out, out
        wait_for(
            "the reader to see B's commit while A's is open",
            lambda: any(line.get("files") == [anah.name] for line in lines(log)),
            a,
            reader,
        )
        (pause / "load.rows.go").touch()
        rc, out = finished(a)
        assert rc == 0 and "loaded" in out, out
        assert "conflicted" not in out
        wait_for("the reader to see both", lambda: any(len(line.get("files", [])) == 2 for line in lines(log)), reader)
    finally:
        stop.touch()
        rc, out = finished(reader)
    assert rc == 0, out
    checks = lines(log)
    assert [c for c in checks if "error" in c or c["wrong"]] == []
    seen = {tuple(c["files"]) for c in checks}
    assert {(), (anah.name,), tuple(sorted([al.name, anah.name]))} <= seen
    assert (al.name,) not in seen  # A committed after B
    with connect(settings.backend, read_only=True) as con:
        assert committed_state(con) == (sorted([al.name, anah.name]), [])
        ids = con.execute("SELECT file_id FROM files ORDER BY file_id").fetchall()
        assert ids == [(1,), (2,)]  # A claimed first: file 1, committed last


def test_the_same_bytes_ingested_twice_at_once_are_loaded_once(
    lake: tuple[Settings, str, dict[str, Path]], tmp_path: Path
) -> None:
    """A has claimed the bytes and stops before reading them; B, given the same file from another
    folder, changes nothing and says who is loading them. Once A is done, B's next run is answered
    by the ledger. Then two writers given the same new bytes at the same moment: one loads them."""
    settings, url, exports = lake
    export, pause = exports["al"], tmp_path / "pause-a"
    copy = tmp_path / "other-inbox" / export.name
    copy.parent.mkdir()
    copy.write_bytes(export.read_bytes())
    a = writer(url, export, tmp_path, "claimed", pause)
    wait_for("writer A's claim", (pause / "claimed.reached").exists, a)
    rc, out = finished(writer(url, copy, tmp_path))
    assert rc != 0 and "being loaded by another writer" in out and f":{a.pid} since" in out, out
    assert "nothing changed" in out
    (pause / "claimed.go").touch()
    rc, out = finished(a)
    assert rc == 0 and "loaded" in out, out
    rc, out = finished(writer(url, copy, tmp_path))
    assert rc == 0 and "already ingested as file 1" in out, out

    race = [writer(url, exports["anah"], tmp_path), writer(url, exports["anah"], tmp_path)]
    outcomes = [finished(p) for p in race]
    with connect(settings.backend, read_only=True) as con:
        rows = con.execute("SELECT status FROM files WHERE file_name = ?", [exports["anah"].name]).fetchall()
        assert rows == [("loaded",)], outcomes
        assert committed_state(con)[1] == []
    for rc, out in outcomes:
        assert (rc == 0 and ("loaded" in out or "already ingested" in out)) or "being loaded" in out, out


@pytest.mark.parametrize("point", ["claimed", "load.rows", "load.ledger"])
def test_kill_minus_nine_in_mid_load_leaves_the_lake_whole(
    lake: tuple[Settings, str, dict[str, Path]], tmp_path: Path, point: str
) -> None:
    """kill -9 of a writer at each named point between its claim and its commit: the lake holds the
    state before the file (its claim aside), and the next run takes the dead claim over and loads it."""
    settings, url, exports = lake
    [first] = ingest_files(settings, [exports["anah"]])
    with connect(settings.backend, read_only=True) as con:
        before = committed_state(con)
        rc, out = finished(writer(url, exports["al"], tmp_path, point))
        assert rc == -signal.SIGKILL, out
        assert committed_state(con) == before
        [dead] = con.execute(
            "SELECT claimed_by FROM file_claims WHERE file_id NOT IN (SELECT file_id FROM files)"
        ).fetchall()
    [again] = ingest_files(settings, [exports["al"]])
    assert again.status == "loaded", again.message
    with connect(settings.backend, read_only=True) as con:
        assert committed_state(con) == (sorted([exports["anah"].name, exports["al"].name]), [])
        assert con.execute("SELECT count(*) FROM file_claims WHERE claimed_by = ?", [dead[0]]).fetchone() == (0,)
        assert again.file_id == first.file_id + 2  # the dead claim's id is not used again


def test_a_reference_changed_by_another_writer_meanwhile_is_validated_against(
    lake: tuple[Settings, str, dict[str, Path]], tmp_path: Path
) -> None:
    """Writer A has validated its export against the sample reference and stops before its load;
    another writer makes a reference of two communes current. A validates again and loads its
    rows against that one: none of its loaded rows is of a commune outside it."""
    settings, url, exports = lake
    pause = tmp_path / "pause-a"
    a = writer(url, exports["al"], tmp_path, "validated", pause)
    wait_for("writer A validated", (pause / "validated.reached").exists, a)
    smaller = tmp_path / "acv_communes_sample_2024-10.csv"
    smaller.write_text(
        "\n".join(SAMPLE_REFERENCE.read_text(encoding="utf-8").splitlines()[:3]) + "\n", encoding="utf-8"
    )
    with open_pipeline(settings, need_reference=False) as pipe:
        assert pipe.load_reference(smaller).changed
    (pause / "validated.go").touch()
    rc, out = finished(a)
    assert rc == 0, out
    with connect(settings.backend, read_only=True) as con:
        outside, moved = con.execute(
            """SELECT count(*) FILTER (WHERE insee_code NOT IN (SELECT insee_code FROM communes)),
                      (SELECT count(*) FROM quarantine WHERE rule = 'commune_not_acv')
               FROM engagement_rows"""
        ).fetchone()
        assert committed_state(con)[1] == []
    assert outside == 0 and moved > 0
