"""DuckDB hardening where partner files are read, and the ledger as the judge of what is loaded."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from analyst_helpers import run_cli

from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.load.reference import SAMPLE_REFERENCE
from cdv_etl.read.sandbox import reader_connection


def test_the_reader_touches_only_its_file_and_workdir(tmp_path: Path) -> None:
    inbox, work, elsewhere = tmp_path / "inbox", tmp_path / "work", tmp_path / "secret"
    for d in (inbox, work, elsewhere):
        d.mkdir()
    export = inbox / "export.csv"
    export.write_text("a;b\n1;2\n", encoding="utf-8")
    (inbox / "neighbour.csv").write_text("x\n1\n", encoding="utf-8")
    (elsewhere / "secret.csv").write_text("password\nhunter2\n", encoding="utf-8")
    con = reader_connection(export, work, "256MB")
    assert con.execute("SELECT * FROM read_csv(?, delim=';')", [str(export)]).fetchall() == [(1, 2)]
    for forbidden in (elsewhere / "secret.csv", inbox / "neighbour.csv", inbox / ".." / "secret" / "secret.csv"):
        with pytest.raises(duckdb.PermissionException):
            con.execute("SELECT * FROM read_csv(?)", [str(forbidden)]).fetchall()
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"COPY (SELECT 42) TO '{elsewhere / 'out.csv'}'")
    with pytest.raises(duckdb.Error):
        con.execute(f"ATTACH '{tmp_path / 'other.duckdb'}' AS other")
    for setting in (
        "SET enable_external_access = true",
        "SET memory_limit = '64GB'",
        "SET allowed_directories = ['/']",
    ):
        with pytest.raises(duckdb.Error, match="(?i)configuration|cannot change"):
            con.execute(setting)
    limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit.endswith("MiB") and float(limit.split()[0]) <= 256
    assert not (elsewhere / "out.csv").exists()


def test_a_crash_between_commit_and_archive_never_loads_twice(tmp_path: Path) -> None:
    """The file was loaded (committed) but the run died before moving it: the next nightly run
    recognises its bytes in the ledger, archives it as a duplicate, and loads nothing again."""
    wh = tmp_path / "cdv.duckdb"
    inbox = tmp_path / "inbox"
    export = generate_demo_exports(inbox)[0]
    for f in inbox.iterdir():
        if f != export:
            f.unlink()
    run_cli(["reference", "load", str(SAMPLE_REFERENCE), "-w", str(wh)], tmp_path)
    run_cli(["ingest", str(export), "-w", str(wh)], tmp_path)
    night = run_cli(["nightly", "--inbox", str(inbox), "-w", str(wh)], tmp_path)
    assert "duplicate" in night.stdout
    assert (tmp_path / "archive" / "bdt" / export.name).exists() and not export.exists()
    con = duckdb.connect(str(tmp_path / "cdv.published.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT file_id) FROM file_loads").fetchone() == (1, 1)
    assert con.execute("SELECT count(DISTINCT file_id) FROM financing").fetchone()[0] == 1
