"""One SQL interface on both backends: the migrations, views, macros and docs of a DuckDB file and
of a DuckLake (its catalog in a real PostgreSQL) are the same, table for table and view for view.

The DuckLake gets no data here from the loader (that is the several-writers work): the test that
compares answers copies a DuckDB file warehouse's tables into the lake with plain SQL
(``INSERT INTO lake.t SELECT * FROM wh.t``), then asks both the same questions.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from analyst_helpers import demo_warehouse
from lake_helpers import MACRO_CALLS, copy_into_lake, migrated

from cdv_etl.config import Settings
from cdv_etl.errors import CdvError
from cdv_etl.load.warehouse import PUBLIC_VIEWS, connect, is_lake, migrate, migrations

SCHEMA_SQL = """
    SELECT c.table_name, c.column_index, c.column_name, c.data_type, c.is_nullable
    FROM duckdb_columns() AS c
    WHERE c.database_name = current_database() AND c.schema_name = 'main'
      AND (c.table_name IN (SELECT table_name FROM duckdb_tables()
                            WHERE database_name = current_database() AND NOT temporary)
           OR c.table_name IN (SELECT unnest(?)))
    ORDER BY c.table_name, c.column_index"""
"""Every table's and public view's columns: names, types, order, nullability."""


def _schema(con: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
    return con.execute(SCHEMA_SQL, [list(PUBLIC_VIEWS)]).fetchall()


def test_migrations_build_the_same_warehouse_on_both_backends(fresh_lake: Settings, settings: Settings) -> None:
    file, lake = migrated(settings), migrated(fresh_lake)
    try:
        assert not is_lake(file) and is_lake(lake)
        schema = _schema(file)
        tables = {r[0] for r in schema}
        assert {"files", "engagement_rows", "schema_migrations", "schema_docs", *PUBLIC_VIEWS} <= tables
        assert _schema(lake) == schema
        # One history: versions 1-6 of the lake (its baseline) carry their own files' checksums.
        history = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
        assert lake.execute(history).fetchall() == file.execute(history).fetchall()
        assert [r[0] for r in lake.execute(history).fetchall()] == [m.version for m in migrations()]
        # The same reference data (002), docs and view comments.
        for sql in (
            "SELECT * FROM axes ORDER BY ALL",
            "SELECT * FROM partners ORDER BY ALL",
            "SELECT * FROM envelopes ORDER BY ALL",
            "SELECT * FROM schema_docs ORDER BY ALL",
            "SELECT view_name, comment FROM duckdb_views() WHERE database_name = current_database() "
            "AND NOT internal ORDER BY 1",
            "SELECT function_name, parameters FROM duckdb_functions() WHERE database_name = current_database() "
            "AND function_type = 'table_macro' ORDER BY 1",
        ):
            assert lake.execute(sql).fetchall() == file.execute(sql).fetchall(), sql
        assert file.execute("SELECT count(*) FROM schema_docs WHERE kind = 'macro'").fetchone() == (len(MACRO_CALLS),)
    finally:
        file.close()
        lake.close()


def test_migrate_is_idempotent_and_refuses_a_changed_migration(backend: Settings) -> None:
    con = migrated(backend)
    try:
        assert migrate(con) == []
        last = migrations()[-1]
        con.execute("UPDATE schema_migrations SET checksum = 'edited-since' WHERE version = ?", [last.version])
        with pytest.raises(CdvError, match=f"migration {last.name} was changed after it was applied"):
            migrate(con)
    finally:
        con.close()


def test_every_public_view_and_macro_runs_on_a_new_warehouse(backend: Settings) -> None:
    con = migrated(backend)
    try:
        for view in PUBLIC_VIEWS:
            con.execute(f'SELECT * FROM "{view}"').fetchall()
        for call in MACRO_CALLS.values():
            assert con.execute(f"SELECT count(*) FROM {call}").fetchone() == (0,), call
        macros = con.execute(
            "SELECT function_name FROM duckdb_functions() WHERE database_name = current_database() "
            "AND function_type = 'table_macro'"
        ).fetchall()
        assert sorted(m for (m,) in macros) == sorted(MACRO_CALLS)
    finally:
        con.close()


def test_a_lake_answers_every_view_and_macro_as_the_file_does(fresh_lake: Settings, tmp_path: Path) -> None:
    # Two rounds of the demo exports: every view has rows, v_changes and changes_between too.
    source = demo_warehouse(tmp_path / "file", loads=2)
    lake = migrated(fresh_lake)
    file = connect(source.warehouse, read_only=True)
    try:
        copy_into_lake(source.warehouse, lake)
        questions = {v: f'SELECT * FROM "{v}"' for v in PUBLIC_VIEWS} | {
            m: f"SELECT * FROM {c}" for m, c in MACRO_CALLS.items()
        }
        for name, sql in questions.items():
            expected = file.execute(sql).fetchall()
            assert expected, f"{name} has no rows in the file warehouse: the comparison would prove nothing"
            # The same rows (compared sorted: several views have no ORDER BY).
            assert sorted(map(repr, lake.execute(sql).fetchall())) == sorted(map(repr, expected)), name
    finally:
        file.close()
        lake.close()
