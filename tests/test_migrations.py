"""The migration runner: applied migrations are history, and a changed one is refused."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from cdv_etl.errors import CdvError
from cdv_etl.load.warehouse import init_warehouse, migrations
from cdv_etl.specs import load_specs


def test_an_applied_migration_whose_file_changed_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    wh = tmp_path / "cdv.duckdb"
    init_warehouse(wh, load_specs(None))
    first = migrations()[0]
    con = duckdb.connect(str(wh))
    # What a later edit of the migration's file looks like from the warehouse: the recorded
    # checksum no longer matches the file's.
    con.execute("UPDATE schema_migrations SET checksum = 'edited-since' WHERE version = ?", [first.version])
    con.execute("DROP VIEW v_financing_by_axis")  # would be recreated by a run that went on
    con.close()

    with pytest.raises(CdvError) as caught:
        init_warehouse(wh, load_specs(None))
    assert first.name in caught.value.message and "changed after it was applied" in caught.value.message
    assert "new migration" in caught.value.hint

    con = duckdb.connect(str(wh), read_only=True)
    try:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    finally:
        con.close()
    assert "v_financing_by_axis" not in views  # the run stopped before touching anything


def test_an_unchanged_warehouse_is_left_as_it_is(tmp_path: Path) -> None:
    wh = tmp_path / "cdv.duckdb"
    assert init_warehouse(wh, load_specs(None))  # first run applies every migration and the views
    assert init_warehouse(wh, load_specs(None)) == []


def test_a_warehouse_migrated_by_a_newer_cdv_etl_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    wh = tmp_path / "cdv.duckdb"
    init_warehouse(wh, load_specs(None))
    newest = migrations()[-1]
    con = duckdb.connect(str(wh))
    # What a newer cdv-etl leaves behind: a migration this code does not have, and its views.
    con.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, 'from-a-newer-release')",
        [newest.version + 1, f"{newest.version + 1:03d}_from_the_future"],
    )
    con.execute("UPDATE schema_views SET checksum = 'newer-views'")
    con.execute("DROP VIEW v_financing_by_axis")  # an older run that went on would put its own back
    con.close()

    with pytest.raises(CdvError) as caught:
        init_warehouse(wh, load_specs(None))
    assert f"{newest.version + 1:03d}_from_the_future" in caught.value.message
    assert newest.name in caught.value.message and "nothing was changed" in caught.value.message
    assert "upgrade cdv-etl" in caught.value.hint

    con = duckdb.connect(str(wh), read_only=True)
    try:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        checksum = con.execute("SELECT checksum FROM schema_views").fetchall()
    finally:
        con.close()
    assert "v_financing_by_axis" not in views and checksum == [("newer-views",)]
