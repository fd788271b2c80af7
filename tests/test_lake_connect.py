"""Opening either backend: ``CDV_WAREHOUSE`` parsed at start, ``connect`` on a DuckDB file or a DuckLake
with its catalog in a real PostgreSQL, and the errors of a lake that cannot be opened."""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import pytest
from analyst_helpers import run_cli
from pg_server import PgServer

from cdv_etl.config import Settings
from cdv_etl.errors import CdvError
from cdv_etl.load import warehouse
from cdv_etl.load.backend import ACCEPTED_FORMS, DuckDBFile, DuckLake, parse_warehouse
from cdv_etl.load.warehouse import LAKE, connect, is_lake, lake_error
from cdv_etl.read.sandbox import extension


def test_settings_parse_the_warehouse_url_and_data_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CDV_WAREHOUSE", raising=False)
    monkeypatch.delenv("CDV_DATA_PATH", raising=False)
    default = Settings.from_env()
    assert default.backend == DuckDBFile(Path("warehouse/cdv.duckdb")) and default.lake is None
    assert default.data_path is None

    monkeypatch.setenv("CDV_WAREHOUSE", "ducklake:postgres:host=/run/pg dbname=acv user=cdv password=s3cret")
    monkeypatch.setenv("CDV_DATA_PATH", str(tmp_path / "data"))
    lake = Settings.from_env()
    assert isinstance(lake.backend, DuckLake) and lake.backend.catalog == "postgres"
    assert lake.data_path == str(tmp_path / "data") + "/"
    assert "s3cret" not in lake.backend.display

    # -w wins over CDV_WAREHOUSE; a DuckDB file with CDV_DATA_PATH set is refused (the file holds its data).
    with pytest.raises(CdvError, match="CDV_DATA_PATH"):
        Settings.from_env(str(tmp_path / "cdv.duckdb"))
    monkeypatch.delenv("CDV_DATA_PATH")
    assert Settings.from_env(str(tmp_path / "cdv.duckdb")).backend == DuckDBFile(tmp_path / "cdv.duckdb")
    # A path given to with_ names a DuckDB file: the lake is dropped.
    assert lake.with_(warehouse=tmp_path / "x.duckdb").backend == DuckDBFile(tmp_path / "x.duckdb")


def test_a_bad_warehouse_url_fails_at_start_showing_the_accepted_forms(tmp_path: Path) -> None:
    done = run_cli(["init", "-w", "postgres://cdv:pw@db/acv"], tmp_path, ok=False)
    assert done.returncode == 2
    assert "cannot use CDV_WAREHOUSE / -w" in done.stderr
    assert ACCEPTED_FORMS.split(",")[0] in done.stderr.replace("\n", "")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "warehouse").exists()


def test_connect_opens_either_backend(backend: Settings) -> None:
    con = connect(backend.backend)
    try:
        con.execute("CREATE TABLE t (a INTEGER)")
        con.execute("INSERT INTO t VALUES (1), (2)")
        assert con.execute("SELECT sum(a) FROM t").fetchone() == (3,)
        assert is_lake(con) == (backend.lake is not None)
        if backend.lake is not None:
            assert con.execute("SELECT current_database()").fetchone() == (LAKE,)
            loaded = con.execute(
                "SELECT extension_name FROM duckdb_extensions() WHERE loaded AND install_mode IS DISTINCT FROM "
                "'STATICALLY_LINKED' ORDER BY 1"
            ).fetchall()
            assert ("ducklake",) in loaded and ("postgres_scanner",) in loaded
            assert con.execute("SELECT current_setting('autoinstall_known_extensions')").fetchone() == (False,)
    finally:
        con.close()
    ro = connect(backend.backend, read_only=True)
    try:
        assert ro.execute("SELECT sum(a) FROM t").fetchone() == (3,)
        with pytest.raises(duckdb.Error, match="read-only"):
            ro.execute("INSERT INTO t VALUES (3)")
    finally:
        ro.close()


def test_a_lake_connection_spills_outside_the_working_folder(
    fresh_lake: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An in-memory DuckDB spills to ``.tmp`` in the working folder by default: a lake connection
    spills to a folder of its own in the system's temp folder, gone once it is closed."""
    monkeypatch.chdir(tmp_path)
    con = connect(fresh_lake.backend, memory_limit="256MB")
    try:
        spill = Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])
        assert spill.parent == Path(tempfile.gettempdir()) and spill.name.startswith("cdv-etl-")
        # Two threads, whatever the machine: each thread's sort needs its own memory, and on many
        # cores 256 MB would not be enough to spill into (out of memory instead).
        con.execute("SET threads = 2")
        n = con.execute(
            "SELECT count(*) FROM (SELECT i, md5(i::VARCHAR) || repeat('x', 100) AS s FROM range(4000000) t(i) "
            "ORDER BY s)"
        ).fetchone()
        assert n == (4_000_000,)
        assert spill.is_dir()  # it did spill (256 MB for ~500 MB of rows to sort), and there
        assert not (tmp_path / ".tmp").exists()
    finally:
        con.close()
    assert not spill.exists() or not any(spill.iterdir())


def test_a_lake_that_does_not_exist_yet_says_to_run_init(fresh_lake: Settings) -> None:
    assert fresh_lake.lake is not None
    with pytest.raises(CdvError, match="no warehouse in the lake ducklake:postgres:") as info:
        connect(fresh_lake.backend, read_only=True)
    assert "cdv-etl init" in str(info.value)
    # A writer creating a lake needs somewhere for its data files.
    without_data = DuckLake(fresh_lake.lake.catalog, fresh_lake.lake.target, None)
    with pytest.raises(CdvError, match="CDV_DATA_PATH"):
        connect(without_data)


def test_an_unreachable_catalog_names_it_masks_the_password_and_says_what_to_start(
    pg_server: PgServer, tmp_path: Path
) -> None:
    down = parse_warehouse(
        f"ducklake:postgres:host={pg_server.root} port=1 dbname=acv user=cdv password=s3cret", str(tmp_path / "d")
    )
    with pytest.raises(CdvError) as info:
        connect(down)
    text = str(info.value)
    assert f"cannot reach the catalog of the lake ducklake:postgres:host={pg_server.root} port=1" in text
    assert "password=***" in text and "s3cret" not in text
    assert "start PostgreSQL" in text and "INSTALL" not in text

    missing = parse_warehouse(f"ducklake:postgres:{pg_server.libpq('nosuchdb')}", str(tmp_path / "d"))
    with pytest.raises(CdvError, match='database "nosuchdb" does not exist') as info:
        connect(missing)
    assert "createdb" in str(info.value)


def test_a_data_path_other_than_the_lakes_is_refused(fresh_lake: Settings, tmp_path: Path) -> None:
    assert fresh_lake.lake is not None
    connect(fresh_lake.backend).close()  # creates the lake, recording its data path
    elsewhere = DuckLake(fresh_lake.lake.catalog, fresh_lake.lake.target, str(tmp_path / "elsewhere") + "/")
    with pytest.raises(CdvError, match="is not the data path") as info:
        connect(elsewhere)
    assert "unset CDV_DATA_PATH" in str(info.value)
    # A reader needs no data path: the lake knows its own.
    reader = DuckLake(fresh_lake.lake.catalog, fresh_lake.lake.target, None)
    connect(reader, read_only=True).close()


def test_a_missing_extension_says_which_wheel_to_install_never_to_download(tmp_path: Path) -> None:
    with pytest.raises(CdvError, match="pip install duckdb-extension-no-such==") as info:
        extension("no_such")
    assert "INSTALL" not in str(info.value)
    # DuckDB's own failure when the extension is not loaded, as connect would meet it.
    lake = parse_warehouse(f"ducklake:{tmp_path / 'acv.ducklake'}")
    assert isinstance(lake, DuckLake)
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        with pytest.raises(duckdb.Error) as raw:
            con.execute(lake.attach_sql(LAKE))
    finally:
        con.close()
    assert "INSTALL ducklake" in str(raw.value)
    mapped = str(lake_error(lake, raw.value))
    assert "has not loaded an extension" in mapped and "duckdb-extension-ducklake==" in mapped
    assert 'INSTALL "' not in mapped and "using" not in mapped


def test_an_extensions_signature_is_checked_once_per_process(tmp_path: Path) -> None:
    """DuckDB checks an extension file's signature at each load (0.2 s each): a lake connection
    checks each file once per process, and every connection refuses unsigned extensions after."""
    lake = parse_warehouse(f"ducklake:{tmp_path / 'acv.ducklake'}")
    assert isinstance(lake, DuckLake)
    for _ in range(2):  # the first connection of the process checks (or an earlier test did), the next skips
        with connect(lake) as con:
            assert con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone() == (False,)
            loaded = con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()
            assert ("ducklake",) in loaded
        path = extension("ducklake")
        assert warehouse._SIGNATURE_CHECKED[path] == warehouse._on_disk(path)


def test_an_extension_file_changed_since_its_check_is_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file checked earlier in the process, then changed on disk (here: one byte of it), is checked
    again, and refused: its signature no longer matches."""
    copy = tmp_path / "ducklake.duckdb_extension"
    copy.write_bytes(extension("ducklake").read_bytes())
    monkeypatch.setitem(warehouse._SIGNATURE_CHECKED, copy, warehouse._on_disk(copy))  # as if checked here
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered = tmp_path / "tampered"
    tampered.write_bytes(bytes(data))
    tampered.replace(copy)
    monkeypatch.setattr(warehouse, "extension", lambda name: copy if name == "ducklake" else extension(name))
    lake = parse_warehouse(f"ducklake:{tmp_path / 'acv.ducklake'}")
    with pytest.raises(CdvError, match="signature"):
        connect(lake)
    assert not (tmp_path / "acv.ducklake").exists()


def test_a_local_lake_opens_without_postgresql(tmp_path: Path) -> None:
    lake = parse_warehouse(f"ducklake:{tmp_path / 'cat' / 'acv.ducklake'}")
    con = connect(lake)
    try:
        con.execute("CREATE TABLE t AS SELECT 42 AS a")
        assert is_lake(con)
    finally:
        con.close()
    assert (tmp_path / "cat" / "acv.ducklake").is_file()


def test_a_local_lake_takes_one_connection_at_a_time(tmp_path: Path) -> None:
    lake = parse_warehouse(f"ducklake:{tmp_path / 'acv.ducklake'}")
    writer = connect(lake)
    try:
        with pytest.raises(CdvError, match="one connection at a time") as info:
            connect(lake, read_only=True, timeout_s=0)
        assert "ducklake:postgres:" in str(info.value)
    finally:
        writer.close()
    connect(lake, read_only=True).close()  # free again
