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
