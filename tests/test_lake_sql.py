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
from conftest import LOADED_LAKE, LakeTemplates
from lake_helpers import MACRO_CALLS, migrated

from cdv_etl.config import Settings
from cdv_etl.errors import CdvError
from cdv_etl.load.warehouse import PUBLIC_VIEWS, connect, is_lake, lake_data_path, migrate, migrations

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


DEFINITIONS = (
    "SELECT view_name, comment, sql FROM duckdb_views() WHERE database_name = current_database() "
    "AND NOT internal ORDER BY 1",
    "SELECT function_name, parameters, macro_definition FROM duckdb_functions() "
    "WHERE database_name = current_database() AND function_type = 'table_macro' ORDER BY 1",
)
"""The views (with their comments and SQL) and the table macros (with their definitions)."""


def _rows(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Every row of every table, sorted, but for the columns that record when (applied_at)."""
    tables = con.execute(
        "SELECT table_name, list(column_name ORDER BY column_index) FILTER (WHERE data_type <> 'TIMESTAMP') "
        "FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' "
        "AND table_name IN (SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()) "
        "GROUP BY 1 ORDER BY 1"
    ).fetchall()
    select = {t: "SELECT " + ", ".join(f'"{c}"' for c in cols) + f' FROM "{t}"' for t, cols in tables}
    return {t: sorted(map(repr, con.execute(sql).fetchall())) for t, sql in select.items()}


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


def test_a_copy_of_the_sessions_lake_template_is_the_lake_a_migration_makes(
    fresh_lake: Settings, migrated_lake: Settings, sample_lake: Settings, lake_templates: LakeTemplates
) -> None:
    """The lakes most tests start from are copies of a template built once per session
    (``conftest.LakeTemplates``): a copy has the tables, rows, views, macros and docs that migrating a
    new lake gives, nothing pending, and its data files in its own folder, never the template's."""
    fresh, copy = migrated(fresh_lake), connect(migrated_lake.backend)
    try:
        assert is_lake(copy)
        assert _schema(copy) == _schema(fresh)
        rows = _rows(fresh)
        assert {"schema_migrations", "schema_docs", "partners", "axes"} <= set(rows) and rows["partners"]
        assert _rows(copy) == rows
        for sql in DEFINITIONS:
            assert copy.execute(sql).fetchall() == fresh.execute(sql).fetchall(), sql
        assert migrate(copy) == []  # up to date: the template ran every migration
        assert lake_data_path(copy) == migrated_lake.data_path
    finally:
        fresh.close()
        copy.close()
    assert migrated_lake.data_path is not None and sample_lake.data_path is not None
    _, template_data = lake_templates.template("sample")
    template_files = sorted(p.relative_to(template_data) for p in template_data.rglob("*"))
    with connect(sample_lake.backend) as con:
        communes = con.execute("SELECT count(*) FROM communes").fetchone()
        assert communes and communes[0] > 0
        # The reference's Parquet files are read from the copy's folder, and new ones are written there.
        read = con.execute("SELECT DISTINCT data_file FROM ducklake_list_files('lake', 'communes')").fetchall()
        assert read and all(f.startswith(sample_lake.data_path) for (f,) in read), read
        con.execute("CREATE TABLE written AS SELECT range AS i FROM range(100000)")
        assert con.execute("SELECT sum(i) FROM written").fetchone() == (4999950000,)
    assert list((Path(sample_lake.data_path) / "main" / "written").glob("*.parquet"))
    assert sorted(p.relative_to(template_data) for p in template_data.rglob("*")) == template_files


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


@LOADED_LAKE
def test_a_lake_answers_every_view_and_macro_as_the_file_does(loaded_lake: tuple[Settings, Settings]) -> None:
    # Two rounds of the demo exports: every view has rows, v_changes and changes_between too.
    on_lake, source = loaded_lake
    lake = connect(on_lake.backend, read_only=True)
    file = connect(source.warehouse, read_only=True)
    try:
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
