"""Helpers for the DuckLake tests: a migrated warehouse on either backend, a lake filled with plain SQL."""

from __future__ import annotations

from pathlib import Path

import duckdb

from cdv_etl.config import Settings
from cdv_etl.load.warehouse import LAKE, connect, migrate

MACRO_CALLS = {
    "changes_between": "changes_between(NULL, NULL)",
    "financing_as_of": "financing_as_of(DATE '2030-01-01', hindsight := true)",
    "engaged_as_of": "engaged_as_of(DATE '2030-01-01')",
}
"""A call of each public table macro (dates late enough to see every load)."""


def migrated(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A writable connection to ``settings``' warehouse, migrated (tables, views, docs)."""
    con = connect(settings.backend)
    migrate(con)
    return con


def copy_into_lake(source: Path, lake: duckdb.DuckDBPyConnection) -> None:
    """Every data table of the DuckDB file warehouse ``source`` into the migrated ``lake``, in one
    transaction (plain SQL: what the loader would have written; the schema_* tables are the lake's own)."""
    lake.execute(f"ATTACH '{str(source).replace(chr(39), chr(39) * 2)}' AS wh (READ_ONLY)")  # takes no parameters
    tables = [
        t
        for (t,) in lake.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'wh' ORDER BY 1"
        ).fetchall()
        if not t.startswith("schema_")
    ]
    lake.execute("BEGIN TRANSACTION")
    for t in tables:
        lake.execute(f'DELETE FROM {LAKE}."{t}"')  # 002's reference rows, copied again with the rest
        lake.execute(f'INSERT INTO {LAKE}."{t}" SELECT * FROM wh."{t}"')
    lake.execute("COMMIT")
    lake.execute("DETACH wh")
